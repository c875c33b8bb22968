//! The in-memory graph ([`MemoryGraph`]) and its record storage: what the
//! index build links before it writes pages, and what the tests search.

use super::*;
use parking_lot::lock_api::RawMutex as _;
use parking_lot::{Mutex, RawMutex};
use rustc_hash::FxHashMap;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering as AtomicOrdering};

use crate::distance::Metric;

// ---------------------------------------------------------------------------
// The in-memory graph.

/// Most heap TIDs one element holds (identical vectors share an element).
pub const MAX_HEAP_TIDS: usize = 10;

/// An allocation of graph memory failed (the build raises SQLSTATE 53200).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfMemory {
    /// Bytes requested.
    pub bytes: usize,
}

/// Allocates `bytes` zeroed bytes aligned to `align`, or reports failure
/// (never aborts).
fn alloc_zeroed(bytes: usize, align: usize) -> Result<*mut u8, OutOfMemory> {
    let layout = std::alloc::Layout::from_size_align(bytes.max(1), align).map_err(|_| OutOfMemory { bytes })?;
    // SAFETY: the layout's size is not zero.
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    if p.is_null() {
        Err(OutOfMemory { bytes })
    } else {
        Ok(p)
    }
}

/// Frees memory from [`alloc_zeroed`].
///
/// # Safety
/// `p` must come from `alloc_zeroed(bytes, align)` and not be used again.
unsafe fn free(p: *mut u8, bytes: usize, align: usize) {
    // SAFETY: the same layout `alloc_zeroed` used (it succeeded, so it is valid).
    unsafe { std::alloc::dealloc(p, std::alloc::Layout::from_size_align_unchecked(bytes.max(1), align)) }
}

/// The fixed part of an element record. Fields other than `count0` and
/// `spare0` (and the lists) never change once the element is published,
/// except `ntids`; all of them change under `lock`.
#[repr(C)]
pub(super) struct Header {
    /// Guards the element's neighbor lists and `ntids`.
    lock: RawMutex,
    /// Top layer.
    pub(super) level: u8,
    /// Heap TIDs held (1..=[`MAX_HEAP_TIDS`]); 0 once the element was merged
    /// into an identical one during a parallel build (a hole).
    ntids: u8,
    _pad: u8,
    /// Length of the layer-0 list.
    count0: u32,
    /// The first heap TID (the others, if any, are in `extra_tids`).
    pub(super) tid: u64,
    /// Lists of layers `1..=level`, each `[count, M slots]`; null at level 0.
    upper: *mut u32,
    /// `d(x, x)`: the zero of the distance scale at this element (see
    /// [`Heuristic`]).
    zero: f32,
    /// Spare links on layer 0: they follow the `count0` selected ones
    /// (see [`Tuning::spare_links`]).
    spare0: u32,
}

/// Bytes of [`Header`]; the layer-0 list follows.
const HEADER: usize = std::mem::size_of::<Header>();

/// Where things are in an element record.
#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    /// Length of every vector, stored inline in the record; `None`: lengths
    /// vary (sparse vectors), the record holds a pointer and a length.
    vector_len: Option<usize>,
    /// Whether `vector_len` is settled (a graph made with
    /// [`MemoryGraph::new`] settles it at the first insert).
    pub(super) settled: bool,
    /// Offset of the vector (or of its pointer and length).
    vector_at: usize,
    /// Bytes per record.
    stride: usize,
    /// log2 of the records per segment.
    bits: u32,
}

impl Layout {
    fn new<T>(m: usize, vector_len: Option<usize>, settled: bool) -> Layout {
        let align = std::mem::align_of::<T>().max(8);
        assert!(align <= SEGMENT_ALIGN, "vector scalars must not need more than {SEGMENT_ALIGN}-byte alignment");
        let vector_at = (HEADER + 4 * 2 * m).next_multiple_of(align);
        let vector_bytes = match vector_len {
            Some(n) => n * std::mem::size_of::<T>(),
            None => 16,
        };
        let stride = (vector_at + vector_bytes).next_multiple_of(align);
        // Segments of about 256 KiB (at least 16 records), so memory grows
        // in small steps.
        let bits = ((1usize << 18) / stride).max(16).ilog2().min(24);
        Layout { vector_len, settled, vector_at, stride, bits }
    }

    fn segment_bytes(&self) -> usize {
        self.stride << self.bits
    }
}

/// Alignment of segments (a cache line).
const SEGMENT_ALIGN: usize = 64;

/// Bump-allocated memory for upper-layer lists and variable-length
/// vectors, in chunks that never move.
struct Pool {
    chunks: Vec<(*mut u8, usize)>,
    /// Next free byte of the last chunk and bytes left there.
    at: *mut u8,
    left: usize,
}

/// The graph's allocation state, changed only by the thread adding
/// elements (under [`MemoryGraph::grow`]'s lock).
struct Grow {
    /// Records allocated (published ones and the one being written).
    len: u32,
    /// Segments allocated.
    segments: usize,
    /// Entries of the current segment table.
    table_cap: usize,
    /// Tables replaced by larger ones: kept until the graph is dropped,
    /// since readers may still be using them.
    retired: Vec<(*mut AtomicPtr<u8>, usize)>,
    pool: Pool,
}

// SAFETY: the raw pointers are owned allocations of the graph; `Grow` is
// only touched under its mutex.
unsafe impl Send for Grow {}

/// Where [`MemoryGraph::rollback`] returns the allocation state to.
#[derive(Clone, Copy)]
struct Mark {
    len: u32,
    chunks: usize,
    at: *mut u8,
    left: usize,
}

/// Tuning knobs of the in-memory graph, for experiments (`graph_bench`).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tuning {
    /// The neighbor-selection rule.
    pub heuristic: Heuristic,
    /// Relink elements that leave a pruned list (keeps every element
    /// reachable).
    pub relink: bool,
    /// Cache lines of the next neighbor's vector prefetched while the
    /// current one is compared.
    pub prefetch_lines: usize,
    /// Keep *spare links* on layer 0: the candidates the heuristic pruned
    /// (nearest first, not near-duplicates of kept ones) fill the slots the
    /// selected links leave free, and give them up one by one as selected
    /// links arrive, so they never cost the build a heuristic run. Searches
    /// during the build walk only the selected links unless
    /// `spare_in_build`; queries walk both.
    pub spare_links: bool,
    /// Let searches during the build walk spare links too.
    pub spare_in_build: bool,
    /// Let a row whose vector equals an element's join that element (its
    /// heap TID added) instead of becoming an element of its own. Off for
    /// a multi-column index, whose rows with equal vectors may have
    /// different filter keys.
    pub merge_duplicates: bool,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            heuristic: HEURISTIC,
            relink: true,
            prefetch_lines: 8,
            spare_links: true,
            spare_in_build: false,
            merge_duplicates: true,
        }
    }
}

/// Appends the selected link `to` to a list whose `slots` hold `count`
/// selected links (`count < slots.len()`) followed by `spare` spare links,
/// nearest first (see [`Tuning::spare_links`]): a spare copy of `to` is
/// dropped, the other spare links move up a slot, and the farthest one
/// leaves when the slots are full. Returns the new `(count, spare)`.
///
/// Panics if `count + spare > slots.len()` or no selected slot is free.
pub fn append_selected<T: Copy + PartialEq>(slots: &mut [T], count: usize, spare: usize, to: T) -> (usize, usize) {
    assert!(count < slots.len() && count + spare <= slots.len(), "a selected slot is free");
    let mut spare = spare;
    if let Some(j) = slots[count..count + spare].iter().position(|&s| s == to) {
        slots.copy_within(count + j + 1..count + spare, count + j);
        spare -= 1;
    }
    let keep = spare.min(slots.len() - count - 1);
    slots.copy_within(count..count + keep, count + 1);
    slots[count] = to;
    (count + 1, keep)
}

