use std::collections::VecDeque; // sallyport

use bytes::{Bytes, BytesMut}; // sallyport
use crate::queue::Sender; // sallyport
use crate::queue::TrySendError; // sallyport

use super::WindowSizeRef;
use crate::ChannelMsg;

/// A handle to the [`super::Channel`]'s to be able to transmit messages
/// to it and update it's `window_size`.
#[derive(Debug)]
pub struct ChannelRef {
    pub(super) sender: Sender<ChannelMsg>,
    pub(super) window_size: WindowSizeRef,
    // sallyport: bytes of CHANNEL_DATA/EXTENDED_DATA handed to the application (queued or
    // staged) and not yet reported consumed. They are not part of the peer's window until the
    // application takes them out of the queue.
    pub(crate) queued: u32,
    // sallyport: a WINDOW_ADJUST was sent on consumption and `Handler::adjust_window` has not
    // been consulted since (it is, on the next data packet: the hook needs the handler, which
    // only the packet path has).
    pub(crate) adjusted: bool,
    // sallyport: messages that did not fit into the bounded queue, in order. The session loop
    // never parks on a full queue; it stages here and moves messages into the queue as the
    // application frees slots. Data is coalesced, so the staged bytes are bounded by the receive
    // window and the number of entries by window / STAGE_COALESCE (+ a few control messages).
    staged: VecDeque<Staged>,
}

// sallyport: one staged message. Data is kept in growable buffers so that a peer sending many
// tiny packets costs bytes, not per-message overhead.
#[derive(Debug)]
enum Staged {
    Data(Option<u32>, BytesMut),
    Other(ChannelMsg),
}

// sallyport: staged data of one stream is appended to the previous staged chunk of that stream
// until the chunk reaches this size.
const STAGE_COALESCE: usize = 32 * 1024;
// sallyport: control messages (EOF, CLOSE, requests) are not covered by the window; a peer
// flooding them at a channel whose reader is stalled gets upstream's behaviour (the session loop
// waits for the reader) instead of unbounded staging.
const STAGE_MAX_CONTROL: usize = 64;

impl ChannelRef {
    pub fn new(sender: Sender<ChannelMsg>) -> Self {
        Self::with_window(sender, WindowSizeRef::new(0)) // sallyport
    }

    // sallyport: single constructor so the new fields are initialised in one place.
    pub(super) fn with_window(sender: Sender<ChannelMsg>, window_size: WindowSizeRef) -> Self {
        Self {
            sender,
            window_size,
            queued: 0,
            adjusted: false,
            staged: VecDeque::new(),
        }
    }

    pub(crate) fn window_size(&self) -> &WindowSizeRef {
        &self.window_size
    }

    /// sallyport: hand `msg` to the application without parking the session loop on a full
    /// queue (the message is staged instead, in order). Returns `false` if the application's
    /// receiver is gone (closed or dropped).
    pub(crate) async fn deliver(&mut self, msg: ChannelMsg) -> bool {
        self.refill();
        let msg = if self.staged.is_empty() {
            match self.sender.try_send(msg) {
                Ok(()) => return true,
                Err(TrySendError::Closed(_)) => return false,
                Err(TrySendError::Full(msg)) => msg,
            }
        } else if self.sender.is_closed() {
            return false;
        } else {
            msg
        };
        match msg {
            ChannelMsg::Data { data } => self.stage_data(None, data),
            ChannelMsg::ExtendedData { data, ext } => self.stage_data(Some(ext), data),
            msg => {
                let controls = self
                    .staged
                    .iter()
                    .filter(|s| matches!(s, Staged::Other(_)))
                    .count();
                if controls >= STAGE_MAX_CONTROL {
                    // Upstream behaviour: wait for the reader.
                    while let Some(staged) = self.staged.pop_front() {
                        if self.sender.send(staged.into_msg()).await.is_err() {
                            self.staged.clear();
                            return false;
                        }
                    }
                    return self.sender.send(msg).await.is_ok();
                }
                self.staged.push_back(Staged::Other(msg))
            }
        }
        true
    }

    // sallyport: data may pass staged data of *another* stream (stdout vs. stderr, which have
    // no defined relative order), never a staged control message (EOF, CLOSE, ...).
    fn stage_data(&mut self, ext: Option<u32>, data: Bytes) {
        for staged in self.staged.iter_mut().rev() {
            match staged {
                Staged::Data(e, buf) if *e == ext => {
                    if buf.len() < STAGE_COALESCE {
                        buf.extend_from_slice(&data);
                        return;
                    }
                    break;
                }
                Staged::Data(..) => {}
                Staged::Other(_) => break,
            }
        }
        self.staged
            .push_back(Staged::Data(ext, BytesMut::from(&data[..])));
    }

