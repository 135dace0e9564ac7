//! Output: every frame of a batch goes where its verdict says (one port, a flood over the
//! bridge's domain, the local stack, another worker) into each port's pending burst, and
//! bursts are sent. A frame with offloads still to do, bound for a port that cannot take them,
//! is finished in software first: a GSO super-frame is cut into ordinary frames
//! ([`Segmenter`](crate::segment::Segmenter)), a partial checksum is completed ([`complete_checksum`]).
//!
//! Runs on the worker that owns the ports; every frame that does not leave is a counted drop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use hashbrown::HashMap;

use crate::checksum::complete_checksum;
use crate::classify::PortId;
use crate::counters::{DropCounters, PortCounters};
use crate::domain::Domain;
use crate::frame::{Frame, FramePool};
use crate::handoff::{Handoff, HandoffDrop};
use crate::offload::Offload;
use crate::port::{Burst, PortIo};
use crate::segment::{SegmentEnd, segment_into_pool};
use crate::stage::{Batch, Verdict};
use crate::wire::BridgeId;

xvs_stage::drop_reasons! {
    /// Why output dropped a frame.
    pub enum OutputDrop in "output" {
        NoFloodTarget => "flood_no_other_port", "flood with no other port in the VLAN";
        NoLocalStack => "no_local_stack", "frame for the local stack on a bridge without one";
        Oversize => "oversize", "frame larger than the port can send";
        OffloadFailed => "offload_failed", "GSO super-frame or partial checksum that could not be finished in software (malformed offload request)";
        PoolExhausted => "pool_exhausted", "no free frame to copy into (flood, segmentation)";
        TxRingFull => "tx_ring_full", "output port's transmit ring was full";
        PortGone => "port_gone", "output port no longer exists";
    }
}

/// How frames multiplied or left on their way out, for accounting: with these, every frame
/// received is transmitted, handed off or dropped under a reason.
#[derive(Debug, Default)]
pub struct OutputCounters {
    /// Extra copies made to flood a frame to more than one port.
    pub flood_copies: AtomicU64,
    /// Super-frames cut into segments (each is replaced by its segments).
    pub segmented: AtomicU64,
    /// Segments made from them.
    pub segments: AtomicU64,
    /// Frames handed to another worker.
    pub handed_off: AtomicU64,
    /// Frames received from another worker.
    pub handed_in: AtomicU64,
    /// Frames stages made of their own (ICMP errors, ARP requests).
    pub generated: AtomicU64,
    /// Frames a stage kept for later (waiting for a neighbour).
    pub held: AtomicU64,
    /// Kept frames given back (sent, or dropped under a reason).
    pub released: AtomicU64,
}

/// A port as its worker's engine holds it.
pub(crate) struct PortSlot {
    pub(crate) io: Box<dyn PortIo>,
    pub(crate) bridge: BridgeId,
    pub(crate) vlan: u16,
    pub(crate) counters: Arc<PortCounters>,
    pub(crate) pending: Burst,
    /// The backend takes GSO super-frames and partial checksums ([`PortIo::takes_offloads`]).
    pub(crate) takes_offloads: bool,
    /// Another worker polls the port; this is a transmit-only writer on it
    /// ([`PortIo::remote_writer`]): output here sends to it directly, nothing polls it.
    pub(crate) remote: bool,
}

/// What output writes to: the worker's pool, ports, counters and hand-off rings.
pub(crate) struct Output<'a> {
    pub(crate) pool: &'a mut FramePool,
    pub(crate) ports: &'a mut HashMap<PortId, PortSlot>,
    pub(crate) drops: &'a DropCounters,
    pub(crate) counters: &'a OutputCounters,
    pub(crate) handoff: &'a mut Handoff,
    /// Frames patched over to another bridge of this worker (run after this batch).
    pub(crate) patched: &'a mut std::collections::VecDeque<(Frame, crate::stage::FrameMeta)>,
    /// Ports of replicated bridges polled by another worker.
    pub(crate) remote_ports: &'a HashMap<PortId, u16>,
}

