//! `ambulkdelete` and `amvacuumcleanup`: removing dead rows from the graph
//! while queries and inserts go on.
//!
//! # What VACUUM does
//! `ambulkdelete`, for the dead heap rows VACUUM reports:
//! 1. **Remove heap TIDs**, one page at a time under its buffer lock; an
//!    element left without heap TIDs is marked *deleted*. Scans still walk
//!    through deleted elements (their links keep the graph connected) but
//!    never return them; inserts never add a link to one.
//! 2. **Wait for inserts** in progress ([`IndexRel::wait_for_inserts`]): an
//!    insert that read an element before step 1 marked it may still link to
//!    it; an insert that starts after the wait sees the mark.
//! 3. **Repair**, one pass over the elements: every list that links to a
//!    deleted element is rewritten without it; a live element's freed slots
//!    are refilled from the deleted neighbors' own live neighbors with the
//!    neighbor-selection heuristic, keeping every live link it had (a list
//!    that lost more than half its links also draws on a search for its own
//!    vector that walks through the deleted elements). A VACUUM removing at
//!    least half of the elements repairs as an insert links: every list that
//!    lost a link is chosen again from such a search, and its new neighbors
//!    link back ([`Refill`]). Each
//!    rewrite is a compare-and-set against concurrent inserts, retried
//!    until it holds.
//! 4. **Move the entry point** if it is deleted, to the highest live element
//!    step 3 met, under the insert lock in exclusive mode (which also waits
//!    for every insert in progress).
//! 5. **Wait for scans** in progress ([`IndexRel::wait_for_scans`]).
//! 6. **Free** the deleted elements: clear their neighbor items, then mark
//!    them free (block by block, in that order: see [`free`]); later
//!    inserts reuse them in place, found through the meta page's free hint.
//! 7. **Compact the key directory** (an index with filter columns): drop the
//!    entries of elements freed or reused, page by page
//!    ([`directory::compact`]).
//!
//! `amvacuumcleanup` then makes sure searches can reach every live element.
//! Concurrent inserts pruning the same lists can, rarely, strand one, and so
//! can an insert killed between pruning a list and relinking what it
//! dropped, or step 3 when an element's only inbound link came from a
//! deleted element. One read-only pass counts layer-0 inbound links; then a
//! walk from the entry point over layer 0 (where every search ends) finds
//! the live elements it cannot reach, and each gets a compare-and-set link
//! from one of its own reachable neighbors (or the entry point), after which
//! the walk continues from it. Last, an element with a single inbound link
//! that none of its own neighbors gives it (reachable, but a search for its
//! own vector closes in on its neighbors and misses it) gets a link from one
//! of them. (When the bitmaps for the whole index do not fit the VACUUM
//! memory, batches do the same for elements without any layer-0 inbound
//! link and for the weakly linked ones, without the walk.)
//!
//! `amvacuumcleanup` does so after every `ambulkdelete`; a VACUUM that
//! deleted nothing (autovacuum of an insert-only table) walks the index only
//! when the index has at least doubled since the last walk (`healed_blocks`
//! on the meta page), so routine autovacuums cost one meta-page read.
//!
//! # Locks
//! No heavyweight lock is held across a pass. Steps 2 and 4 take the insert
//! lock ([`IndexRel::lock_graph`]) exclusively and step 5 the scan lock
//! ([`IndexRel::lock_scans`]), each only until the inserts or scans in
//! progress have finished: an insert or a query that arrives meanwhile waits
//! for one other insert or query, never for a pass over the index. Step 3
//! and the orphan links take the insert lock in share mode while they
//! rewrite one element's lists (so `hnsw_index_check`, which holds it
//! exclusively, sees a graph that does not change under it). The two locks
//! are never held together and no other heavyweight lock is requested while
//! one is held (the nesting rule on [`IndexRel::lock_graph`]).
//!
//! # Memory
//! The deleted elements of a batch are a bitmap over the item slots of its
//! blocks ([`ItemBitmap`]: a few bytes per block), as are the inbound-link
//! counts and the reached set of the orphan pass (whose walk also keeps a
//! queue of element addresses). A batch covers as many blocks as
//! `maintenance_work_mem` (`autovacuum_work_mem` in autovacuum workers, when
//! set) allows; steps 2–6 run once per batch, and elements emptied outside
//! the current batch stay unmarked (live, without heap TIDs) until theirs.
//! The access method sets `amusemaintenanceworkmem`, so a parallel VACUUM
//! sets each worker's `maintenance_work_mem` to its share of the whole.
//! Every large allocation uses `try_reserve`, so running out of memory is an
//! `ERROR` (SQLSTATE 53200), never an abort.
//!
//! # Why freeing is safe
//! Let D be the elements a batch frees: those of its blocks that are deleted
//! and not free when steps 2–6 begin (only VACUUM marks elements deleted or
//! free, and PostgreSQL runs one VACUUM per table at a time).
//!
//! (a) *From the end of step 3 on, no element outside D links to D.* Step 3
//!     reads every list of every element outside D that is not free, and
//!     rewrites each that links to D until a compare-and-set holds. Its own
//!     rewrites only drop links to D and add live elements (the reverse
//!     links of a thorough repair are added as an insert adds them, see
//!     below). Every insert that
//!     ran before step 2 has finished before step 3 starts. Every insert that
//!     started after step 2 read the elements of D after they were marked
//!     (the lock manager orders its lock after our wait, and our marks
//!     before it), and an insert never adds a link to an element it read as
//!     deleted: the search leaves deleted candidates out of a new element's
//!     lists, pruning a full list drops them, and the relinking of elements
//!     pruned from a list skips them. Elements reused from an earlier free
//!     get their lists from such an insert. So a list, once step 3 has
//!     checked it, never links to D again, and step 3 ends before step 4.
//! (b) *From step 4 on, the entry point is not in D*: step 4 moves it under
//!     the exclusive insert lock, to a live element; afterwards only inserts
//!     move it, each to its own new element.
//! (c) *When step 6 starts, no insert or scan holds the address of an
//!     element of D*, and none can obtain one later. A search reaches an
//!     element only from the entry point through lists. Inserts that were
//!     running when step 4 took its lock have finished; scans that were
//!     running when step 5 took its lock have finished (a scan holds the
//!     scan lock from reading the entry point until it has read its results'
//!     heap TIDs). Every insert or scan started after those moments started
//!     from an entry point outside D (b) and, by (a), reads only lists that
//!     do not link to D; deleted elements outside D are walked through, but
//!     step 3 rewrote their lists too.
//!
//! An iterative scan (`hnsw.iterative_scan`) holds the scan lock for its
//! first pass and for each later batch, not in between: its held candidates
//! may include an element freed (and reused) meanwhile. That is what the
//! element's version is for (`scan.rs`): reuse increments it, and a scan
//! returns an element's heap TIDs only if the version it read is still
//! there; a freed element is deleted and has no links, and a reused one is a
//! valid element, so expanding either stays within the graph.
//!
//! Hence an element is freed (and may be reused by the next insert) only
//! when nothing can reach it: no scan follows the address of an element that
//! is being freed and reused, no insert links to one, and the entry point is
//! never a freed element. `hnsw_index_check` reports a link to a free element
//! or a free entry point as a failure.
//!
//! (d) *Nothing of an element is written after it is marked free.* Step 6
//!     clears an element's neighbor item while it is deleted and not free
//!     (no insert reuses it, and by (c) nothing reads it), and marks it free
//!     last: from then on only the insert that reuses it writes it, so
//!     VACUUM never wipes the lists of a reused element.
//!
//! Crashes: every change is a WAL record of one page. A crash during steps
//! 1–5 leaves deleted elements that are not free; the next VACUUM's D
//! contains them and it starts again at step 2. A crash during step 6 leaves
//! some of D free (unreachable, by (a)–(c)) and the rest deleted, some of
//! those with their neighbor items already cleared (unreachable too; the
//! next VACUUM frees them).
//!
//! Hot standbys: page locks are not WAL-logged, so steps 2, 4 and 5 do not
//! wait for queries running on a standby; a standby query that is walking
//! the graph while the primary frees and reuses an element can read the new
//! element's bytes: a wrong distance for that query, not an error (reuse
//! keeps the element's size, its neighbor item and that item's capacity).
//!
//! Steps follow pgvector's `hnswvacuum.c` (mark, wait for inserts, repair,
//! wait for inserts and scans, free); the data structures, batching and the
//! orphan pass are ours.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use super::codec::Codec;
use super::directory;
use super::graph::{relink, select_neighbors, Candidate, GraphStore, Searcher};
use super::insert::add_reverse_link;
use super::options;
use super::page::{
    self, item_footprint, neighbor_item_size, ElementMut, ElementRef, ItemPointer, LayerList, Meta, NeighborsRef,
    PageError, PageKind, PageRef, EMPTY_PAGE_SPACE, META_BLOCK, MIN_ELEMENT_HEADER_SIZE,
};
use super::storage::{to_pg_tid, ElementNode, IndexRel, PageStore, EXCLUSIVE_LOCK, SHARE_LOCK};
use crate::error::raise_detail;

