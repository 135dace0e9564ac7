//! In-memory ports for unit tests and benches: never the only proof of anything.
//!
//! A [`MemPort`] has a receive side fed by its [`MemPortHandle`] (frames injected as bytes) or
//! by a generator replaying template frames without allocating, and a transmit side that
//! either records frames for the handle to read or just counts them (a sink).

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use super::{BackendInfo, Burst, PortIo, PortType, TxOutcome};
use crate::frame::FramePool;
use crate::offload::Offload;

#[derive(Default)]
struct Queues {
    to_switch: VecDeque<(Vec<u8>, Offload)>,
    from_switch: VecDeque<(Vec<u8>, Offload)>,
}

enum Source {
    Queue,
    Generator {
        templates: Vec<(Vec<u8>, Offload)>,
        next: usize,
        remaining: u64,
    },
}

/// An in-memory port.
pub struct MemPort {
    queues: Arc<Mutex<Queues>>,
    source: Source,
    record_tx: bool,
    tx_frames: u64,
    takes_offloads: bool,
    /// Frames a transmit burst accepts at most (a small ring); the rest are dropped.
    tx_ring: usize,
    /// Other workers may write to it directly ([`PortIo::remote_writer`]), as to a TAP.
    shared_tx: bool,
}

/// The test's side of a [`MemPort`].
#[derive(Clone)]
pub struct MemPortHandle {
    queues: Arc<Mutex<Queues>>,
}

impl std::fmt::Debug for MemPortHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemPortHandle")
    }
}

impl MemPort {
    /// A port whose receive side is fed by the returned handle and whose transmitted frames
    /// the handle can read back.
    pub fn new() -> (MemPort, MemPortHandle) {
        let queues = Arc::new(Mutex::new(Queues::default()));
        (
            MemPort {
                queues: queues.clone(),
                source: Source::Queue,
                record_tx: true,
                tx_frames: 0,
                takes_offloads: false,
                tx_ring: usize::MAX,
                shared_tx: false,
            },
            MemPortHandle { queues },
        )
    }

    /// A port that receives `count` frames cycling through `templates` (copied into pool
    /// frames, no allocation), and discards what it transmits.
    pub fn generator(templates: Vec<Vec<u8>>, count: u64) -> MemPort {
        let templates = templates.into_iter().map(|t| (t, Offload::NONE)).collect();
        MemPort::generator_with_offloads(templates, count)
    }

    /// A generator whose frames carry offloads still to do, as a TAP with virtio-net headers
    /// hands them over.
    pub fn generator_with_offloads(templates: Vec<(Vec<u8>, Offload)>, count: u64) -> MemPort {
        MemPort {
            queues: Arc::default(),
            source: Source::Generator {
                templates,
                next: 0,
                remaining: count,
            },
            record_tx: false,
            tx_frames: 0,
            takes_offloads: false,
            tx_ring: usize::MAX,
            shared_tx: false,
        }
    }

    /// The same port, taking frames with offloads still to do as they are (like a TAP with
    /// virtio-net headers) when `on`.
    pub fn with_offloads(mut self, on: bool) -> MemPort {
        self.takes_offloads = on;
        self
    }

    /// The same port, writable by other workers directly (as a TAP is) when `on`: frames they
    /// send to it land on the same transmit side.
    pub fn with_shared_tx(mut self, on: bool) -> MemPort {
        self.shared_tx = on;
        self
    }

    /// The same port, accepting at most `frames` per transmit burst (the rest are dropped and
    /// reported as such), as a full ring would.
    pub fn with_tx_ring(mut self, frames: usize) -> MemPort {
        self.tx_ring = frames;
        self
    }

    /// A port that receives nothing and discards what it transmits.
    pub fn sink() -> MemPort {
        MemPort::generator(Vec::new(), 0)
    }

    /// Frames transmitted so far.
    pub fn tx_frames(&self) -> u64 {
        self.tx_frames
    }
}