impl Output<'_> {
    /// Moves every frame of `batch` (switched on a bridge with `domain`) to its verdict's
    /// destination; the batch is empty afterwards.
    pub(crate) fn dispatch(&mut self, batch: &mut Batch, domain: &Domain) {
        for (i, frame) in batch.frames.drain(..).enumerate() {
            match batch.verdicts[i] {
                Verdict::Output(p) => self.send_to(p, batch.meta[i].bridge, frame),
                Verdict::Patch(to) => {
                    let m = batch.meta[i];
                    if m.patches >= crate::batch::MAX_PATCHES {
                        self.drop(crate::chain::PipelineDrop::PatchLoop, frame);
                        continue;
                    }
                    let meta = crate::stage::FrameMeta {
                        bridge: to,
                        patched_from: Some(m.bridge),
                        patches: m.patches + 1,
                        handed_off: m.handed_off,
                        enter_port: m.enter_port,
                        tunnel_peer: m.tunnel_peer,
                        tunnel: m.tunnel,
                        egress: if m.tunnel {
                            m.egress
                        } else {
                            Default::default()
                        },
                        ..Default::default()
                    };
                    self.patched.push_back((frame, meta));
                }
                Verdict::Held => {
                    // The stage took the frame; its slot holds a hole.
                    self.counters.held.fetch_add(1, Relaxed);
                    self.pool.free(frame);
                }
                Verdict::Flood => self.flood(domain, &batch.keys[i], batch.meta[i].bridge, frame),
                Verdict::Local => match domain.local_port() {
                    Some(p) => self.send_to(p, batch.meta[i].bridge, frame),
                    None => self.drop(OutputDrop::NoLocalStack, frame),
                },
                Verdict::Handoff(to) => {
                    let key = &batch.keys[i];
                    let sent = if batch.meta[i].handed_off {
                        Err(HandoffDrop::Loop)
                    } else {
                        self.handoff.send(
                            to,
                            self.pool,
                            &frame,
                            (batch.meta[i].bridge, key.in_port, key.vlan),
                            crate::handoff::Origin {
                                patched_from: batch.meta[i].patched_from,
                                tunnel_peer: batch.meta[i].tunnel_peer,
                            },
                        )
                    };
                    match sent {
                        Ok(()) => {
                            self.counters.handed_off.fetch_add(1, Relaxed);
                            self.pool.free(frame);
                        }
                        Err(reason) => self.drop(reason, frame),
                    }
                }
                // The chain turns a frame left undecided into a drop; counted by the engine.
                Verdict::Drop(_) | Verdict::Next => self.pool.free(frame),
            }
        }
        self.handoff.wake_receivers();
    }

    /// Sends `frame` to port `p`: into its pending burst when this worker holds it (polled
    /// here, or a writer on a port another worker polls), else handed to the worker that
    /// polls it.
    #[inline]
    fn send_to(&mut self, p: PortId, bridge: BridgeId, frame: Frame) {
        if self.ports.contains_key(&p) {
            self.enqueue(p, frame);
        } else {
            self.output_remote(p, bridge, frame);
        }
    }

    /// Sends `frame` to port `p` that another worker polls (a port of a replicated bridge), or
    /// counts it gone. A super-frame is cut here first: hand-off buffers hold ordinary frames.
    fn output_remote(&mut self, p: PortId, bridge: BridgeId, frame: Frame) {
        let Some(&to) = self.remote_ports.get(&p) else {
            self.drop(OutputDrop::PortGone, frame);
            return;
        };
        let off = frame.offload();
        if off.is_gso() {
            self.counters.segmented.fetch_add(1, Relaxed);
            let (handoff, drops, counters) = (&mut *self.handoff, self.drops, self.counters);
            segment_into(
                self.pool,
                drops,
                counters,
                &frame,
                &off,
                &mut |pool, seg| {
                    match handoff.send_out(to, pool, &seg, bridge, p) {
                        Ok(()) => {
                            counters.handed_off.fetch_add(1, Relaxed);
                        }
                        Err(reason) => drops.add(reason, 1),
                    }
                    pool.free(seg);
                },
            );
            self.pool.free(frame);
            return;
        }
        match self.handoff.send_out(to, self.pool, &frame, bridge, p) {
            Ok(()) => {
                self.counters.handed_off.fetch_add(1, Relaxed);
                self.pool.free(frame);
            }
            Err(reason) => self.drop(reason, frame),
        }
    }

    #[inline]
    fn drop(&mut self, reason: impl Into<crate::drop::DropReason>, frame: Frame) {
        self.drops.add(reason, 1);
        self.pool.free(frame);
    }

    /// Sends a copy of `frame` to every port of the flood domain; the original goes to the
    /// last one.
    fn flood(
        &mut self,
        domain: &Domain,
        key: &crate::classify::FlowKey,
        bridge: BridgeId,
        frame: Frame,
    ) {
        let mut targets = domain.flood_targets(key).peekable();
        if targets.peek().is_none() {
            self.drop(OutputDrop::NoFloodTarget, frame);
            return;
        }
        let mut frame = Some(frame);
        while let Some(p) = targets.next() {
            let f = if targets.peek().is_some() {
                let Some(original) = frame.as_ref() else {
                    break;
                };
                match self.pool.clone_frame(original) {
                    Some(c) => {
                        self.counters.flood_copies.fetch_add(1, Relaxed);
                        c
                    }
                    None => {
                        self.drops.add(OutputDrop::PoolExhausted, 1);
                        // Counted as a copy that was dropped, so accounting stays exact.
                        self.counters.flood_copies.fetch_add(1, Relaxed);
                        continue;
                    }
                }
            } else {
                match frame.take() {
                    Some(f) => f,
                    None => break,
                }
            };
            self.send_to(p, bridge, f);
        }
        if let Some(f) = frame {
            self.pool.free(f);
        }
    }

    #[inline]
    fn enqueue(&mut self, p: PortId, frame: Frame) {
        enqueue(self.pool, self.ports, self.drops, self.counters, p, frame);
    }
}

