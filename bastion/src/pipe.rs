//! Two channels joined, unread: what either side sends is handed to the other message by
//! message, each message's data as it came (no copy into buffers of our own, no re-packing),
//! with the destination's window as the back-pressure. The edge joins an engineer's forward to a
//! tunnel channel with it; the gateway an engineer's `direct-tcpip` to the node's.

use russh::{Channel, ChannelId, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};

/// How one direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The source sent EOF: the destination was sent EOF; the other direction goes on.
    Eof,
    /// The source closed, or the destination refused data: nothing more can go either way.
    Closed,
    /// The source's connection went away without closing the channel (a crash, a cut): nothing
    /// was sent on, so that the other side can be told why first.
    Vanished,
}

/// The side whose connection went away without closing its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vanished {
    A,
    B,
}

/// Move both ways until both directions are done or one side is gone, then close both
/// channels. `activity` is called for every message either way (an idle timer). When one
/// side's connection went away without closing its channel, `vanished` runs (and is awaited)
/// before anything is sent to the other side: its chance to say why.
pub async fn join<A, B, F>(
    a: Channel<A>,
    b: Channel<B>,
    activity: impl Fn() + Sync,
    vanished: impl FnOnce(Vanished) -> F,
) where
    A: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static,
    B: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static,
    F: std::future::Future<Output = ()>,
{
    let (a_rx, a_tx) = a.split();
    let (b_rx, b_tx) = b.split();
    {
        let ab = pump(a_rx, &b_tx, &activity);
        let ba = pump(b_rx, &a_tx, &activity);
        tokio::pin!(ab, ba);
        let (mut ab_end, mut ba_end) = (None, None);
        while ab_end.is_none() || ba_end.is_none() {
            tokio::select! {
                end = &mut ab, if ab_end.is_none() => ab_end = Some(end),
                end = &mut ba, if ba_end.is_none() => ba_end = Some(end),
            }
            if ab_end == Some(End::Vanished) {
                vanished(Vanished::A).await;
                break;
            }
            if ba_end == Some(End::Vanished) {
                vanished(Vanished::B).await;
                break;
            }
            if ab_end == Some(End::Closed) || ba_end == Some(End::Closed) {
                break;
            }
        }
    }
    let _ = a_tx.close().await;
    let _ = b_tx.close().await;
}

/// Move one direction: data as it came, EOF as EOF, until the source ends.
async fn pump<S>(
    mut from: ChannelReadHalf,
    to: &ChannelWriteHalf<S>,
    activity: &(impl Fn() + Sync),
) -> End
where
    S: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static,
{
    while let Some(msg) = from.wait().await {
        activity();
        let sent = match msg {
            ChannelMsg::Data { data } => to.data_bytes(data).await,
            ChannelMsg::Eof => {
                let _ = to.eof().await;
                return End::Eof;
            }
            ChannelMsg::Close => {
                let _ = to.eof().await;
                return End::Closed;
            }
            // A forwarded TCP connection carries data only (no stderr, no requests).
            _ => Ok(()),
        };
        if sent.is_err() {
            return End::Closed;
        }
    }
    End::Vanished
}
