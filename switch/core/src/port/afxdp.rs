//! AF_XDP port backend: one xsk-rs socket per active receive queue of an interface, all on
//! the owning worker's UMEM (its [`FramePool`]), so frames move between AF_XDP ports without a
//! copy.
//!
//! The port owns its sockets and the rings behind them (fill, completion, RX, TX) and keeps a
//! bitmap of the pool chunks it has lent to the kernel, so every chunk coming back from a ring
//! is checked before it becomes a [`Frame`] again and [`PortIo::detach`] can give back exactly
//! what the kernel still held. Like every port it belongs to one worker thread: it is `Send`,
//! not `Sync`, and all of its methods run on that thread. Nothing on the receive, transmit or
//! housekeeping path allocates or logs; opening (control path) may do both.
//!
//! Each UMEM gets, before its first port, an anchor: the UMEM's own socket bound to a private,
//! down TAP (`xvsumemN`), kept in a process-wide registry (behind a mutex, touched only when
//! opening ports and by [`release_umem`]). Without it the first port's queue would stay bound
//! for the UMEM's lifetime (see `UmemAnchor`).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::raw::{c_int, c_void};
use std::time::Duration;

use xsk_rs::config::{BindFlags, Interface, LibxdpFlags, QueueSize, SocketConfig, XdpFlags};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use super::{
    BURST, BackendInfo, BackendStats, Burst, PortError, PortIo, PortType, TxOutcome, XdpMode,
};
use crate::frame::{DATA_OFFSET, FRAME_CAPACITY, FRAME_SIZE, Frame, FramePool};

/// Depth of every AF_XDP ring (fill, completion, RX, TX); the worker creates its UMEM with the
/// same size for the fill and completion rings.
pub const RING_SIZE: u32 = 2048;

/// Frames each socket keeps on its fill ring when the pool allows.
pub const FILL_TARGET: u32 = 1024;

/// Frames the fill rings never take from the pool: the worker needs them for flood copies and
/// other ports' receive buffers.
pub const POOL_RESERVE: usize = 256;

/// Descriptors moved per ring operation (stack of the port, no allocation).
const SCRATCH: usize = 2 * BURST;

/// Bind attempts while the kernel still releases a previous socket on the queue (EBUSY).
const BIND_ATTEMPTS: u32 = 8;

/// Frames a worker's pool should hold to serve `sockets` AF_XDP sockets (the sum over its
/// AF_XDP ports of their queue counts) without the fill rings running dry: a full fill target
/// and a full TX ring per socket, plus the reserve and a few bursts in flight per socket.
pub fn suggested_pool_frames(sockets: u32) -> u32 {
    let sockets = sockets.max(1);
    let per_socket = FILL_TARGET + RING_SIZE + 2 * BURST as u32;
    sockets
        .saturating_mul(per_socket)
        .saturating_add(POOL_RESERVE as u32)
        .min(1 << 20)
}

/// libbpf, linked into every binary through xsk-rs's libxdp-sys/libbpf-sys; only the two calls
/// used to find and remove a stale XDP program are declared.
mod libbpf {
    use std::os::raw::{c_int, c_void};

    unsafe extern "C" {
        /// `int bpf_xdp_detach(int ifindex, __u32 flags, const struct bpf_xdp_attach_opts *)`.
        pub fn bpf_xdp_detach(ifindex: c_int, flags: u32, opts: *const c_void) -> c_int;
        /// `int bpf_xdp_query_id(int ifindex, int flags, __u32 *prog_id)`.
        pub fn bpf_xdp_query_id(ifindex: c_int, flags: c_int, prog_id: *mut u32) -> c_int;
    }
}

/// The socket that owns a UMEM, bound to a private TAP so that no port ever owns it.
///
/// libxdp registers a UMEM on its own socket and uses that very socket for the first
/// interface/queue bound on the UMEM. The kernel never unbinds it, so once that port went away
/// its queue stayed held for the UMEM's lifetime (re-adding the interface, here or on another
/// worker, failed with EBUSY/EINVAL), and with no socket left libxdp reused the spent socket
/// for the next bind (ENOMEM). Binding that first socket to a TAP of its own, before any port,
/// keeps every port's sockets ordinary and releasable. The anchor also fixes the bind flags
/// every socket on the UMEM inherits (copy mode, need-wakeup).
struct UmemAnchor {
    /// Dropped first: the socket, then the device it is bound to.
    _rings: (TxQueue, RxQueue, Option<(FillQueue, CompQueue)>),
    _tap: tun_tap::Iface,
}

