//! TAP port backend: one non-blocking TAP file descriptor opened with `IFF_VNET_HDR` and
//! offloads (`TUNSETOFFLOAD`: partial checksums, TSO for IPv4 and IPv6), read into and written
//! from the worker's pool frames, one frame per syscall, each behind its virtio-net header —
//! but consecutive TCP segments of one flow, which are written as one super-frame (software
//! GRO, [`coalesce`](crate::coalesce)): the payloads gathered by one `writev`, not copied.
//!
//! With offloads the kernel hands over TCP super-frames of up to 64 KiB with their checksum
//! left partial, and takes the same back: bulk TCP between two TAP ports crosses the switch as
//! a few large frames instead of many small ones, and nothing is segmented or checksummed in
//! software. Reads land in a jumbo frame; one that fits an ordinary frame is copied into one (a
//! short copy), so jumbo frames only carry super-frames. The frame keeps its header as its [`Offload`]; ports
//! that cannot take offloads get it segmented and checksummed by the worker first.
//!
//! The port owns the descriptor and, when xvsd created the device, the device's lifetime (a
//! TAP created here disappears when the port is dropped, unless made persistent). It belongs to
//! one worker thread (`Send`, not `Sync`). The descriptor stays valid when the device is moved
//! into another network namespace, and [`open_tap`] can open one inside a sandbox from a thread
//! that entered it; when that namespace is deleted the device is destroyed, reads fail, and the
//! port marks itself gone: it closes the descriptor, receives nothing, drops what it is given,
//! and no longer offers a descriptor to poll (a dead TAP polls as always ready).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::{BackendInfo, BackendStats, Burst, PortError, PortIo, PortType, TxOutcome};
use crate::coalesce::{MAX_HEADERS, MAX_SEGMENTS, Run, TcpSegment};
use crate::frame::{FRAME_CAPACITY, Frame, FramePool};
use crate::offload::{Offload, VNET_HDR_LEN};

/// Bytes past a frame's capacity that a read may spill into; any spill marks the read as
/// oversized (the kernel truncates silently when the buffer is short).
const SPILL: usize = 64;

/// `TUNSETIFF`: `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `TUNSETPERSIST`: `_IOW('T', 203, int)`.
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
/// `TUNSETOFFLOAD`: `_IOW('T', 208, unsigned int)`, flags by value.
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
/// `TUNSETVNETHDRSZ`: `_IOW('T', 216, int)`, a pointer to the size.
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
/// `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`.
const TAP_FLAGS: libc::c_short = 0x0002 | 0x1000 | 0x4000;
/// `TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN`: what the kernel may hand over.
const TAP_OFFLOADS: libc::c_ulong = 0x01 | 0x02 | 0x04 | 0x08;

/// How to open a TAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TapOptions {
    /// Keep the device when its last descriptor closes (`TUNSETPERSIST`), so that a restarted
    /// xvsd can open it again; it is then removed by deleting the link.
    pub persist: bool,
}

/// Opens (creating it if missing) the TAP `iface` in the calling thread's network namespace,
/// with virtio-net headers and offloads on, non-blocking. Returns the descriptor and whether
/// the device already existed. Callable from any thread (the netns code opens sandboxes' TAPs
/// from a thread inside the sandbox).
pub fn open_tap(iface: &str, opts: TapOptions) -> Result<(OwnedFd, bool), PortError> {
    let open_err = |what: &'static str, e: io::Error| {
        let hint = match e.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => " (needs CAP_NET_ADMIN: run xvsd as root)",
            Some(libc::ENOENT | libc::ENODEV) => " (/dev/net/tun is missing: load the tun module)",
            Some(libc::EINVAL) => {
                " (an interface of that name exists and is not a TAP opened with virtio-net \
                 headers)"
            }
            Some(libc::EBUSY) => " (the TAP is already open in another process)",
            _ => "",
        };
        PortError::Open {
            iface: iface.to_string(),
            what,
            reason: format!("{e}{hint}"),
        }
    };
    check_name(iface)?;
    let existed = ifindex_of(iface).is_some();
    let path = c"/dev/net/tun";
    // SAFETY: `path` is a valid NUL-terminated string; the result is checked before use.
    let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(open_err("open /dev/net/tun", io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = TAP_FLAGS;
    // SAFETY: TUNSETIFF reads a valid ifreq (NUL-terminated name, checked shorter than
    // IFNAMSIZ) that lives for the call, and may write the final name back into it.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        return Err(open_err("open TAP", io::Error::last_os_error()));
    }
    let hdr_len: libc::c_int = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which lives for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETVNETHDRSZ, &hdr_len) } < 0 {
        return Err(open_err(
            "set virtio-net header size",
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: TUNSETOFFLOAD takes its flags by value.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, TAP_OFFLOADS) } < 0 {
        return Err(open_err("set TAP offloads", io::Error::last_os_error()));
    }
    if opts.persist {
        // SAFETY: TUNSETPERSIST takes its flag by value.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
            return Err(open_err("make TAP persistent", io::Error::last_os_error()));
        }
    }
    set_nonblocking(fd.as_raw_fd()).map_err(|e| open_err("set non-blocking", e))?;
    Ok((fd, existed))
}

