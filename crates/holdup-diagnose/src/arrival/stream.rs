//! A TCP stream whose reads keep the kernel's receive stamp.
//!
//! Reads go through `recvmsg` with a control buffer instead of `read`, driven the way tokio
//! drives its own reads (`poll_read_ready`, then a non-blocking call under `try_io`, which
//! clears readiness on `WouldBlock`). Each read leaves its marks in the stream's
//! [`ReadMarks`]: the stamp of the newest bytes (in engine time), when the read ran, and when
//! a read found the socket empty. Writes go straight to the inner stream.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

use super::ReadMarks;
use crate::clock;

/// The most one read asks for. A reader that offers more (hyper's read strategy grows to
/// hundreds of KiB) gets a shorter read, because `recvmsg` needs initialised memory and the
/// unfilled part is zeroed before each read: this caps that cost at a few microseconds.
pub(crate) const MAX_READ: usize = 64 * 1024;
/// What a read asks for at first, and at least after a short one. Every read zeroes what it
/// asks for, and the read that finds the socket empty (one per burst of requests) gets
/// nothing for it: asking for [`MAX_READ`] there zeroed 64 KiB per unary call on an idle
/// connection, about 2 000 instructions (callgrind) and a few per cent of the call. Zeroing
/// this much costs about a hundred nanoseconds.
pub(crate) const MIN_READ: usize = 4 * 1024;
/// What a read asks for while the socket's bytes are known or suspected to have waited: the
/// first read after the socket was found empty, and every read after one whose bytes waited
/// [`LATE_FROM`] or more. The kernel stamps the newest bytes a read returns; a read this small
/// returns a few small requests at most (a unary gRPC call is about 100 bytes), so requests
/// that piled up behind a blocked worker each get a stamp near their own arrival instead of
/// all sharing the newest one. A read that finds nothing late goes back to [`MAX_READ`].
pub(crate) const CATCH_UP_READ: usize = 512;
/// Bytes that lay in the socket this long before their read waited for the connection task.
const LATE_FROM: u64 = 1_000_000;

/// A [`TcpStream`] whose reads keep the kernel's receive timestamp in a [`ReadMarks`] other
/// tasks can read: on a socket from a listener passed to [`enable`](super::enable), or passed
/// to [`enable_stream`](super::enable_stream) itself. On any other socket the reads are
/// marked without a stamp.
#[derive(Debug)]
pub struct TimestampedStream {
    inner: TcpStream,
    marks: Arc<ReadMarks>,
    /// Read in [`CATCH_UP_READ`] pieces: the socket was just drained, or its last bytes were
    /// late.
    catching_up: bool,
    /// What the next read that is not catching up asks for: see [`next_read`].
    read_size: usize,
    /// The `recvmsg` control buffer, allocated once per connection at full size.
    #[cfg(target_os = "linux")]
    control: Vec<u8>,
}

impl TimestampedStream {
    /// Wraps an accepted stream.
    pub fn new(inner: TcpStream) -> Self {
        let marks = ReadMarks::new();
        // Just accepted: how long its handshake had been done (its client silent since, or
        // the first read will say more).
        if let Some(waited) = crate::tcp_info::since_last_ack(&inner) {
            marks.record_accept_wait(crate::clock::nanos(waited), clock::now_ns());
        }
        Self {
            inner,
            marks: Arc::new(marks),
            catching_up: true,
            read_size: MIN_READ,
            #[cfg(target_os = "linux")]
            control: super::timestamps::control_buffer(),
        }
    }

    /// The cell this stream's reads leave their marks in.
    pub fn marks(&self) -> &Arc<ReadMarks> {
        &self.marks
    }

    /// The inner stream (for its addresses and socket options).
    pub fn get_ref(&self) -> &TcpStream {
        &self.inner
    }

    /// The inner stream, whose reads no longer keep their stamps.
    pub fn into_inner(self) -> TcpStream {
        self.inner
    }

    /// One non-blocking read into `dst`: the bytes read and the kernel's stamp of the newest
    /// (realtime ns), or `WouldBlock` with readiness cleared.
    #[cfg(target_os = "linux")]
    fn read_once(&mut self, dst: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
        use std::os::fd::AsRawFd;
        let fd = self.inner.as_raw_fd();
        let control = &mut self.control;
        self.inner
            .try_io(tokio::io::Interest::READABLE, || {
                super::timestamps::recv(fd, dst, control)
            })
            .map(|received| (received.bytes, received.stamp))
    }

    #[cfg(not(target_os = "linux"))]
    fn read_once(&mut self, dst: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
        self.inner.try_read(dst).map(|bytes| (bytes, None))
    }

    /// The engine time of a realtime stamp taken by a read at `read_at`.
    fn convert(stamp: Option<u64>, read_at: u64) -> Option<u64> {
        #[cfg(target_os = "linux")]
        {
            stamp.and_then(|stamp| super::realtime::stamp_to_engine(stamp, read_at))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (stamp, read_at);
            None
        }
    }
}

/// The size of the next read after one that asked for `asked` and got `got`: twice as much
/// (up to [`MAX_READ`]) when it filled, else twice what it got, never under [`MIN_READ`]. A
/// body streaming in grows the reads to [`MAX_READ`] in a few; small requests keep them at
/// [`MIN_READ`].
fn next_read(asked: usize, got: usize) -> usize {
    if got >= asked {
        asked.saturating_mul(2).min(MAX_READ)
    } else {
        got.saturating_mul(2).clamp(MIN_READ, MAX_READ)
    }
}

impl AsyncRead for TimestampedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(this.inner.poll_read_ready(cx))?;
            let most = if this.catching_up {
                CATCH_UP_READ
            } else {
                this.read_size
            };
            let want = buf.remaining().min(most);
            let dst = buf.initialize_unfilled_to(want);
            match this.read_once(dst) {
                Ok((bytes, stamp)) => {
                    if bytes > 0 {
                        let read_at = clock::now_ns();
                        let kernel = Self::convert(stamp, read_at);
                        this.marks.record_read(kernel, read_at);
                        if let Some(kernel) = kernel {
                            crate::read_stamp::record(kernel, read_at);
                        }
                        if !this.catching_up {
                            this.read_size = next_read(want, bytes);
                        }
                        this.catching_up =
                            kernel.is_some_and(|k| read_at.saturating_sub(k) >= LATE_FROM);
                    }
                    buf.advance(bytes);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    this.marks.record_drain(clock::now_ns());
                    this.catching_up = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for TimestampedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_grow_while_they_fill_and_fall_back_after_a_short_one() {
        let mut size = MIN_READ;
        let mut steps = 0;
        while size < MAX_READ {
            size = next_read(size, size);
            steps += 1;
        }
        assert_eq!(size, MAX_READ);
        assert_eq!(steps, 4, "4 KiB to 64 KiB in four full reads");
        assert_eq!(next_read(MAX_READ, MAX_READ), MAX_READ);
        assert_eq!(next_read(MAX_READ, 100), MIN_READ, "a unary call's bytes");
        assert_eq!(next_read(MAX_READ, 20_000), 40_000);
    }
}
