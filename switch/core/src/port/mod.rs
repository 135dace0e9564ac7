//! Port backends: the contract every port implements, and the backends (AF_XDP, TAP, memory).
//!
//! A port is owned by exactly one worker thread, which drives it with bursts of up to
//! [`BURST`] frames from that worker's [`FramePool`]. Backends never allocate on the receive or
//! transmit path; a full ring or an empty pool is reported as a counted drop.

pub mod afxdp;
pub mod mem;
pub mod netdev;
pub mod pipe;
pub mod steer;
pub mod tap;
pub mod wait;

use std::os::fd::RawFd;

use serde::{Deserialize, Serialize};

use crate::frame::FramePool;

pub use crate::batch::{BURST, Burst};

/// Which backend a port uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortType {
    /// An AF_XDP socket on an existing interface (veth, NIC).
    Afxdp,
    /// A TAP device opened (and created if missing) by xvsd.
    Tap,
    /// An in-memory port (tests and benches).
    Mem,
    /// A port to xvsd's own local stack (the gateway).
    Internal,
}

impl std::fmt::Display for PortType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PortType::Afxdp => "afxdp",
            PortType::Tap => "tap",
            PortType::Mem => "mem",
            PortType::Internal => "internal",
        })
    }
}

/// The XDP attach mode asked for on an AF_XDP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic when the driver refuses.
    #[default]
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (SKB) mode only.
    Generic,
}

impl std::fmt::Display for XdpMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        })
    }
}

/// What to open: the part of a port's configuration the backend needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// Interface name (for TAP: the device to create or open).
    pub iface: String,
    /// Backend.
    pub port_type: PortType,
    /// XDP mode for AF_XDP ports.
    pub xdp_mode: XdpMode,
    /// An interface xvs shares with the host (the uplink): only frames for this MAC and ARP
    /// about this address are taken (AF_XDP only; [`steer`]).
    pub shared: Option<SharedWith>,
}

/// What xvs takes from an interface it shares with the host: its own MAC and IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedWith {
    /// xvs's MAC on the interface.
    pub mac: crate::wire::Mac,
    /// xvs's IPv4 address on it.
    pub ip: std::net::Ipv4Addr,
}

/// What a backend reports about itself once open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendInfo {
    /// Backend type.
    pub port_type: PortType,
    /// The mode actually in use: `native`/`generic` for AF_XDP, `tap` or `mem` otherwise.
    pub mode: String,
    /// Queues bound (AF_XDP: one socket per queue).
    pub queues: u32,
    /// Kernel interface index, when there is one.
    pub ifindex: u32,
    /// Why the port cannot carry traffic any more (its device was destroyed, ...), if so.
    pub fault: Option<String>,
}

impl BackendInfo {
    /// `up`, or `error: WHY` (as `show` reports a port's state).
    pub fn state(&self) -> String {
        match &self.fault {
            None => "up".into(),
            Some(why) => format!("error: {why}"),
        }
    }
}

/// Outcome of a transmit burst.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TxOutcome {
    /// Frames accepted by the port.
    pub sent: u32,
    /// Bytes accepted by the port.
    pub bytes: u64,
    /// Frames the port could not take (ring full, device gone); already freed.
    pub dropped: u32,
}

/// Backend-level counters that the kernel or the backend keeps (read on the control thread
/// through the owning worker).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStats {
    /// AF_XDP: frames the kernel dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// AF_XDP: times the fill ring was empty when the kernel wanted a frame.
    pub fill_empty: u64,
    /// AF_XDP: invalid descriptors seen by the kernel.
    pub invalid_descs: u64,
    /// Frames dropped by the kernel on receive for other reasons.
    pub rx_dropped: u64,
    /// TAP: reads larger than any frame of the pool, dropped.
    pub rx_oversized: u64,
    /// TAP: reads that failed for a reason other than "nothing to read".
    pub rx_errors: u64,
    /// TAP: frames written merged into super-frames (software GRO).
    pub tx_coalesced: u64,
    /// TAP: super-frames written from merged frames.
    pub tx_super_frames: u64,
}

