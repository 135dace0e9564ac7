//! A worker's frame pool as an AF_XDP UMEM: the pool's chunks are the UMEM's frames, shared by
//! every socket of the worker, so a frame received on one AF_XDP port is sent on another
//! without a copy. The UMEM is the pool's owner; the AF_XDP backend finds it (and xsk-rs's
//! descriptor of each chunk) again through [`umem_of`] and [`desc`].
//!
//! Built and used on the worker thread that owns the pool.

use std::num::NonZeroU32;
use std::ptr::NonNull;

use crate::frame::{DATA_OFFSET, FRAME_SIZE, FramePool};

/// Why a UMEM could not be made.
#[derive(Debug, thiserror::Error)]
pub enum UmemError {
    /// xsk-rs or the kernel refused (needs CAP_NET_RAW and CAP_IPC_LOCK or memlock).
    #[error("cannot create AF_XDP UMEM: {0}")]
    Create(String),
    /// The pool over it could not be made.
    #[error(transparent)]
    Pool(#[from] crate::frame::PoolError),
}

/// The pool's owner when it is a UMEM: the UMEM and xsk-rs's descriptor of each chunk.
struct UmemRegion {
    umem: xsk_rs::Umem,
    descs: Box<[xsk_rs::FrameDesc]>,
}

fn create(e: impl std::fmt::Display) -> UmemError {
    UmemError::Create(e.to_string())
}

/// A pool of `nframes` frames in a new AF_XDP UMEM, to be shared by a worker's sockets.
pub fn new_pool(nframes: u32, ring_size: u32) -> Result<FramePool, UmemError> {
    use xsk_rs::config::{FrameSize, QueueSize, UmemConfig};
    let count = NonZeroU32::new(nframes).ok_or_else(|| create("no frames"))?;
    let qs = QueueSize::new(ring_size).map_err(create)?;
    let cfg = UmemConfig::builder()
        .frame_size(FrameSize::new(FRAME_SIZE).map_err(create)?)
        .frame_headroom(0)
        .fill_queue_size(qs)
        .comp_queue_size(qs)
        .build()
        .map_err(create)?;
    let (umem, descs) = xsk_rs::Umem::new(cfg, count, false).map_err(create)?;
    let first = descs.first().ok_or_else(|| create("UMEM has no frames"))?;
    if first.addr() != DATA_OFFSET as usize {
        return Err(create(format!(
            "unexpected UMEM data offset {} (want {DATA_OFFSET})",
            first.addr()
        )));
    }
    // SAFETY: `first` describes frame 0 of this UMEM, which nobody else accesses yet; we
    // only take the address of its (empty) data segment.
    let data0 = unsafe { umem.data(first) }.contents().as_ptr();
    // SAFETY: data segment 0 starts DATA_OFFSET bytes into the UMEM region.
    let base = unsafe { data0.sub(DATA_OFFSET as usize) }.cast_mut();
    let base = NonNull::new(base).ok_or_else(|| create("null UMEM"))?;
    let region = UmemRegion {
        umem,
        descs: descs.into_boxed_slice(),
    };
    // SAFETY: the UMEM region is `nframes * FRAME_SIZE` bytes from `base`, kept alive and in
    // place by `region` (the pool's owner); only the pool's frames and the kernel rings of
    // this worker's sockets touch it.
    Ok(unsafe { FramePool::from_region(base, nframes, Box::new(region)) }?)
}

/// The UMEM behind `pool`, when it is one.
pub fn umem_of(pool: &FramePool) -> Option<&xsk_rs::Umem> {
    pool.owner::<UmemRegion>().map(|r| &r.umem)
}

/// xsk-rs's descriptor of `chunk` with its data length set to `len` (AF_XDP backend only).
#[inline]
pub fn desc(pool: &FramePool, chunk: u32, len: u32) -> Option<xsk_rs::FrameDesc> {
    let region = pool.owner::<UmemRegion>()?;
    let mut d = *region.descs.get(chunk as usize)?;
    // SAFETY: `d` describes a chunk of this UMEM owned by the caller; the cursor only records
    // the length in the descriptor, it writes no packet bytes.
    unsafe { region.umem.data_mut(&mut d) }
        .cursor()
        .set_pos(len as usize);
    Some(d)
}