/// Reserves room for `additional` more items in `v`, raising `ERROR: out of
/// memory` (SQLSTATE 53200) instead of aborting when the allocation fails.
pub(crate) fn try_reserve<T>(v: &mut Vec<T>, additional: usize, what: &str) {
    if v.try_reserve(additional).is_err() {
        raise_detail(
            PgSqlErrorCode::ERRCODE_OUT_OF_MEMORY,
            "out of memory",
            format!("Failed on request of {} bytes for {what}.", additional.saturating_mul(std::mem::size_of::<T>())),
        );
    }
}

/// The memory one VACUUM of one index may use for its own bookkeeping, in
/// bytes: `autovacuum_work_mem` in an autovacuum worker when it is set,
/// otherwise `maintenance_work_mem` (the limits VACUUM applies to its own
/// dead-row store).
pub(crate) fn work_mem_bytes() -> usize {
    // SAFETY: reading backend globals; GetConfigOption returns a pointer to
    // a static buffer (or null when missing_ok and the option is unknown).
    let kb = unsafe {
        let autovacuum = if pg_sys::MyBackendType == pg_sys::BackendType::B_AUTOVAC_WORKER {
            let p = pg_sys::GetConfigOption(c"autovacuum_work_mem".as_ptr(), true, false);
            (!p.is_null()).then(|| std::ffi::CStr::from_ptr(p).to_str().ok()?.parse::<i64>().ok()).flatten()
        } else {
            None
        };
        autovacuum.filter(|&kb| kb > 0).unwrap_or(pg_sys::maintenance_work_mem as i64)
    };
    (kb.max(64) as usize).saturating_mul(1024)
}

/// Most item slots a graph page can have for `M = m` and element codec
/// `codec`: every item is at least as large as the smallest element item
/// (one heap TID slot, the codec's shortest payload) or a layer-0
/// neighbor item.
fn max_items_per_page(m: usize, codec: &Codec) -> usize {
    let smallest = (MIN_ELEMENT_HEADER_SIZE + codec.min_payload_len()).min(neighbor_item_size(m, 0));
    EMPTY_PAGE_SPACE / item_footprint(smallest)
}

/// One bit per item slot of a range of index blocks: a set of element
/// addresses in `⌈max items per page / 64⌉` words per block (8 bytes per
/// block for `M = 16` and 384-dimension vectors, so 1 MiB covers a 1 GiB
/// index; 40 for the smallest items).
pub(crate) struct ItemBitmap {
    blocks: std::ops::Range<u32>,
    words: usize,
    bits: Vec<u64>,
    count: usize,
}

impl ItemBitmap {
    /// Words per block for an index with `M = m` and element codec `codec`.
    pub(crate) fn words_per_block(m: usize, codec: &Codec) -> usize {
        max_items_per_page(m, codec).div_ceil(64)
    }

    /// An empty set over `blocks` (allocation failure is an `ERROR`).
    pub(crate) fn new(blocks: std::ops::Range<u32>, words: usize) -> ItemBitmap {
        let n = (blocks.end.saturating_sub(blocks.start) as usize).saturating_mul(words);
        let mut bits = Vec::new();
        try_reserve(&mut bits, n, "an hnsw element bitmap");
        bits.resize(n, 0);
        #[cfg(any(test, feature = "pg_test"))]
        LIVE_BITMAPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ItemBitmap { blocks, words, bits, count: 0 }
    }

    /// Bytes needed for `blocks` blocks of `words` words.
    pub(crate) fn bytes_for(blocks: u32, words: usize) -> usize {
        blocks as usize * words * 8
    }

    /// Whether `t` lies in the blocks covered and its offset fits a page.
    pub(crate) fn covers(&self, t: ItemPointer) -> bool {
        self.blocks.contains(&t.block) && t.offset >= 1 && (t.offset as usize - 1) < self.words * 64
    }

    fn slot(&self, t: ItemPointer) -> Option<(usize, u64)> {
        if !self.covers(t) {
            return None;
        }
        let bit = t.offset as usize - 1;
        Some(((t.block - self.blocks.start) as usize * self.words + bit / 64, 1u64 << (bit % 64)))
    }

    /// Whether `t` is in the set (false outside the blocks covered).
    pub(crate) fn contains(&self, t: ItemPointer) -> bool {
        self.slot(t).is_some_and(|(w, b)| self.bits[w] & b != 0)
    }

    /// Adds `t`; returns whether it was new. `t` must be covered
    /// ([`ItemBitmap::covers`]); otherwise nothing happens and `false` is
    /// returned.
    pub(crate) fn insert(&mut self, t: ItemPointer) -> bool {
        let Some((w, b)) = self.slot(t) else { return false };
        let new = self.bits[w] & b == 0;
        self.bits[w] |= b;
        self.count += new as usize;
        new
    }

    /// Removes `t` if present.
    pub(crate) fn remove(&mut self, t: ItemPointer) {
        if let Some((w, b)) = self.slot(t) {
            self.count -= (self.bits[w] & b != 0) as usize;
            self.bits[w] &= !b;
        }
    }

    /// Empties the set, keeping its memory.
    pub(crate) fn clear(&mut self) {
        self.bits.fill(0);
        self.count = 0;
    }

    /// Number of elements in the set.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Whether the set is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The offsets in the set on `block`, ascending.
    pub(crate) fn offsets(&self, block: u32) -> impl Iterator<Item = u16> + '_ {
        let words: &[u64] = if self.blocks.contains(&block) {
            let at = (block - self.blocks.start) as usize * self.words;
            &self.bits[at..at + self.words]
        } else {
            &[]
        };
        words
            .iter()
            .enumerate()
            .flat_map(|(i, &w)| (0..64).filter(move |b| w & (1u64 << b) != 0).map(move |b| (i * 64 + b + 1) as u16))
    }

    /// The elements of the set for which `keep` holds, as a new set over
    /// the same blocks (so a list of work to do costs a bitmap, counted
    /// against the batch's memory, not 6 bytes per element outside it).
    pub(crate) fn subset(&self, keep: impl Fn(ItemPointer) -> bool) -> ItemBitmap {
        let mut out = ItemBitmap::new(self.blocks.clone(), self.words);
        for t in self.iter().filter(|&t| keep(t)) {
            out.insert(t);
        }
        out
    }

    /// Every element in the set, in address order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = ItemPointer> + '_ {
        self.blocks.clone().flat_map(move |block| self.offsets(block).map(move |offset| ItemPointer { block, offset }))
    }
}

