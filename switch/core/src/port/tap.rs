//! TAP port backend: one non-blocking TAP file descriptor (`tun-tap`, no packet info, no
//! offloads), read into and written from the worker's pool frames, one frame per syscall.
//!
//! The port owns the descriptor and, when xvsd created the device, the device's lifetime (a
//! TAP created here disappears when the port is dropped). It belongs to one worker thread
//! (`Send`, not `Sync`). The descriptor stays valid when the device is moved into another
//! network namespace; when that namespace is deleted the device is destroyed, reads fail, and
//! the port marks itself gone: it closes the descriptor, receives nothing, drops what it is
//! given, and no longer offers a descriptor to poll (a dead TAP polls as always ready).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{BackendInfo, Burst, PortError, PortIo, PortType, TxOutcome};
use crate::frame::{FRAME_CAPACITY, FramePool};

/// Bytes past a frame's capacity that a read may spill into; any spill marks the read as
/// oversized (the kernel truncates silently when the buffer is short).
const SPILL: usize = 64;

/// A TAP device port.
pub struct TapPort {
    name: String,
    ifindex: u32,
    /// `None` once the device is gone.
    dev: Option<tun_tap::Iface>,
    spill: [u8; SPILL],
    /// Reads larger than a frame, dropped.
    rx_oversized: u64,
    /// Reads that failed for a reason other than "nothing to read", frames dropped on write.
    rx_errors: u64,
    tx_errors: u64,
}

impl std::fmt::Debug for TapPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapPort")
            .field("name", &self.name)
            .field("gone", &self.dev.is_none())
            .finish()
    }
}