/// Anchors by UMEM (address of its memory). An entry lives until [`release_umem`] or process
/// exit, and keeps its UMEM mapped that long.
static ANCHORS: std::sync::Mutex<Vec<(usize, UmemAnchor)>> = std::sync::Mutex::new(Vec::new());

/// Name pattern of anchor TAPs (the kernel picks the number).
const ANCHOR_NAME: &str = "xvsumem%d";

fn umem_key(pool: &FramePool, umem: &Umem) -> Option<usize> {
    let desc = crate::umem::desc(pool, 0, 0)?;
    // SAFETY: `desc` describes chunk 0 of this UMEM; only the address of its data segment is
    // taken, no byte is read or written.
    let ptr = unsafe { umem.data(&desc) }.contents().as_ptr();
    Some(ptr as usize)
}

/// Binds the UMEM's own socket to a private TAP (`xvsumemN`, down, never carrying traffic)
/// unless that is done already. Must run before the first port socket on the UMEM; `open`
/// does it. Failing leaves AF_XDP working, with re-adding a removed port unreliable.
fn anchor_umem(pool: &FramePool, umem: &Umem) {
    let Some(key) = umem_key(pool, umem) else {
        return;
    };
    let mut anchors = ANCHORS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if anchors.iter().any(|(k, _)| *k == key) {
        return;
    }
    match make_anchor(umem) {
        Ok(anchor) => anchors.push((key, anchor)),
        Err(e) => tracing::warn!(
            "cannot bind the UMEM's own AF_XDP socket to a private TAP ({e}); ports work, \
             but a removed AF_XDP port may not be re-added until xvsd restarts"
        ),
    }
}

fn make_anchor(umem: &Umem) -> Result<UmemAnchor, String> {
    let tap = tun_tap::Iface::without_packet_info(ANCHOR_NAME, tun_tap::Mode::Tap)
        .map_err(|e| format!("create TAP: {e}"))?;
    let ifc: Interface = tap.name().parse().map_err(|_| "bad TAP name".to_string())?;
    let small = QueueSize::new(64).map_err(|e| e.to_string())?;
    let cfg = SocketConfig::builder()
        .rx_queue_size(small)
        .tx_queue_size(small)
        .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
        .xdp_flags(XdpFlags::empty())
        .bind_flags(BindFlags::XDP_COPY | BindFlags::XDP_USE_NEED_WAKEUP)
        .build();
    // SAFETY: INHIBIT_PROG_LOAD is set, so no XDP program is attached or released for this
    // socket; the TAP was just created, so its queue is bound nowhere else.
    let rings = unsafe { Socket::new(cfg, umem, &ifc, 0) }.map_err(|e| {
        let os = std::error::Error::source(&e).map(|s| s.to_string());
        format!("bind {}: {e}: {}", tap.name(), os.unwrap_or_default())
    })?;
    Ok(UmemAnchor {
        _rings: rings,
        _tap: tap,
    })
}

/// Lets go of the socket that keeps `pool`'s UMEM registered (and of its TAP), so that the
/// UMEM is unmapped when the pool is dropped. Call it only once every AF_XDP port of the pool
/// has been dropped, right before dropping the pool: the UMEM takes no new port afterwards.
pub fn release_umem(pool: &FramePool) {
    let Some(umem) = crate::umem::umem_of(pool) else {
        return;
    };
    let Some(key) = umem_key(pool, umem) else {
        return;
    };
    let released = {
        let mut anchors = ANCHORS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        anchors
            .iter()
            .position(|(k, _)| *k == key)
            .map(|i| anchors.swap_remove(i))
    };
    drop(released);
}

/// One bound queue: its socket's four rings and what the port has lent to them.
struct Queue {
    rx: RxQueue,
    tx: TxQueue,
    fill: FillQueue,
    comp: CompQueue,
    /// Chunks on the fill ring (or in the RX ring, not yet consumed).
    in_fill: u32,
    /// Chunks on the TX ring or awaiting completion.
    in_tx: u32,
}