/// Adds `frame` to port `p`'s pending burst, transmitting first if it is full. A frame with
/// offloads still to do, bound for a port that cannot take them, is finished in software
/// first ([`finish_offloads`]).
#[inline]
pub(crate) fn enqueue(
    pool: &mut FramePool,
    ports: &mut HashMap<PortId, PortSlot>,
    drops: &DropCounters,
    counters: &OutputCounters,
    p: PortId,
    frame: Frame,
) {
    let Some(slot) = ports.get_mut(&p) else {
        drops.add(OutputDrop::PortGone, 1);
        pool.free(frame);
        return;
    };
    if !slot.takes_offloads && (!frame.offload().is_none() || pool.is_jumbo(&frame)) {
        finish_offloads(pool, slot, drops, counters, frame);
        return;
    }
    push_pending(pool, slot, drops, frame);
}

#[inline]
fn push_pending(pool: &mut FramePool, slot: &mut PortSlot, drops: &DropCounters, frame: Frame) {
    if slot.pending.is_full() {
        transmit(pool, slot, drops);
    }
    slot.pending.push(frame);
}

/// Queues `frame` for a port without offloads: a GSO super-frame is cut into ordinary frames
/// (checksums complete), a partial checksum is completed in place, and a frame that is still
/// too large for an ordinary frame is dropped as oversize.
fn finish_offloads(
    pool: &mut FramePool,
    slot: &mut PortSlot,
    drops: &DropCounters,
    counters: &OutputCounters,
    frame: Frame,
) {
    let off = frame.offload();
    if off.is_gso() {
        counters.segmented.fetch_add(1, Relaxed);
        segment(pool, slot, drops, counters, &frame, &off);
        pool.free(frame);
        return;
    }
    let mut frame = frame;
    if off.needs_csum() && complete_checksum(pool.data_mut(&mut frame), &off).is_err() {
        drops.add(OutputDrop::OffloadFailed, 1);
        pool.free(frame);
        return;
    }
    frame.set_offload(Offload::NONE);
    if pool.is_jumbo(&frame) {
        drops.add(OutputDrop::Oversize, 1);
        pool.free(frame);
        return;
    }
    push_pending(pool, slot, drops, frame);
}