/// Errors opening a port.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// No such interface in xvsd's network namespace.
    #[error("interface {0} does not exist")]
    NoSuchInterface(String),
    /// The worker's pool is not a UMEM, so AF_XDP is unavailable.
    #[error("AF_XDP is unavailable on this worker: {0}")]
    AfxdpUnavailable(String),
    /// Creating or binding a socket failed.
    #[error("cannot attach {iface} ({what}): {reason}")]
    Open {
        /// Interface.
        iface: String,
        /// Which step failed.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The backend cannot be opened this way (for example a memory port by name).
    #[error("port type {0} cannot be opened here")]
    Unsupported(PortType),
}

/// A port backend, driven by the worker that owns it.
pub trait PortIo: Send {
    /// Receives up to `out.remaining_capacity()` frames into `out`; returns how many.
    fn rx_burst(&mut self, pool: &mut FramePool, out: &mut Burst) -> usize;

    /// Transmits every frame in `frames` (draining it). Frames the port cannot take are
    /// freed back to `pool` and counted in the outcome.
    fn tx_burst(&mut self, pool: &mut FramePool, frames: &mut Burst) -> TxOutcome;

    /// Housekeeping between bursts: reap TX completions, refill receive buffers, kick TX.
    /// Returns true while work is outstanding (frames in flight on TX), so the worker keeps
    /// polling instead of sleeping.
    fn maintain(&mut self, pool: &mut FramePool) -> bool;

    /// File descriptors to wait on (readable = frames to receive) when the worker sleeps.
    fn poll_fds(&self, out: &mut Vec<RawFd>);

    /// Backend description for `xvsctl show`.
    fn info(&self) -> BackendInfo;

    /// Whether the port takes frames with offloads still to do (GSO super-frames, partial
    /// checksums) as they are. The worker segments and checksums, in software, every such
    /// frame bound for a port that does not.
    fn takes_offloads(&self) -> bool {
        false
    }

    /// Kernel/backend counters.
    fn backend_stats(&self) -> BackendStats {
        BackendStats::default()
    }

    /// Frames of the worker's pool the port holds between bursts (lent to the kernel's
    /// rings, queued), for the pool's accounting in `xvsctl stats`. Default: none (TAP,
    /// pipe and memory ports copy within each call).
    fn frames_held(&self) -> usize {
        0
    }

    /// A transmit-only handle on the same port for another worker, when the backend can be
    /// written from any thread (a TAP descriptor can; an AF_XDP socket, whose UMEM is its
    /// worker's, cannot). Other workers then send to the port directly instead of handing
    /// frames over. It never receives, polls nothing and holds no frames.
    fn remote_writer(&self) -> Option<Box<dyn PortIo>> {
        None
    }

    /// Gives every frame the port still holds (fill ring, TX in flight, queues) back to
    /// `pool` before the port is dropped. Frames still inside the kernel's rings are given
    /// back when the socket closes, so the pool is only whole again after drop.
    fn detach(&mut self, pool: &mut FramePool);
}

/// Opens the backend named by `spec` on the worker that owns `pool`.
pub fn open(spec: &PortSpec, pool: &mut FramePool) -> Result<Box<dyn PortIo>, PortError> {
    match spec.port_type {
        PortType::Afxdp => match spec.shared {
            None => Ok(Box::new(afxdp::AfxdpPort::open(
                &spec.iface,
                spec.xdp_mode,
                pool,
            )?)),
            Some(shared) => Ok(Box::new(afxdp::AfxdpPort::open_shared(
                &spec.iface,
                spec.xdp_mode,
                pool,
                shared,
            )?)),
        },
        PortType::Tap => Ok(Box::new(tap::TapPort::open(&spec.iface)?)),
        PortType::Mem | PortType::Internal => Err(PortError::Unsupported(spec.port_type)),
    }
}