impl MemPortHandle {
    /// Queues a frame for the switch to receive.
    pub fn inject(&self, bytes: &[u8]) {
        self.inject_with_offload(bytes, Offload::NONE);
    }

    /// Queues a frame with offloads still to do, as a TAP with virtio-net headers hands over.
    pub fn inject_with_offload(&self, bytes: &[u8], offload: Offload) {
        if let Ok(mut q) = self.queues.lock() {
            q.to_switch.push_back((bytes.to_vec(), offload));
        }
    }

    /// Takes every frame the switch transmitted on this port so far.
    pub fn take_tx(&self) -> Vec<Vec<u8>> {
        self.take_tx_with_offload()
            .into_iter()
            .map(|(bytes, _)| bytes)
            .collect()
    }

    /// Takes every frame transmitted so far, with the offload state each one left with.
    pub fn take_tx_with_offload(&self) -> Vec<(Vec<u8>, Offload)> {
        self.queues
            .lock()
            .map(|mut q| q.from_switch.drain(..).collect())
            .unwrap_or_default()
    }
}

impl PortIo for MemPort {
    fn rx_burst(&mut self, pool: &mut FramePool, out: &mut Burst) -> usize {
        let mut n = 0;
        match &mut self.source {
            Source::Queue => {
                let Ok(mut q) = self.queues.lock() else {
                    return 0;
                };
                while !out.is_full() {
                    let Some((bytes, offload)) = q.to_switch.front() else {
                        break;
                    };
                    let Some(mut frame) = pool.alloc_copy(bytes) else {
                        break;
                    };
                    frame.set_offload(*offload);
                    q.to_switch.pop_front();
                    out.push(frame);
                    n += 1;
                }
            }
            Source::Generator {
                templates,
                next,
                remaining,
            } => {
                while !out.is_full() && *remaining > 0 && !templates.is_empty() {
                    let (bytes, offload) = &templates[*next];
                    let Some(mut frame) = pool.alloc_copy(bytes) else {
                        break;
                    };
                    frame.set_offload(*offload);
                    *next = (*next + 1) % templates.len();
                    *remaining -= 1;
                    out.push(frame);
                    n += 1;
                }
            }
        }
        n
    }

    fn tx_burst(&mut self, pool: &mut FramePool, frames: &mut Burst) -> TxOutcome {
        let mut outcome = TxOutcome::default();
        let mut q = if self.record_tx {
            self.queues.lock().ok()
        } else {
            None
        };
        for frame in frames.drain(..) {
            if outcome.sent as usize >= self.tx_ring {
                outcome.dropped += 1;
                pool.free(frame);
                continue;
            }
            outcome.sent += 1;
            outcome.bytes += frame.len() as u64;
            if let Some(q) = q.as_mut() {
                q.from_switch
                    .push_back((pool.data(&frame).to_vec(), frame.offload()));
            }
            pool.free(frame);
        }
        self.tx_frames += u64::from(outcome.sent);
        outcome
    }

    fn maintain(&mut self, _pool: &mut FramePool) -> bool {
        false
    }

    fn poll_fds(&self, _out: &mut Vec<RawFd>) {}

    fn remote_writer(&self) -> Option<Box<dyn PortIo>> {
        self.shared_tx.then(|| {
            Box::new(MemPort {
                queues: self.queues.clone(),
                source: Source::Generator {
                    templates: Vec::new(),
                    next: 0,
                    remaining: 0,
                },
                record_tx: self.record_tx,
                tx_frames: 0,
                takes_offloads: self.takes_offloads,
                tx_ring: self.tx_ring,
                shared_tx: true,
            }) as Box<dyn PortIo>
        })
    }

    fn takes_offloads(&self) -> bool {
        self.takes_offloads
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            port_type: PortType::Mem,
            mode: "mem".into(),
            queues: 1,
            ifindex: 0,
            fault: None,
        }
    }

    fn detach(&mut self, _pool: &mut FramePool) {}
}