/// Refuses names the kernel would refuse (or that could name another file).
fn check_name(iface: &str) -> Result<(), PortError> {
    if iface.is_empty()
        || iface.len() >= libc::IFNAMSIZ
        || iface.contains(['/', '\0', ':'])
        || iface.contains(char::is_whitespace)
        || iface == "."
        || iface == ".."
    {
        return Err(PortError::Open {
            iface: iface.to_string(),
            what: "name",
            reason: format!(
                "not a valid interface name (1 to {} characters, no '/', ':' or spaces)",
                libc::IFNAMSIZ - 1
            ),
        });
    }
    Ok(())
}

/// A TAP device port.
pub struct TapPort {
    name: String,
    ifindex: u32,
    /// `None` once the device is gone. Shared with the writers other workers hold
    /// ([`PortIo::remote_writer`]): a TAP descriptor takes writes from any thread, each one
    /// frame.
    fd: Option<Arc<OwnedFd>>,
    /// A writer for another worker: it never reads (the owner polls the device).
    tx_only: bool,
    spill: [u8; SPILL],
    /// Reads larger than a jumbo frame, dropped.
    rx_oversized: u64,
    /// Reads that failed for a reason other than "nothing to read".
    rx_errors: u64,
    /// Transmit counters, shared with the writers other workers hold.
    tx: Arc<TapTxCounters>,
}

/// A TAP port's transmit counters, added to by its worker and by every worker writing to it.
#[derive(Debug, Default)]
struct TapTxCounters {
    /// Writes that failed (frames dropped).
    errors: AtomicU64,
    /// Frames written as part of a coalesced super-frame.
    coalesced: AtomicU64,
    /// Super-frames written from coalesced runs.
    super_frames: AtomicU64,
}

impl std::fmt::Debug for TapPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapPort")
            .field("name", &self.name)
            .field("gone", &self.fd.is_none())
            .finish()
    }
}

impl TapPort {
    /// Opens the TAP device `iface` in xvsd's namespace, creating it (and setting it up) if it
    /// does not exist.
    pub fn open(iface: &str) -> Result<TapPort, PortError> {
        let (fd, existed) = open_tap(iface, TapOptions::default())?;
        if !existed {
            set_up(iface).map_err(|e| PortError::Open {
                iface: iface.to_string(),
                what: "set up",
                reason: e.to_string(),
            })?;
        }
        let ifindex = ifindex_of(iface).unwrap_or(0);
        tracing::info!(iface, created = !existed, "TAP port open");
        Ok(TapPort::from_fd(iface, fd, ifindex))
    }