/// For tests: the [`ItemBitmap`]s alive in this backend, to show that an
/// `ERROR` raised inside VACUUM (its callback included) unwinds our frames
/// and frees them rather than jumping over them.
#[cfg(any(test, feature = "pg_test"))]
pub(crate) static LIVE_BITMAPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[cfg(any(test, feature = "pg_test"))]
impl Drop for ItemBitmap {
    fn drop(&mut self) {
        LIVE_BITMAPS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Index blocks per batch when each block needs `bitmaps` bitmaps of
/// `words` words: as many as the VACUUM memory allows (at least one), or
/// `hnsw.debug_vacuum_batch_blocks` when that is set.
fn batch_blocks(words: usize, bitmaps: usize) -> u32 {
    let debug = options::DEBUG_VACUUM_BATCH_BLOCKS.get();
    if debug > 0 {
        return debug as u32;
    }
    let per_block = ItemBitmap::bytes_for(1, words) * bitmaps;
    (work_mem_bytes() / per_block.max(1)).clamp(1, u32::MAX as usize) as u32
}

/// The block ranges `[1, nblocks)` split into batches of `batch` blocks.
fn batches(nblocks: u32, batch: u32) -> Vec<std::ops::Range<u32>> {
    (1..nblocks).step_by(batch.max(1) as usize).map(|s| s..s.saturating_add(batch).min(nblocks)).collect()
}

fn vacuum_delay() {
    // SAFETY: VACUUM may sleep here for cost-based delay (it also checks
    // for interrupts); no heavyweight or buffer lock is held by callers.
    unsafe { crate::compat::vacuum_delay_point() };
}

/// Raises the corruption error for an item offset that no page can have.
fn impossible_offset(rel: &IndexRel, t: ItemPointer) -> ! {
    rel.corrupt(t.block, PageError(format!("item offset {} is beyond what a page can hold", t.offset)))
}

/// What step 1 found.
struct Removal {
    live_tids: f64,
    removed_tids: f64,
    /// Deleted, not free elements of the first batch.
    deleted: ItemBitmap,
    /// Per batch: whether it has deleted or emptied elements to process.
    pending: Vec<bool>,
    /// Elements that are not free, and how many of them are deleted or
    /// without heap TIDs (in every batch).
    elements: usize,
    emptied: usize,
}

impl Removal {
    /// Whether this VACUUM removes at least half of the index's elements:
    /// then step 3 repairs like an insert ([`Refill::thorough`]).
    fn is_heavy(&self) -> bool {
        2 * self.emptied >= self.elements.max(1)
    }
}

/// Step 1: removes heap TIDs for which `dead` is true. In the first batch
/// (`ranges[0]`) emptied elements are marked deleted and collected with the
/// elements already deleted; elsewhere they are only noted in `pending`.
fn remove_dead_tids(
    rel: &IndexRel,
    meta: &Meta,
    ranges: &[std::ops::Range<u32>],
    words: usize,
    mut dead: impl FnMut(ItemPointer) -> bool,
) -> Removal {
    let (codec, m) = (meta.codec, meta.m as usize);
    let first = ranges.first().cloned().unwrap_or(1..1);
    let batch_len = first.end.saturating_sub(first.start).max(1);
    let mut out = Removal {
        live_tids: 0.0,
        removed_tids: 0.0,
        deleted: ItemBitmap::new(first.clone(), words),
        pending: vec![false; ranges.len()],
        elements: 0,
        emptied: 0,
    };
    let end = ranges.last().map_or(1, |r| r.end);
    for block in 1..end {
        vacuum_delay();
        let in_first = first.contains(&block);
        let batch = ((block - 1) / batch_len) as usize;
        let mut found = Vec::new();
        rel.modify(block, |p| {
            let mut changed = false;
            rel.for_each_element_mut(block, p, &codec, m, |offset, e| {
                if e.is_free() {
                    return;
                }
                out.elements += 1;
                if !e.is_deleted() {
                    let removed = e.retain_heap_tids(|t| !dead(t));
                    changed |= removed > 0;
                    out.removed_tids += removed as f64;
                    out.live_tids += e.heap_tid_count() as f64;
                    // No heap TIDs: emptied now, or by an earlier VACUUM
                    // outside the batch it was working on.
                    if e.heap_tid_count() == 0 && in_first {
                        e.set_deleted();
                        changed = true;
                    }
                }
                if e.is_deleted() || e.heap_tid_count() == 0 {
                    out.emptied += 1;
                    found.push((offset, e.is_deleted()));
                }
            });
            changed.then_some(())
        });
        for (offset, deleted) in found {
            let t = ItemPointer { block, offset };
            if in_first && deleted {
                if !out.deleted.insert(t) && !out.deleted.covers(t) {
                    impossible_offset(rel, t);
                }
            } else if !in_first {
                out.pending[batch.min(ranges.len() - 1)] = true;
            }
        }
    }
    out
}

/// For a batch after the first: marks the elements of `range` that have no
/// heap TIDs deleted, and returns every deleted, not free element there.
fn mark_batch(rel: &IndexRel, meta: &Meta, range: std::ops::Range<u32>, words: usize) -> ItemBitmap {
    let (codec, m) = (meta.codec, meta.m as usize);
    let mut deleted = ItemBitmap::new(range.clone(), words);
    for block in range {
        vacuum_delay();
        let mut found = Vec::new();
        rel.modify(block, |p| {
            let mut changed = false;
            rel.for_each_element_mut(block, p, &codec, m, |offset, e| {
                if e.is_free() {
                    return;
                }
                if !e.is_deleted() && e.heap_tid_count() == 0 {
                    e.set_deleted();
                    changed = true;
                }
                if e.is_deleted() {
                    found.push(offset);
                }
            });
            changed.then_some(())
        });
        for offset in found {
            let t = ItemPointer { block, offset };
            if !deleted.insert(t) && !deleted.covers(t) {
                impossible_offset(rel, t);
            }
        }
    }
    deleted
}

/// Calls `f(node, free)` with every element of `block` (share-locked page,
/// copied out so `f` may read other pages).
fn elements_of(store: &PageStore, block: u32, out: &mut Vec<(ElementNode, bool)>) {
    out.clear();
    let (rel, codec, m) = (store.rel, store.meta.codec, store.meta.m as usize);
    rel.read(block, |p| {
        if page::page_is_new(p) {
            return;
        }
        let r = PageRef::new(p, PageKind::Graph).unwrap_or_else(|e| rel.corrupt(block, e));
        for offset in 1..=r.max_offset() {
            let item = r.item(offset).unwrap_or_else(|e| rel.corrupt(block, e));
            if !page::is_element_item(item) {
                continue;
            }
            let e = ElementRef::new(item, &codec, m).unwrap_or_else(|e| rel.corrupt(block, e));
            out.push((ElementNode::read(ItemPointer { block, offset }, &e), e.is_free()));
        }
    });
}

/// Rewrites `node`'s list on `layer` from `old` to `new`, only if it still
/// equals `old`; returns whether it did. The last `spare` links of `new` are
/// spare links; with `None`, links of `new` that were spare links in `old`
/// stay spare (moved after the others) and the rest are selected.
fn replace_list(
    store: &PageStore,
    node: &ElementNode,
    layer: usize,
    old: &[ItemPointer],
    new: &[ItemPointer],
    spare: Option<usize>,
) -> bool {
    let (rel, m, at) = (store.rel, store.meta.m as usize, node.neighbors);
    rel.modify(at.block, |p| {
        let range = rel.item_range(at.block, p, at.offset);
        let mut current = Vec::new();
        let spare_now = NeighborsRef::new(&p[range.clone()], m)
            .unwrap_or_else(|e| rel.corrupt(at.block, e))
            .read_layer(layer, &mut current);
        if current != old {
            return None;
        }
        let (list, spare) = match spare {
            Some(n) => (new.to_vec(), n),
            None => {
                let was_spare = &current[current.len() - spare_now..];
                let (mut list, spares): (Vec<ItemPointer>, Vec<ItemPointer>) =
                    new.iter().partition(|t| !was_spare.contains(t));
                let n = spares.len();
                list.extend(spares);
                (list, n)
            }
        };
        page::set_layer(&mut p[range], m, layer, &list, spare).unwrap_or_else(|e| rel.corrupt(at.block, e));
        Some(())
    })
    .is_some()
}

/// How step 3 refills live elements' lists, and its scratch space: the
/// repair search ([`Refill::searched`]) runs at most once per element, for
/// all its layers.
#[derive(Default)]
struct Refill {
    /// A VACUUM that removes at least half of the elements
    /// ([`Removal::is_heavy`]) repairs as pgvector's `hnswvacuum.c` does for
    /// every VACUUM: each list that lost a link is chosen again with the
    /// heuristic from its live links and a search for its element's vector,
    /// and its new neighbors get the reverse link, as after an insert. A
    /// lighter VACUUM keeps every live link and refills locally (see
    /// [`repaired_list`]), at a third of the cost. Measured on pgvector's TAP
    /// test 022 (10,000 bit(52), m 4, ef_construction 8, 75% deleted, 200
    /// queries, recall@20 at ef_search 100): 0.76-0.78 with the local
    /// refill, 0.84-0.88 thorough (pgvector 0.8.6: 0.89).
    thorough: bool,
    searcher: Searcher<ItemPointer, ElementNode>,
    /// The current element's repair-search candidates by layer, once run.
    found: Option<Vec<Vec<Candidate<ElementNode>>>>,
}

impl Refill {
    /// Forgets the previous element's search.
    fn next_element(&mut self) {
        self.found = None;
    }

    /// The live elements near `node`'s vector on `layer`: the insert search
    /// (Algorithm 1 at `ef_construction`, from the entry point) where only
    /// live elements count, walking through the deleted ones, whose lists
    /// are still intact during step 3.
    fn searched(
        &mut self,
        store: &mut PageStore,
        node: &ElementNode,
        base: &[u32],
        layer: usize,
    ) -> &[Candidate<ElementNode>] {
        let found = self.found.get_or_insert_with(|| match store.meta.entry {
            None => Vec::new(),
            Some((entry, entry_level)) => {
                let ef = store.params().ef_construction;
                let level = node.level as usize;
                self.searcher.insert_candidates(store, base, level, entry, entry_level as usize, ef, true)
            }
        });
        found.get(layer).map_or(&[], |w| w.as_slice())
    }
}

/// The repaired list of live element `node` on `layer`, and (thorough
/// repair) how many of its last links are spare links. Without
/// [`Refill::thorough`] every live neighbor it had stays (so repair never
/// takes away anyone's inbound link), and the
/// slots of the deleted ones are refilled with the neighbor-selection
/// heuristic, then nearest first. The candidates are the deleted neighbors'
/// own live neighbors, which is enough while a list keeps most of its links
/// (a VACUUM after a few percent of the rows changed); a list that lost more
/// than half its links also gets the live elements a search for its own
/// vector finds ([`Refill::searched`], what pgvector's repair does for every
/// list), because after heavy deletion the deleted neighbors' neighbors are
/// mostly deleted too and the few live ones are far (pgvector's TAP test 022:
/// 75% of the rows deleted). A thorough repair chooses the whole list again
/// from its live links and the searched candidates, as an insert chooses a
/// new element's list; [`repair_list`] relinks the live links it gives up.
fn repaired_list(
    store: &mut PageStore,
    node: &ElementNode,
    layer: usize,
    current: &[ItemPointer],
    deleted: &ItemBitmap,
    refill: &mut Refill,
) -> (Vec<ItemPointer>, Option<usize>) {
    let base = store.vector(node.tid).to_vec();
    let kept: Vec<ItemPointer> = current.iter().filter(|t| !deleted.contains(**t)).copied().collect();
    let mut selected: Vec<Candidate<ElementNode>> = kept
        .iter()
        .filter_map(|&k| store.visit(&base, k))
        .map(|(distance, node)| Candidate { distance, node })
        .collect();
    let mut second = Vec::new();
    let mut extra: Vec<ItemPointer> = Vec::new();
    for d in current.iter().filter(|t| deleted.contains(**t)) {
        let dnode = store.node(*d);
        if dnode.level as usize >= layer {
            store.read_neighbors(&dnode, layer, &mut second);
            extra.extend(second.iter().filter(|t| !deleted.contains(**t) && **t != node.tid && !kept.contains(t)));
        }
    }
    if refill.thorough || 2 * (current.len() - kept.len()) > current.len() {
        let found = refill.searched(store, node, &base, layer);
        extra.extend(
            found.iter().map(|c| c.node.tid).filter(|t| !deleted.contains(*t) && *t != node.tid && !kept.contains(t)),
        );
    }
    extra.sort();
    extra.dedup();
    let mut candidates: Vec<Candidate<ElementNode>> = extra
        .iter()
        .filter_map(|&k| store.visit(&base, k))
        .filter(|(_, n)| !n.deleted && n.level as usize >= layer)
        .map(|(distance, node)| Candidate { distance, node })
        .collect();
    candidates.sort_by(|a, b| a.distance.total_cmp(&b.distance));
    let max = store.params().max_neighbors(layer);
    if refill.thorough {
        candidates.append(&mut selected);
        candidates.sort_by(|a, b| a.distance.total_cmp(&b.distance));
        let (list, spare) = select_neighbors(store, &candidates, max, layer == 0);
        return (list.iter().map(|c| c.node.tid).collect(), Some(spare));
    }
    let mut pruned = Vec::new();
    for c in candidates {
        if selected.len() >= max {
            break;
        }
        if selected.iter().all(|r| store.distance_between(&c.node, &r.node) >= c.distance) {
            selected.push(c);
        } else {
            pruned.push(c);
        }
    }
    let room = max.saturating_sub(selected.len());
    selected.extend(pruned.into_iter().take(room));
    (selected.iter().map(|c| c.node.tid).collect(), None)
}

/// Compare-and-set attempts with the heuristic refill before falling back to
/// just dropping the links to deleted elements.
const REFILL_ATTEMPTS: usize = 3;

/// Step 3 for one list: rewrites `node`'s list on `layer` until it no longer
/// links to `deleted`. A deleted `node` (outside the batch) only loses the
/// links; a live one gets them refilled. Holds the insert lock in share mode
/// while it rewrites (see the module docs).
fn repair_list(
    store: &mut PageStore,
    node: &ElementNode,
    layer: usize,
    deleted: &ItemBitmap,
    list: &mut Vec<ItemPointer>,
    refill: &mut Refill,
) {
    let rel = store.rel;
    let mut locked = false;
    for attempt in 0.. {
        store.read_neighbors(node, layer, list);
        if !list.iter().any(|t| deleted.contains(*t)) {
            break;
        }
        if !locked {
            rel.lock_graph(SHARE_LOCK);
            locked = true;
        }
        let current = list.clone();
        let (new, spare) = if node.deleted || attempt >= REFILL_ATTEMPTS {
            (current.iter().filter(|t| !deleted.contains(**t)).copied().collect(), None)
        } else {
            repaired_list(store, node, layer, &current, deleted, refill)
        };
        if replace_list(store, node, layer, &current, &new, spare) {
            if let Some(spare) = spare {
                link_back_and_relink(store, node, layer, &current, &new[..new.len() - spare], deleted);
            }
            break;
        }
        // Someone else changed the list meanwhile: read it again.
        pgrx::check_for_interrupts!();
    }
    if locked {
        rel.unlock_graph(SHARE_LOCK);
    }
}

/// After a thorough repair rewrote `node`'s list on `layer` from `old` to
/// one whose selected links are `selected`, does what an insert does after
/// writing a new element's lists: each newly selected neighbor gets the
/// reverse link ([`add_reverse_link`], which relinks what it prunes), and
/// each live element the list gave up is offered to the nearest new
/// neighbor by the relink policy ([`relink::relink`]). Both add links to
/// live elements only, so (a) in the module docs still holds.
fn link_back_and_relink(
    store: &mut PageStore,
    node: &ElementNode,
    layer: usize,
    old: &[ItemPointer],
    selected: &[ItemPointer],
    deleted: &ItemBitmap,
) {
    let added: Vec<ItemPointer> = selected.iter().filter(|t| !old.contains(t)).copied().collect();
    for t in &added {
        let neighbor = store.node(*t);
        add_reverse_link(store, &neighbor, node, layer);
    }
    let Some(&via) = added.first() else { return };
    for &given_up in old.iter().filter(|t| !deleted.contains(**t) && !selected.contains(t)) {
        relink::relink(store, via, given_up, layer);
    }
}

/// Step 3: drops every link to `deleted` from every element outside it
/// that is not free, refilling live elements' lists. Returns the highest live
/// element met (a candidate entry point).
fn repair(rel: &IndexRel, deleted: &ItemBitmap, thorough: bool) -> Option<(ItemPointer, u16)> {
    let mut store = PageStore::new(*rel, rel.read_meta());
    let mut highest: Option<(ItemPointer, u16)> = None;
    let (mut nodes, mut list) = (Vec::new(), Vec::new());
    let mut refill = Refill { thorough, ..Refill::default() };
    for block in 1..rel.nblocks() {
        vacuum_delay();
        elements_of(&store, block, &mut nodes);
        for (node, free) in nodes.iter().copied() {
            if free || deleted.contains(node.tid) {
                continue;
            }
            if !node.deleted && highest.is_none_or(|(_, l)| node.level as u16 > l) {
                highest = Some((node.tid, node.level as u16));
            }
            refill.next_element();
            for layer in 0..=node.level as usize {
                repair_list(&mut store, &node, layer, deleted, &mut list, &mut refill);
            }
            store.clear_cache();
        }
    }
    highest
}

/// Step 4: if the entry point is in `deleted`, moves it to `highest`, under
/// the insert lock in exclusive mode (which also waits for the inserts in
/// progress).
fn move_entry(rel: &IndexRel, deleted: &ItemBitmap, highest: Option<(ItemPointer, u16)>) {
    rel.lock_graph(EXCLUSIVE_LOCK);
    let meta = rel.read_meta();
    if meta.entry.is_some_and(|(e, _)| deleted.contains(e)) {
        rel.set_entry(highest);
    }
    rel.unlock_graph(EXCLUSIVE_LOCK);
}

/// `hnsw.debug_vacuum_free_lock`: a test hook (superuser-only, hidden from
/// `SHOW ALL`). When above 0, VACUUM's free step, on the first block it
/// frees, waits between its two writes (clearing the neighbor items, then
/// marking the elements free) for the advisory lock
/// `pg_advisory_lock_shared(value)`, so a test holding
/// `pg_advisory_lock(value)` can run inserts in between.
pub static DEBUG_VACUUM_FREE_LOCK: GucSetting<i32> = GucSetting::<i32>::new(0);

/// `hnsw.debug_check_pause_lock`: a test hook (superuser-only, hidden from
/// `SHOW ALL`). When above 0, `hnsw_index_check` waits after reading the
/// index's pages, before it checks lists and reachability, for the advisory
/// lock `pg_advisory_lock_shared(value)`, so a test holding
/// `pg_advisory_lock(value)` can insert and VACUUM in the middle of a check.
pub static DEBUG_CHECK_PAUSE_LOCK: GucSetting<i32> = GucSetting::<i32>::new(0);

/// Registers the test hooks ([`DEBUG_VACUUM_FREE_LOCK`],
/// [`DEBUG_CHECK_PAUSE_LOCK`]).
pub fn init_test_hooks() {
    GucRegistry::define_int_guc(
        c"hnsw.debug_vacuum_free_lock",
        c"For tests: advisory lock VACUUM's free step waits for between its two writes (0 = none)",
        c"",
        &DEBUG_VACUUM_FREE_LOCK,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::NO_SHOW_ALL,
    );
    GucRegistry::define_int_guc(
        c"hnsw.debug_check_pause_lock",
        c"For tests: advisory lock hnsw_index_check waits for after reading the pages (0 = none)",
        c"",
        &DEBUG_CHECK_PAUSE_LOCK,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::NO_SHOW_ALL,
    );
}

/// The test hook of [`DEBUG_VACUUM_FREE_LOCK`]: waits for (then releases)
/// the advisory lock `key` in share mode. No other heavyweight lock and no
/// buffer lock is held here.
pub(super) fn debug_wait_for_advisory_lock(key: i32) {
    // SAFETY: a locktag filled as pg_advisory_lock_shared(bigint) fills it
    // (SET_LOCKTAG_INT64); LockAcquire and LockRelease are guarded bindings.
    unsafe {
        let mut tag: pg_sys::LOCKTAG = std::mem::zeroed();
        tag.locktag_field1 = pg_sys::MyDatabaseId.to_u32();
        tag.locktag_field2 = 0;
        tag.locktag_field3 = key as u32;
        tag.locktag_field4 = 1;
        tag.locktag_type = pg_sys::LockTagType::LOCKTAG_ADVISORY as u8;
        tag.locktag_lockmethodid = pg_sys::USER_LOCKMETHOD as u8;
        pg_sys::LockAcquire(&tag, SHARE_LOCK, false, false);
        pg_sys::LockRelease(&tag, SHARE_LOCK, false);
    }
}

/// Step 6: for each block with elements of `deleted`, clears their neighbor
/// items, then marks them free (one WAL record per neighbor page and per
/// element page), then lowers the meta page's free hint to the first block
/// with a free element.
///
/// The order matters: an insert may reuse an element the moment it is
/// marked free, and writes its lists into the element's neighbor item. So
/// the items are cleared while their elements are still deleted and not
/// free (no insert reuses them, and by (a)–(c) of the module docs no scan or
/// insert reaches them), and nothing of an element is written after it is
/// marked free. (Marking first and clearing afterwards could wipe the lists
/// an insert had just written into a reused element.)
fn free(rel: &IndexRel, meta: &Meta, deleted: &ItemBitmap) {
    let (codec, m) = (meta.codec, meta.m as usize);
    let mut first_free: Option<u32> = None;
    let mut pause = DEBUG_VACUUM_FREE_LOCK.get();
    let mut neighbor_items: Vec<ItemPointer> = Vec::new();
    for block in deleted.blocks.clone() {
        if deleted.offsets(block).next().is_none() {
            continue;
        }
        vacuum_delay();
        // Only VACUUM marks elements deleted or free, and one VACUUM runs
        // per table: what this read finds stays so until the marking below.
        neighbor_items.clear();
        rel.read(block, |p| {
            let r = PageRef::new(p, PageKind::Graph).unwrap_or_else(|e| rel.corrupt(block, e));
            for offset in deleted.offsets(block) {
                let item = r.item(offset).unwrap_or_else(|e| rel.corrupt(block, e));
                let e = ElementRef::new(item, &codec, m).unwrap_or_else(|e| rel.corrupt(block, e));
                if e.is_deleted() && !e.is_free() {
                    neighbor_items.push(e.neighbors());
                }
            }
        });
        if neighbor_items.is_empty() {
            continue;
        }
        neighbor_items.sort();
        for group in neighbor_items.chunk_by(|a, b| a.block == b.block) {
            let nblock = group[0].block;
            rel.modify(nblock, |p| {
                for at in group {
                    let range = rel.item_range(nblock, p, at.offset);
                    page::clear_neighbors(&mut p[range], m).unwrap_or_else(|e| rel.corrupt(nblock, e));
                }
                Some(())
            });
        }
        if pause > 0 {
            debug_wait_for_advisory_lock(pause);
            pause = 0;
        }
        rel.modify(block, |p| {
            let mut changed = false;
            for offset in deleted.offsets(block) {
                let range = rel.item_range(block, p, offset);
                let mut e = ElementMut::new(&mut p[range], &codec, m).unwrap_or_else(|e| rel.corrupt(block, e));
                if e.is_deleted() && !e.is_free() {
                    e.set_free();
                    changed = true;
                }
            }
            changed.then_some(())
        });
        first_free = Some(first_free.map_or(block, |b| b.min(block)));
    }
    if let Some(b) = first_free {
        let current = rel.read_meta().free_hint;
        rel.set_free_hint(Some(current.map_or(b, |h| h.min(b))));
    }
}

/// Steps 2–6 for the deleted elements of one batch; returns how many it
/// freed.
fn free_batch(rel: &IndexRel, meta: &Meta, deleted: &ItemBitmap, thorough: bool) -> usize {
    if deleted.is_empty() {
        return 0;
    }
    let how = if thorough { "thorough repair" } else { "local refill" };
    pgrx::debug1!("hnsw index \"{}\": freeing {} deleted elements ({how})", rel.name(), deleted.len());
    rel.wait_for_inserts();
    let highest = repair(rel, deleted, thorough);
    move_entry(rel, deleted, highest);
    rel.wait_for_scans();
    free(rel, meta, deleted);
    deleted.len()
}

fn new_stats(stats: *mut pg_sys::IndexBulkDeleteResult) -> *mut pg_sys::IndexBulkDeleteResult {
    if stats.is_null() {
        // SAFETY: zeroed allocation of the stats struct VACUUM expects.
        unsafe { pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexBulkDeleteResult>()) as *mut _ }
    } else {
        stats
    }
}

/// `ambulkdelete`: steps 1–6 above, batch by batch.
#[pg_guard]
pub unsafe extern "C-unwind" fn ambulkdelete(
    info: *mut pg_sys::IndexVacuumInfo,
    stats: *mut pg_sys::IndexBulkDeleteResult,
    callback: pg_sys::IndexBulkDeleteCallback,
    callback_state: *mut std::ffi::c_void,
) -> *mut pg_sys::IndexBulkDeleteResult {
    let stats = new_stats(stats);
    // SAFETY: VACUUM passes a valid info struct and callback.
    let (rel, callback) = unsafe { (IndexRel::new((*info).index), callback.expect("VACUUM callback")) };
    let meta = rel.read_meta();
    let words = ItemBitmap::words_per_block(meta.m as usize, &meta.codec);
    let ranges = batches(rel.nblocks(), batch_blocks(words, 1));
    let removal = remove_dead_tids(&rel, &meta, &ranges, words, |t| {
        let mut tid = to_pg_tid(t);
        let tid = &mut tid as *mut pg_sys::ItemPointerData;
        // SAFETY: the callback VACUUM gave us, with its own state, called
        // on the backend's main thread. It may raise an ERROR (during
        // `CREATE INDEX CONCURRENTLY` it is `validate_index_callback`, which
        // writes a tuplesort: temp_file_limit, a full disk): the guarded FFI
        // boundary turns that longjmp into a Rust panic, so our frames
        // unwind (freeing what they hold) up to `#[pg_guard]`, which raises
        // the ERROR again. The closure holds nothing with a destructor.
        unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| callback(tid, callback_state)) }
    });
    let thorough = removal.is_heavy();
    let mut freed = free_batch(&rel, &meta, &removal.deleted, thorough);
    drop(removal.deleted);
    for (range, pending) in ranges.iter().zip(&removal.pending).skip(1) {
        if *pending {
            let deleted = mark_batch(&rel, &meta, range.clone(), words);
            freed += free_batch(&rel, &meta, &deleted, thorough);
        }
    }
    // Step 7: the key directory loses the entries of the freed elements.
    if freed > 0 && meta.keys_head.is_some() {
        let dropped = directory::compact(&rel, vacuum_delay);
        pgrx::debug1!("hnsw index \"{}\": {dropped} key directory entries dropped", rel.name());
    }
    // SAFETY: stats is a valid struct (allocated above or passed in).
    unsafe {
        (*stats).tuples_removed += removal.removed_tids;
        (*stats).num_index_tuples = removal.live_tids;
        (*stats).num_pages = rel.nblocks();
    }
    stats
}