/// [`append_selected`] on an element's list in place.
///
/// # Safety
/// The caller holds the element's lock (or has exclusive access); `count`
/// and `slots` are the list's own (from `list_ptrs`) with `max` slots, and
/// `spare` is its spare count (`spare_ptr`: null above layer 0).
unsafe fn append_link(count: *mut u32, spare: *mut u32, slots: *mut u32, max: usize, to: u32) {
    // SAFETY: per the contract the list has `max` slots, nobody else uses
    // them meanwhile, and the counts are the list's own.
    unsafe {
        let s = if spare.is_null() { 0 } else { *spare as usize };
        let (c, s) = append_selected(std::slice::from_raw_parts_mut(slots, max), *count as usize, s, to);
        *count = c as u32;
        if !spare.is_null() {
            *spare = s as u32;
        }
    }
}

/// A visited element with its distance, ordered by distance, then id (so
/// searches are deterministic even on ties).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Near {
    d: f32,
    id: u32,
}

impl Eq for Near {}
impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Near {
    fn cmp(&self, other: &Self) -> Ordering {
        self.d.total_cmp(&other.d).then(self.id.cmp(&other.id))
    }
}

/// Working memory of one thread's inserts and searches in a
/// [`MemoryGraph`], reused so the inner loops allocate nothing.
#[derive(Default)]
pub struct Scratch {
    visited: Vec<u32>,
    epoch: u32,
    /// A visited set could not grow (reported after the insert).
    failed: Option<OutOfMemory>,
    /// Distances computed by searches (for benchmarks: a cost measure that
    /// does not depend on the machine's load).
    distances: u64,
    candidates: BinaryHeap<Reverse<Near>>,
    results: BinaryHeap<Near>,
    list: Vec<u32>,
    found: Vec<Near>,
    layers: Vec<Vec<Near>>,
    kept: Vec<Near>,
    pruned: Vec<Near>,
    /// The new element's layer-0 spare links (see [`Tuning::spare_links`]).
    spare: Vec<u32>,
    pool: Vec<Near>,
}

impl Scratch {
    /// Starts a new visited set.
    #[inline]
    fn clear_visited(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.visited.fill(0);
            self.epoch = 1;
        }
    }

    /// Marks `id` visited; returns whether it was new. An id beyond the set
    /// grows it (by doubling, fallibly: on failure the id counts as seen and
    /// the failure is reported after the insert).
    #[inline(always)]
    fn visit(&mut self, id: u32) -> bool {
        let i = id as usize;
        if i >= self.visited.len() && !self.grow_visited(i + 1) {
            return false;
        }
        // SAFETY: i < len, checked or grown just above.
        let stamp = unsafe { self.visited.get_unchecked_mut(i) };
        let new = *stamp != self.epoch;
        *stamp = self.epoch;
        new
    }

    #[cold]
    fn grow_visited(&mut self, n: usize) -> bool {
        let target = n.next_power_of_two().max(1024);
        let more = target - self.visited.len();
        if self.visited.try_reserve_exact(more).is_err() {
            self.failed = Some(OutOfMemory { bytes: 4 * target });
            return false;
        }
        self.visited.resize(target, 0);
        true
    }

    /// Sizes the visited set for `n` elements up front.
    pub(super) fn prepare(&mut self, n: usize) -> Result<(), OutOfMemory> {
        if n > self.visited.len() && !self.grow_visited(n) {
            return Err(self.failed.take().unwrap_or(OutOfMemory { bytes: 4 * n }));
        }
        Ok(())
    }

    /// Bytes held.
    pub fn memory_bytes(&self) -> usize {
        4 * self.visited.capacity()
            + 8 * (self.candidates.capacity()
                + self.results.capacity()
                + self.found.capacity()
                + self.kept.capacity()
                + self.pruned.capacity()
                + self.pool.capacity())
            + 4 * self.list.capacity()
            + self.layers.iter().map(|l| 8 * l.capacity()).sum::<usize>()
    }
}

/// Packs an entry point for [`MemoryGraph::entry`]'s atomic.
fn pack_entry(id: u32, level: usize) -> u64 {
    (1 << 63) | ((level as u64) << 32) | id as u64
}

fn unpack_entry(e: u64) -> Option<(u32, usize)> {
    (e >> 63 == 1).then_some((e as u32, ((e >> 32) & 0xFF) as usize))
}

/// Holds an element's lock; unlocks on drop.
struct Locked<'a>(&'a RawMutex);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // SAFETY: this guard locked the mutex in `MemoryGraph::lock`.
        unsafe { self.0.unlock() }
    }
}

/// An HNSW graph held in memory: the index build's working set, and the
/// reference implementation the tests check recall against.
///
/// Each element is one fixed-size record: a header (lock, level, heap TID,
/// the address of its upper-layer lists), its layer-0 list (`2·M` slots) and
/// its vector in the [`Space`]'s working form (inline when all vectors have
/// the same length, as dense ones do). Records sit in segments of about 1 MiB
/// that never move, so several threads can insert at once
/// ([`ParallelInsert`]): each element's lists are guarded by its own lock
/// (`parking_lot`), the entry point by one more. Searches use a visited set
/// of epoch stamps (clearing it costs one increment), prefetch the next
/// neighbor's vector while comparing the current one, and allocate nothing.
pub struct MemoryGraph<S: Space = Metric> {
    space: S,
    params: Params,
    pub(super) max_level: usize,
    pub(super) rec: Records<S::Scalar>,
    /// Elements merged into identical ones during a parallel build.
    holes: AtomicU32,
    /// The entry point (see [`pack_entry`]); 0 while the graph is empty.
    entry: AtomicU64,
    /// Held while an element that may become the entry point is inserted.
    entry_lock: Mutex<()>,
    /// Heap TIDs of elements holding more than one.
    extra_tids: Mutex<FxHashMap<u32, Vec<u64>>>,
    scratch: Scratch,
    tuning: Tuning,
}

/// The element records of a [`MemoryGraph`] (see there): segments of
/// fixed-size records that never move, found through a segment table that
/// only grows (tables it outgrew stay allocated, since readers may still
/// hold them).
pub(super) struct Records<T> {
    /// M (the layer-0 list has `2·M` slots, upper ones `M`).
    m: usize,
    pub(super) layout: Layout,
    /// The segment table: one pointer per segment of `1 << layout.bits`
    /// records.
    table: AtomicPtr<AtomicPtr<u8>>,
    grow: Mutex<Grow>,
    /// Records published: their vector, level and heap TID are written.
    loaded: AtomicU32,
    /// Bytes allocated.
    bytes: AtomicUsize,
    _scalar: std::marker::PhantomData<T>,
}

// SAFETY: shared mutable state is behind atomics, the `grow` mutex or the
// per-element locks; the raw pointers are owned allocations.
unsafe impl<T: Send> Send for Records<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for Records<T> {}

/// What [`MemoryGraph::insert`] did with a vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// A new element with this id.
    Element(u32),
    /// The vector equals element `id`'s; the heap TID was added to it.
    Duplicate(u32),
}