/// An AF_XDP port on every active queue of one interface.
pub struct AfxdpPort {
    iface: String,
    ifindex: u32,
    mode: &'static str,
    queues: Vec<Queue>,
    /// Bit per pool chunk: set while the chunk is on one of this port's kernel rings.
    lent: Vec<u64>,
    scratch: [FrameDesc; SCRATCH],
    rx_next: usize,
    /// Refill passes cut short because the pool was down to its reserve.
    fill_short: u64,
    /// Descriptors from the kernel that did not name a chunk this port had lent, or put the
    /// data where a frame cannot hold it.
    bad_descs: u64,
    /// TX wake-ups that failed for a reason other than a busy ring.
    kick_errors: u64,
    /// On an interface shared with the host: the steering program (after `queues`, so the
    /// sockets close before it is detached).
    steering: Option<super::steer::Steering>,
}

impl std::fmt::Debug for AfxdpPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfxdpPort")
            .field("iface", &self.iface)
            .field("mode", &self.mode)
            .field("queues", &self.queues.len())
            .finish()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Attach {
    Native,
    Generic,
}

impl Attach {
    fn flags(self) -> XdpFlags {
        match self {
            Attach::Native => XdpFlags::XDP_FLAGS_DRV_MODE,
            Attach::Generic => XdpFlags::XDP_FLAGS_SKB_MODE,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Attach::Native => "native",
            Attach::Generic => "generic",
        }
    }
}

impl AfxdpPort {
    fn with_queues(
        iface: &str,
        ifindex: u32,
        mode: &'static str,
        queues: Vec<Queue>,
        steering: Option<super::steer::Steering>,
        pool: &mut FramePool,
    ) -> AfxdpPort {
        let mut port = AfxdpPort {
            iface: iface.to_string(),
            ifindex,
            mode,
            queues,
            lent: vec![0; (pool.capacity() as usize).div_ceil(64)],
            scratch: [FrameDesc::default(); SCRATCH],
            rx_next: 0,
            fill_short: 0,
            bad_descs: 0,
            kick_errors: 0,
            steering,
        };
        port.refill(pool);
        tracing::info!(
            iface,
            mode = port.mode,
            queues = port.queues.len(),
            shared = port.steering.is_some(),
            "AF_XDP port bound"
        );
        port
    }

    /// Binds sockets on every active queue of `iface`, an interface shared with the host:
    /// xvs's steering program ([`super::steer`]) sends only frames for `shared.mac` and ARP
    /// about `shared.ip` to them; everything else goes on to the host's stack.
    pub fn open_shared(
        iface: &str,
        mode: XdpMode,
        pool: &mut FramePool,
        shared: super::SharedWith,
    ) -> Result<AfxdpPort, PortError> {
        let (umem, ifindex, ifc) = prepare(iface, pool)?;
        let modes: &[bool] = match mode {
            XdpMode::Auto => &[true, false],
            XdpMode::Native => &[true],
            XdpMode::Generic => &[false],
        };
        let steering =
            super::steer::Steering::attach(iface, ifindex, modes, shared.mac, shared.ip)?;
        let attach = if steering.mode() == "native" {
            Attach::Native
        } else {
            Attach::Generic
        };
        let cfg = socket_config(
            iface,
            attach,
            LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD,
        )?;
        let mut queues = Vec::new();
        let mut removed_stale = true; // never remove a program here: ours is the one attached
        for qid in 0..active_rx_queues(iface) {
            let q = bind_queue(iface, ifindex, &ifc, qid, cfg, &umem, &mut removed_stale)?;
            steering.add_socket(iface, qid, q.rx.fd().as_raw_fd())?;
            queues.push(q);
        }
        Ok(AfxdpPort::with_queues(
            iface,
            ifindex,
            steering.mode(),
            queues,
            Some(steering),
            pool,
        ))
    }