impl TapPort {
    /// Opens the TAP device `iface`, creating it (and setting it up) if it does not exist.
    pub fn open(iface: &str) -> Result<TapPort, PortError> {
        let open_err = |what: &'static str, reason: String| PortError::Open {
            iface: iface.to_string(),
            what,
            reason,
        };
        if iface.is_empty()
            || iface.len() >= libc::IFNAMSIZ
            || iface.contains(['/', '\0'])
            || iface.contains(char::is_whitespace)
            || iface == "."
            || iface == ".."
        {
            return Err(open_err(
                "name",
                format!(
                    "not a valid interface name (1 to {} characters, no '/' or spaces)",
                    libc::IFNAMSIZ - 1
                ),
            ));
        }
        let existed = ifindex_of(iface).is_some();
        let dev = tun_tap::Iface::without_packet_info(iface, tun_tap::Mode::Tap).map_err(|e| {
            let hint = match e.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => " (needs CAP_NET_ADMIN: run xvsd as root)",
                Some(libc::ENOENT | libc::ENODEV) => {
                    " (/dev/net/tun is missing: load the tun module)"
                }
                Some(libc::EINVAL) => " (an interface of that name exists and is not a TAP)",
                Some(libc::EBUSY) => " (the TAP is already open in another process)",
                _ => "",
            };
            open_err("open TAP", format!("{e}{hint}"))
        })?;
        set_nonblocking(dev.as_raw_fd())
            .map_err(|e| open_err("set non-blocking", e.to_string()))?;
        if !existed {
            set_up(iface).map_err(|e| open_err("set up", e.to_string()))?;
        }
        let ifindex = ifindex_of(iface).unwrap_or(0);
        tracing::info!(iface, created = !existed, "TAP port open");
        Ok(TapPort {
            name: iface.to_string(),
            ifindex,
            dev: Some(dev),
            spill: [0; SPILL],
            rx_oversized: 0,
            rx_errors: 0,
            tx_errors: 0,
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True once the device has been destroyed (its namespace deleted).
    pub fn is_gone(&self) -> bool {
        self.dev.is_none()
    }

    /// Reads too large for a frame, dropped.
    pub fn rx_oversized(&self) -> u64 {
        self.rx_oversized
    }

    /// Reads that failed other than with "nothing to read".
    pub fn rx_errors(&self) -> u64 {
        self.rx_errors
    }

    /// Writes that failed (device down, queue full, device gone).
    pub fn tx_errors(&self) -> u64 {
        self.tx_errors
    }

    fn mark_gone(&mut self) {
        // Dropping the handle closes the descriptor: nothing is left to read, and a dead TAP
        // would otherwise wake every poll at once.
        self.dev = None;
    }
}

/// Errors that mean the device behind the descriptor no longer exists.
fn device_gone(errno: i32) -> bool {
    matches!(
        errno,
        libc::EBADFD | libc::EFAULT | libc::ENXIO | libc::ENODEV | libc::EBADF
    )
}

impl PortIo for TapPort {
    fn rx_burst(&mut self, pool: &mut FramePool, out: &mut Burst) -> usize {
        let Some(fd) = self.dev.as_ref().map(AsRawFd::as_raw_fd) else {
            return 0;
        };
        let start = out.len();
        while !out.is_full() {
            let Some(mut f) = pool.alloc() else { break };
            let buf = pool.buffer_mut(&mut f);
            let iov = [
                libc::iovec {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: buf.len(),
                },
                libc::iovec {
                    iov_base: self.spill.as_mut_ptr().cast(),
                    iov_len: SPILL,
                },
            ];
            // SAFETY: both iovecs describe writable memory owned by this call for its duration
            // (the frame's data area, which `f` exclusively owns, and the port's spill buffer);
            // `fd` is the TAP descriptor this port holds open.
            let n = unsafe { libc::readv(fd, iov.as_ptr(), 2) };
            if n < 0 {
                pool.free(f);
                let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
                if errno == libc::EAGAIN || errno == libc::EINTR {
                    break;
                }
                if device_gone(errno) || errno == libc::EIO {
                    self.mark_gone();
                } else {
                    self.rx_errors += 1;
                }
                break;
            }
            let n = n as usize;
            if n == 0 {
                pool.free(f);
                break;
            }
            if n > FRAME_CAPACITY {
                self.rx_oversized += 1;
                pool.free(f);
                continue;
            }
            f.set_len(n);
            out.push(f);
        }
        out.len() - start
    }

    fn tx_burst(&mut self, pool: &mut FramePool, frames: &mut Burst) -> TxOutcome {
        let mut outcome = TxOutcome::default();
        for f in frames.drain(..) {
            let Some(fd) = self.dev.as_ref().map(AsRawFd::as_raw_fd) else {
                outcome.dropped += 1;
                pool.free(f);
                continue;
            };
            let data = pool.data(&f);
            // SAFETY: `data` is a readable slice of `data.len()` bytes that lives for the
            // call; `fd` is the TAP descriptor this port holds open.
            let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
            if n >= 0 && n as usize == data.len() {
                outcome.sent += 1;
                outcome.bytes += data.len() as u64;
            } else {
                outcome.dropped += 1;
                self.tx_errors += 1;
                if n < 0 {
                    // EAGAIN/ENOBUFS (queue full) and EIO (device down) only drop the frame.
                    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
                    if device_gone(errno) {
                        self.mark_gone();
                    }
                }
            }
            pool.free(f);
        }
        outcome
    }

    fn maintain(&mut self, _pool: &mut FramePool) -> bool {
        false
    }

    fn poll_fds(&self, out: &mut Vec<RawFd>) {
        if let Some(dev) = &self.dev {
            out.push(dev.as_raw_fd());
        }
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            port_type: PortType::Tap,
            mode: "tap".into(),
            queues: 1,
            ifindex: self.ifindex,
            fault: self.dev.is_none().then(|| "device gone".to_string()),
        }
    }

    fn detach(&mut self, _pool: &mut FramePool) {
        // Every frame is read into and written from the pool within one call: nothing held.
    }
}

fn ifindex_of(iface: &str) -> Option<u32> {
    let name = CString::new(iface).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string that lives for the call.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (idx != 0).then_some(idx)
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor this process holds open; F_GETFL takes no argument.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above; F_SETFL takes an int of flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets IFF_UP on `iface` through SIOCSIFFLAGS on a throwaway datagram socket.
fn set_up(iface: &str) -> io::Result<()> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain data (a name and a union of integers/addresses); all-zero is a
    // valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq with a NUL-terminated name (checked shorter than
    // IFNAMSIZ by the caller) that lives for the call; the kernel writes the flags into it.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the union's flags member, so reading it is defined.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: as above; the kernel only reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused() {
        for name in ["", "a/b", "0123456789abcdef", "..", "a b"] {
            let err = TapPort::open(name).unwrap_err();
            assert!(
                matches!(err, PortError::Open { what: "name", .. }),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn gone_errors() {
        assert!(device_gone(libc::EBADFD));
        assert!(!device_gone(libc::EAGAIN));
    }
}