impl<T: Copy> Records<T> {
    fn new(m: usize, layout: Layout) -> Records<T> {
        Records {
            m,
            layout,
            table: AtomicPtr::new(std::ptr::null_mut()),
            grow: Mutex::new(Grow {
                len: 0,
                segments: 0,
                table_cap: 0,
                retired: Vec::new(),
                pool: Pool { chunks: Vec::new(), at: std::ptr::null_mut(), left: 0 },
            }),
            loaded: AtomicU32::new(0),
            bytes: AtomicUsize::new(0),
            _scalar: std::marker::PhantomData,
        }
    }

    /// Records published.
    #[inline]
    pub(super) fn loaded(&self) -> u32 {
        self.loaded.load(AtomicOrdering::Acquire)
    }

    /// Record `id` (its header first). `id` must be allocated.
    #[inline(always)]
    fn record(&self, id: u32) -> *mut u8 {
        let table = self.table.load(AtomicOrdering::Acquire);
        // SAFETY: callers pass ids of allocated records, whose segments are
        // in the table (a table only grows; old ones stay allocated).
        unsafe {
            let segment = (*table.add((id >> self.layout.bits) as usize)).load(AtomicOrdering::Relaxed);
            segment.add((id as usize & ((1usize << self.layout.bits) - 1)) * self.layout.stride)
        }
    }

    #[inline(always)]
    pub(super) fn header(&self, id: u32) -> *mut Header {
        self.record(id) as *mut Header
    }

    #[inline(always)]
    fn level(&self, id: u32) -> usize {
        // SAFETY: `level` never changes after the record is published.
        unsafe { (*self.header(id)).level as usize }
    }

    /// The vector of record `id` (published).
    #[inline(always)]
    fn vector(&self, id: u32) -> &[T] {
        let r = self.record(id);
        // SAFETY: the vector was written before the record was published
        // and never changes; records never move while `self` lives.
        unsafe {
            match self.layout.vector_len {
                Some(n) => std::slice::from_raw_parts(r.add(self.layout.vector_at) as *const T, n),
                None => {
                    let at = r.add(self.layout.vector_at);
                    let p = *(at as *const *const T);
                    let n = *(at.add(8) as *const usize);
                    std::slice::from_raw_parts(p, n)
                }
            }
        }
    }

    /// `(count, slots)` of record `id`'s list on `layer` (≤ its level).
    #[inline(always)]
    fn list_ptrs(&self, id: u32, layer: usize) -> (*mut u32, *mut u32) {
        let r = self.record(id);
        // SAFETY: the layer-0 list follows the header; upper lists are in
        // the block `upper` points at, `1 + M` words per layer.
        unsafe {
            if layer == 0 {
                (r.add(4) as *mut u32, r.add(HEADER) as *mut u32)
            } else {
                let block = (*(r as *const Header)).upper.add((layer - 1) * (1 + self.m));
                (block, block.add(1))
            }
        }
    }

    /// Record `id`'s spare-link count on `layer` (only layer 0 has spare
    /// links: null above).
    #[inline(always)]
    fn spare_ptr(&self, id: u32, layer: usize) -> *mut u32 {
        if layer == 0 {
            // SAFETY: the header is at the start of the allocated record.
            unsafe { std::ptr::addr_of_mut!((*(self.record(id) as *mut Header)).spare0) }
        } else {
            std::ptr::null_mut()
        }
    }

    /// Allocates `bytes` (8-aligned, zeroed) from the pool.
    fn pool_alloc(&self, grow: &mut Grow, bytes: usize) -> Result<*mut u8, OutOfMemory> {
        let bytes = bytes.next_multiple_of(8);
        if grow.pool.left < bytes {
            let last = grow.pool.chunks.last().map_or(0, |c| c.1);
            let size = (2 * last).clamp(1 << 14, 1 << 18).max(bytes);
            grow.pool.chunks.try_reserve(1).map_err(|_| OutOfMemory { bytes: size })?;
            let p = alloc_zeroed(size, 8)?;
            grow.pool.chunks.push((p, size));
            grow.pool.at = p;
            grow.pool.left = size;
            self.bytes.fetch_add(size, AtomicOrdering::Relaxed);
        }
        let p = grow.pool.at;
        // SAFETY: `bytes <= left`, so the result stays inside the chunk.
        grow.pool.at = unsafe { p.add(bytes) };
        grow.pool.left -= bytes;
        Ok(p)
    }

    /// Makes sure the segment of record `id` exists.
    fn ensure_segment(&self, grow: &mut Grow, id: u32) -> Result<(), OutOfMemory> {
        let segment = (id >> self.layout.bits) as usize;
        if segment < grow.segments {
            return Ok(());
        }
        debug_assert_eq!(segment, grow.segments);
        if segment >= grow.table_cap {
            let cap = (2 * grow.table_cap).max(16);
            grow.retired.try_reserve(1).map_err(|_| OutOfMemory { bytes: 8 * cap })?;
            let table = alloc_zeroed(8 * cap, 8)? as *mut AtomicPtr<u8>;
            let old = self.table.load(AtomicOrdering::Acquire);
            for i in 0..grow.segments {
                // SAFETY: both tables have at least `segments` entries.
                unsafe { (*table.add(i)).store((*old.add(i)).load(AtomicOrdering::Relaxed), AtomicOrdering::Relaxed) };
            }
            self.table.store(table, AtomicOrdering::Release);
            if !old.is_null() {
                grow.retired.push((old, grow.table_cap));
            }
            grow.table_cap = cap;
            self.bytes.fetch_add(8 * cap, AtomicOrdering::Relaxed);
        }
        let bytes = self.layout.segment_bytes();
        let p = alloc_zeroed(bytes, SEGMENT_ALIGN)?;
        let table = self.table.load(AtomicOrdering::Acquire);
        // SAFETY: `segment < table_cap`.
        unsafe { (*table.add(segment)).store(p, AtomicOrdering::Release) };
        grow.segments += 1;
        self.bytes.fetch_add(bytes, AtomicOrdering::Relaxed);
        Ok(())
    }

    /// Adds a record for `vector` (heap row `tid`, top layer `level`, self
    /// distance `zero`) with empty lists, and publishes it.
    pub(super) fn push(&self, vector: &[T], tid: u64, level: usize, zero: f32) -> Result<u32, OutOfMemory> {
        let mut grow = self.grow.lock();
        let id = grow.len;
        if id == u32::MAX {
            return Err(OutOfMemory { bytes: usize::MAX });
        }
        self.ensure_segment(&mut grow, id)?;
        let upper = if level > 0 {
            self.pool_alloc(&mut grow, 4 * level * (1 + self.m))? as *mut u32
        } else {
            std::ptr::null_mut()
        };
        let pooled = match self.layout.vector_len {
            Some(n) => {
                assert_eq!(n, vector.len(), "a vector of another length than the graph's");
                None
            }
            None => {
                let align = std::mem::align_of::<T>();
                let at = self.pool_alloc(&mut grow, std::mem::size_of_val(vector) + align)?;
                Some(at.wrapping_add(at.align_offset(align)) as *mut T)
            }
        };
        let r = self.record(id);
        // SAFETY: record `id` is allocated and not published yet, so this
        // thread is its only user; the vector fits the record (inline) or
        // the pool block just allocated for it.
        unsafe {
            std::ptr::write(
                r as *mut Header,
                Header {
                    lock: RawMutex::INIT,
                    level: level as u8,
                    ntids: 1,
                    _pad: 0,
                    count0: 0,
                    tid,
                    upper,
                    zero,
                    spare0: 0,
                },
            );
            let at = r.add(self.layout.vector_at);
            match pooled {
                None => std::ptr::copy_nonoverlapping(vector.as_ptr(), at as *mut T, vector.len()),
                Some(p) => {
                    std::ptr::copy_nonoverlapping(vector.as_ptr(), p, vector.len());
                    *(at as *mut *const T) = p;
                    *(at.add(8) as *mut usize) = vector.len();
                }
            }
        }
        grow.len = id + 1;
        self.loaded.store(id + 1, AtomicOrdering::Release);
        Ok(id)
    }