    /// Binds a socket on every active receive queue of `iface`, in the XDP `mode` asked for
    /// (`Auto`: native, falling back to generic), sharing the UMEM of `pool`, and puts receive
    /// buffers from `pool` on each fill ring.
    pub fn open(iface: &str, mode: XdpMode, pool: &mut FramePool) -> Result<AfxdpPort, PortError> {
        let (umem, ifindex, ifc) = prepare(iface, pool)?;
        let nqueues = active_rx_queues(iface);
        let attempts: &[Attach] = match mode {
            XdpMode::Auto => &[Attach::Native, Attach::Generic],
            XdpMode::Native => &[Attach::Native],
            XdpMode::Generic => &[Attach::Generic],
        };
        let mut errors: Vec<PortError> = Vec::new();
        for &attach in attempts {
            match bind_all(iface, ifindex, &ifc, nqueues, attach, &umem) {
                Ok((queues, used)) => {
                    return Ok(AfxdpPort::with_queues(
                        iface,
                        ifindex,
                        used.name(),
                        queues,
                        None,
                        pool,
                    ));
                }
                Err(e) => {
                    tracing::debug!(iface, mode = attach.name(), "AF_XDP bind failed: {e}");
                    errors.push(e);
                }
            }
        }
        // One failure is reported as it is; with Auto, both modes' reasons are kept.
        if errors.len() == 1
            && let Some(e) = errors.pop()
        {
            return Err(e);
        }
        let reason = errors
            .iter()
            .map(|e| match e {
                PortError::Open { reason, .. } => reason.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join("; ");
        Err(PortError::Open {
            iface: iface.to_string(),
            what: "create AF_XDP socket",
            reason,
        })
    }

    /// Refill passes that could not top the fill rings up because the pool was at its reserve
    /// (the pool is too small for the ports on this worker).
    pub fn fill_short(&self) -> u64 {
        self.fill_short
    }

    /// Descriptors returned by the kernel that the port refused (unknown chunk or bad offset).
    pub fn bad_descs(&self) -> u64 {
        self.bad_descs
    }

    /// TX wake-ups (`sendto`) that failed with an unexpected error.
    pub fn kick_errors(&self) -> u64 {
        self.kick_errors
    }

    /// Frames currently lent to the kernel (fill rings plus TX in flight).
    pub fn frames_lent(&self) -> u32 {
        self.queues.iter().map(|q| q.in_fill + q.in_tx).sum()
    }

    #[inline]
    fn lend(&mut self, chunk: u32) {
        if let Some(w) = self.lent.get_mut(chunk as usize / 64) {
            *w |= 1 << (chunk % 64);
        }
    }

    /// Takes `chunk` back from the kernel; false if the port had not lent it.
    #[inline]
    fn take_back(&mut self, chunk: u32) -> bool {
        match self.lent.get_mut(chunk as usize / 64) {
            Some(w) if *w & (1 << (chunk % 64)) != 0 => {
                *w &= !(1 << (chunk % 64));
                true
            }
            _ => false,
        }
    }

    /// Tops every fill ring up towards [`FILL_TARGET`], never taking the pool below
    /// [`POOL_RESERVE`].
    fn refill(&mut self, pool: &mut FramePool) {
        for qi in 0..self.queues.len() {
            let q = &mut self.queues[qi];
            let missing = FILL_TARGET.saturating_sub(q.in_fill);
            if missing == 0 {
                continue;
            }
            let room = q.fill.nb_free(missing).min(missing);
            let spare = pool.available().saturating_sub(POOL_RESERVE) as u32;
            if spare < room {
                self.fill_short += 1;
            }
            let mut todo = room.min(spare) as usize;
            while todo > 0 {
                let n = todo.min(SCRATCH);
                let mut got = 0;
                while got < n {
                    let Some(chunk) = pool.alloc_chunk() else {
                        break;
                    };
                    match crate::umem::desc(pool, chunk, 0) {
                        Some(d) => {
                            self.scratch[got] = d;
                            got += 1;
                        }
                        None => {
                            pool.free_chunk(chunk);
                            break;
                        }
                    }
                }
                if got == 0 {
                    break;
                }
                let q = &mut self.queues[qi];
                // SAFETY: every descriptor names a chunk of the UMEM this socket was created
                // on, just taken from the pool's free list, so nothing else (another ring or a
                // frame handle) refers to it; the ring has room for all `got` (checked above).
                let done = unsafe { q.fill.produce(&self.scratch[..got]) };
                q.in_fill += done as u32;
                for i in 0..got {
                    let chunk = pool.chunk_of_addr(self.scratch[i].addr());
                    if i < done {
                        self.lend(chunk);
                    } else {
                        pool.free_chunk(chunk);
                    }
                }
                if done < got {
                    break;
                }
                todo -= got;
            }
            let q = &mut self.queues[qi];
            if q.fill.needs_wakeup() {
                // A zero-timeout poll is the fill ring's wake-up; the result only says whether
                // frames are waiting, which the next receive burst finds out anyway.
                let _ = q.fill.wakeup(q.rx.fd_mut(), 0);
            }
        }
    }

    /// Returns completed TX chunks of queue `qi` to the pool.
    fn reap(&mut self, qi: usize, pool: &mut FramePool) {
        // Bounded: the completion ring holds at most RING_SIZE entries.
        for _ in 0..(RING_SIZE as usize).div_ceil(SCRATCH) {
            // SAFETY: the completion ring only carries addresses of this socket's UMEM, which
            // is the one behind `pool`.
            let n = unsafe { self.queues[qi].comp.consume(&mut self.scratch) };
            for i in 0..n {
                let chunk = pool.chunk_of_addr(self.scratch[i].addr());
                if self.take_back(chunk) {
                    pool.free_chunk(chunk);
                    let q = &mut self.queues[qi];
                    q.in_tx = q.in_tx.saturating_sub(1);
                } else {
                    self.bad_descs += 1;
                }
            }
            if n < SCRATCH {
                break;
            }
        }
    }
}

impl PortIo for AfxdpPort {
    fn rx_burst(&mut self, pool: &mut FramePool, out: &mut Burst) -> usize {
        let start = out.len();
        let nq = self.queues.len();
        for k in 0..nq {
            let want = out.remaining_capacity().min(SCRATCH);
            if want == 0 {
                break;
            }
            let qi = (self.rx_next + k) % nq;
            // SAFETY: the RX ring only carries addresses of this socket's UMEM (the pool's);
            // each one is checked against the lent bitmap below before it becomes a frame.
            let n = unsafe { self.queues[qi].rx.consume(&mut self.scratch[..want]) };
            for i in 0..n {
                let d = self.scratch[i];
                let chunk = pool.chunk_of_addr(d.addr());
                if !self.take_back(chunk) {
                    self.bad_descs += 1;
                    continue;
                }
                let q = &mut self.queues[qi];
                q.in_fill = q.in_fill.saturating_sub(1);
                let len = d.lengths().data();
                if d.addr() % FRAME_SIZE as usize != DATA_OFFSET as usize || len > FRAME_CAPACITY {
                    self.bad_descs += 1;
                    pool.free_chunk(chunk);
                    continue;
                }
                // The chunk came back from the kernel and was lent by this port (bit checked
                // and cleared above), so this is the only handle to it.
                out.push(Frame::from_raw(chunk, len as u32));
            }
        }
        if nq > 0 {
            self.rx_next = (self.rx_next + 1) % nq;
        }
        out.len() - start
    }

    fn tx_burst(&mut self, pool: &mut FramePool, frames: &mut Burst) -> TxOutcome {
        let mut outcome = TxOutcome::default();
        let mut n = 0;
        for mut f in frames.drain(..) {
            // A frame whose header was pushed or pulled goes back to where the ring expects
            // its data (a memmove; xsk-rs descriptors cannot start elsewhere).
            if !pool.reset_head(&mut f) {
                pool.free(f);
                outcome.dropped += 1;
                continue;
            }
            let (chunk, len) = f.into_raw();
            match crate::umem::desc(pool, chunk, len) {
                Some(d) if n < SCRATCH && !self.queues.is_empty() => {
                    self.scratch[n] = d;
                    n += 1;
                }
                _ => {
                    pool.free_chunk(chunk);
                    outcome.dropped += 1;
                }
            }
        }
        let mut done = 0;
        for qi in 0..self.queues.len() {
            if done == n {
                break;
            }
            let q = &mut self.queues[qi];
            let room = (q.tx.nb_free((n - done) as u32) as usize).min(n - done);
            if room == 0 {
                continue;
            }
            // SAFETY: each descriptor names a chunk of this socket's UMEM whose frame handle
            // was consumed above, so no other ring or handle refers to it until it comes back
            // on the completion ring; the ring has room for all of them (checked above).
            let sent = unsafe { q.tx.produce(&self.scratch[done..done + room]) };
            q.in_tx += sent as u32;
            if sent > 0 && q.tx.needs_wakeup() && q.tx.wakeup().is_err() {
                self.kick_errors += 1;
            }
            for i in done..done + sent {
                let d = self.scratch[i];
                outcome.bytes += d.lengths().data() as u64;
                self.lend(pool.chunk_of_addr(d.addr()));
            }
            outcome.sent += sent as u32;
            done += sent;
        }
        for i in done..n {
            pool.free_chunk(pool.chunk_of_addr(self.scratch[i].addr()));
            outcome.dropped += 1;
        }
        outcome
    }

    fn maintain(&mut self, pool: &mut FramePool) -> bool {
        let mut busy = false;
        for qi in 0..self.queues.len() {
            self.reap(qi, pool);
            let q = &mut self.queues[qi];
            if q.in_tx > 0 {
                busy = true;
                // Copy mode sends at most 32 descriptors per sendto: kick while any are left
                // on the ring.
                let queued = RING_SIZE.saturating_sub(q.tx.nb_free_exact());
                if queued > 0 && q.tx.needs_wakeup() && q.tx.wakeup().is_err() {
                    self.kick_errors += 1;
                }
            }
        }
        self.refill(pool);
        busy
    }

    fn poll_fds(&self, out: &mut Vec<RawFd>) {
        out.extend(self.queues.iter().map(|q| q.rx.fd().as_raw_fd()));
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            port_type: PortType::Afxdp,
            mode: if self.steering.is_some() {
                format!("{} shared", self.mode)
            } else {
                self.mode.to_string()
            },
            queues: self.queues.len() as u32,
            ifindex: self.ifindex,
            fault: None,
        }
    }

    fn frames_held(&self) -> usize {
        self.frames_lent() as usize
    }

    fn backend_stats(&self) -> BackendStats {
        let mut s = BackendStats::default();
        for q in &self.queues {
            if let Ok(x) = q.rx.fd().xdp_statistics() {
                s.rx_ring_full += x.rx_ring_full();
                s.fill_empty += x.rx_fill_ring_empty_descs();
                s.invalid_descs += x.rx_invalid_descs() + x.tx_invalid_descs();
                s.rx_dropped += x.rx_dropped();
            }
        }
        s
    }

    fn detach(&mut self, pool: &mut FramePool) {
        for qi in 0..self.queues.len() {
            self.reap(qi, pool);
        }
        // Closing the sockets first means the kernel no longer touches any chunk it held, so
        // every chunk still marked as lent can go back to the pool at once.
        self.queues.clear();
        for (w, word) in self.lent.iter_mut().enumerate() {
            while *word != 0 {
                let bit = word.trailing_zeros();
                *word &= !(1 << bit);
                pool.free_chunk(w as u32 * 64 + bit);
            }
        }
    }
}

/// Binds every queue in `attach` mode; returns the queues and the mode the kernel actually
/// runs the XDP program in.
///
/// A program found attached before binding and reused by libxdp is one a previous xvsd left
/// behind when it was killed (its reference count never drops, so it would stay attached, in
/// whatever mode it was loaded in, after this port closes): the sockets are closed, the
/// program removed, and the queues bound again once.
/// What every port of `pool` needs before binding: the worker's UMEM (anchored), the
/// interface's index and xsk-rs's name for it; locked memory raised as far as allowed.
fn prepare(iface: &str, pool: &FramePool) -> Result<(Umem, u32, Interface), PortError> {
    let Some(umem) = crate::umem::umem_of(pool).cloned() else {
        return Err(PortError::AfxdpUnavailable(format!(
            "cannot attach {iface}: this worker's frame pool is not an AF_XDP UMEM \
             (UMEM creation failed at start-up; see xvsd's log, or use a TAP port)"
        )));
    };
    let ifindex = ifindex_of(iface)?;
    let ifc: Interface = iface
        .parse()
        .map_err(|_| PortError::NoSuchInterface(iface.to_string()))?;
    raise_memlock();
    anchor_umem(pool, &umem);
    Ok((umem, ifindex, ifc))
}

/// The sockets' configuration: rings of [`RING_SIZE`], copy mode with need-wakeup, in
/// `attach`'s XDP mode; `libxdp` says whether libxdp loads its own program.
fn socket_config(
    iface: &str,
    attach: Attach,
    libxdp: LibxdpFlags,
) -> Result<SocketConfig, PortError> {
    let qs = QueueSize::new(RING_SIZE).map_err(|e| PortError::Open {
        iface: iface.to_string(),
        what: "ring size",
        reason: e.to_string(),
    })?;
    Ok(SocketConfig::builder()
        .rx_queue_size(qs)
        .tx_queue_size(qs)
        .libxdp_flags(libxdp)
        .xdp_flags(attach.flags())
        .bind_flags(BindFlags::XDP_COPY | BindFlags::XDP_USE_NEED_WAKEUP)
        .build())
}

fn bind_all(
    iface: &str,
    ifindex: u32,
    ifc: &Interface,
    nqueues: u32,
    attach: Attach,
    umem: &Umem,
) -> Result<(Vec<Queue>, Attach), PortError> {
    let cfg = socket_config(iface, attach, LibxdpFlags::empty())?;
    let mut removed_stale = false;
    loop {
        let before = attached_program(ifindex);
        let mut queues = Vec::with_capacity(nqueues as usize);
        for qid in 0..nqueues {
            queues.push(bind_queue(
                iface,
                ifindex,
                ifc,
                qid,
                cfg,
                umem,
                &mut removed_stale,
            )?);
        }
        let after = attached_program(ifindex);
        let used = after.map_or(attach, |(mode, _)| mode);
        let reused = before.is_some() && before == after;
        if !reused && used == attach {
            return Ok((queues, used));
        }
        if removed_stale {
            if used == attach {
                return Ok((queues, used));
            }
            return Err(PortError::Open {
                iface: iface.to_string(),
                what: "XDP mode",
                reason: format!(
                    "asked for {} XDP but the program runs in {} mode",
                    attach.name(),
                    used.name()
                ),
            });
        }
        drop(queues);
        tracing::warn!(
            iface,
            "removing a stale {} XDP program (left by a previous xvsd?)",
            used.name()
        );
        detach_xdp(ifindex);
        removed_stale = true;
    }
}

/// Binds one queue, retrying while the kernel is still releasing a previous socket (EBUSY)
/// and once after removing an XDP program that keeps libxdp from attaching its own (EEXIST).
fn bind_queue(
    iface: &str,
    ifindex: u32,
    ifc: &Interface,
    qid: u32,
    cfg: SocketConfig,
    umem: &Umem,
    removed_stale: &mut bool,
) -> Result<Queue, PortError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        // SAFETY: the flag XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD is only required when this
        // (interface, queue) pair is already bound on this UMEM; that case returns no fill and
        // completion rings and is refused just below, and its socket is dropped at once.
        let res = unsafe { Socket::new(cfg, umem, ifc, qid) };
        let err = match res {
            Ok((tx, rx, Some((fill, comp)))) => {
                return Ok(Queue {
                    rx,
                    tx,
                    fill,
                    comp,
                    in_fill: 0,
                    in_tx: 0,
                });
            }
            Ok((_, _, None)) => {
                return Err(PortError::Open {
                    iface: iface.to_string(),
                    what: "bind queue",
                    reason: format!(
                        "queue {qid} is already bound by a port of this worker \
                         (is {iface} attached twice?)"
                    ),
                });
            }
            Err(e) => e,
        };
        let os = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<io::Error>())
            .and_then(io::Error::raw_os_error);
        match os {
            Some(libc::EBUSY) if attempt < BIND_ATTEMPTS => {
                std::thread::sleep(Duration::from_millis(25 * u64::from(attempt)));
                continue;
            }
            Some(libc::EEXIST) if !*removed_stale && attached_program(ifindex).is_some() => {
                tracing::warn!(
                    iface,
                    queue = qid,
                    "another XDP program is attached; removing it and retrying"
                );
                detach_xdp(ifindex);
                *removed_stale = true;
                attempt = 0;
                continue;
            }
            _ => {}
        }
        return Err(PortError::Open {
            iface: iface.to_string(),
            what: "create AF_XDP socket",
            reason: describe_bind_error(os, qid, cfg),
        });
    }
}

