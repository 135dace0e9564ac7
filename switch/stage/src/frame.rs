//! Frames and the per-worker frame pool.
//!
//! A [`Frame`] is a move-only handle to one fixed-size chunk of a [`FramePool`]; the pool is
//! either a plain heap arena (tests, benches, TAP-only use) or a region the port layer owns
//! (the AF_XDP UMEM shared by every socket of one worker, so a frame received on one AF_XDP
//! port is transmitted on another without a copy). A pool belongs to exactly one worker
//! thread; nothing here is `Sync`.
//!
//! Layout of a chunk: `FRAME_SIZE` bytes, packet data starting at `DATA_OFFSET` (the kernel's
//! `XDP_PACKET_HEADROOM`, which is where AF_XDP copy mode writes received packets). A stage
//! may push headers in front of the data into that headroom (VXLAN encapsulation needs 50
//! bytes) and pull them off again: the frame records where its data starts.
//!
//! Beside the chunks, every pool has a few jumbo chunks ([`JUMBO_CAPACITY`] bytes each, on the
//! heap, never in a kernel ring) for GSO super-frames read from TAP ports with offloads. A
//! jumbo frame goes to ports that take offloads as it is, and is segmented into ordinary
//! frames for every other port. A frame carries its [`Offload`] (the virtio-net header it
//! arrived with), so the output side knows what is still to be done.
#![allow(unsafe_code)]

use std::any::Any;
use std::ptr::NonNull;

pub use crate::offload::Offload;

/// Size of one chunk of the pool (and of one AF_XDP UMEM frame).
pub const FRAME_SIZE: u32 = 4096;
/// Offset of packet data inside a chunk: AF_XDP's `XDP_PACKET_HEADROOM`.
pub const DATA_OFFSET: u32 = 256;
/// Largest packet a frame can hold.
pub const FRAME_CAPACITY: usize = (FRAME_SIZE - DATA_OFFSET) as usize;
/// Size of one jumbo chunk: room for a 64 KiB GSO super-frame, its Ethernet header and the
/// headroom, in whole pages.
pub const JUMBO_SIZE: usize = 17 * 4096;
/// Largest packet a jumbo frame can hold (more than a TAP ever hands over: 64 KiB + 128).
pub const JUMBO_CAPACITY: usize = JUMBO_SIZE - DATA_OFFSET as usize;
/// Jumbo chunks in every pool: enough for a full receive burst from a TAP and the frames still
/// waiting to be sent; their pages are only touched when used.
pub const JUMBO_FRAMES: u32 = 96;
/// The chunk index of a [`Frame::hole`] (no pool has that many chunks).
const HOLE: u32 = u32::MAX;

/// A move-only handle to one chunk of a [`FramePool`] holding `len` bytes of packet data,
/// starting `head` bytes into the chunk.
///
/// Not `Clone`/`Copy`: whoever holds the handle owns the bytes. Give it back with
/// [`FramePool::free`] or hand it to a port's transmit path.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a frame must be freed or transmitted, or its chunk leaks from the pool"]
pub struct Frame {
    chunk: u32,
    len: u32,
    head: u16,
    offload: Offload,
}

impl Frame {
    /// Bytes of packet data.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True when the frame holds no data.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Index of the chunk in its pool.
    #[inline]
    pub fn chunk(&self) -> u32 {
        self.chunk
    }

    /// Bytes in front of the data that headers can be pushed into.
    #[inline]
    pub fn headroom(&self) -> usize {
        usize::from(self.head)
    }

    /// Whether the data starts where ports receive it ([`DATA_OFFSET`]); only such frames
    /// go to kernel rings as they are ([`FramePool::reset_head`] moves the others).
    #[inline]
    pub fn has_default_head(&self) -> bool {
        u32::from(self.head) == DATA_OFFSET
    }

    /// Sets the packet length. The pool never shows more than the chunk holds
    /// ([`FramePool::capacity_of`]).
    #[inline]
    pub fn set_len(&mut self, len: usize) {
        debug_assert!(len <= JUMBO_CAPACITY);
        self.len = len.min(JUMBO_CAPACITY) as u32;
    }

    /// What is still to be done to the frame's checksums and segments (from its TAP's
    /// virtio-net header; [`Offload::NONE`] for every other source).
    #[inline]
    pub fn offload(&self) -> Offload {
        self.offload
    }

    /// Records the frame's offload state.
    #[inline]
    pub fn set_offload(&mut self, offload: Offload) {
        self.offload = offload;
    }