/// What the orphan pass did.
#[derive(Default)]
struct Healed {
    /// Heap TIDs of live elements.
    live_tids: f64,
    /// Highest live element.
    highest: Option<(ItemPointer, u16)>,
    /// Live elements found unreachable, and how many of them got a link.
    unreachable: usize,
    linked: usize,
    /// Live elements with at most one inbound link, none from their own
    /// neighbors, and how many of them got a link from one.
    weak: usize,
    weak_linked: usize,
}

/// Links each live element of `candidates` (those with fewer than two
/// inbound links) that is not linked back by its own neighbors (the relink
/// policy's [`relink::linked_back`]) from one of its own reachable
/// neighbors. An element whose only inbound links come from elsewhere is
/// reachable but hard to find: a search for its own vector closes in on
/// its neighbors, not on whoever links to it.
fn link_weak(
    rel: &IndexRel,
    store: &mut PageStore,
    candidates: &ItemBitmap,
    reached: impl Fn(ItemPointer) -> bool,
    inbound: &mut ItemBitmap,
    inbound2: &mut ItemBitmap,
    healed: &mut Healed,
) {
    for tid in candidates.iter() {
        if relink::linked_back(store, tid) {
            continue;
        }
        healed.weak += 1;
        rel.lock_graph(SHARE_LOCK);
        healed.weak_linked += link_unreached(store, tid, None, &reached, inbound, inbound2) as usize;
        rel.unlock_graph(SHARE_LOCK);
        store.clear_cache();
    }
}