fn describe_bind_error(os: Option<i32>, qid: u32, cfg: SocketConfig) -> String {
    let mode = if cfg.xdp_flags().contains(XdpFlags::XDP_FLAGS_DRV_MODE) {
        "native"
    } else {
        "generic"
    };
    let cause = os.map_or_else(
        || "libxdp gave no error code".to_string(),
        |e| io::Error::from_raw_os_error(e).to_string(),
    );
    let hint = match os {
        Some(libc::EPERM | libc::EACCES) => {
            " (needs CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF and CAP_IPC_LOCK: run xvsd as root)"
        }
        Some(libc::EOPNOTSUPP) => " (the driver does not support this XDP mode)",
        Some(libc::EBUSY) => {
            " (another AF_XDP socket holds the queue: another program, or this interface \
             on another xvsd worker)"
        }
        Some(libc::EEXIST) => " (another XDP program is attached to the interface)",
        Some(libc::ENOMEM | libc::ENOBUFS) => {
            " (out of memory or locked memory: check RLIMIT_MEMLOCK and CAP_IPC_LOCK)"
        }
        Some(libc::ENETDOWN) => " (the interface is down)",
        _ => "",
    };
    format!("queue {qid} in {mode} mode: {cause}{hint}")
}

/// The interface's index, or `NoSuchInterface`.
fn ifindex_of(iface: &str) -> Result<u32, PortError> {
    let Ok(name) = CString::new(iface) else {
        return Err(PortError::NoSuchInterface(iface.to_string()));
    };
    if iface.is_empty() || iface.len() >= libc::IFNAMSIZ {
        return Err(PortError::NoSuchInterface(iface.to_string()));
    }
    // SAFETY: `name` is a valid NUL-terminated string that lives for the call.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if idx == 0 {
        return Err(PortError::NoSuchInterface(iface.to_string()));
    }
    Ok(idx)
}

