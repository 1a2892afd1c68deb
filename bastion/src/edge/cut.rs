//! An engineer's socket that the edge can cut while russh's task owns it: for a client that
//! never finished the handshake (it cannot be sent a disconnect) or that reads nothing of it.
//!
//! The socket stays the connection's only file descriptor. A second handle on it
//! (`try_clone`, to `shutdown(2)` it from outside) would double what every connection holds
//! against the process's descriptor limit; keeping only the descriptor's number and shutting it
//! down from outside would be unsound: once russh's task has ended and closed the socket, the
//! number may already name another file of the process. Here the cut is a cancellation the
//! stream itself obeys, so it can never reach past the stream's life.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The engineer's socket as russh's task reads and writes it. Once its token is cancelled, a
/// read ends (end of file) and a write or flush fails, so russh's task ends and drops (closes)
/// the socket, as it would after `shutdown(2)`.
pub(super) struct CutStream {
    stream: TcpStream,
    /// One waiter per direction, so that a task blocked on reading (a client that sends
    /// nothing) and one blocked on writing (a client that reads nothing) both wake when cut.
    read_cut: Pin<Box<WaitForCancellationFutureOwned>>,
    write_cut: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl CutStream {
    /// The stream, and the token that cuts it.
    pub(super) fn new(stream: TcpStream) -> (CutStream, CancellationToken) {
        let cut = CancellationToken::new();
        let s = CutStream {
            stream,
            read_cut: Box::pin(cut.clone().cancelled_owned()),
            write_cut: Box::pin(cut.clone().cancelled_owned()),
        };
        (s, cut)
    }
}

fn cut_error() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the edge cut the connection")
}

impl AsyncRead for CutStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read_cut.as_mut().poll(cx).is_ready() {
            // Nothing read: the end of the stream.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CutStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.write_cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Connected: the cut stream (the edge's end) and the client's end.
    async fn pair() -> (CutStream, CancellationToken, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (s, cut) = CutStream::new(server);
        (s, cut, client)
    }

    #[tokio::test]
    async fn a_cut_ends_a_blocked_read_and_fails_writes_and_the_client_sees_the_close() {
        let (mut s, cut, mut client) = pair().await;
        client.write_all(b"SSH-2.0-x\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"SSH-2.0-x\r\n");
        // A read waits for a client that sends nothing more, until the cut.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).await.unwrap();
            (n, s)
        });
        cut.cancel();
        let (n, mut s) = reader.await.unwrap();
        assert_eq!(n, 0, "a cut stream reads as ended");
        assert!(s.write_all(b"more").await.is_err());
        assert!(s.flush().await.is_err());
        // Dropped (russh's task ends): the client's read ends too.
        drop(s);
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_cut_fails_writes_to_a_client_that_reads_nothing() {
        let (mut s, cut, _client) = pair().await;
        let writer = tokio::spawn(async move {
            let chunk = vec![0u8; 1 << 16];
            loop {
                if let Err(e) = s.write_all(&chunk).await {
                    return e;
                }
            }
        });
        // Whether the writer has filled the socket's buffers and waits, or not yet: it fails.
        tokio::task::yield_now().await;
        cut.cancel();
        let e = writer.await.unwrap();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }
}
