//! How long an accepted TCP connection waited in the listener's accept queue, from the
//! kernel's `TCP_INFO`: the time since the last ACK it received. A client that sends nothing
//! until the server speaks first (grpc-go waits for the server's HTTP/2 settings before it
//! sends a request) leaves no bytes whose receive stamp could show that wait; the handshake's
//! final ACK is the last thing it sent.
//!
//! It also finds the connection a network wait ended on ([`opened_connections`]): the
//! process's established TCP connections that it opened (not accepted), each with the time
//! since it last received data. A request woken by the I/O driver at the moment one of them
//! received data was waiting for that peer.
//!
//! nix does not wrap `TCP_INFO`, so this is the crate's `getsockopt` by hand, and its only
//! `unsafe` code.

#[cfg(any(feature = "arrival", test))]
use std::os::fd::AsFd;
use std::{net::SocketAddr, time::Duration};

/// A socket option's value type: a C struct of integers or an integer, for which all zeros is
/// a valid value (what [`getsockopt`] relies on).
#[cfg(target_os = "linux")]
trait Plain: Copy {}
#[cfg(target_os = "linux")]
impl Plain for libc::tcp_info {}
#[cfg(target_os = "linux")]
impl Plain for libc::c_int {}

/// The option `name` at `level` of the socket `fd`.
#[cfg(target_os = "linux")]
fn getsockopt<T: Plain>(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    name: libc::c_int,
) -> Option<T> {
    let mut value = std::mem::MaybeUninit::<T>::zeroed();
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<T>()).ok()?;
    // SAFETY: `fd` is only read by the call (a descriptor closed meanwhile fails it); `value`
    // is writable for `len` bytes and `len` says so; the kernel writes at most `len` bytes.
    let rc = unsafe { libc::getsockopt(fd, level, name, value.as_mut_ptr().cast(), &mut len) };
    // SAFETY: zeroed, then written (in part, for an older kernel's shorter `tcp_info`) by the
    // kernel; all zeros is valid for a `Plain` type.
    (rc == 0).then(|| unsafe { value.assume_init() })
}

/// `TCP_INFO` of the socket `fd`.
#[cfg(target_os = "linux")]
fn tcp_info(fd: std::os::fd::RawFd) -> Option<libc::tcp_info> {
    getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO)
}

/// Whether the socket `fd` listens.
#[cfg(target_os = "linux")]
fn listens(fd: std::os::fd::RawFd) -> bool {
    getsockopt::<libc::c_int>(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN).is_some_and(|on| on != 0)
}

