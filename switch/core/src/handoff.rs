//! Hand-off between workers: one bounded ring per ordered pair of workers. A stage that finds
//! a frame belongs to another worker (the owner of its flow's state) gives it the verdict
//! `Handoff(worker)`; the sending worker copies it into a buffer of the ring (pools are per
//! worker, so a frame cannot change hands), and the receiving worker copies it into its own
//! pool and runs its bridge's chain on it. Buffers circulate between the ring's two queues, so
//! neither side allocates; a full ring is a counted drop (`handoff_congested`).
//!
//! Each ring has one producer (the sending worker) and one consumer (the receiving worker).
//! A sender wakes a receiver that sleeps in `poll()` through its wake-up socket.

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_queue::ArrayQueue;

use crate::classify::PortId;
use crate::frame::{FRAME_CAPACITY, Frame, FramePool};
use crate::offload::Offload;
use crate::wire::BridgeId;

xvs_stage::drop_reasons! {
    /// Why a frame handed to another worker was dropped.
    pub enum HandoffDrop in "handoff" {
        Congested => "handoff_congested", "the ring to the other worker was full";
        NoSuchWorker => "handoff_no_worker", "hand-off to a worker that does not exist (or to itself)";
        Loop => "handoff_loop", "frame already handed over once was handed on again";
        TooLarge => "handoff_too_large", "frame larger than a hand-off buffer (a super-frame)";
    }
}

/// Frames in flight on one ring at most.
pub const HANDOFF_DEPTH: usize = 256;

/// A frame on its way to another worker, with where it came from.
#[derive(Debug)]
struct Slot {
    bytes: Vec<u8>,
    offload: Offload,
    bridge: BridgeId,
    in_port: PortId,
    vlan: u16,
    origin: Origin,
    out_port: Option<PortId>,
}

/// Where a handed-off frame came from, beyond its port: what the receiving worker's chain
/// needs in the frame's metadata.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Origin {
    /// The bridge it was patched over from on the sender, if it was.
    pub patched_from: Option<BridgeId>,
    /// The remote VTEP it was decapsulated from, if it was.
    pub tunnel_peer: Option<std::net::Ipv4Addr>,
}

/// How a sender wakes a sleeping worker.
#[derive(Debug)]
pub struct Waker {
    /// Written to wake the worker.
    pub socket: UnixDatagram,
    /// Set while the worker sleeps in `poll()`.
    pub sleeping: Arc<AtomicBool>,
}

impl Waker {
    /// Wakes the worker if it sleeps.
    #[inline]
    pub fn wake(&self) {
        if self.sleeping.load(Ordering::Acquire) {
            let _ = self.socket.send(&[1]);
        }
    }
}

/// One ring from one worker to another.
#[derive(Debug)]
struct Ring {
    full: ArrayQueue<Slot>,
    free: ArrayQueue<Slot>,
    receiver: Waker,
}

/// A frame received from another worker: where it came from, and the frame in this worker's
/// pool.
#[derive(Debug)]
pub struct Arrival {
    /// The frame, copied into this worker's pool.
    pub frame: Frame,
    /// The bridge it is switched on.
    pub bridge: BridgeId,
    /// The port it entered the switch on.
    pub in_port: PortId,
    /// That port's access VLAN.
    pub vlan: u16,
    /// Where it came from (patched over, decapsulated).
    pub origin: Origin,
    /// Already switched: send it out of this port of the receiver (a port of a replicated
    /// bridge that the receiver polls), without running a chain.
    pub out_port: Option<PortId>,
}

/// One worker's ends of the rings: to every other worker, and from every other worker.
#[derive(Debug, Default)]
pub struct Handoff {
    /// Index = receiving worker (`None` for this worker itself).
    out: Vec<Option<Arc<Ring>>>,
    inbound: Vec<Arc<Ring>>,
    /// A frame taken from an inbound ring that waits for a free pool frame (ring, slot).
    waiting: Option<(usize, Slot)>,
    /// Rings sent to since the last [`Handoff::wake_receivers`].
    sent_to: u64,
}