/// Links `tid`, a live element that searches cannot reach, from a host
/// whose layer-0 list then points to it: first one of `tid`'s own layer-0
/// neighbors that `reached` says searches reach (so `tid` becomes reachable
/// too), then the entry point. A host's list gets `tid` appended when it has
/// room; failing that (second round), `tid` replaces the host's farthest
/// neighbor among those with at least two inbound links (`inbound2`), so
/// healing does not strand anyone else (step 3 of the relink policy,
/// `graph/relink.rs`, with VACUUM's exact inbound counts in place of the
/// local [`relink::linked_back`] test). Compare-and-set, retried a few
/// times. Returns whether it linked it.
fn link_unreached(
    store: &mut PageStore,
    tid: ItemPointer,
    entry: Option<ItemPointer>,
    reached: &impl Fn(ItemPointer) -> bool,
    inbound: &mut ItemBitmap,
    inbound2: &mut ItemBitmap,
) -> bool {
    let node = store.node(tid);
    if node.deleted {
        return false;
    }
    let mut hosts = Vec::new();
    store.read_neighbors(&node, 0, &mut hosts);
    hosts.retain(|&h| h != tid && reached(h));
    hosts.extend(entry.filter(|&e| e != tid));
    let hosts: Vec<ElementNode> = hosts.into_iter().map(|h| store.node(h)).filter(|h| !h.deleted).collect();
    let max = store.params().max_neighbors(0);
    let mut list = Vec::new();
    for displace in [false, true] {
        for host in &hosts {
            for _attempt in 0..REFILL_ATTEMPTS {
                // Only a selected link counts (an insert may take a spare
                // link's slot); a spare copy of `tid` is promoted.
                let spare = store.read_neighbors(host, 0, &mut list);
                let selected = list.len() - spare;
                if list[..selected].contains(&tid) {
                    return true;
                }
                let mut new = list.clone();
                let mut new_spare = 0;
                let mut displaced = None;
                if selected < max {
                    let mut next = LayerList { links: list.clone(), spare };
                    next.append(tid, max);
                    (new, new_spare) = (next.links, next.spare);
                } else if !displace {
                    break;
                } else {
                    let base = store.vector(host.tid).to_vec();
                    let farthest = new
                        .iter()
                        .enumerate()
                        .filter(|(_, t)| inbound2.contains(**t))
                        .filter_map(|(i, &t)| store.visit(&base, t).map(|(d, _)| (d, i)))
                        .max_by(|a, b| a.0.total_cmp(&b.0));
                    let Some((_, i)) = farthest else { break };
                    displaced = Some(new[i]);
                    new[i] = tid;
                }
                if replace_list(store, host, 0, &list, &new, Some(new_spare)) {
                    inbound.insert(tid);
                    if let Some(d) = displaced {
                        // It had at least two inbound links and lost one.
                        inbound2.remove(d);
                    }
                    return true;
                }
            }
        }
    }
    false
}

