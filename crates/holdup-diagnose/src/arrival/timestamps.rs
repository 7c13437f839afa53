//! Linux: the socket options that make the kernel stamp received bytes, and the `recvmsg`
//! that brings the stamp back with the bytes.
//!
//! Two mistakes of earlier code (pingora's `RawStreamWrapper`) are avoided here: the control
//! buffer is handed to the kernel at its full length (a cleared `Vec` has length 0, and nix
//! gives the kernel the slice's length: no room, the stamp is dropped and `MSG_CTRUNC` set),
//! and it is sized for `SCM_TIMESTAMPING`'s three timespecs, not for one.

use std::{
    io::{self, IoSliceMut},
    os::fd::{AsFd, RawFd},
};

use nix::{
    errno::Errno,
    sys::{
        socket::{ControlMessageOwned, MsgFlags, TimestampingFlag, recvmsg, setsockopt, sockopt},
        time::TimeSpec,
    },
};

use super::{enable::Support, realtime};

/// A control buffer with room for one `SCM_TIMESTAMPING` (three timespecs: software, legacy,
/// hardware), which is also room for one `SCM_TIMESTAMPNS`.
pub(crate) fn control_buffer() -> Vec<u8> {
    nix::cmsg_space!([TimeSpec; 3])
}

/// Errors by which a kernel says "not this option" (rather than "not this socket").
fn refused(errno: Errno) -> bool {
    matches!(
        errno,
        Errno::ENOPROTOOPT | Errno::EINVAL | Errno::EOPNOTSUPP | Errno::EPERM
    )
}

/// Turns on software receive timestamps on `socket`: `SO_TIMESTAMPING`, else `SO_TIMESTAMPNS`.
pub(crate) fn enable(socket: &impl AsFd) -> io::Result<Support> {
    let flags = TimestampingFlag::SOF_TIMESTAMPING_RX_SOFTWARE
        | TimestampingFlag::SOF_TIMESTAMPING_SOFTWARE;
    match setsockopt(socket, sockopt::Timestamping, &flags) {
        Ok(()) => return Ok(Support::Timestamping),
        Err(errno) if refused(errno) => {}
        Err(errno) => return Err(errno.into()),
    }
    match setsockopt(socket, sockopt::ReceiveTimestampns, &true) {
        Ok(()) => Ok(Support::TimestampNs),
        Err(errno) if refused(errno) => Ok(Support::Off),
        Err(errno) => Err(errno.into()),
    }
}

/// What one `recvmsg` brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    /// Bytes written into the buffer; 0 at the end of the stream.
    pub bytes: usize,
    /// The kernel's software receive stamp of the newest of them, ns since the Unix epoch.
    pub stamp: Option<u64>,
}

/// One non-blocking `recvmsg` on `fd` into `dst`, keeping the receive stamp.
pub(crate) fn recv(fd: RawFd, dst: &mut [u8], control: &mut [u8]) -> io::Result<Received> {
    let mut iov = [IoSliceMut::new(dst)];
    let msg = recvmsg::<()>(fd, &mut iov, Some(control), MsgFlags::MSG_DONTWAIT)?;
    // `cmsgs` fails only on a truncated control buffer, which this one's size rules out; a
    // stamp lost that way is a missing stamp, not a failed read.
    let stamp = msg.cmsgs().ok().and_then(|cmsgs| {
        cmsgs
            .filter_map(|cmsg| match cmsg {
                ControlMessageOwned::ScmTimestampsns(stamps) => Some(stamps.system),
                ControlMessageOwned::ScmTimestampns(stamp) => Some(stamp),
                _ => None,
            })
            .filter_map(|ts| realtime::timespec_ns(ts.tv_sec(), ts.tv_nsec()))
            .last()
    });
    Ok(Received {
        bytes: msg.bytes,
        stamp,
    })
}