/// The rings between `wakers.len()` workers: one [`Handoff`] per worker, in order.
pub fn mesh(wakers: Vec<Waker>) -> Vec<Handoff> {
    let n = wakers.len();
    let mut ends: Vec<Handoff> = (0..n)
        .map(|_| Handoff {
            out: vec![None; n],
            ..Handoff::default()
        })
        .collect();
    for (to, waker) in wakers.into_iter().enumerate() {
        for from in 0..n {
            if from == to {
                continue;
            }
            let Ok(socket) = waker.socket.try_clone() else {
                continue;
            };
            let ring = Arc::new(Ring {
                full: ArrayQueue::new(HANDOFF_DEPTH),
                free: ArrayQueue::new(HANDOFF_DEPTH),
                receiver: Waker {
                    socket,
                    sleeping: waker.sleeping.clone(),
                },
            });
            for _ in 0..HANDOFF_DEPTH {
                // Reserved, not touched until a frame is copied in.
                let _ = ring.free.push(Slot {
                    bytes: Vec::with_capacity(FRAME_CAPACITY),
                    offload: Offload::NONE,
                    bridge: 0,
                    in_port: 0,
                    vlan: 0,
                    origin: Origin::default(),
                    out_port: None,
                });
            }
            ends[from].out[to] = Some(ring.clone());
            ends[to].inbound.push(ring);
        }
    }
    ends
}

impl Handoff {
    /// Copies `frame` (which stays the caller's to free) onto the ring to worker `to`, which
    /// runs `bridge`'s chain on it as if received on `in_port` (access VLAN `vlan`); `origin`:
    /// where it came from beyond that.
    #[inline]
    pub fn send(
        &mut self,
        to: u16,
        pool: &FramePool,
        frame: &Frame,
        (bridge, in_port, vlan): (BridgeId, PortId, u16),
        origin: Origin,
    ) -> Result<(), HandoffDrop> {
        self.send_to(to, pool, frame, (bridge, in_port, vlan), origin, None)
    }

    /// Copies `frame` onto the ring to worker `to`, which sends it out of its port `port`.
    #[inline]
    pub fn send_out(
        &mut self,
        to: u16,
        pool: &FramePool,
        frame: &Frame,
        bridge: BridgeId,
        port: PortId,
    ) -> Result<(), HandoffDrop> {
        self.send_to(
            to,
            pool,
            frame,
            (bridge, 0, 0),
            Origin::default(),
            Some(port),
        )
    }

    #[inline]
    fn send_to(
        &mut self,
        to: u16,
        pool: &FramePool,
        frame: &Frame,
        (bridge, in_port, vlan): (BridgeId, PortId, u16),
        origin: Origin,
        out_port: Option<PortId>,
    ) -> Result<(), HandoffDrop> {
        let ring = self
            .out
            .get(usize::from(to))
            .and_then(Option::as_ref)
            .ok_or(HandoffDrop::NoSuchWorker)?;
        let data = pool.data(frame);
        if data.len() > FRAME_CAPACITY {
            return Err(HandoffDrop::TooLarge);
        }
        let mut slot = ring.free.pop().ok_or(HandoffDrop::Congested)?;
        slot.bytes.clear();
        slot.bytes.extend_from_slice(data);
        slot.offload = frame.offload();
        (slot.bridge, slot.in_port, slot.vlan) = (bridge, in_port, vlan);
        slot.out_port = out_port;
        slot.origin = origin;
        if let Err(slot) = ring.full.push(slot) {
            let _ = ring.free.push(slot);
            return Err(HandoffDrop::Congested);
        }
        self.sent_to |= 1 << (to % 64);
        Ok(())
    }

    /// Wakes the workers sent to since the last call, if they sleep.
    #[inline]
    pub fn wake_receivers(&mut self) {
        if self.sent_to == 0 {
            return;
        }
        for (i, ring) in self.out.iter().enumerate() {
            if let Some(r) = ring
                && self.sent_to & (1 << (i % 64)) != 0
            {
                r.receiver.wake();
            }
        }
        self.sent_to = 0;
    }