/// One read-only pass over every element: marks live elements of `range`
/// in `live`, and counts the layer-0 links to elements of `range` from live
/// elements (`inbound`: at least one, `inbound2`: at least two). With
/// `totals`, also sums live heap TIDs and finds the highest live element.
fn count_inbound(
    store: &PageStore,
    nblocks: u32,
    live: &mut ItemBitmap,
    inbound: &mut ItemBitmap,
    inbound2: &mut ItemBitmap,
    mut totals: Option<&mut Healed>,
) {
    let rel = store.rel;
    let (mut nodes, mut list) = (Vec::new(), Vec::new());
    for block in 1..nblocks {
        vacuum_delay();
        elements_of(store, block, &mut nodes);
        for (node, free) in nodes.iter().copied() {
            if free || node.deleted {
                continue;
            }
            if live.blocks.contains(&block) && !live.covers(node.tid) {
                impossible_offset(&rel, node.tid);
            }
            live.insert(node.tid);
            if let Some(t) = totals.as_deref_mut() {
                t.live_tids += node.heap_tids as f64;
                if t.highest.is_none_or(|(_, l)| node.level as u16 > l) {
                    t.highest = Some((node.tid, node.level as u16));
                }
            }
            store.read_selected(&node, 0, &mut list);
            for &t in &list {
                if t != node.tid && !inbound.insert(t) {
                    inbound2.insert(t);
                }
            }
        }
    }
}

