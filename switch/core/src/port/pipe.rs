//! A pipe port: a switch port whose other end is a local stack in xvsd (the gateway).
//!
//! Frames the switch sends to the port are copied out into a bounded queue for the local
//! end; frames the local end sends are copied into pool frames on the next receive burst.
//! This is the slow path (ARP, ICMP and DNS for the gateway), so copying is fine; a full
//! queue is a counted drop and never blocks the worker. Each side wakes the other through a
//! datagram socket pair that the other side polls.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam_queue::ArrayQueue;

use super::{BackendInfo, Burst, PortIo, PortType, TxOutcome};
use crate::frame::FramePool;

/// Frames queued each way at most.
pub const PIPE_DEPTH: usize = 1024;

struct Shared {
    to_local: ArrayQueue<Vec<u8>>,
    to_switch: ArrayQueue<Vec<u8>>,
    /// Frames the local end could not queue toward the switch.
    to_switch_drops: AtomicU64,
}

/// The switch's side: attach it to a bridge like any port.
pub struct PipePort {
    shared: Arc<Shared>,
    /// Readable when the local end has queued frames.
    wake_rx: UnixDatagram,
    /// Written to wake the local end.
    wake_local: UnixDatagram,
}

/// The local stack's side.
pub struct PipeEnd {
    shared: Arc<Shared>,
    /// Readable when the switch has queued frames.
    wake_rx: UnixDatagram,
    /// Written to wake the switch's worker.
    wake_switch: UnixDatagram,
}

impl std::fmt::Debug for PipeEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeEnd")
            .field("to_local", &self.shared.to_local.len())
            .finish()
    }
}

/// Makes a connected pair.
pub fn pipe() -> std::io::Result<(PipePort, PipeEnd)> {
    let shared = Arc::new(Shared {
        to_local: ArrayQueue::new(PIPE_DEPTH),
        to_switch: ArrayQueue::new(PIPE_DEPTH),
        to_switch_drops: AtomicU64::new(0),
    });
    let (switch_wake_tx, switch_wake_rx) = UnixDatagram::pair()?;
    let (local_wake_tx, local_wake_rx) = UnixDatagram::pair()?;
    for s in [
        &switch_wake_tx,
        &switch_wake_rx,
        &local_wake_tx,
        &local_wake_rx,
    ] {
        s.set_nonblocking(true)?;
    }
    Ok((
        PipePort {
            shared: shared.clone(),
            wake_rx: switch_wake_rx,
            wake_local: local_wake_tx,
        },
        PipeEnd {
            shared,
            wake_rx: local_wake_rx,
            wake_switch: switch_wake_tx,
        },
    ))
}

fn drain(sock: &UnixDatagram) {
    let mut buf = [0u8; 64];
    while sock.recv(&mut buf).is_ok() {}
}

impl PipeEnd {
    /// Queues a frame toward the switch; false (and counted) if the queue is full.
    pub fn send(&self, frame: Vec<u8>) -> bool {
        if self.shared.to_switch.push(frame).is_err() {
            self.shared.to_switch_drops.fetch_add(1, Relaxed);
            return false;
        }
        let _ = self.wake_switch.send(&[1]);
        true
    }

    /// The next frame from the switch, if any.
    pub fn recv(&self) -> Option<Vec<u8>> {
        self.shared.to_local.pop()
    }

    /// Descriptor that becomes readable when the switch queued frames; call
    /// [`PipeEnd::clear_wake`] after waking.
    pub fn wake_fd(&self) -> RawFd {
        self.wake_rx.as_raw_fd()
    }

    /// Consumes pending wake-ups.
    pub fn clear_wake(&self) {
        drain(&self.wake_rx);
    }

    /// Frames dropped because the queue toward the switch was full.
    pub fn drops(&self) -> u64 {
        self.shared.to_switch_drops.load(Relaxed)
    }
}

impl PortIo for PipePort {
    fn rx_burst(&mut self, pool: &mut FramePool, out: &mut Burst) -> usize {
        let mut n = 0;
        while !out.is_full() {
            let Some(bytes) = self.shared.to_switch.pop() else {
                break;
            };
            if let Some(f) = pool.alloc_copy(&bytes) {
                out.push(f);
                n += 1;
            }
        }
        n
    }

    fn tx_burst(&mut self, pool: &mut FramePool, frames: &mut Burst) -> TxOutcome {
        let mut out = TxOutcome::default();
        for f in frames.drain(..) {
            let len = f.len();
            if self.shared.to_local.push(pool.data(&f).to_vec()).is_ok() {
                out.sent += 1;
                out.bytes += len as u64;
            } else {
                out.dropped += 1;
            }
            pool.free(f);
        }
        if out.sent > 0 {
            let _ = self.wake_local.send(&[1]);
        }
        out
    }

    fn maintain(&mut self, _pool: &mut FramePool) -> bool {
        drain(&self.wake_rx);
        !self.shared.to_switch.is_empty()
    }

    fn poll_fds(&self, out: &mut Vec<RawFd>) {
        out.push(self.wake_rx.as_raw_fd());
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            port_type: PortType::Internal,
            mode: "internal".into(),
            queues: 1,
            ifindex: 0,
            fault: None,
        }
    }

    fn detach(&mut self, _pool: &mut FramePool) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_cross_both_ways_and_overflow_is_counted() {
        let (mut port, end) = pipe().unwrap();
        let mut pool = FramePool::new_heap(8).unwrap();
        assert!(end.send(vec![1, 2, 3]));
        let mut burst = Burst::new();
        assert_eq!(port.rx_burst(&mut pool, &mut burst), 1);
        assert_eq!(pool.data(&burst[0]), &[1, 2, 3]);
        let out = port.tx_burst(&mut pool, &mut burst);
        assert_eq!(out.sent, 1);
        assert_eq!(end.recv().unwrap(), vec![1, 2, 3]);
        assert_eq!(pool.available(), 8);
        for _ in 0..PIPE_DEPTH {
            end.send(vec![0]);
        }
        assert!(!end.send(vec![0]));
        assert_eq!(end.drops(), 1);
    }
}