    /// A port on a TAP descriptor opened by [`open_tap`] elsewhere (inside a sandbox), shown
    /// under `name`.
    pub fn from_fd(name: &str, fd: OwnedFd, ifindex: u32) -> TapPort {
        TapPort {
            name: name.to_string(),
            ifindex,
            fd: Some(Arc::new(fd)),
            tx_only: false,
            spill: [0; SPILL],
            rx_oversized: 0,
            rx_errors: 0,
            tx: Arc::default(),
        }
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True once the device has been destroyed (its namespace deleted).
    pub fn is_gone(&self) -> bool {
        self.fd.is_none()
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
        self.tx.errors.load(Relaxed)
    }

    fn mark_gone(&mut self) {
        // Dropping the descriptor closes it: nothing is left to read, and a dead TAP would
        // otherwise wake every poll at once.
        self.fd = None;
    }

    /// One read into the stand-by jumbo frame (or, without one, into an ordinary frame and
    /// the spill buffer). A frame that fits an ordinary frame is copied into one, so the jumbo
    /// frame stays for the next read: small frames cost a short copy, super-frames none.
    /// Returns the frame read, `Ok(None)` when the read gave no usable frame, `Err(())` when
    /// reading should stop.
    fn read_one(
        &mut self,
        fd: RawFd,
        pool: &mut FramePool,
        jumbo: &mut Option<Frame>,
    ) -> Result<Option<Frame>, ()> {
        let Some(mut f) = jumbo.take().or_else(|| pool.alloc()) else {
            return Err(());
        };
        let mut hdr = [0u8; VNET_HDR_LEN];
        let buf = pool.buffer_mut(&mut f);
        let iov = [
            libc::iovec {
                iov_base: hdr.as_mut_ptr().cast(),
                iov_len: VNET_HDR_LEN,
            },
            libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            },
            libc::iovec {
                iov_base: self.spill.as_mut_ptr().cast(),
                iov_len: SPILL,
            },
        ];
        // SAFETY: every iovec describes writable memory owned by this call for its duration:
        // the local header, the whole data area of `f` (exclusively owned) and the port's spill
        // buffer; `fd` is the TAP descriptor this port holds open.
        let n = unsafe { libc::readv(fd, iov.as_ptr(), iov.len() as libc::c_int) };
        let is_jumbo = pool.is_jumbo(&f);
        let give_back = |pool: &mut FramePool, f: Frame, jumbo: &mut Option<Frame>| {
            if is_jumbo {
                *jumbo = Some(f);
            } else {
                pool.free(f);
            }
        };
        if n < 0 {
            give_back(pool, f, jumbo);
            let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
            if errno == libc::EAGAIN || errno == libc::EINTR {
                return Err(());
            }
            if device_gone(errno) || errno == libc::EIO {
                self.mark_gone();
            } else {
                self.rx_errors += 1;
            }
            return Err(());
        }
        let n = n as usize;
        if n <= VNET_HDR_LEN {
            // Nothing after the header: not a frame.
            give_back(pool, f, jumbo);
            return if n == 0 { Err(()) } else { Ok(None) };
        }
        let len = n - VNET_HDR_LEN;
        if len > pool.capacity_of(&f) {
            self.rx_oversized += 1;
            give_back(pool, f, jumbo);
            return Ok(None);
        }
        f.set_len(len);
        f.set_offload(Offload::parse(&hdr));
        if !is_jumbo || len > FRAME_CAPACITY {
            return Ok(Some(f));
        }
        // Small: into an ordinary frame, keeping the jumbo one for the next read.
        match pool.clone_frame(&f) {
            Some(small) => {
                *jumbo = Some(f);
                Ok(Some(small))
            }
            // No ordinary frame left: hand over the jumbo one; the next read takes another.
            None => Ok(Some(f)),
        }
    }
}

