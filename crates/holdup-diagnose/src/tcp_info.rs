//! How long an accepted TCP connection waited in the listener's accept queue, from the
//! kernel's `TCP_INFO`: the time since the last ACK it received. A client that sends nothing
//! until the server speaks first (grpc-go waits for the server's HTTP/2 settings before it
//! sends a request) leaves no bytes whose receive stamp could show that wait; the handshake's
//! final ACK is the last thing it sent.
//!
//! nix does not wrap `TCP_INFO`, so this is the crate's one `getsockopt` by hand.

use std::{os::fd::AsFd, time::Duration};

/// Time since `socket` last received an ACK (the handshake's, on a connection that has sent
/// nothing since), to the millisecond; `None` where the kernel does not say.
#[cfg(target_os = "linux")]
pub(crate) fn since_last_ack(socket: &impl AsFd) -> Option<Duration> {
    use std::os::fd::AsRawFd;
    // SAFETY: `tcp_info` is a plain C struct of integers, for which all zeros is valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::tcp_info>()).ok()?;
    // SAFETY: the descriptor is borrowed for the call; `info` is writable for `len` bytes and
    // `len` says so; the kernel writes at most `len` bytes and sets `len` to what it wrote.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::from_mut(&mut info).cast(),
            &mut len,
        )
    };
    (rc == 0).then(|| Duration::from_millis(u64::from(info.tcpi_last_ack_recv)))
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn since_last_ack(_socket: &impl AsFd) -> Option<Duration> {
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// A connection accepted 200 ms after its handshake, its client silent, says so.
    #[test]
    fn an_accept_queue_wait_shows() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let (accepted, _) = listener.accept().unwrap();
        let waited = super::since_last_ack(&accepted).expect("TCP_INFO on Linux");
        assert!(
            waited >= std::time::Duration::from_millis(150),
            "{waited:?}"
        );
        assert!(waited < std::time::Duration::from_secs(10), "{waited:?}");
    }
}