/// Gives a graph that has live elements but no entry point (every element
/// was deleted while inserts went on) its highest live element as entry.
fn ensure_entry(rel: &IndexRel, highest: Option<(ItemPointer, u16)>) -> Option<ItemPointer> {
    if highest.is_some() && rel.read_meta().entry.is_none() {
        rel.lock_graph(EXCLUSIVE_LOCK);
        if rel.read_meta().entry.is_none() {
            rel.set_entry(highest);
        }
        rel.unlock_graph(EXCLUSIVE_LOCK);
    }
    rel.read_meta().entry.map(|(e, _)| e)
}

/// Marks in `reached` every element a search reaches on layer 0 from
/// `start` over selected links (a spare link may lose its slot to the next
/// insert), walking through deleted (not free) elements as scans do.
/// Returns false, leaving the walk unfinished, if its queue would outgrow
/// `budget` bytes.
fn walk_from(store: &PageStore, start: ItemPointer, reached: &mut ItemBitmap, budget: usize) -> bool {
    if !reached.insert(start) {
        return true;
    }
    let mut queue = vec![start];
    let mut list = Vec::new();
    while let Some(t) = queue.pop() {
        pgrx::check_for_interrupts!();
        let node = store.node(t);
        store.read_selected(&node, 0, &mut list);
        for &x in &list {
            if reached.insert(x) {
                if queue.len() * std::mem::size_of::<ItemPointer>() >= budget {
                    return false;
                }
                try_reserve(&mut queue, 1, "an hnsw graph walk");
                queue.push(x);
            }
        }
    }
    true
}

/// Rounds of [`heal_connected`]: a link it adds to a full list displaces
/// another, which a group of elements linking only to each other may have
/// needed, so each round walks the graph again and links what it strands.
const HEAL_ROUNDS: usize = 4;

/// The orphan pass over the whole index at once, when its bitmaps fit the
/// VACUUM memory: walks the graph from the entry point on layer 0 (where
/// every search ends) and links every live element the walk does not reach,
/// then continues the walk from it; after the first round, also links the
/// weakly linked elements ([`link_weak`]); then walks again from the entry
/// point, up to [`HEAL_ROUNDS`] times, until every live element is reached.
/// Returns `None` (nothing linked yet) if the walk's queue would not fit,
/// for [`heal_batched`] to take over.
fn heal_connected(rel: &IndexRel, store: &mut PageStore, nblocks: u32, words: usize) -> Option<Healed> {
    let all = 1..nblocks;
    let mut healed = Healed::default();
    let (mut live, mut inbound, mut inbound2, mut reached) = (
        ItemBitmap::new(all.clone(), words),
        ItemBitmap::new(all.clone(), words),
        ItemBitmap::new(all.clone(), words),
        ItemBitmap::new(all.clone(), words),
    );
    let budget = work_mem_bytes().saturating_sub(HEAL_BITMAPS * ItemBitmap::bytes_for(nblocks, words));
    count_inbound(store, nblocks, &mut live, &mut inbound, &mut inbound2, Some(&mut healed));
    let entry = ensure_entry(rel, healed.highest)?;
    for round in 0..HEAL_ROUNDS {
        let linked_before = healed.linked + healed.weak_linked;
        if round > 0 {
            reached.clear();
        }
        if !walk_from(store, entry, &mut reached, budget) {
            return if round == 0 { None } else { Some(healed) };
        }
        let unreached = live.subset(|t| !reached.contains(t));
        if round > 0 && unreached.is_empty() {
            break;
        }
        for tid in unreached.iter() {
            if reached.contains(tid) {
                continue; // reached from an element linked earlier in this loop
            }
            healed.unreachable += 1;
            rel.lock_graph(SHARE_LOCK);
            let linked = link_unreached(store, tid, Some(entry), &|t| reached.contains(t), &mut inbound, &mut inbound2);
            rel.unlock_graph(SHARE_LOCK);
            store.clear_cache();
            if linked {
                healed.linked += 1;
                if !walk_from(store, tid, &mut reached, budget) {
                    return Some(healed);
                }
            }
        }
        drop(unreached);
        if round == 0 {
            let weak = live.subset(|t| !inbound2.contains(t) && t != entry);
            link_weak(rel, store, &weak, |t| reached.contains(t), &mut inbound, &mut inbound2, &mut healed);
        }
        if healed.linked + healed.weak_linked == linked_before {
            break; // nothing changed, so nothing new was stranded
        }
    }
    Some(healed)
}

/// Bitmaps over the whole index [`heal_connected`] holds at once: live,
/// inbound, inbound2, reached, and the list it works through (unreached,
/// then weak).
const HEAL_BITMAPS: usize = 5;

/// Bitmaps over a batch [`heal_batched`] holds at once: live, inbound,
/// inbound2 and the list it works through (stranded, then weak).
const HEAL_BATCH_BITMAPS: usize = 4;

/// The orphan pass in batches of blocks (when one batch cannot cover the
/// index): for each batch, counts layer-0 inbound links to its elements
/// over the whole index and links each live element without one (except
/// the entry point). Unlike [`heal_connected`] it cannot see groups of
/// elements that only link to each other.
fn heal_batched(rel: &IndexRel, store: &mut PageStore, nblocks: u32, words: usize) -> Healed {
    let mut healed = Healed::default();
    for (i, range) in batches(nblocks, batch_blocks(words, HEAL_BATCH_BITMAPS)).into_iter().enumerate() {
        let mut live = ItemBitmap::new(range.clone(), words);
        let mut inbound = ItemBitmap::new(range.clone(), words);
        let mut inbound2 = ItemBitmap::new(range.clone(), words);
        let totals = (i == 0).then_some(&mut healed);
        count_inbound(store, nblocks, &mut live, &mut inbound, &mut inbound2, totals);
        let entry = ensure_entry(rel, healed.highest);
        let stranded = live.subset(|t| !inbound.contains(t) && Some(t) != entry);
        for tid in stranded.iter() {
            healed.unreachable += 1;
            rel.lock_graph(SHARE_LOCK);
            let linked = link_unreached(store, tid, entry, &|_| true, &mut inbound, &mut inbound2);
            rel.unlock_graph(SHARE_LOCK);
            healed.linked += linked as usize;
            store.clear_cache();
        }
        drop(stranded);
        let weak = live.subset(|t| inbound.contains(t) && !inbound2.contains(t) && Some(t) != entry);
        link_weak(rel, store, &weak, |_| true, &mut inbound, &mut inbound2, &mut healed);
    }
    healed
}

/// The orphan pass ([`heal_connected`], or [`heal_batched`] when memory is
/// short); records `healed_blocks` on the meta page.
fn heal(rel: &IndexRel) -> Healed {
    let meta = rel.read_meta();
    let words = ItemBitmap::words_per_block(meta.m as usize, &meta.codec);
    let nblocks = rel.nblocks();
    let mut store = PageStore::new(*rel, meta);
    let whole = batch_blocks(words, HEAL_BITMAPS) >= nblocks;
    let healed = match whole.then(|| heal_connected(rel, &mut store, nblocks, words)).flatten() {
        Some(h) => h,
        None => heal_batched(rel, &mut store, nblocks, words),
    };
    pgrx::debug1!(
        "hnsw index \"{}\": linked {} of {} elements searches could not reach, and {} of {} without a link from their neighbors",
        rel.name(),
        healed.linked,
        healed.unreachable,
        healed.weak_linked,
        healed.weak
    );
    rel.modify(META_BLOCK, |p| {
        let mut meta = Meta::read_page(p).unwrap_or_else(|e| rel.corrupt(META_BLOCK, e));
        meta.healed_blocks = nblocks.max(1);
        meta.write_page(p);
        Some(())
    });
    healed
}