impl TapPort {
    /// Writes `frames[0]` and the frames after it that continue its TCP run (coalesced into one
    /// super-frame, [`coalesce`](crate::coalesce)) in one `writev`; returns how many frames it
    /// took (at least one). The frames stay in the burst, to be freed by the caller.
    fn write_run(
        &mut self,
        fd: RawFd,
        pool: &FramePool,
        frames: &[Frame],
        outcome: &mut TxOutcome,
    ) -> usize {
        let first = pool.data(&frames[0]);
        let seg = if frames.len() > 1 && frames[0].offload().is_none() {
            TcpSegment::parse(first)
        } else {
            None
        };
        let mut headers = [0u8; MAX_HEADERS];
        let mut vnet = [0u8; VNET_HDR_LEN];
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let mut iov = [empty; 2 + MAX_SEGMENTS];
        let mut bytes = 0u64;
        let (taken, niov, want) = match seg {
            Some(seg) => {
                let mut run = Run::start(first, &seg);
                let mut payloads = [(0usize, 0usize); MAX_SEGMENTS];
                payloads[0] = (seg.headers, seg.payload);
                for f in &frames[1..] {
                    if !f.offload().is_none() {
                        break;
                    }
                    let data = pool.data(f);
                    let Some(next) = TcpSegment::parse(data) else {
                        break;
                    };
                    if !run.push(data, &next) {
                        break;
                    }
                    payloads[run.count() - 1] = (next.headers, next.payload);
                }
                let taken = run.count();
                let (hlen, off) = run.write_headers(&mut headers);
                off.emit(&mut vnet);
                iov[1] = libc::iovec {
                    iov_base: headers.as_mut_ptr().cast(),
                    iov_len: hlen,
                };
                let mut want = VNET_HDR_LEN + hlen;
                for (k, (f, (at, len))) in frames.iter().zip(&payloads[..taken]).enumerate() {
                    let data = pool.data(f);
                    bytes += data.len() as u64;
                    iov[2 + k] = libc::iovec {
                        iov_base: data[*at..].as_ptr().cast_mut().cast(),
                        iov_len: *len,
                    };
                    want += len;
                }
                if taken > 1 {
                    self.tx.coalesced.fetch_add(taken as u64, Relaxed);
                    self.tx.super_frames.fetch_add(1, Relaxed);
                }
                (taken, 2 + taken, want)
            }
            None => {
                frames[0].offload().emit(&mut vnet);
                bytes = first.len() as u64;
                iov[1] = libc::iovec {
                    iov_base: first.as_ptr().cast_mut().cast(),
                    iov_len: first.len(),
                };
                (1, 2, VNET_HDR_LEN + first.len())
            }
        };
        iov[0] = libc::iovec {
            iov_base: vnet.as_mut_ptr().cast(),
            iov_len: VNET_HDR_LEN,
        };
        // SAFETY: every iovec describes readable memory that lives for the call (the local
        // virtio-net and merged headers, and the data of frames the burst holds; writev only
        // reads through them); `fd` is the TAP descriptor this port holds open.
        let n = unsafe { libc::writev(fd, iov.as_ptr(), niov as libc::c_int) };
        if n >= 0 && n as usize == want {
            outcome.sent += taken as u32;
            outcome.bytes += bytes;
        } else {
            outcome.dropped += taken as u32;
            self.tx.errors.fetch_add(1, Relaxed);
            if n < 0 {
                // EAGAIN/ENOBUFS (queue full) and EIO (device down) only drop the frames.
                let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
                if device_gone(errno) {
                    self.mark_gone();
                }
            }
        }
        taken
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
        let Some(fd) = self.fd.as_ref().map(|f| f.as_raw_fd()) else {
            return 0;
        };
        if self.tx_only {
            return 0;
        }
        let start = out.len();
        // One jumbo frame stands by for a read that does not fit an ordinary frame; it is
        // replaced when used and given back at the end of the burst.
        let mut jumbo = pool.alloc_jumbo();
        // Reads that yield no frame (oversized, empty) count against the burst too, so a
        // device flooding garbage cannot keep the worker here.
        for _ in 0..out.remaining_capacity() {
            match self.read_one(fd, pool, &mut jumbo) {
                Ok(Some(frame)) => {
                    if jumbo.is_none() {
                        jumbo = pool.alloc_jumbo();
                    }
                    out.push(frame);
                }
                Ok(None) => {}
                Err(()) => break,
            }
        }
        if let Some(j) = jumbo {
            pool.free(j);
        }
        out.len() - start
    }

    fn tx_burst(&mut self, pool: &mut FramePool, frames: &mut Burst) -> TxOutcome {
        let mut outcome = TxOutcome::default();
        let Some(fd) = self.fd.as_ref().map(|f| f.as_raw_fd()) else {
            outcome.dropped = frames.len() as u32;
            for f in frames.drain(..) {
                pool.free(f);
            }
            return outcome;
        };
        let mut i = 0;
        while i < frames.len() {
            let n = self.write_run(fd, pool, &frames[i..], &mut outcome);
            i += n;
        }
        for f in frames.drain(..) {
            pool.free(f);
        }
        outcome
    }

    fn maintain(&mut self, _pool: &mut FramePool) -> bool {
        false
    }

    fn poll_fds(&self, out: &mut Vec<RawFd>) {
        if let Some(fd) = &self.fd
            && !self.tx_only
        {
            out.push(fd.as_raw_fd());
        }
    }

    fn remote_writer(&self) -> Option<Box<dyn PortIo>> {
        let fd = self.fd.clone()?;
        Some(Box::new(TapPort {
            name: self.name.clone(),
            ifindex: self.ifindex,
            fd: Some(fd),
            tx_only: true,
            spill: [0; SPILL],
            rx_oversized: 0,
            rx_errors: 0,
            tx: self.tx.clone(),
        }))
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            port_type: PortType::Tap,
            mode: "vnet-hdr".into(),
            queues: 1,
            ifindex: self.ifindex,
            fault: self.fd.is_none().then(|| "device gone".to_string()),
        }
    }

    fn takes_offloads(&self) -> bool {
        true
    }

    fn backend_stats(&self) -> BackendStats {
        BackendStats {
            rx_oversized: self.rx_oversized,
            rx_errors: self.rx_errors,
            tx_coalesced: self.tx.coalesced.load(Relaxed),
            tx_super_frames: self.tx.super_frames.load(Relaxed),
            ..BackendStats::default()
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
        for name in ["", "a/b", "0123456789abcdef", "..", "a b", "a:1"] {
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
