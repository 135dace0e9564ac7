//! A pipe port: a switch port whose other end is a local stack in xvsd (the gateway).
//!
//! Frames the switch sends to the port are copied into buffers the pipe owns and queued for
//! the local end, which gives each buffer back once read; frames the local end sends are
//! copied into pool frames on the next receive burst and their buffers go back to the local
//! end for its next frame. So the worker's side never allocates or frees memory. This is the
//! slow path (ARP, ICMP and DNS for the gateway): copying is fine; a full queue is a counted
//! drop and never blocks the worker; a frame the worker cannot take yet (its pool is empty)
//! waits in the queue. Each side wakes the other through a datagram socket pair that the
//! other side polls.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam_queue::ArrayQueue;

use super::{BackendInfo, Burst, PortIo, PortType, TxOutcome};
use crate::frame::{FRAME_CAPACITY, FramePool};

/// Frames queued each way at most (and buffers the switch's side owns).
pub const PIPE_DEPTH: usize = 256;

struct Shared {
    /// Frames from the switch, in buffers of `local_free`.
    to_local: ArrayQueue<Vec<u8>>,
    /// Empty buffers for the switch to copy frames into (the local end gives them back).
    local_free: ArrayQueue<Vec<u8>>,
    /// Frames from the local end.
    to_switch: ArrayQueue<Vec<u8>>,
    /// Buffers the switch has copied out of, for the local end's next frames.
    switch_free: ArrayQueue<Vec<u8>>,
    /// Frames the local end could not queue toward the switch.
    to_switch_drops: AtomicU64,
}

/// The switch's side: attach it to a bridge like any port.
pub struct PipePort {
    shared: Arc<Shared>,
    /// A frame from the local end waiting for a free pool frame.
    waiting: Option<Vec<u8>>,
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
        local_free: ArrayQueue::new(PIPE_DEPTH),
        to_switch: ArrayQueue::new(PIPE_DEPTH),
        switch_free: ArrayQueue::new(2 * PIPE_DEPTH),
        to_switch_drops: AtomicU64::new(0),
    });
    for _ in 0..PIPE_DEPTH {
        // Reserved, not touched: a buffer's pages are only used once a frame is copied in.
        let _ = shared.local_free.push(Vec::with_capacity(FRAME_CAPACITY));
    }
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
            waiting: None,
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
    /// An empty buffer for a frame toward the switch: one the switch gave back, or a new one.
    pub fn buffer(&self) -> Vec<u8> {
        let mut b = self
            .shared
            .switch_free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(1514));
        b.clear();
        b
    }

    /// Queues a frame toward the switch; false (and counted) if the queue is full.
    pub fn send(&self, frame: Vec<u8>) -> bool {
        if self.shared.to_switch.push(frame).is_err() {
            self.shared.to_switch_drops.fetch_add(1, Relaxed);
            return false;
        }
        let _ = self.wake_switch.send(&[1]);
        true
    }

    /// The next frame from the switch, if any; give its buffer back with
    /// [`PipeEnd::recycle`] once read.
    pub fn recv(&self) -> Option<Vec<u8>> {
        self.shared.to_local.pop()
    }

    /// Gives a buffer from [`PipeEnd::recv`] back to the switch's side.
    pub fn recycle(&self, mut buf: Vec<u8>) {
        buf.clear();
        let _ = self.shared.local_free.push(buf);
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
            let Some(bytes) = self.waiting.take().or_else(|| self.shared.to_switch.pop()) else {
                break;
            };
            if bytes.len() > FRAME_CAPACITY {
                // Larger than any frame the gateway may send (its MTU is below this): counted
                // with the local end's drops; its buffer goes back.
                self.shared.to_switch_drops.fetch_add(1, Relaxed);
                let _ = self.shared.switch_free.push(bytes);
                continue;
            }
            let Some(f) = pool.alloc_copy(&bytes) else {
                // The pool is empty: the frame waits here for the next burst.
                self.waiting = Some(bytes);
                break;
            };
            let _ = self.shared.switch_free.push(bytes);
            out.push(f);
            n += 1;
        }
        n
    }

    fn tx_burst(&mut self, pool: &mut FramePool, frames: &mut Burst) -> TxOutcome {
        let mut out = TxOutcome::default();
        for f in frames.drain(..) {
            let data = pool.data(&f);
            match self.shared.local_free.pop() {
                Some(mut buf) if data.len() <= buf.capacity() => {
                    buf.clear();
                    buf.extend_from_slice(data);
                    let _ = self.shared.to_local.push(buf);
                    out.sent += 1;
                    out.bytes += data.len() as u64;
                }
                Some(buf) => {
                    let _ = self.shared.local_free.push(buf);
                    out.dropped += 1;
                }
                None => out.dropped += 1,
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
        self.waiting.is_some() || !self.shared.to_switch.is_empty()
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
        let mut b = end.buffer();
        b.extend_from_slice(&[1, 2, 3]);
        assert!(end.send(b));
        let mut burst = Burst::new();
        assert_eq!(port.rx_burst(&mut pool, &mut burst), 1);
        assert_eq!(pool.data(&burst[0]), &[1, 2, 3]);
        let out = port.tx_burst(&mut pool, &mut burst);
        assert_eq!(out.sent, 1);
        let got = end.recv().unwrap();
        assert_eq!(got, vec![1, 2, 3]);
        end.recycle(got);
        assert_eq!(pool.available(), 8);
        for _ in 0..PIPE_DEPTH {
            end.send(vec![0]);
        }
        assert!(!end.send(vec![0]));
        assert_eq!(end.drops(), 1);
    }

    #[test]
    fn an_empty_pool_keeps_the_frame_waiting_and_a_full_queue_is_a_counted_drop() {
        let (mut port, end) = pipe().unwrap();
        let mut pool = FramePool::new_heap(1).unwrap();
        let hold = pool.alloc().unwrap();
        end.send(vec![7; 60]);
        let mut burst = Burst::new();
        assert_eq!(port.rx_burst(&mut pool, &mut burst), 0);
        assert!(port.maintain(&mut pool), "a frame is waiting");
        pool.free(hold);
        assert_eq!(port.rx_burst(&mut pool, &mut burst), 1, "not lost");
        assert_eq!(pool.data(&burst[0]), &[7; 60]);
        pool.free(burst.pop().unwrap());

        // The local end reads nothing: after PIPE_DEPTH frames the switch's sends are drops.
        let mut sent = 0;
        let mut dropped = 0;
        for _ in 0..PIPE_DEPTH + 5 {
            burst.push(pool.alloc_copy(&[1; 60]).unwrap());
            let o = port.tx_burst(&mut pool, &mut burst);
            sent += o.sent;
            dropped += o.dropped;
        }
        assert_eq!((sent as usize, dropped), (PIPE_DEPTH, 5));
        assert_eq!(pool.available(), 1);
    }
}