    /// Rebuilds a handle from a chunk index, for port backends returning frames from a ring.
    ///
    /// The caller must own the chunk (it came back from the kernel's RX or completion ring,
    /// or from [`Frame::into_raw`]); two live handles to one chunk break the pool's ownership.
    #[inline]
    pub fn from_raw(chunk: u32, len: u32) -> Frame {
        Frame {
            chunk,
            len: len.min(FRAME_CAPACITY as u32),
            head: DATA_OFFSET as u16,
            offload: Offload::NONE,
        }
    }

    /// A handle owning nothing: what a batch slot holds once a stage took its frame
    /// ([`Batch::hold`](crate::batch::Batch::hold)). Freeing it does nothing.
    #[inline]
    pub fn hole() -> Frame {
        Frame {
            chunk: HOLE,
            len: 0,
            head: DATA_OFFSET as u16,
            offload: Offload::NONE,
        }
    }

    /// Whether this is a [`hole`](Frame::hole).
    #[inline]
    pub fn is_hole(&self) -> bool {
        self.chunk == HOLE
    }

    /// Gives up the handle, returning `(chunk, len)`; the caller now owns the chunk. Its
    /// offload state is gone with it: only frames without one, whose data starts at
    /// [`DATA_OFFSET`], go to kernel rings.
    #[inline]
    pub fn into_raw(self) -> (u32, u32) {
        debug_assert!(self.has_default_head(), "frame with a moved head to a ring");
        let Frame { chunk, len, .. } = self;
        (chunk, len)
    }
}

/// Errors creating a pool.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The pool must have at least one frame and fewer than 2^20.
    #[error("invalid frame count {0}: must be between 1 and 1048576")]
    BadFrameCount(u32),
}

#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct Chunk([u8; FRAME_SIZE as usize]);

/// A fixed set of frames owned by one worker. Allocation is a stack pop; nothing grows.
pub struct FramePool {
    base: NonNull<u8>,
    nframes: u32,
    free: Vec<u32>,
    /// Keeps the chunks' memory alive and in place: a heap arena, or the port layer's region
    /// (an AF_XDP UMEM), which it finds again with [`FramePool::owner`].
    owner: Box<dyn Any + Send>,
    /// Jumbo chunks: handles `nframes..nframes + JUMBO_FRAMES`, at `jumbo_base`, which points
    /// into `_jumbo` (kept alive and in place by the box).
    jumbo_base: NonNull<u8>,
    _jumbo: Box<[u8]>,
    jumbo_free: Vec<u32>,
}

impl std::fmt::Debug for FramePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramePool")
            .field("nframes", &self.nframes)
            .field("free", &self.free.len())
            .field("jumbo_free", &self.jumbo_free.len())
            .finish()
    }
}

// SAFETY: the pool's memory is exclusively owned by the pool (and the kernel rings of sockets
// that the same owner drives); moving the whole pool to another thread moves that ownership.
unsafe impl Send for FramePool {}