/// Segments a GSO super-frame into ordinary frames on `slot`'s pending burst, a burst at a
/// time: the segmenter borrows the pool's bytes, so each burst's output frames are taken from
/// the pool first and the segmenter is made again (it only parses the headers) to resume where
/// the last burst ended. Frames not needed are given straight back.
///
/// For accounting, a super-frame that fails is one segment dropped; segments that the pool
/// cannot hold are each one segment dropped.
fn segment(
    pool: &mut FramePool,
    slot: &mut PortSlot,
    drops: &DropCounters,
    counters: &OutputCounters,
    frame: &Frame,
    off: &Offload,
) {
    segment_into(pool, drops, counters, frame, off, &mut |pool, out| {
        push_pending(pool, slot, drops, out)
    });
}

/// [`segment`] into `sink` (which takes each segment), counting segments and failures.
fn segment_into(
    pool: &mut FramePool,
    drops: &DropCounters,
    counters: &OutputCounters,
    frame: &Frame,
    off: &Offload,
    sink: &mut dyn FnMut(&mut FramePool, Frame),
) {
    let (made, end) = segment_into_pool(pool, frame, off, usize::MAX, sink);
    counters.segments.fetch_add(made as u64, Relaxed);
    match end {
        SegmentEnd::Done => {}
        SegmentEnd::Stopped { left } => {
            drops.add(OutputDrop::PoolExhausted, left as u64);
            counters.segments.fetch_add(left as u64, Relaxed);
        }
        SegmentEnd::Failed(_) => {
            drops.add(OutputDrop::OffloadFailed, 1);
            counters.segments.fetch_add(1, Relaxed);
        }
    }
}

