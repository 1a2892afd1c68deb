//! The bytes of a forward, copied both ways unread; every byte read is activity.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use russh::{Channel, ChannelId};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::conn::Conn;

/// Copy both ways until both sides are done; every byte read either way is activity of `conn`.
pub(super) async fn pipe<A, B>(a: Channel<A>, b: Channel<B>, conn: Arc<Conn>)
where
    A: From<(ChannelId, russh::ChannelMsg)> + Send + Sync + 'static,
    B: From<(ChannelId, russh::ChannelMsg)> + Send + Sync + 'static,
{
    let mut a = Touching {
        inner: a.into_stream(),
        conn: conn.clone(),
    };
    let mut b = Touching {
        inner: b.into_stream(),
        conn,
    };
    if let Err(e) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
        tracing::debug!(error = %e, "pipe ended");
    }
}

/// A stream whose reads count as activity of a connection (for the idle timeout).
pub(super) struct Touching<S> {
    pub(super) inner: S,
    pub(super) conn: Arc<Conn>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Touching<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Touching<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