    /// Bytes the next [`Records::push`] of a vector of `vector_len` scalars
    /// at `level` may allocate (a new segment, a larger segment table, a new
    /// pool chunk).
    pub(super) fn bytes_for_next(&self, vector_len: usize, level: usize) -> usize {
        let grow = self.grow.lock();
        let mut bytes = 0;
        let segment = (grow.len >> self.layout.bits) as usize;
        if segment >= grow.segments {
            bytes += self.layout.segment_bytes();
            if segment >= grow.table_cap {
                bytes += 16 * grow.table_cap.max(16);
            }
        }
        let mut pooled = if level > 0 { 4 * level * (1 + self.m) } else { 0 };
        if self.layout.vector_len.is_none() {
            pooled += (vector_len + 1) * std::mem::size_of::<T>() + 8;
        }
        if pooled > grow.pool.left {
            let last = grow.pool.chunks.last().map_or(0, |c| c.1);
            bytes += (2 * last).clamp(1 << 14, 1 << 18).max(pooled);
        }
        bytes
    }

    /// The allocation state, for [`Records::rollback`].
    fn mark(&self) -> Mark {
        let grow = self.grow.lock();
        Mark { len: grow.len, chunks: grow.pool.chunks.len(), at: grow.pool.at, left: grow.pool.left }
    }

    /// Forgets the records pushed since `mark` (never linked).
    fn rollback(&mut self, mark: Mark) {
        let grow = self.grow.get_mut();
        grow.len = mark.len;
        if grow.pool.chunks.len() == mark.chunks {
            grow.pool.at = mark.at;
            grow.pool.left = mark.left;
        }
        *self.loaded.get_mut() = mark.len;
    }
}

impl<T> Drop for Records<T> {
    fn drop(&mut self) {
        let grow = self.grow.get_mut();
        let table = *self.table.get_mut();
        let bytes = self.layout.segment_bytes();
        // SAFETY: every pointer below is an allocation of these records,
        // freed once with the size it was allocated with.
        unsafe {
            for i in 0..grow.segments {
                free((*table.add(i)).load(AtomicOrdering::Relaxed), bytes, SEGMENT_ALIGN);
            }
            if !table.is_null() {
                free(table as *mut u8, 8 * grow.table_cap, 8);
            }
            for &(t, cap) in &grow.retired {
                free(t as *mut u8, 8 * cap, 8);
            }
            for &(p, size) in &grow.pool.chunks {
                free(p, size, 8);
            }
        }
    }
}

impl<S: Space> MemoryGraph<S> {
    /// An empty graph comparing vectors in `space`. `max_level` caps the
    /// levels drawn (the page format limits how many layers fit a page).
    /// The first vector inserted fixes the vector length (vectors of other
    /// lengths move the graph to variable-length storage).
    pub fn new(space: S, params: Params, max_level: usize) -> MemoryGraph<S> {
        MemoryGraph::with_layout(space, params, max_level, Layout::new::<S::Scalar>(params.m, None, false))
    }

    /// An empty graph whose vectors all have `vector_len` scalars (`None`:
    /// lengths vary, as for sparse vectors). [`ParallelInsert`] needs it.
    pub fn with_vector_len(space: S, params: Params, max_level: usize, vector_len: Option<usize>) -> MemoryGraph<S> {
        MemoryGraph::with_layout(space, params, max_level, Layout::new::<S::Scalar>(params.m, vector_len, true))
    }

    fn with_layout(space: S, params: Params, max_level: usize, layout: Layout) -> MemoryGraph<S> {
        assert!(params.m >= 1 && max_level < 256, "M ≥ 1 and fewer than 256 levels");
        MemoryGraph {
            space,
            params,
            max_level,
            rec: Records::new(params.m, layout),
            holes: AtomicU32::new(0),
            entry: AtomicU64::new(0),
            entry_lock: Mutex::new(()),
            extra_tids: Mutex::new(FxHashMap::default()),
            scratch: Scratch::default(),
            tuning: Tuning::default(),
        }
    }

    /// Distances computed by [`MemoryGraph::search`] so far (a cost measure
    /// for benchmarks that does not depend on the machine's load).
    #[doc(hidden)]
    pub fn search_distances(&self) -> u64 {
        self.scratch.distances
    }

    /// Whether rows with equal vectors share an element (the default; see
    /// [`Tuning::merge_duplicates`]). Set before the first insert.
    pub fn set_merge_duplicates(&mut self, on: bool) {
        self.tuning.merge_duplicates = on;
    }

    /// Changes the tuning (before the first insert; for experiments).
    #[doc(hidden)]
    pub fn set_tuning(&mut self, tuning: Tuning) {
        self.tuning = tuning;
    }

    /// Number of elements (distinct vectors).
    pub fn len(&self) -> usize {
        (self.rec.loaded() - self.holes.load(AtomicOrdering::Acquire)) as usize
    }

    /// Whether the graph has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes allocated: records (whole segments), segment tables, upper
    /// layers, variable-length vectors, extra heap TIDs and search scratch.
    /// The build checks it against `maintenance_work_mem`.
    pub fn memory_bytes(&self) -> usize {
        self.rec.bytes.load(AtomicOrdering::Relaxed) + self.scratch.memory_bytes()
    }

    /// The entry point and its level.
    pub fn entry(&self) -> Option<(u32, usize)> {
        unpack_entry(self.entry.load(AtomicOrdering::Acquire))
    }

    /// The construction parameters.
    pub fn params(&self) -> Params {
        self.params
    }

    /// The space the graph compares vectors in.
    pub fn space(&self) -> &S {
        &self.space
    }

    #[inline(always)]
    pub(super) fn header(&self, id: u32) -> *mut Header {
        self.rec.header(id)
    }

    #[inline(always)]
    fn list_ptrs(&self, id: u32, layer: usize) -> (*mut u32, *mut u32) {
        self.rec.list_ptrs(id, layer)
    }

    #[inline(always)]
    fn spare_ptr(&self, id: u32, layer: usize) -> *mut u32 {
        self.rec.spare_ptr(id, layer)
    }

    /// Spare links of `id` on `layer` (see [`Tuning::spare_links`]).
    ///
    /// # Safety
    /// Under the element's lock, or while no insert runs.
    #[inline(always)]
    unsafe fn spare_len(&self, id: u32, layer: usize) -> usize {
        let p = self.spare_ptr(id, layer);
        if p.is_null() {
            0
        } else {
            // SAFETY: per the contract, nobody writes it meanwhile.
            unsafe { *p as usize }
        }
    }

    /// Top layer of element `id`.
    pub fn level(&self, id: u32) -> usize {
        self.rec.level(id)
    }

    /// Vector of element `id`, in working form.
    #[inline(always)]
    pub fn vector(&self, id: u32) -> &[S::Scalar] {
        self.rec.vector(id)
    }

