//! Deadlines of a connection's socket: a client that connects and sends nothing is dropped
//! after the header read timeout (hyper's own timer starts only once a request begins), and a
//! client that stops reading what it is sent is dropped once a write has waited for
//! `server.send_timeout_ms` (otherwise it would hold its response, and what the response holds,
//! for ever).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

pub(super) struct FirstBytes<IO> {
    io: IO,
    /// Running until the first bytes arrive.
    deadline: Option<Pin<Box<Sleep>>>,
    /// How long a write may wait for the client to read.
    write_stall: Duration,
    /// Running while a write waits.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<IO> FirstBytes<IO> {
    pub(super) fn within(io: IO, timeout: Duration) -> Self {
        Self {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            // Until `sending_within`: none to speak of.
            write_stall: Duration::from_secs(24 * 3600),
            stalled: None,
        }
    }

    /// A write that waits longer than `timeout` for the client fails the connection.
    pub(super) fn sending_within(mut self, timeout: Duration) -> Self {
        self.write_stall = timeout;
        self
    }

    /// Passes a write's outcome through, failing it once it has waited too long.
    fn watch_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let stall = self.write_stall;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing for the send timeout",
            )));
        }
        Poll::Pending
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for FirstBytes<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = match &mut this.deadline {
                    Some(d) => d.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if expired {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request within the header read timeout",
                    )));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FirstBytes<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.watch_write(cx, r)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.watch_write(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.watch_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn silence_ends_the_connection_and_bytes_lift_the_deadline() {
        let (client, server) = tokio::io::duplex(64);
        let mut server = FirstBytes::within(server, Duration::from_millis(50));
        let mut buf = [0u8; 8];
        let e = server.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        drop(client);

        let (mut client, server) = tokio::io::duplex(64);
        let mut server = FirstBytes::within(server, Duration::from_millis(50));
        client.write_all(b"GET").await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 3);
        // After the first bytes, waiting is hyper's business, not this deadline's.
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.write_all(b" /").await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_fails_the_write_after_the_send_timeout() {
        let (mut client, server) = tokio::io::duplex(16);
        let mut server = FirstBytes::within(server, Duration::from_secs(60))
            .sending_within(Duration::from_millis(50));
        // Writes go through while the client reads ...
        server.write_all(&[1; 16]).await.unwrap();
        let mut buf = [0u8; 16];
        client.read_exact(&mut buf).await.unwrap();
        server.write_all(&[2; 16]).await.unwrap();
        // ... and fail once it stops.
        let e = server.write_all(&[3; 64]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