    /// Takes the next frame handed to this worker, copied into `pool`; `None` when no ring
    /// has one, or when the pool is empty (the frame then waits for the next call).
    #[inline]
    pub fn receive(&mut self, pool: &mut FramePool) -> Option<Arrival> {
        let (ring, slot) = match self.waiting.take() {
            Some(w) => w,
            None => self
                .inbound
                .iter()
                .enumerate()
                .find_map(|(i, r)| r.full.pop().map(|s| (i, s)))?,
        };
        let Some(mut frame) = pool.alloc_copy(&slot.bytes) else {
            self.waiting = Some((ring, slot));
            return None;
        };
        frame.set_offload(slot.offload);
        let arrival = Arrival {
            frame,
            bridge: slot.bridge,
            in_port: slot.in_port,
            vlan: slot.vlan,
            origin: slot.origin,
            out_port: slot.out_port,
        };
        let _ = self.inbound[ring].free.push(slot);
        Some(arrival)
    }

    /// Whether frames wait to be received.
    pub fn pending(&self) -> bool {
        self.waiting.is_some() || self.inbound.iter().any(|r| !r.full.is_empty())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn wakers(n: usize) -> (Vec<Waker>, Vec<UnixDatagram>) {
        let mut w = Vec::new();
        let mut rx = Vec::new();
        for _ in 0..n {
            let (a, b) = UnixDatagram::pair().unwrap();
            a.set_nonblocking(true).unwrap();
            b.set_nonblocking(true).unwrap();
            w.push(Waker {
                socket: a,
                sleeping: Arc::new(AtomicBool::new(true)),
            });
            rx.push(b);
        }
        (w, rx)
    }

    #[test]
    fn frames_cross_between_workers_and_a_full_ring_is_congestion() {
        let (w, rx) = wakers(2);
        let mut ends = mesh(w);
        let mut b = ends.pop().unwrap();
        let mut a = ends.pop().unwrap();
        let mut pa = FramePool::new_heap(4).unwrap();
        let mut pb = FramePool::new_heap(2).unwrap();
        let f = pa.alloc_copy(&[9; 60]).unwrap();
        a.send(1, &pa, &f, (7, 3, 10), Origin::default()).unwrap();
        assert_eq!(
            a.send(0, &pa, &f, (7, 3, 10), Origin::default()),
            Err(HandoffDrop::NoSuchWorker)
        );
        assert_eq!(
            a.send(5, &pa, &f, (7, 3, 10), Origin::default()),
            Err(HandoffDrop::NoSuchWorker)
        );
        a.wake_receivers();
        let mut buf = [0u8; 8];
        assert!(
            rx[1].recv(&mut buf).is_ok(),
            "the sleeping receiver was woken"
        );
        assert!(b.pending());
        let got = b.receive(&mut pb).unwrap();
        assert_eq!((got.bridge, got.in_port, got.vlan), (7, 3, 10));
        assert_eq!(pb.data(&got.frame), &[9; 60]);
        pb.free(got.frame);
        for _ in 0..HANDOFF_DEPTH {
            a.send(1, &pa, &f, (7, 3, 0), Origin::default()).unwrap();
        }
        assert_eq!(
            a.send(1, &pa, &f, (7, 3, 0), Origin::default()),
            Err(HandoffDrop::Congested)
        );
        // The receiver's pool holds 2 frames: the third waits, nothing is lost.
        let x = b.receive(&mut pb).unwrap();
        let y = b.receive(&mut pb).unwrap();
        assert!(b.receive(&mut pb).is_none() && b.pending());
        pb.free(x.frame);
        pb.free(y.frame);
        let mut n = 2;
        while let Some(z) = b.receive(&mut pb) {
            pb.free(z.frame);
            n += 1;
        }
        assert_eq!(n, HANDOFF_DEPTH);
        assert!(!b.pending());
        pa.free(f);
    }
}