    /// Neighbor ids of element `id` on `layer`: the selected links, then
    /// the spare ones (see [`Tuning::spare_links`]).
    pub fn neighbor_ids(&self, id: u32, layer: usize) -> &[u32] {
        if layer > self.level(id) {
            return &[];
        }
        let (count, slots) = self.list_ptrs(id, layer);
        // SAFETY: while `&self` is lent out no insert runs (inserts need
        // `&mut self`, or own the graph inside a `ParallelInsert`), so the
        // list does not change.
        unsafe { std::slice::from_raw_parts(slots, *count as usize + self.spare_len(id, layer)) }
    }

    /// Selected neighbor ids of element `id` on `layer` (without its spare
    /// links).
    fn selected_ids(&self, id: u32, layer: usize) -> &[u32] {
        let all = self.neighbor_ids(id, layer);
        // SAFETY: no insert runs while `&self` is lent out (see `neighbor_ids`).
        &all[..all.len() - unsafe { self.spare_len(id, layer) }]
    }

    /// How many of element `id`'s layer-0 links, at the end of
    /// [`MemoryGraph::neighbor_ids`], are spare links.
    pub fn spare_links(&self, id: u32) -> usize {
        // SAFETY: no insert runs while `&self` is lent out (see `neighbor_ids`).
        unsafe { self.spare_len(id, 0) }
    }

    /// Heap TIDs of element `id`.
    pub fn heap_tids(&self, id: u32) -> &[u64] {
        let h = self.header(id);
        // SAFETY: no insert runs while `&self` is lent out (see
        // `neighbor_ids`), so `ntids` and `extra_tids` are stable; the
        // vectors in `extra_tids` live as long as the graph.
        unsafe {
            if (*h).ntids <= 1 {
                std::slice::from_ref(&(*h).tid)
            } else {
                let map = &*self.extra_tids.data_ptr();
                map.get(&id).map_or(std::slice::from_ref(&(*h).tid), |v| v.as_slice())
            }
        }
    }