/// Active receive queues (`/sys/class/net/IF/queues/rx-*`), at least 1.
fn active_rx_queues(iface: &str) -> u32 {
    let Ok(dir) = std::fs::read_dir(format!("/sys/class/net/{iface}/queues")) else {
        return 1;
    };
    let n = dir
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count() as u32;
    n.max(1)
}

/// The mode and id of the XDP program attached to `ifindex`, if any.
fn attached_program(ifindex: u32) -> Option<(Attach, u32)> {
    for attach in [Attach::Native, Attach::Generic] {
        let mut id: u32 = 0;
        // SAFETY: `id` is a valid, writable u32 for the duration of the call; libbpf writes
        // only through that pointer.
        let rc = unsafe {
            libbpf::bpf_xdp_query_id(ifindex as c_int, attach.flags().bits() as c_int, &mut id)
        };
        if rc == 0 && id != 0 {
            return Some((attach, id));
        }
    }
    None
}

/// Removes whatever XDP program is attached to `ifindex`, in either mode.
fn detach_xdp(ifindex: u32) {
    for attach in [Attach::Native, Attach::Generic] {
        // SAFETY: a null options pointer is allowed (libbpf then uses defaults); the call only
        // sends a netlink request about `ifindex`.
        let rc = unsafe {
            libbpf::bpf_xdp_detach(
                ifindex as c_int,
                attach.flags().bits(),
                std::ptr::null::<c_void>(),
            )
        };
        if rc != 0 {
            tracing::debug!(ifindex, mode = attach.name(), rc, "XDP detach");
        }
    }
}