/// Sends `slot`'s pending burst.
#[inline]
pub(crate) fn transmit(pool: &mut FramePool, slot: &mut PortSlot, drops: &DropCounters) {
    let out = slot.io.tx_burst(pool, &mut slot.pending);
    slot.counters
        .add_tx(u64::from(out.sent), out.bytes, u64::from(out.dropped));
    if out.dropped > 0 {
        drops.add(OutputDrop::TxRingFull, u64::from(out.dropped));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

    use super::OutputDrop;
    use crate::counters::{DropCounters, PortCounters};
    use crate::engine::Engine;
    use crate::fdb::FdbConfig;
    use crate::frame::FramePool;
    use crate::offload::Offload;
    use crate::port::mem::{MemPort, MemPortHandle};

    /// An IPv4/TCP frame from 10.0.0.1 to 10.0.0.2 whose TCP checksum field holds only the
    /// pseudo-header sum, as a TAP with offloads hands it over.
    fn partial_tcp(payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 5201, 1000, 512)
            .ack(1)
            .psh()
            .write(&mut f, payload)
            .unwrap();
        let tcp_len = (f.len() - 34) as u32;
        let mut sum: u32 = 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 6 + tcp_len;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        f[50..52].copy_from_slice(&(sum as u16).to_be_bytes());
        f
    }

    fn tcp_checksum_ok(frame: &[u8]) -> bool {
        let p = SlicedPacket::from_ethernet(frame).unwrap();
        let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(tcp))) = (&p.net, &p.transport)
        else {
            return false;
        };
        let want = tcp
            .to_header()
            .calc_checksum_ipv4(&ip.header().to_header(), tcp.payload())
            .unwrap();
        want == tcp.checksum()
    }

    fn engine_with(ports: [MemPort; 3]) -> (Engine, Arc<DropCounters>) {
        let drops = Arc::new(DropCounters::default());
        let mut e = Engine::new(FramePool::new_heap(512).unwrap(), drops.clone());
        e.add_bridge(1, "br".into(), FdbConfig::default());
        for (i, p) in ports.into_iter().enumerate() {
            let id = i as u32 + 1;
            e.insert_port(id, 1, Box::new(p), 0, Arc::new(PortCounters::default()));
        }
        (e, drops)
    }

    fn mem(offloads: bool) -> (MemPort, MemPortHandle) {
        let (p, h) = MemPort::new();
        (p.with_offloads(offloads), h)
    }

    #[test]
    fn offloads_pass_to_ports_that_take_them_and_are_finished_for_the_rest() {
        let ((a, ha), (b, hb), (c, hc)) = (mem(true), mem(false), mem(true));
        let (mut e, drops) = engine_with([a, b, c]);
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let sup = partial_tcp(&payload);
        let gso = Offload::tcpv4_gso(1448);
        // Unknown destination: flooded to b (no offloads) and c (offloads).
        ha.inject_with_offload(&sup, gso);
        for _ in 0..4 {
            e.poll(0);
        }
        let to_c = hc.take_tx_with_offload();
        assert_eq!(
            to_c,
            vec![(sup.clone(), gso)],
            "c takes the super-frame as it is"
        );
        let to_b = hb.take_tx_with_offload();
        assert_eq!(to_b.len(), payload.len().div_ceil(1448));
        let mut joined = Vec::new();
        for (seg, off) in &to_b {
            assert_eq!(*off, Offload::NONE);
            assert!(seg.len() <= 14 + 20 + 20 + 1448);
            assert!(tcp_checksum_ok(seg), "segment checksum");
            joined.extend_from_slice(&seg[54..]);
        }
        assert_eq!(joined, payload);

        // A small frame with only its checksum partial: completed for b, left for c.
        let small = partial_tcp(b"hello");
        let csum = Offload {
            gso_type: Offload::GSO_NONE,
            gso_size: 0,
            ..gso
        };
        ha.inject_with_offload(&small, csum);
        e.poll(0);
        let to_b = hb.take_tx_with_offload();
        assert_eq!(to_b.len(), 1);
        assert!(tcp_checksum_ok(&to_b[0].0));
        assert_eq!(to_b[0].1, Offload::NONE);
        assert_eq!(hc.take_tx_with_offload(), vec![(small, csum)]);
        assert_eq!(drops.frames_dropped(), 0, "no drops");
        assert_eq!(e.pool().available(), 512, "every frame back in the pool");
        assert_eq!(
            e.pool().jumbo_available(),
            crate::frame::JUMBO_FRAMES as usize
        );
    }

    #[test]
    fn segments_the_pool_cannot_hold_are_counted() {
        let drops = Arc::new(DropCounters::default());
        let mut e = Engine::new(FramePool::new_heap(4).unwrap(), drops.clone());
        e.add_bridge(1, "br".into(), FdbConfig::default());
        let ((a, ha), (b, hb)) = (mem(true), mem(false));
        for (id, p) in [(1, a), (2, b)] {
            e.insert_port(id, 1, Box::new(p), 0, Arc::new(PortCounters::default()));
        }
        // 7 segments, 4 ordinary frames: 4 go out, 3 are counted, nothing leaks.
        ha.inject_with_offload(&partial_tcp(&[7; 10_000]), Offload::tcpv4_gso(1448));
        e.poll(0);
        assert_eq!(hb.take_tx().len(), 4);
        assert_eq!(drops.get(OutputDrop::PoolExhausted), 3);
        assert_eq!(e.pool().available(), 4);
        assert_eq!(
            e.pool().jumbo_available(),
            crate::frame::JUMBO_FRAMES as usize
        );
    }

    #[test]
    fn malformed_offload_requests_are_counted_drops() {
        let ((a, ha), (b, hb), (c, _hc)) = (mem(true), mem(false), mem(true));
        let (mut e, drops) = engine_with([a, b, c]);
        let frame = partial_tcp(&[0; 3000]);
        // A checksum range past the end of the frame, and a UDP GSO type the switch does not
        // segment: both dropped for b, with a reason.
        let bad_range = Offload {
            flags: Offload::F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 9000,
            ..Offload::NONE
        };
        let udp_gso = Offload {
            gso_type: Offload::GSO_UDP_L4,
            gso_size: 1000,
            ..Offload::NONE
        };
        ha.inject_with_offload(&frame, bad_range);
        ha.inject_with_offload(&frame, udp_gso);
        e.poll(0);
        assert!(hb.take_tx().is_empty());
        assert_eq!(drops.get(OutputDrop::OffloadFailed), 2);
        assert_eq!(e.pool().available(), 512);
    }
}
