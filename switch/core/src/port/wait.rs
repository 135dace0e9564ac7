//! Sleeping until a port has frames: `poll(2)` on the ports' descriptors and a wake-up socket.
//!
//! Called only by a worker thread about to go idle; the descriptors belong to ports the same
//! worker owns, so they stay open for the duration of the call.

use std::io;
use std::os::fd::RawFd;

/// Most descriptors one worker waits on (ports × queues + wake-up socket).
pub const MAX_WAIT_FDS: usize = 4096;

/// Waits until one of `fds` is readable or `timeout_ms` passes; returns how many are ready.
/// `pollfds` is caller-owned scratch space, so an idle worker does not allocate.
pub fn wait_readable(
    fds: &[RawFd],
    pollfds: &mut Vec<libc::pollfd>,
    timeout_ms: i32,
) -> io::Result<usize> {
    pollfds.clear();
    pollfds.extend(fds.iter().take(MAX_WAIT_FDS).map(|&fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }));
    // SAFETY: `pollfds` is a valid, initialised array of `len` pollfd structs that lives for
    // the whole call; the kernel only writes their `revents` fields.
    let n = unsafe {
        libc::poll(
            pollfds.as_mut_ptr(),
            pollfds.len() as libc::nfds_t,
            timeout_ms,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(n as usize)
}