    /// Locks element `id`'s lists.
    #[inline(always)]
    fn lock(&self, id: u32) -> Locked<'_> {
        // SAFETY: the lock lives in the record, which outlives the guard;
        // it is only ever used through shared references.
        let lock = unsafe { &(*self.header(id)).lock };
        lock.lock();
        Locked(lock)
    }

    /// Copies element `id`'s list on `layer` into `out`, under its lock if
    /// `LOCK` (other threads may be inserting, i.e. a build). Searches during
    /// a build walk the selected links only (unless
    /// [`Tuning::spare_in_build`]), so spare links never change the graph
    /// the build makes; other searches walk the spare links too.
    #[inline(always)]
    fn read_list<const LOCK: bool>(&self, id: u32, layer: usize, out: &mut Vec<u32>) {
        out.clear();
        let (count, slots) = self.list_ptrs(id, layer);
        let _guard = LOCK.then(|| self.lock(id));
        // SAFETY: the list is written only under the lock (held whenever
        // others may write); selected plus spare links never exceed the slots.
        unsafe {
            let spare = if !LOCK || self.tuning.spare_in_build { self.spare_len(id, layer) } else { 0 };
            out.extend_from_slice(std::slice::from_raw_parts(slots, *count as usize + spare))
        };
    }

    /// Prefetches the first `lines` cache lines of element `id`'s vector.
    #[inline(always)]
    fn prefetch_vector(&self, id: u32, lines: usize) {
        let v = self.vector(id);
        let n = (lines * 64 / std::mem::size_of::<S::Scalar>().max(1)).min(v.len());
        crate::distance::prefetch(&v[..n]);
    }

    /// Pushes a record for `vector` (see [`Records::push`]).
    pub(super) fn push(&self, vector: &[S::Scalar], tid: u64, level: usize) -> Result<u32, OutOfMemory> {
        self.rec.push(vector, tid, level, self.space.distance(vector, vector))
    }

    /// Moves the graph to variable-length vector storage (a vector of
    /// another length arrived).
    fn make_variable(&mut self) -> Result<(), OutOfMemory> {
        let rec = Records::new(self.params.m, Layout::new::<S::Scalar>(self.params.m, None, true));
        for id in 0..self.rec.loaded() {
            let h = self.header(id);
            // SAFETY: exclusive access to a published record.
            let (tid, level, zero, ntids) = unsafe { ((*h).tid, (*h).level as usize, (*h).zero, (*h).ntids) };
            let new = rec.push(self.vector(id), tid, level, zero)?;
            debug_assert_eq!(new, id);
            for layer in 0..=level {
                let list = self.neighbor_ids(id, layer);
                let (count, slots) = rec.list_ptrs(new, layer);
                // SAFETY: exclusive access; the list fits the same slots.
                unsafe {
                    std::ptr::copy_nonoverlapping(list.as_ptr(), slots, list.len());
                    *count = *self.list_ptrs(id, layer).0;
                    if layer == 0 {
                        (*rec.header(new)).spare0 = self.spare_len(id, 0) as u32;
                    }
                    (*rec.header(new)).ntids = ntids;
                }
            }
        }
        self.rec = rec;
        Ok(())
    }

    // ----- linking ----------------------------------------------------------

    /// Greedy search on `layer` from `start` (the descent of Algorithm 5
    /// through an upper layer: a beam of width 1).
    fn greedy<const LOCK: bool>(&self, q: &[S::Scalar], start: Near, layer: usize, sc: &mut Scratch) -> Near {
        let mut cur = start;
        let mut list = std::mem::take(&mut sc.list);
        loop {
            let mut changed = false;
            self.read_list::<LOCK>(cur.id, layer, &mut list);
            sc.distances += list.len() as u64;
            for &n in &list {
                let d = self.space.distance(q, self.vector(n));
                if d < cur.d {
                    cur = Near { d, id: n };
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        sc.list = list;
        cur
    }

    /// Beam search on `layer` (Algorithm 2) from the entries in `sc.found`;
    /// leaves the `ef` nearest elements found in `sc.found`, nearest first.
    fn beam<const LOCK: bool>(&self, q: &[S::Scalar], ef: usize, layer: usize, sc: &mut Scratch) {
        let ef = ef.max(1);
        let lines = self.tuning.prefetch_lines;
        sc.clear_visited();
        sc.candidates.clear();
        sc.results.clear();
        let mut list = std::mem::take(&mut sc.list);
        for i in 0..sc.found.len() {
            let e = sc.found[i];
            if sc.visit(e.id) {
                sc.candidates.push(Reverse(e));
                sc.results.push(e);
                if sc.results.len() > ef {
                    sc.results.pop();
                }
            }
        }
        while let Some(Reverse(c)) = sc.candidates.pop() {
            let farthest = sc.results.peek().map_or(f32::INFINITY, |f| f.d);
            if c.d > farthest && sc.results.len() >= ef {
                break;
            }
            self.read_list::<LOCK>(c.id, layer, &mut list);
            // Only neighbors not seen yet are compared (and prefetched: a
            // prefetch of a vector already compared wastes a line fill).
            list.retain(|&n| sc.visit(n));
            if let Some(&first) = list.first() {
                self.prefetch_vector(first, lines);
            }
            for i in 0..list.len() {
                let n = list[i];
                if let Some(&next) = list.get(i + 1) {
                    self.prefetch_vector(next, lines);
                }
                let d = self.space.distance(q, self.vector(n));
                sc.distances += 1;
                let farthest = sc.results.peek().map_or(f32::INFINITY, |f| f.d);
                if sc.results.len() < ef || d < farthest {
                    let found = Near { d, id: n };
                    sc.candidates.push(Reverse(found));
                    sc.results.push(found);
                    if sc.results.len() > ef {
                        sc.results.pop();
                    }
                }
            }
        }
        sc.list = list;
        sc.found.clear();
        sc.found.extend(sc.results.drain());
        sc.found.sort_unstable();
    }

    /// The heuristic over `candidates` (sorted, nearest first) into `kept`
    /// (see [`select_neighbors`], which this mirrors for [`Near`]s).
    fn select(&self, candidates: &[Near], max: usize, kept: &mut Vec<Near>, pruned: &mut Vec<Near>) {
        let h = self.tuning.heuristic;
        kept.clear();
        pruned.clear();
        for (i, &c) in candidates.iter().enumerate() {
            if kept.len() >= max {
                break;
            }
            if let Some(next) = candidates.get(i + 1) {
                self.prefetch_vector(next.id, self.tuning.prefetch_lines);
            }
            let v = self.vector(c.id);
            // SAFETY: `zero` never changes after the record is published.
            let zero = unsafe { (*self.header(c.id)).zero };
            match h.judge(kept.len(), |i| self.space.distance(v, self.vector(kept[i].id)), c.d, zero) {
                Verdict::Keep => kept.push(c),
                Verdict::Pruned => pruned.push(c),
                Verdict::Duplicate => {}
            }
        }
        if h.keep_pruned {
            let room = max.saturating_sub(kept.len()).min(pruned.len());
            kept.extend(pruned.drain(..room));
        }
    }
    /// Inserts a vector: finds its neighbors on each layer (Algorithm 1), and
    /// either adds `tid` to an identical element or links a new one. With
    /// `pushed`, the vector is already record `pushed` (parallel builds: a
    /// duplicate leaves it as a hole); otherwise the record is pushed here
    /// once it is known not to be a duplicate.
    pub(super) fn link(
        &self,
        q: &[S::Scalar],
        tid: u64,
        level: usize,
        pushed: Option<u32>,
        sc: &mut Scratch,
    ) -> Result<Inserted, OutOfMemory> {
        let params = self.params;
        let mut ep = self.entry.load(AtomicOrdering::Acquire);
        let mut top_guard = None;
        if unpack_entry(ep).is_none_or(|(_, l)| level > l) {
            let guard = self.entry_lock.lock();
            ep = self.entry.load(AtomicOrdering::Acquire);
            match unpack_entry(ep) {
                None => {
                    let id = match pushed {
                        Some(id) => id,
                        None => self.push(q, tid, level)?,
                    };
                    self.entry.store(pack_entry(id, level), AtomicOrdering::Release);
                    return Ok(Inserted::Element(id));
                }
                Some((_, l)) if level > l => top_guard = Some(guard),
                Some(_) => drop(guard),
            }
        }
        let (entry, entry_level) = unpack_entry(ep).expect("entry point set");
        let mut cur = Near { d: self.space.distance(q, self.vector(entry)), id: entry };
        for layer in (level + 1..=entry_level).rev() {
            cur = self.greedy::<true>(q, cur, layer, sc);
        }
        let top = level.min(entry_level);
        if sc.layers.len() <= top {
            sc.layers.resize_with(top + 1, Vec::new);
        }
        sc.found.clear();
        sc.found.push(cur);
        let (mut kept, mut pruned) = (std::mem::take(&mut sc.kept), std::mem::take(&mut sc.pruned));
        for layer in (0..=top).rev() {
            self.beam::<true>(q, params.ef_construction, layer, sc);
            let max = params.max_neighbors(layer);
            self.select(&sc.found, max, &mut kept, &mut pruned);
            sc.layers[layer].clear();
            sc.layers[layer].extend_from_slice(&kept);
            if layer == 0 {
                sc.spare.clear();
                if self.tuning.spare_links {
                    sc.spare.extend(pruned.iter().take(max - kept.len()).map(|c| c.id));
                }
            }
        }
        sc.kept = kept;
        sc.pruned = pruned;
        if let Some(e) = sc.failed.take() {
            return Err(e);
        }
        // An identical vector joins the nearest element with room.
        let nearest = sc.found.first().map_or(f32::NAN, |c| c.d);
        for c in sc.found.iter().take_while(|c| c.d == nearest && self.tuning.merge_duplicates) {
            if Some(c.id) != pushed && self.vector(c.id) == q && self.add_tid(c.id, tid) {
                if let Some(id) = pushed {
                    // SAFETY: record `id` is not linked, so only this thread uses it.
                    unsafe { (*self.header(id)).ntids = 0 };
                    self.holes.fetch_add(1, AtomicOrdering::AcqRel);
                }
                return Ok(Inserted::Duplicate(c.id));
            }
        }
        let id = match pushed {
            Some(id) => id,
            None => self.push(q, tid, level)?,
        };
        {
            let _guard = self.lock(id);
            for (layer, list) in sc.layers[..=top].iter().enumerate() {
                let (count, slots) = self.list_ptrs(id, layer);
                // SAFETY: under the element's lock; selected and spare links
                // never exceed the slots (2·M on layer 0, M above).
                unsafe {
                    for (i, c) in list.iter().enumerate() {
                        *slots.add(i) = c.id;
                    }
                    *count = list.len() as u32;
                    if layer == 0 {
                        for (i, &s) in sc.spare.iter().enumerate() {
                            *slots.add(list.len() + i) = s;
                        }
                        *self.spare_ptr(id, 0) = sc.spare.len() as u32;
                    }
                }
            }
        }
        let layers = std::mem::take(&mut sc.layers);
        let mut linked = false;
        for (layer, list) in layers[..=top].iter().enumerate() {
            for c in list {
                linked |= self.add_link(c.id, id, c.d, layer, sc);
            }
        }
        if !linked {
            if let Some(nearest) = layers[0].first() {
                relink::force_link(&mut Links(self), nearest.id, id);
            }
        }
        sc.layers = layers;
        if top_guard.is_some() {
            self.entry.store(pack_entry(id, level), AtomicOrdering::Release);
        }
        Ok(Inserted::Element(id))
    }

    /// Adds heap TID `tid` to element `target` if it has room (and is not a
    /// hole). Returns whether it did.
    fn add_tid(&self, target: u32, tid: u64) -> bool {
        let h = self.header(target);
        let _guard = self.lock(target);
        // SAFETY: `ntids` and `extra_tids[target]` change only under the
        // element's lock, held here.
        unsafe {
            let n = (*h).ntids as usize;
            if n == 0 || n >= MAX_HEAP_TIDS {
                return false;
            }
            let mut extra = self.extra_tids.lock();
            let list = extra.entry(target).or_insert_with(|| vec![(*h).tid]);
            list.push(tid);
            (*h).ntids = (n + 1) as u8;
        }
        self.rec.bytes.fetch_add(16, AtomicOrdering::Relaxed);
        true
    }

    /// Adds the reverse link `from -> to` on `layer` (`d` is their
    /// distance), pruning `from`'s list with the heuristic when it is full.
    /// Returns whether `from` links to `to` afterwards.
    fn add_link(&self, from: u32, to: u32, d: f32, layer: usize, sc: &mut Scratch) -> bool {
        let max = self.params.max_neighbors(layer);
        let (count, slots) = self.list_ptrs(from, layer);
        let guard = self.lock(from);
        // SAFETY: the list is read and written under `from`'s lock.
        let current = unsafe { std::slice::from_raw_parts(slots, *count as usize) };
        if current.contains(&to) {
            return true;
        }
        if current.len() < max {
            // SAFETY: under the lock, and fewer than `max` links are selected.
            unsafe { append_link(count, self.spare_ptr(from, layer), slots, max, to) };
            return true;
        }
        let base = self.vector(from);
        let mut pool = std::mem::take(&mut sc.pool);
        pool.clear();
        for (i, &n) in current.iter().enumerate() {
            if let Some(&next) = current.get(i + 1) {
                self.prefetch_vector(next, self.tuning.prefetch_lines);
            }
            pool.push(Near { d: self.space.distance(base, self.vector(n)), id: n });
        }
        pool.push(Near { d, id: to });
        pool.sort_unstable();
        let (mut kept, mut pruned) = (std::mem::take(&mut sc.kept), std::mem::take(&mut sc.pruned));
        self.select(&pool, max, &mut kept, &mut pruned);
        let linked = kept.iter().any(|c| c.id == to);
        // Elements that leave the selected links (even to stay as spare
        // links, whose slots the next append may take) are relinked from
        // `to` (below).
        let mut dropped = std::mem::take(&mut sc.list);
        dropped.clear();
        if linked && self.tuning.relink {
            dropped.extend(current.iter().copied().filter(|n| !kept.iter().any(|c| c.id == *n)));
        }
        // SAFETY: under the lock; `kept` has at most `max` entries, the
        // spare links fill at most the rest.
        unsafe {
            for (i, c) in kept.iter().enumerate() {
                *slots.add(i) = c.id;
            }
            *count = kept.len() as u32;
            let spare = self.spare_ptr(from, layer);
            if !spare.is_null() {
                let n = if self.tuning.spare_links { pruned.len().min(max - kept.len()) } else { 0 };
                for (i, c) in pruned[..n].iter().enumerate() {
                    *slots.add(kept.len() + i) = c.id;
                }
                *spare = n as u32;
            }
        }
        drop(guard);
        sc.pool = pool;
        sc.kept = kept;
        sc.pruned = pruned;
        for &n in &dropped {
            relink::relink(&mut Links(self), to, n, layer);
        }
        sc.list = dropped;
        linked
    }

    // ----- the public operations ------------------------------------------

    /// Inserts `vector` for heap row `heap_tid` at `level` (Algorithm 1).
    /// A vector equal to an existing element with spare TID slots joins it.
    ///
    /// Panics if memory runs out (see [`MemoryGraph::try_insert`]).
    pub fn insert(&mut self, vector: &[S::Scalar], heap_tid: u64, level: usize) -> Inserted {
        self.try_insert(vector, heap_tid, level).unwrap_or_else(|e| panic!("out of memory: {} bytes", e.bytes))
    }

    /// [`MemoryGraph::insert`], reporting a failed allocation instead of
    /// panicking (the graph is unchanged then).
    pub fn try_insert(&mut self, vector: &[S::Scalar], heap_tid: u64, level: usize) -> Result<Inserted, OutOfMemory> {
        let level = level.min(self.max_level);
        if !self.rec.layout.settled {
            self.rec = Records::new(self.params.m, Layout::new::<S::Scalar>(self.params.m, Some(vector.len()), true));
        } else if self.rec.layout.vector_len.is_some_and(|n| n != vector.len()) {
            self.make_variable()?;
        }
        let mark = self.rec.mark();
        let mut sc = std::mem::take(&mut self.scratch);
        let result = sc.prepare(self.len() + 1).and_then(|()| self.link(vector, heap_tid, level, None, &mut sc));
        self.scratch = sc;
        if result.is_err() {
            self.rec.rollback(mark);
        }
        result
    }

    /// Marks the elements reachable from the entry point over all layers'
    /// selected links (`top_layer = usize::MAX`) or over layers
    /// `0..=top_layer`. Spare links do not count: an insert may take their
    /// slot, so no element may depend on one.
    fn reachable_set(&self, top_layer: usize) -> Result<Vec<bool>, OutOfMemory> {
        let n = self.rec.loaded() as usize;
        let mut seen = Vec::new();
        seen.try_reserve_exact(n).map_err(|_| OutOfMemory { bytes: n })?;
        seen.resize(n, false);
        let Some((entry, _)) = self.entry() else {
            return Ok(seen);
        };
        let mut stack = vec![entry];
        seen[entry as usize] = true;
        while let Some(id) = stack.pop() {
            for layer in 0..=self.level(id).min(top_layer) {
                for &k in self.selected_ids(id, layer) {
                    if !std::mem::replace(&mut seen[k as usize], true) {
                        stack.push(k);
                    }
                }
            }
        }
        Ok(seen)
    }

    /// Number of elements reachable from the entry point over all layers'
    /// selected links (all of them, in a healthy graph).
    pub fn reachable(&self) -> usize {
        self.reachable_set(usize::MAX).map_or(0, |seen| seen.iter().filter(|&&s| s).count())
    }

    /// Links every element no layer-0 walk from the entry point reaches
    /// from a nearby reachable one,
    /// in up to four rounds: from the nearest of its `ef_construction`
    /// nearest reachable elements with a free layer-0 slot, else in place of
    /// the farthest neighbor (of the nearest such element) that keeps
    /// another inbound link. Concurrent inserts pruning the same lists, and
    /// pruning with very few slots (M = 2), can leave a few such elements;
    /// every build ends with this pass. Returns how many links it added.
    pub fn repair_reachability(&mut self, sc: &mut Scratch) -> Result<usize, OutOfMemory> {
        let mut added = 0;
        let Some((entry, entry_level)) = self.entry() else {
            return Ok(0);
        };
        let max0 = self.params.max_neighbors(0);
        for _round in 0..4 {
            // Layer 0 alone: scans walk layer 0 from where the descent ends.
            let seen = self.reachable_set(0)?;
            if seen.iter().all(|&s| s) {
                break;
            }
            let n = seen.len();
            let mut inbound: Vec<u32> = Vec::new();
            inbound.try_reserve_exact(n).map_err(|_| OutOfMemory { bytes: 4 * n })?;
            inbound.resize(n, 0);
            for id in 0..n as u32 {
                for layer in 0..=self.level(id) {
                    for &k in self.selected_ids(id, layer) {
                        inbound[k as usize] += 1;
                    }
                }
            }
            sc.prepare(n)?;
            for u in (0..n as u32).filter(|&u| !seen[u as usize]) {
                let q = self.vector(u);
                let mut cur = Near { d: self.space.distance(q, self.vector(entry)), id: entry };
                for layer in (1..=entry_level).rev() {
                    cur = self.greedy::<false>(q, cur, layer, sc);
                }
                sc.found.clear();
                sc.found.push(cur);
                self.beam::<false>(q, self.params.ef_construction, 0, sc);
                let targets: Vec<u32> = sc.found.iter().map(|c| c.id).filter(|&t| t != u && seen[t as usize]).collect();
                let mut linked = false;
                for &t in &targets {
                    let (count, slots) = self.list_ptrs(t, 0);
                    // SAFETY: exclusive access (`&mut self`); `count ≤ max0`.
                    let list = unsafe { std::slice::from_raw_parts_mut(slots, *count as usize) };
                    if list.contains(&u) {
                        linked = true;
                        break;
                    }
                    if list.len() < max0 {
                        // SAFETY: as above, and a selected slot is free.
                        unsafe { append_link(count, self.spare_ptr(t, 0), slots, max0, u) };
                        linked = true;
                        break;
                    }
                }
                if !linked {
                    // Every candidate is full: displace, from the nearest one
                    // that can, its farthest neighbor with another inbound link.
                    'targets: for &t in &targets {
                        let base = self.vector(t);
                        let list = self.selected_ids(t, 0);
                        let mut order: Vec<(f32, usize)> = list
                            .iter()
                            .enumerate()
                            .map(|(i, &x)| (self.space.distance(base, self.vector(x)), i))
                            .collect();
                        order.sort_by(|a, b| b.0.total_cmp(&a.0));
                        for (_, i) in order {
                            let x = list[i];
                            if inbound[x as usize] >= 2 {
                                let (_, slots) = self.list_ptrs(t, 0);
                                // SAFETY: exclusive access; `i` is in the list.
                                unsafe { *slots.add(i) = u };
                                inbound[x as usize] -= 1;
                                linked = true;
                                break 'targets;
                            }
                        }
                    }
                }
                if linked {
                    inbound[u as usize] += 1;
                    added += 1;
                }
            }
        }
        Ok(added)
    }

    /// The k-NN search: up to `ef` `(distance, id)` pairs, nearest first.
    pub fn search(&mut self, query: &[S::Scalar], ef: usize) -> Vec<Candidate<u32>> {
        let Some((entry, entry_level)) = self.entry() else {
            return Vec::new();
        };
        let mut sc = std::mem::take(&mut self.scratch);
        let mut cur = Near { d: self.space.distance(query, self.vector(entry)), id: entry };
        for layer in (1..=entry_level).rev() {
            cur = self.greedy::<false>(query, cur, layer, &mut sc);
        }
        sc.found.clear();
        sc.found.push(cur);
        self.beam::<false>(query, ef, 0, &mut sc);
        sc.failed = None;
        let found = sc.found.iter().map(|c| Candidate { distance: c.d, node: c.id }).collect();
        self.scratch = sc;
        found
    }

    /// Removes the holes a parallel build leaves where it merged identical
    /// vectors, so ids run from 0 to `len() - 1` again.
    pub(super) fn compact(&mut self) -> Result<(), OutOfMemory> {
        if *self.holes.get_mut() == 0 {
            return Ok(());
        }
        let n = self.rec.loaded() as usize;
        let mut map: Vec<u32> = Vec::new();
        map.try_reserve_exact(n).map_err(|_| OutOfMemory { bytes: 4 * n })?;
        let mut next = 0u32;
        for id in 0..n as u32 {
            // SAFETY: exclusive access.
            let hole = unsafe { (*self.header(id)).ntids == 0 };
            map.push(if hole { u32::MAX } else { next });
            if !hole {
                if next != id {
                    // SAFETY: distinct records of `stride` bytes each.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            self.rec.record(id),
                            self.rec.record(next),
                            self.rec.layout.stride,
                        )
                    };
                }
                next += 1;
            }
        }
        for id in 0..next {
            for layer in 0..=self.level(id) {
                let (count, slots) = self.list_ptrs(id, layer);
                // SAFETY: exclusive access; holes were never linked.
                unsafe {
                    for i in 0..*count as usize + self.spare_len(id, layer) {
                        *slots.add(i) = map[*slots.add(i) as usize];
                    }
                }
            }
        }
        if let Some((e, level)) = self.entry() {
            self.entry.store(pack_entry(map[e as usize], level), AtomicOrdering::Release);
        }
        let extra = std::mem::take(self.extra_tids.get_mut());
        *self.extra_tids.get_mut() = extra.into_iter().map(|(k, v)| (map[k as usize], v)).collect();
        *self.rec.loaded.get_mut() = next;
        self.rec.grow.get_mut().len = next;
        *self.holes.get_mut() = 0;
        Ok(())
    }
}