/// A heap arena's chunks (the owner of a heap pool).
struct HeapChunks(#[allow(dead_code)] Box<[Chunk]>);

impl FramePool {
    /// A pool of `nframes` frames on the heap.
    pub fn new_heap(nframes: u32) -> Result<FramePool, PoolError> {
        check_count(nframes)?;
        let mut chunks = vec![Chunk([0; FRAME_SIZE as usize]); nframes as usize].into_boxed_slice();
        let base = NonNull::new(chunks.as_mut_ptr().cast::<u8>())
            .ok_or(PoolError::BadFrameCount(nframes))?;
        Ok(FramePool::with_jumbo(
            base,
            nframes,
            Box::new(HeapChunks(chunks)),
        ))
    }

    /// A pool over `nframes` chunks of [`FRAME_SIZE`] bytes at `base`, kept alive by `owner`
    /// (the port layer's AF_XDP UMEM).
    ///
    /// # Safety
    ///
    /// `base` must point to `nframes * FRAME_SIZE` bytes, writable, that stay valid and in
    /// place as long as `owner` lives, and that nothing else reads or writes except through
    /// this pool's frames (and kernel rings the pool's owner drives with them).
    pub unsafe fn from_region(
        base: NonNull<u8>,
        nframes: u32,
        owner: Box<dyn Any + Send>,
    ) -> Result<FramePool, PoolError> {
        check_count(nframes)?;
        Ok(FramePool::with_jumbo(base, nframes, owner))
    }

    fn with_jumbo(base: NonNull<u8>, nframes: u32, owner: Box<dyn Any + Send>) -> FramePool {
        // Zeroed by the allocator (fresh pages): untouched jumbo chunks cost no memory.
        let mut jumbo = vec![0u8; JUMBO_FRAMES as usize * JUMBO_SIZE].into_boxed_slice();
        let jumbo_base = NonNull::new(jumbo.as_mut_ptr()).unwrap_or(NonNull::dangling());
        FramePool {
            base,
            nframes,
            free: (0..nframes).rev().collect(),
            owner,
            jumbo_base,
            _jumbo: jumbo,
            jumbo_free: (nframes..nframes + JUMBO_FRAMES).rev().collect(),
        }
    }

    /// The owner given to [`FramePool::from_region`], if it is a `T`.
    pub fn owner<T: Any>(&self) -> Option<&T> {
        self.owner.downcast_ref::<T>()
    }

    /// Takes a free frame (length 0), or `None` when the pool is exhausted.
    #[inline]
    pub fn alloc(&mut self) -> Option<Frame> {
        self.free.pop().map(Self::empty)
    }

    /// Takes a free jumbo frame ([`JUMBO_CAPACITY`] bytes), or `None` when all are in use.
    #[inline]
    pub fn alloc_jumbo(&mut self) -> Option<Frame> {
        self.jumbo_free.pop().map(Self::empty)
    }

    /// A frame that can hold `len` bytes: an ordinary one when it fits, else a jumbo one.
    #[inline]
    pub fn alloc_for(&mut self, len: usize) -> Option<Frame> {
        if len <= FRAME_CAPACITY {
            self.alloc()
        } else if len <= JUMBO_CAPACITY {
            self.alloc_jumbo()
        } else {
            None
        }
    }

    #[inline]
    fn empty(chunk: u32) -> Frame {
        Frame {
            chunk,
            len: 0,
            head: DATA_OFFSET as u16,
            offload: Offload::NONE,
        }
    }

    /// Returns a frame to the pool.
    #[inline]
    pub fn free(&mut self, frame: Frame) {
        let chunk = frame.chunk;
        if chunk < self.nframes {
            if self.free.len() < self.nframes as usize {
                self.free.push(chunk);
            }
        } else if chunk < self.nframes + JUMBO_FRAMES {
            if self.jumbo_free.len() < JUMBO_FRAMES as usize {
                self.jumbo_free.push(chunk);
            }
        } else {
            debug_assert!(chunk == HOLE, "frame from another pool");
        }
    }

    /// Whether `frame` is a jumbo frame (it never goes to an AF_XDP ring).
    #[inline]
    pub fn is_jumbo(&self, frame: &Frame) -> bool {
        frame.chunk >= self.nframes
    }

    /// Bytes `frame` can hold from where its data starts.
    #[inline]
    pub fn capacity_of(&self, frame: &Frame) -> usize {
        self.area(frame.chunk).1 - frame.headroom()
    }

    /// Jumbo frames currently free.
    #[inline]
    pub fn jumbo_available(&self) -> usize {
        self.jumbo_free.len()
    }

    /// Returns a raw chunk (from a kernel ring) to the free list.
    #[inline]
    pub fn free_chunk(&mut self, chunk: u32) {
        self.free(Frame::from_raw(chunk, 0));
    }

    /// Takes a free chunk index for a kernel ring (fill ring), or `None`.
    #[inline]
    pub fn alloc_chunk(&mut self) -> Option<u32> {
        self.free.pop()
    }

    /// Frames currently free.
    #[inline]
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Total frames in the pool.
    #[inline]
    pub fn capacity(&self) -> u32 {
        self.nframes
    }

    /// Start of `chunk` and the bytes it holds.
    #[inline]
    fn area(&self, chunk: u32) -> (*mut u8, usize) {
        if chunk < self.nframes {
            // SAFETY: chunk < nframes, so the offset stays inside the pool's allocation.
            let p = unsafe { self.base.as_ptr().add(chunk as usize * FRAME_SIZE as usize) };
            return (p, FRAME_SIZE as usize);
        }
        let j = (chunk - self.nframes) as usize;
        assert!(j < JUMBO_FRAMES as usize, "frame from another pool");
        // SAFETY: j < JUMBO_FRAMES, so the offset stays inside the jumbo allocation, which is
        // JUMBO_FRAMES * JUMBO_SIZE bytes.
        let p = unsafe { self.jumbo_base.as_ptr().add(j * JUMBO_SIZE) };
        (p, JUMBO_SIZE)
    }

    /// The whole chunk of `frame`, writable.
    #[inline]
    fn chunk_mut<'a>(&'a self, frame: &'a mut Frame) -> &'a mut [u8] {
        let (p, size) = self.area(frame.chunk);
        // SAFETY: the chunk lies inside the pool and holds `size` bytes; `frame` is the only
        // handle to it and is borrowed mutably for the slice's lifetime, so this is the only
        // access.
        unsafe { std::slice::from_raw_parts_mut(p, size) }
    }

    /// The packet bytes of `frame`.
    #[inline]
    pub fn data<'a>(&'a self, frame: &'a Frame) -> &'a [u8] {
        let (p, size) = self.area(frame.chunk);
        let start = frame.headroom().min(size);
        let len = frame.len().min(size - start);
        // SAFETY: [start, start + len) lies inside the chunk, which lies inside the pool;
        // `frame` is the only handle to it and is borrowed shared for the slice's lifetime, so
        // nobody writes it meanwhile.
        unsafe { std::slice::from_raw_parts(p.add(start), len) }
    }

    /// The packet bytes of `frame`, writable.
    #[inline]
    pub fn data_mut<'a>(&'a self, frame: &'a mut Frame) -> &'a mut [u8] {
        let (start, len) = (frame.headroom(), frame.len());
        let chunk = self.chunk_mut(frame);
        let start = start.min(chunk.len());
        let end = start + len.min(chunk.len() - start);
        &mut chunk[start..end]
    }

    /// Everything from where `frame`'s data starts to the end of its chunk
    /// ([`FramePool::capacity_of`] bytes), for filling it.
    #[inline]
    pub fn buffer_mut<'a>(&'a self, frame: &'a mut Frame) -> &'a mut [u8] {
        let start = frame.headroom();
        let chunk = self.chunk_mut(frame);
        let start = start.min(chunk.len());
        &mut chunk[start..]
    }

    /// Pushes `n` bytes in front of `frame`'s data (a header to be written there) and returns
    /// the whole data, new bytes first; `None`, with the frame unchanged, when the headroom is
    /// smaller than `n`. A partial checksum's start moves with the data.
    #[inline]
    pub fn push_header<'a>(&'a self, frame: &'a mut Frame, n: usize) -> Option<&'a mut [u8]> {
        let n16 = u16::try_from(n).ok().filter(|n| *n <= frame.head)?;
        frame.head -= n16;
        frame.len += u32::from(n16);
        frame.offload.shift(i32::from(n16));
        Some(self.data_mut(frame))
    }

    /// Pulls `n` bytes off the front of `frame`'s data (a header that was read); false, with
    /// the frame unchanged, when it holds fewer than `n` bytes.
    #[inline]
    pub fn pull_header(&self, frame: &mut Frame, n: usize) -> bool {
        let Some(n16) = u16::try_from(n).ok().filter(|n| u32::from(*n) <= frame.len) else {
            return false;
        };
        frame.head += n16;
        frame.len -= u32::from(n16);
        frame.offload.shift(-i32::from(n16));
        true
    }

    /// Moves `frame`'s data back to [`DATA_OFFSET`], where kernel rings expect it (after a
    /// header was pushed or pulled); false when it no longer fits from there.
    #[inline]
    pub fn reset_head(&self, frame: &mut Frame) -> bool {
        if frame.has_default_head() {
            return true;
        }
        let (start, len) = (frame.headroom(), frame.len());
        let to = DATA_OFFSET as usize;
        let chunk = self.chunk_mut(frame);
        if to + len > chunk.len() || start + len > chunk.len() {
            return false;
        }
        chunk.copy_within(start..start + len, to);
        frame.head = DATA_OFFSET as u16;
        true
    }

    /// Allocates a frame holding a copy of `bytes` (a jumbo one if they need it); `None` if
    /// the pool is empty or the bytes do not fit even a jumbo frame.
    #[inline]
    pub fn alloc_copy(&mut self, bytes: &[u8]) -> Option<Frame> {
        let mut f = self.alloc_for(bytes.len())?;
        self.buffer_mut(&mut f)[..bytes.len()].copy_from_slice(bytes);
        f.set_len(bytes.len());
        Some(f)
    }

    /// Allocates a copy of `frame`, offload state included (for flooding to several ports).
    #[inline]
    pub fn clone_frame(&mut self, frame: &Frame) -> Option<Frame> {
        let len = self.data(frame).len();
        let mut f = self.alloc_for(len)?;
        let (src, _) = self.area(frame.chunk);
        let (dst, _) = self.area(f.chunk);
        // SAFETY: `frame` and `f` are distinct chunks of this pool (f was just taken from a
        // free list, frame is live), so the ranges do not overlap; `len` bytes lie inside
        // `frame`'s chunk from its head (`data` says so) and fit `f` from the default head (it
        // was chosen to hold them).
        unsafe {
            std::ptr::copy_nonoverlapping(src.add(frame.headroom()), dst.add(f.headroom()), len)
        };
        f.set_len(len);
        f.offload = frame.offload;
        Some(f)
    }

    /// The chunk index of a ring descriptor's address (an offset into the region).
    #[inline]
    pub fn chunk_of_addr(&self, addr: usize) -> u32 {
        (addr / FRAME_SIZE as usize) as u32
    }
}

fn check_count(nframes: u32) -> Result<(), PoolError> {
    if nframes == 0 || nframes > (1 << 20) {
        return Err(PoolError::BadFrameCount(nframes));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_roundtrip_and_exhaustion() {
        let mut pool = FramePool::new_heap(4).unwrap();
        let frames: Vec<Frame> = (0..4).map(|_| pool.alloc().unwrap()).collect();
        assert!(pool.alloc().is_none());
        for f in frames {
            pool.free(f);
        }
        assert_eq!(pool.available(), 4);
    }

    #[test]
    fn copy_and_clone_keep_bytes() {
        let mut pool = FramePool::new_heap(4).unwrap();
        let f = pool.alloc_copy(&[1, 2, 3, 4]).unwrap();
        let g = pool.clone_frame(&f).unwrap();
        assert_eq!(pool.data(&g), &[1, 2, 3, 4]);
        assert_ne!(f.chunk(), g.chunk());
        pool.free(f);
        pool.free(g);
    }

    #[test]
    fn jumbo_frames_hold_super_frames_and_keep_their_offload() {
        let mut pool = FramePool::new_heap(2).unwrap();
        let big = vec![7u8; 65_000];
        let mut f = pool.alloc_copy(&big).unwrap();
        assert!(pool.is_jumbo(&f));
        assert_eq!(pool.capacity_of(&f), JUMBO_CAPACITY);
        let off = Offload {
            flags: Offload::F_NEEDS_CSUM,
            gso_type: Offload::GSO_TCPV4,
            gso_size: 1448,
            ..Offload::NONE
        };
        f.set_offload(off);
        let g = pool.clone_frame(&f).unwrap();
        assert_eq!((pool.data(&g), g.offload()), (&big[..], off));
        assert_eq!(
            pool.available(),
            2,
            "jumbo frames do not use ordinary chunks"
        );
        assert_eq!(pool.jumbo_available(), JUMBO_FRAMES as usize - 2);
        pool.free(f);
        pool.free(g);
        assert_eq!(pool.jumbo_available(), JUMBO_FRAMES as usize);
        let small = pool.alloc_copy(&[1; 100]).unwrap();
        assert!(!pool.is_jumbo(&small));
        pool.free(small);
        assert!(pool.alloc_copy(&vec![0; JUMBO_CAPACITY + 1]).is_none());
    }

    #[test]
    fn headers_push_and_pull_at_the_front() {
        let mut pool = FramePool::new_heap(2).unwrap();
        let mut f = pool.alloc_copy(&[1, 2, 3, 4]).unwrap();
        f.set_offload(Offload {
            flags: Offload::F_NEEDS_CSUM,
            csum_start: 2,
            csum_offset: 1,
            ..Offload::NONE
        });
        let data = pool.push_header(&mut f, 50).unwrap();
        assert_eq!(data.len(), 54);
        data[..50].fill(9);
        assert_eq!(&pool.data(&f)[50..], &[1, 2, 3, 4]);
        assert_eq!(
            f.offload().csum_start,
            52,
            "checksum start moves with the data"
        );
        assert_eq!(f.headroom(), DATA_OFFSET as usize - 50);
        assert!(pool.push_header(&mut f, DATA_OFFSET as usize).is_none());
        assert!(pool.reset_head(&mut f));
        assert!(f.has_default_head());
        assert_eq!(&pool.data(&f)[..2], &[9, 9]);
        assert!(pool.pull_header(&mut f, 50));
        assert_eq!(pool.data(&f), &[1, 2, 3, 4]);
        assert_eq!(f.offload().csum_start, 2);
        assert!(!pool.pull_header(&mut f, 5));
        assert!(pool.reset_head(&mut f));
        assert_eq!(pool.data(&f), &[1, 2, 3, 4]);
        assert_eq!(pool.capacity_of(&f), FRAME_CAPACITY);
        pool.free(f);
        assert_eq!(pool.available(), 2);
    }

    #[test]
    fn bad_counts_are_refused() {
        assert!(FramePool::new_heap(0).is_err());
    }
}