/// Whether a VACUUM that deleted nothing should walk the index for orphans:
/// never walked before, or the index has at least doubled since.
fn heal_due(meta: &Meta, nblocks: u32) -> bool {
    meta.healed_blocks == 0 || nblocks / 2 >= meta.healed_blocks
}

/// `amvacuumcleanup`: the orphan pass (after any `ambulkdelete`, or when
/// [`heal_due`]) and index statistics. Returns null, leaving the index's
/// statistics as they were, when it did nothing.
#[pg_guard]
pub unsafe extern "C-unwind" fn amvacuumcleanup(
    info: *mut pg_sys::IndexVacuumInfo,
    stats: *mut pg_sys::IndexBulkDeleteResult,
) -> *mut pg_sys::IndexBulkDeleteResult {
    // SAFETY: VACUUM passes a valid info struct.
    let (analyze_only, index) = unsafe { ((*info).analyze_only, (*info).index) };
    if analyze_only {
        return stats;
    }
    let rel = IndexRel::new(index);
    let nblocks = rel.nblocks();
    if nblocks == 0 {
        return stats;
    }
    if stats.is_null() && !heal_due(&rel.read_meta(), nblocks) {
        return stats;
    }
    let healed = heal(&rel);
    let stats = new_stats(stats);
    // SAFETY: stats is valid (allocated above or passed in).
    unsafe {
        (*stats).num_index_tuples = healed.live_tids;
        (*stats).estimated_count = false;
        (*stats).num_pages = rel.nblocks();
    }
    stats
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use super::*;

    fn tid(block: u32, offset: u16) -> ItemPointer {
        ItemPointer { block, offset }
    }

    #[pg_test]
    fn bitmap_sets_and_iterates() {
        let bits = Codec::Bit { metric: crate::hnsw::codec::BitMetric::Hamming, bits: 1 };
        let words = ItemBitmap::words_per_block(2, &bits);
        assert!(words * 64 >= max_items_per_page(2, &bits) && max_items_per_page(2, &bits) > 100, "{words}");
        let mut b = ItemBitmap::new(5..9, words);
        assert!(b.is_empty());
        assert!(b.insert(tid(5, 1)) && b.insert(tid(8, 70)) && b.insert(tid(6, 64)));
        assert!(!b.insert(tid(5, 1)), "already present");
        assert!(!b.insert(tid(9, 1)) && !b.covers(tid(9, 1)), "outside the blocks");
        assert!(!b.insert(tid(5, 0)) && !b.covers(tid(5, (words * 64 + 1) as u16)), "impossible offsets");
        assert_eq!(b.len(), 3);
        assert!(b.contains(tid(6, 64)) && !b.contains(tid(6, 65)) && !b.contains(tid(4, 1)));
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![tid(5, 1), tid(6, 64), tid(8, 70)]);
        b.remove(tid(6, 64));
        b.remove(tid(6, 64));
        assert_eq!(b.len(), 2);
        assert_eq!(b.offsets(8).collect::<Vec<_>>(), vec![70]);
        assert_eq!(b.offsets(100).count(), 0);
    }

    #[pg_test]
    fn batches_cover_every_block_once() {
        assert_eq!(batches(1, 10), Vec::<std::ops::Range<u32>>::new());
        assert_eq!(batches(11, 4), vec![1..5, 5..9, 9..11]);
        assert_eq!(batches(5, 100), vec![1..5]);
    }

    #[pg_test]
    fn heal_walks_again_only_after_doubling() {
        let meta = |healed_blocks| Meta {
            codec: Codec::Vector {
                metric: crate::distance::Metric::L2,
                dims: 3,
                codes: crate::hnsw::codec::VectorCodes::Half,
            },
            m: 16,
            ef_construction: 64,
            entry: None,
            free_hint: None,
            healed_blocks,
            keys_head: None,
            keys_hint: None,
        };
        assert!(heal_due(&meta(0), 10));
        assert!(!heal_due(&meta(10), 10) && !heal_due(&meta(10), 19));
        assert!(heal_due(&meta(10), 20));
    }

    /// A callback that raises, as `validate_index_callback` does when its
    /// tuplesort hits `temp_file_limit`.
    #[pg_guard]
    unsafe extern "C-unwind" fn raising_callback(_tid: pg_sys::ItemPointer, _state: *mut std::ffi::c_void) -> bool {
        pgrx::error!("hnsw test: the VACUUM callback failed")
    }

    /// An `ERROR` raised by VACUUM's callback comes back through the guarded
    /// FFI boundary: `ambulkdelete`'s frames unwind (its bitmap is freed,
    /// not leaked by a longjmp over it) and the same error reaches the
    /// caller. Runs `ambulkdelete` in a subtransaction, as PL/pgSQL would.
    #[pg_test]
    fn callback_error_unwinds_bulkdelete() {
        use std::sync::atomic::Ordering;
        Spi::run(
            "CREATE TABLE cb (id int, v vector(2));
             INSERT INTO cb SELECT i, ARRAY[i, i % 3]::vector FROM generate_series(1, 300) i;
             CREATE INDEX cb_idx ON cb USING hnsw (v vector_l2_ops)",
        )
        .unwrap();
        let oid = Spi::get_one::<pg_sys::Oid>("SELECT 'cb_idx'::regclass::oid").unwrap().unwrap();
        // SAFETY: opening, vacuuming and closing an index this test created,
        // in a subtransaction that is rolled back on error (releasing the
        // buffer lock and pin the unwound frames held), restoring the
        // memory context and resource owner as PL/pgSQL does.
        unsafe {
            let index = pg_sys::index_open(oid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
            let mut info: pg_sys::IndexVacuumInfo = std::mem::zeroed();
            info.index = index;
            info.message_level = pg_sys::DEBUG2 as i32;
            let before = LIVE_BITMAPS.load(Ordering::Relaxed);
            let (context, owner) = (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner);
            pg_sys::BeginInternalSubTransaction(std::ptr::null());
            let info_ptr = &mut info as *mut pg_sys::IndexVacuumInfo;
            let message = PgTryBuilder::new(|| {
                pg_sys::ffi::pg_guard_ffi_boundary(|| {
                    ambulkdelete(info_ptr, std::ptr::null_mut(), Some(raising_callback), std::ptr::null_mut())
                });
                None
            })
            .catch_others(|e| match e {
                pg_sys::panic::CaughtError::PostgresError(r)
                | pg_sys::panic::CaughtError::ErrorReport(r)
                | pg_sys::panic::CaughtError::RustPanic { ereport: r, .. } => Some(r.message().to_string()),
            })
            .execute();
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
            pg_sys::index_close(index, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
            assert_eq!(message.as_deref(), Some("hnsw test: the VACUUM callback failed"));
            assert_eq!(
                LIVE_BITMAPS.load(Ordering::Relaxed),
                before,
                "ambulkdelete's bitmap leaked: frames were skipped"
            );
        }
    }

    #[pg_test]
    fn memory_follows_maintenance_work_mem() {
        Spi::run("SET maintenance_work_mem = '1MB'").unwrap();
        assert_eq!(work_mem_bytes(), 1024 * 1024);
        // 8 bytes per block for M = 16 and vector(384): 1 MiB covers 131,072 blocks.
        let codec = Codec::Vector {
            metric: crate::distance::Metric::Cosine,
            dims: 384,
            codes: crate::hnsw::codec::VectorCodes::Half,
        };
        assert_eq!(batch_blocks(ItemBitmap::words_per_block(16, &codec), 1), 131_072);
        Spi::run("SET hnsw.debug_vacuum_batch_blocks = 3").unwrap();
        assert_eq!(batch_blocks(2, 1), 3);
        Spi::run("RESET hnsw.debug_vacuum_batch_blocks").unwrap();
    }
}