impl<S: Space> GraphStore for MemoryGraph<S> {
    type Key = u32;
    type Node = u32;
    type Query = [S::Scalar];

    fn key(&self, node: &u32) -> u32 {
        *node
    }

    fn visit(&mut self, query: &[S::Scalar], key: u32) -> Option<(f32, u32)> {
        Some((self.space.distance(query, self.vector(key)), key))
    }

    /// Prefetches the vectors first, so the cache misses of one batch of
    /// neighbors overlap instead of following one another.
    fn visit_many(&mut self, query: &[S::Scalar], keys: &[u32], out: &mut Vec<Option<(f32, u32)>>) {
        out.clear();
        for &k in keys {
            self.prefetch_vector(k, self.tuning.prefetch_lines);
        }
        out.extend(keys.iter().map(|&k| Some((self.space.distance(query, self.vector(k)), k))));
    }

    fn neighbors(&mut self, node: &u32, layer: usize, out: &mut Vec<u32>) {
        out.clear();
        out.extend_from_slice(self.neighbor_ids(*node, layer));
    }

    fn distance_between(&mut self, a: &u32, b: &u32) -> f32 {
        self.space.distance(self.vector(*a), self.vector(*b))
    }

    fn prefetch(&self, node: &u32) {
        self.prefetch_vector(*node, self.tuning.prefetch_lines);
    }
}