/// Raises RLIMIT_MEMLOCK as far as allowed. Failing is fine: with CAP_IPC_LOCK the kernel does
/// not charge the rings against the limit.
fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `unlimited` is a valid rlimit that lives for the call; setrlimit only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!(
            "cannot raise RLIMIT_MEMLOCK ({}); relying on CAP_IPC_LOCK",
            io::Error::last_os_error()
        );
    }
}

impl Drop for AfxdpPort {
    fn drop(&mut self) {
        // Sockets close with their queues (xsk-rs removes libxdp's program with the last one);
        // chunks still lent are the pool's again only if `detach` ran first.
        self.queues.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggested_pool_covers_rings_and_reserve() {
        let one = suggested_pool_frames(1);
        assert!(one as usize >= FILL_TARGET as usize + RING_SIZE as usize + POOL_RESERVE);
        assert!(suggested_pool_frames(4) > 4 * (FILL_TARGET + RING_SIZE));
        assert_eq!(suggested_pool_frames(0), one);
        assert!(suggested_pool_frames(u32::MAX) <= 1 << 20);
    }

    #[test]
    fn heap_pool_is_refused() {
        let mut pool = FramePool::new_heap(64).unwrap();
        let err = AfxdpPort::open("lo", XdpMode::Auto, &mut pool).unwrap_err();
        assert!(matches!(err, PortError::AfxdpUnavailable(_)), "{err}");
    }
}