/// The local (`peer == false`) or remote address of the IP socket `fd`.
#[cfg(target_os = "linux")]
fn address(fd: std::os::fd::RawFd, peer: bool) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    // SAFETY: all zeros is a valid `sockaddr_storage`.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_storage>()).ok()?;
    let out = std::ptr::from_mut(&mut storage).cast::<libc::sockaddr>();
    // SAFETY: `storage` is writable for `len` bytes and `len` says so.
    let rc = unsafe {
        if peer {
            libc::getpeername(fd, out, &mut len)
        } else {
            libc::getsockname(fd, out, &mut len)
        }
    };
    if rc != 0 {
        return None;
    }
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a `sockaddr_in` (family AF_INET), which fits.
            let v4: libc::sockaddr_in = unsafe { std::ptr::read(out.cast()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)),
                u16::from_be(v4.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a `sockaddr_in6` (family AF_INET6), which fits.
            let v6: libc::sockaddr_in6 = unsafe { std::ptr::read(out.cast()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(v6.sin6_addr.s6_addr),
                u16::from_be(v6.sin6_port),
                v6.sin6_flowinfo,
                v6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// An established TCP connection the process opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Opened {
    pub(crate) peer: SocketAddr,
    /// Time since it last received data, to the kernel's tick (a few milliseconds).
    pub(crate) since_data: Duration,
    /// Time since it last sent data, likewise.
    pub(crate) since_sent: Duration,
}

/// The sockets of connections the process opened, as last listed: the descriptor and its peer.
#[cfg(target_os = "linux")]
#[derive(Debug, Default)]
struct Listed {
    sockets: Vec<(std::os::fd::RawFd, SocketAddr)>,
    /// Engine time of the listing (0: never).
    at: u64,
}

/// Listing every descriptor is about four system calls a socket; reading the connections
/// listed is two. A listing is reused for this long, unless a wait ended after it (the
/// connection it ended on may be newer), and then not relisted more often than
/// [`RELIST_EVERY`]: a loaded server with no connection of its own, whose requests each wait
/// a millisecond for their bodies, must not list its descriptors per request (measured: the
/// bare echo's CPU per call went from 1.3x to 1.8x bare).
#[cfg(target_os = "linux")]
const LISTING_KEPT: u64 = 1_000_000_000;
#[cfg(target_os = "linux")]
const RELIST_EVERY: u64 = 10_000_000;

#[cfg(target_os = "linux")]
static LISTED: std::sync::Mutex<Listed> = std::sync::Mutex::new(Listed {
    sockets: Vec::new(),
    at: 0,
});

/// The process's established TCP connections that it opened, for a wait that ended at
/// `woken` (engine ns): from the last listing of its descriptors (see [`LISTING_KEPT`]),
/// each read for its peer (the descriptor may have been reused) and the times since it last
/// received and last sent data. Called only for a request that waited at least a
/// millisecond on something no span or tokio resource named.
#[cfg(target_os = "linux")]
pub(crate) fn opened_connections(woken: u64, now: u64) -> Vec<Opened> {
    const ESTABLISHED: u8 = 1;
    let mut listed = LISTED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let stale = listed.at == 0
        || now.saturating_sub(listed.at) > LISTING_KEPT
        || (listed.at < woken && now.saturating_sub(listed.at) > RELIST_EVERY);
    if stale {
        listed.sockets = list_opened();
        listed.at = now;
    }
    listed
        .sockets
        .iter()
        .filter_map(|&(fd, peer)| {
            let info = tcp_info(fd).filter(|i| i.tcpi_state == ESTABLISHED)?;
            (address(fd, true)? == peer).then(|| Opened {
                peer,
                since_data: Duration::from_millis(u64::from(info.tcpi_last_data_recv)),
                since_sent: Duration::from_millis(u64::from(info.tcpi_last_data_sent)),
            })
        })
        .collect()
}

/// Every IP socket in `/proc/self/fd` that is connected and whose local port is not one the
/// process listens on (an accepted connection has its listener's).
#[cfg(target_os = "linux")]
fn list_opened() -> Vec<(std::os::fd::RawFd, SocketAddr)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut listening = Vec::new();
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path()).is_ok_and(|target| {
            target
                .as_os_str()
                .as_encoded_bytes()
                .starts_with(b"socket:")
        });
        if !is_socket {
            continue;
        }
        let Some(local) = address(fd, false) else {
            continue;
        };
        if listens(fd) {
            listening.push(local.port());
            continue;
        }
        if let Some(peer) = address(fd, true) {
            found.push((local.port(), fd, peer));
        }
    }
    found
        .into_iter()
        .filter(|(port, _, _)| !listening.contains(port))
        .map(|(_, fd, peer)| (fd, peer))
        .collect()
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn opened_connections(_woken: u64, _now: u64) -> Vec<Opened> {
    Vec::new()
}

/// Time since `socket` last received an ACK (the handshake's, on a connection that has sent
/// nothing since), to the millisecond; `None` where the kernel does not say.
#[cfg(all(target_os = "linux", any(feature = "arrival", test)))]
pub(crate) fn since_last_ack(socket: &impl AsFd) -> Option<Duration> {
    use std::os::fd::AsRawFd;
    tcp_info(socket.as_fd().as_raw_fd())
        .map(|info| Duration::from_millis(u64::from(info.tcpi_last_ack_recv)))
}

#[cfg(all(not(target_os = "linux"), any(feature = "arrival", test)))]
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