/// The in-memory graph's lists as the relink policy edits them
/// ([`relink`]): each call takes the locks it needs and holds none after.
struct Links<'a, S: Space>(&'a MemoryGraph<S>);

impl<S: Space> LinkLists for Links<'_, S> {
    type Key = u32;

    fn level(&mut self, k: u32) -> usize {
        self.0.level(k)
    }

    fn is_deleted(&mut self, _k: u32) -> bool {
        false
    }

    fn own_neighbors(&mut self, k: u32, out: &mut Vec<u32>) {
        out.clear();
        let (count, slots) = self.0.list_ptrs(k, 0);
        let _guard = self.0.lock(k);
        // SAFETY: under `k`'s lock.
        unsafe { out.extend_from_slice(std::slice::from_raw_parts(slots, *count as usize)) };
    }

    fn links_to(&mut self, from: u32, to: u32) -> bool {
        let (count, slots) = self.0.list_ptrs(from, 0);
        let _guard = self.0.lock(from);
        // SAFETY: under `from`'s lock.
        unsafe { std::slice::from_raw_parts(slots, *count as usize).contains(&to) }
    }

    fn distances(&mut self, owner: u32, list: &[u32]) -> Vec<f32> {
        let g = self.0;
        let v = g.vector(owner);
        list.iter().map(|&n| g.space.distance(v, g.vector(n))).collect()
    }

    fn append(&mut self, owner: u32, layer: usize, k: u32) -> Result<(), Vec<u32>> {
        let g = self.0;
        let max = g.params.max_neighbors(layer);
        let (count, slots) = g.list_ptrs(owner, layer);
        let _guard = g.lock(owner);
        // SAFETY: under `owner`'s lock; fewer than `max` links are selected
        // when appending.
        unsafe {
            let list = std::slice::from_raw_parts(slots, *count as usize);
            if list.contains(&k) {
                return Ok(());
            }
            if list.len() >= max {
                return Err(list.to_vec());
            }
            append_link(count, g.spare_ptr(owner, layer), slots, max, k);
        }
        Ok(())
    }

    fn replace(&mut self, owner: u32, layer: usize, expected: &[u32], at: usize, k: u32) -> bool {
        let (count, slots) = self.0.list_ptrs(owner, layer);
        let _guard = self.0.lock(owner);
        // SAFETY: under `owner`'s lock; `at` is within the list checked
        // equal to `expected`.
        unsafe {
            if std::slice::from_raw_parts(slots, *count as usize) != expected || at >= expected.len() {
                return false;
            }
            *slots.add(at) = k;
        }
        true
    }
}