    /// sallyport: move staged messages into the queue while it has room.
    fn refill(&mut self) {
        while !self.staged.is_empty() {
            match self.sender.try_reserve() {
                Ok(permit) => {
                    if let Some(staged) = self.staged.pop_front() {
                        permit.send(staged.into_msg())
                    }
                }
                Err(TrySendError::Full(())) => return,
                Err(TrySendError::Closed(())) => {
                    self.staged.clear();
                    return;
                }
            }
        }
    }

    /// sallyport: the application took a message carrying `bytes` bytes of data out of the
    /// queue. Returns the bytes still accounted to the application.
    pub(crate) fn consumed(&mut self, bytes: u32) -> u32 {
        self.queued = self.queued.saturating_sub(bytes);
        self.refill();
        if self.sender.is_closed() {
            // The reader is gone: nothing will be consumed any more.
            self.queued = 0;
            self.staged.clear();
        }
        self.queued
    }

    /// sallyport: the channel is going away (CLOSE received): deliver what is staged plus
    /// `last` without parking the session loop — a task forwards the rest as the reader reads.
    pub(crate) fn deliver_last(mut self, last: ChannelMsg) {
        self.refill();
        if self.staged.is_empty() {
            match self.sender.try_send(last) {
                Err(TrySendError::Full(msg)) => self.staged.push_back(Staged::Other(msg)),
                _ => return,
            }
        } else {
            self.staged.push_back(Staged::Other(last));
        }
        let sender = self.sender.clone();
        let staged = std::mem::take(&mut self.staged);
        drop(russh_util::runtime::spawn(async move {
            for staged in staged {
                if sender.send(staged.into_msg()).await.is_err() {
                    break;
                }
            }
        }));
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.sender.is_closed() // sallyport
    }
}

// sallyport
impl Staged {
    fn into_msg(self) -> ChannelMsg {
        match self {
            Staged::Data(None, data) => ChannelMsg::Data {
                data: data.freeze(),
            },
            Staged::Data(Some(ext), data) => ChannelMsg::ExtendedData {
                data: data.freeze(),
                ext,
            },
            Staged::Other(msg) => msg,
        }
    }
}

impl std::ops::Deref for ChannelRef {
    type Target = Sender<ChannelMsg>;

    fn deref(&self) -> &Self::Target {
        &self.sender
    }
}

// sallyport: staging keeps order and bounds the number of staged entries.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn staging_coalesces_and_keeps_order() {
        let (sender, mut receiver) = crate::queue::channel(2);
        let mut chan = ChannelRef::new(sender);
        let total = 100_000usize;
        for i in 0..total {
            let byte = Bytes::from(vec![(i % 251) as u8]);
            assert!(chan.deliver(ChannelMsg::Data { data: byte }).await);
        }
        assert!(chan.deliver(ChannelMsg::Eof).await);
        // 2 queued + ~total / STAGE_COALESCE data chunks + EOF.
        assert!(chan.staged.len() <= total / STAGE_COALESCE + 2);

        let mut next = 0usize;
        loop {
            match receiver.try_recv() {
                Ok(ChannelMsg::Data { data }) => {
                    for b in data.iter() {
                        assert_eq!(*b, (next % 251) as u8);
                        next += 1;
                    }
                }
                Ok(ChannelMsg::Eof) => break,
                Ok(other) => panic!("unexpected {other:?}"),
                Err(_) => {
                    chan.consumed(0);
                }
            }
        }
        assert_eq!(next, total);
        assert!(chan.staged.is_empty());
    }

    #[tokio::test]
    async fn closed_receiver_releases_everything() {
        let (sender, receiver) = crate::queue::channel(1);
        let mut chan = ChannelRef::new(sender);
        for _ in 0..3 {
            let data = Bytes::from_static(b"abc");
            assert!(chan.deliver(ChannelMsg::Data { data }).await);
            chan.queued += 3;
        }
        drop(receiver);
        assert_eq!(chan.consumed(0), 0);
        assert!(chan.staged.is_empty());
        let data = Bytes::from_static(b"abc");
        assert!(!chan.deliver(ChannelMsg::Data { data }).await);
    }
}
