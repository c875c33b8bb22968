//! `ambeginscan` / `amrescan` / `amgettuple` / `amendscan`: ordered scans
//! for `ORDER BY embedding <op> $1 LIMIT k`.
//!
//! The scan path: on the first `amgettuple`, read the query from the ORDER BY
//! key into the codec's working form ([`prepare_datum`]: normalised for
//! cosine), then run the k-NN search over the buffer pages: greedy descent
//! from the entry point, then a beam of `hnsw.ef_search` on layer 0.
//!
//! **Iterative scans** (`hnsw.iterative_scan`, as in pgvector 0.8). With
//! `off`, that first beam is all a scan returns: at most `ef_search`
//! elements, so a `WHERE` clause that rejects rows leaves fewer than `LIMIT`.
//! With `relaxed_order` or `strict_order`, when the executor asks for more
//! rows than the beam held, the scan resumes the same layer-0 search
//! ([`ResumableSearch`]): it keeps its visited set, seeds the next beam with
//! the nearest elements it visited but has not returned, and expands the
//! nearest elements it has not expanded, so each batch is the next ring
//! outward rather than a restart. Batches double in size (up to
//! [`MAX_BATCH`]) as the executor keeps asking, since a filter that rejected
//! one batch is likely to reject many; each returns the nearer half of a beam
//! twice its size (the farther half, less settled, stays for the next batch).
//! With conditions on filter columns, batches after the first are
//! *matching* batches ([`ResumableSearch::next_matching_batch`]): the walk
//! tests the filter on each element as it reads it, expands matching and
//! non-matching elements alike, but its beam holds matching ones only, and a
//! batch returns the matching elements it has settled: first the rows a
//! `LIMIT 10` still lacks, then twice as many each time. A batch stops after
//! as many visits again as the walk made so far, so the switch to the exact
//! pass (below) is weighed again as the walk goes on. After the first beam the scan may
//! visit `hnsw.max_scan_tuples` more elements, and hold at most
//! `hnsw.scan_mem_multiplier × work_mem` of bookkeeping; past either it
//! expands nothing more.
//!
//! **Exact fallback** (`hnsw.exact_fallback`, on by default). A filter that
//! matches few rows, or rows far from the query, can reject everything the
//! graph walk reaches within its budget; a walk also cannot reach elements
//! that no link leads to. So once the budget or the memory is spent, or the
//! walk has nothing left to expand, the scan switches to an exact pass
//! ([`ExactPass`]): it reads every element page of the index (index pages
//! only, no heap access), computes each live element's ORDER BY value, and
//! returns the elements not returned before in increasing order of it, in
//! batches, until the executor stops asking. Its memory is bounded the same
//! way: a pass keeps the nearest elements that fit the scan's memory limit
//! and, when they are used up, the next pass takes the nearest ones beyond
//! them. The scan lock is taken per group of [`EXACT_PASS_BLOCKS`] blocks, so
//! VACUUM (and the queries queued behind it) never waits for a whole pass.
//! The result is complete: every row the `WHERE` clause accepts comes out
//! (for `vector`, the executor's ORDER BY recheck puts them in exact order).
//! With `strict_order`, rows below a value already returned are still
//! skipped, as the mode promises; with `relaxed_order` they come out late.
//!
//! **Order.** Each batch is returned in increasing order of its ORDER BY
//! values. With `relaxed_order`, a later batch may return a row nearer than
//! one an earlier batch returned (the search found it late), so the output
//! is sorted within batches but not always across them. With
//! `strict_order`, such a row is skipped, so the values the index returns
//! never decrease. What that means for the rows' exact order depends on the
//! element type:
//! - `vector`: pages hold half-precision vectors, so each row is returned
//!   with a *lower bound* of its exact distance ([`Codec::order_value`]) and
//!   `xs_recheckorderby`: the executor recomputes the exact distance from the
//!   heap row and reorders through its queue (PostgreSQL's ORDER BY recheck,
//!   as for GiST). Since a bound never exceeds the exact distance, the
//!   executor never raises "index returned tuples in wrong order" in any
//!   mode; with `off` and `strict_order` the bounds never decrease, so rows
//!   come out in exact distance order; with `relaxed_order` a late row can
//!   come out after a farther one.
//! - `halfvec`, `bit`, `sparsevec`: distances on pages are exact (up to
//!   `float4` rounding of the sum), returned without recheck, in the index's
//!   order.
//!
//! A NULL query returns the indexed rows in graph order (as pgvector does),
//! with NULL ORDER BY values: up to `ef_search` of them, or up to
//! `max_scan_tuples` with an iterative scan. A zero query under cosine
//! returns no rows.

use pgrx::prelude::*;
use pgrx::{pg_sys, PgMemoryContexts};
use std::collections::VecDeque;

use super::codec::Codec;
use super::directory;
use super::graph::{Candidate, ResumableSearch, Searcher};
use super::key_datum;
use super::keys::Filter;
use super::options::{self, IterativeScan};
use super::page::{self, ElementRef, ItemPointer, PageKind, PageRef};
use super::prepare_datum;
use super::storage::{to_pg_tid, ElementNode, IndexRel, PageStore, SHARE_LOCK};
use crate::distance::QueryNorms;

/// Widest beam of a resumed batch.
pub const MAX_BATCH: usize = 1_000;

/// Index blocks an exact pass reads under one hold of the scan lock.
pub const EXACT_PASS_BLOCKS: u32 = 64;

/// What an exact pass costs per index block, in graph visits (the unit of
/// `hnsw.max_scan_tuples`): with filter columns a scan switches from the
/// walk to the exact pass when the walk, at the rate it finds matching
/// elements, would need more visits than the pass costs (measured, see
/// bench/results/filtered.md).
const EXACT_PASS_VISITS_PER_BLOCK: f64 = 2.0;

/// What an exact pass costs per key directory entry, in graph visits:
/// directory pages hold 150-300 entries each, and testing a filter on one
/// costs far less than a distance. Measured on the real dataset (62,065
/// rows, PostgreSQL 18): a pass over the 214 directory pages takes about
/// 0.5 ms, some 550 visits' worth (0.01 per entry); each matching element
/// then costs about a visit (0.8 us). 0.03 leaves a margin: mean query time
/// with 0.01 / 0.03 / 0.1 was lib 0.92 / 0.90 / 0.79 ms, python3 4.9 / 4.6 /
/// 5.0, r-cran 1.5 / 1.7 / 2.5, fonts 1.1 / 1.1 / 1.7, postgresql 0.9 /
/// 0.9 / 1.4 (a smaller value counts the directory for more queries of a
/// broad filter, whose walk would have found its rows soon).
const EXACT_PASS_VISITS_PER_ENTRY: f64 = 0.03;

/// Fewest elements an exact pass keeps, whatever the memory limit.
const EXACT_PASS_MIN_HELD: usize = 1_000;

/// Bytes of iterative-scan bookkeeping per element held (a candidate in a
/// heap) and per element visited (an entry of the visited set).
const BYTES_PER_HELD: usize = std::mem::size_of::<Candidate<ElementNode>>();
const BYTES_PER_VISITED: usize = 16;

/// Per-scan state, allocated in the scan's memory context.
struct ScanState {
    started: bool,
    /// Rows ready to return: heap TID and ORDER BY value (`None`: NULL).
    ready: VecDeque<(ItemPointer, Option<f64>)>,
    /// Whether the values are lower bounds the executor must recheck.
    recheck: bool,
    /// Iterative-scan mode, read when the scan starts.
    mode: IterativeScan,
    /// The query in working form and its norms (for order values).
    query: Vec<u32>,
    query_norms: QueryNorms,
    /// The resumable search of an iterative scan.
    search: Option<ResumableSearch<ItemPointer, ElementNode>>,
    /// The exact pass that follows it (see the module docs).
    exact: Option<ExactPass>,
    /// Elements (heap TID of the element item, reuse count) handed to
    /// [`emit`] so far, which the exact pass leaves out.
    returned: rustc_hash::FxHashSet<(ItemPointer, u8)>,
    /// Visits the search may reach in total (first pass + budget).
    visit_limit: usize,
    /// Width of the next batch.
    batch: usize,
    /// Matching elements the next batch of a filtered walk settles (0:
    /// before the first).
    want: usize,
    /// Largest value returned so far (for `strict_order`).
    last_value: f64,
    /// Rows a `strict_order` scan holds back (see [`emit`]).
    held: std::collections::BinaryHeap<Held>,
    /// Largest gap seen between an element's distance and its ORDER BY
    /// value (a lower bound), in the value's units.
    max_slack: f64,
    /// The conditions on filter columns the scan applies itself (a
    /// multi-column index; see [`super::keys`]).
    filter: Option<Filter>,
    /// Elements the filter accepted so far.
    matched: usize,
    /// Elements the filtered walk passed to the filter so far.
    returned_walk: usize,
    /// What the key directory says matches the filter, once counted (see
    /// [`walk_slower_than_exact_pass`]).
    directory_matches: Option<DirectoryMatches>,
    /// Rows handed to the executor so far.
    taken: usize,
    /// Nothing more to return.
    done: bool,
    /// A NULL query: rows in graph order, this many at most.
    null_query_limit: usize,
}

impl Default for ScanState {
    fn default() -> Self {
        ScanState {
            started: false,
            ready: VecDeque::new(),
            recheck: false,
            mode: IterativeScan::Off,
            query: Vec::new(),
            query_norms: QueryNorms { searched: 0.0, original: 0.0 },
            search: None,
            exact: None,
            returned: rustc_hash::FxHashSet::default(),
            visit_limit: 0,
            batch: 0,
            want: 0,
            last_value: f64::NEG_INFINITY,
            held: std::collections::BinaryHeap::new(),
            max_slack: 0.0,
            filter: None,
            matched: 0,
            returned_walk: 0,
            directory_matches: None,
            taken: 0,
            done: false,
            null_query_limit: 0,
        }
    }
}

thread_local! {
    /// Elements visited (distances computed) by this backend's most recent
    /// index scan; see [`visited_in_last_scan`].
    static LAST_SCAN_VISITS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// The backend's search scratch space (visited set, heaps), kept across
    /// scans so a query allocates nothing once the backend is warm.
    static SEARCHER: std::cell::RefCell<Searcher<ItemPointer, ElementNode>> = std::cell::RefCell::default();
    /// Directory counts of this backend's recent filters (see
    /// [`remembered_count`]).
    static MATCH_COUNTS: std::cell::RefCell<Vec<RememberedCount>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// How many directory entries of an index matched a filter, when the index
/// had `nblocks` blocks.
struct RememberedCount {
    index: pg_sys::Oid,
    nblocks: u32,
    filter: Filter,
    count: usize,
}

/// Filters whose counts a backend remembers (the last ones counted).
const REMEMBERED_COUNTS: usize = 32;

/// The directory count this backend last took of `filter` on `index`, if
/// the index has grown or shrunk by at most a tenth since. A prepared
/// statement runs the same few filter values again and again, and the
/// count only steers the choice between the walk and the exact pass (both
/// return every matching row), so a count a little out of date is as good
/// and saves a pass over the directory per query.
fn remembered_count(index: pg_sys::Oid, nblocks: u32, filter: &Filter) -> Option<usize> {
    MATCH_COUNTS.with(|m| {
        m.borrow()
            .iter()
            .find(|r| r.index == index && r.filter == *filter)
            .filter(|r| nblocks.abs_diff(r.nblocks) <= r.nblocks / 10)
            .map(|r| r.count)
    })
}

/// Remembers a directory count (see [`remembered_count`]).
fn remember_count(index: pg_sys::Oid, nblocks: u32, filter: &Filter, count: usize) {
    MATCH_COUNTS.with(|m| {
        let mut m = m.borrow_mut();
        m.retain(|r| !(r.index == index && r.filter == *filter));
        if m.len() >= REMEMBERED_COUNTS {
            m.remove(0);
        }
        m.push(RememberedCount { index, nblocks, filter: filter.clone(), count });
    })
}

impl ScanState {
    fn reset(&mut self) {
        *self = ScanState::default();
    }
}

/// `ambeginscan`.
#[pg_guard]
pub unsafe extern "C-unwind" fn ambeginscan(
    index: pg_sys::Relation,
    nkeys: i32,
    norderbys: i32,
) -> pg_sys::IndexScanDesc {
    // SAFETY: RelationGetIndexScan allocates the descriptor in the current
    // memory context; our state lives there too and is dropped with it.
    unsafe {
        let scan = pg_sys::RelationGetIndexScan(index, nkeys, norderbys);
        // Where amgettuple returns the ORDER BY values.
        if norderbys > 0 {
            let n = norderbys as usize;
            (*scan).xs_orderbyvals = pg_sys::palloc0(n * std::mem::size_of::<pg_sys::Datum>()) as *mut pg_sys::Datum;
            (*scan).xs_orderbynulls = pg_sys::palloc(n) as *mut bool;
            std::ptr::write_bytes((*scan).xs_orderbynulls, 1, n);
        }
        let state = PgMemoryContexts::CurrentMemoryContext.leak_and_drop_on_delete(ScanState::default());
        (*scan).opaque = state as *mut std::ffi::c_void;
        scan
    }
}

/// `amrescan`: takes the (new) ORDER BY value; the search runs lazily.
#[pg_guard]
pub unsafe extern "C-unwind" fn amrescan(
    scan: pg_sys::IndexScanDesc,
    keys: pg_sys::ScanKey,
    nkeys: i32,
    orderbys: pg_sys::ScanKey,
    norderbys: i32,
) {
    // SAFETY: the executor passes arrays of nkeys/norderbys scan keys, and
    // the descriptor has room for as many as ambeginscan was told.
    unsafe {
        if !keys.is_null() && nkeys > 0 && (*scan).numberOfKeys > 0 {
            std::ptr::copy(keys, (*scan).keyData, nkeys.min((*scan).numberOfKeys) as usize);
        }
        if !orderbys.is_null() && norderbys > 0 && (*scan).numberOfOrderBys > 0 {
            std::ptr::copy(orderbys, (*scan).orderByData, norderbys.min((*scan).numberOfOrderBys) as usize);
        }
        (*((*scan).opaque as *mut ScanState)).reset();
    }
}

/// The scan's ORDER BY key, or `None` for a NULL query.
///
/// # Safety
/// `scan` must be an active scan descriptor of this AM.
unsafe fn order_by_key(scan: pg_sys::IndexScanDesc) -> Option<pg_sys::Datum> {
    // SAFETY: the executor provides the ORDER BY keys it announced.
    unsafe {
        if (*scan).numberOfOrderBys < 1 || (*scan).orderByData.is_null() {
            return None;
        }
        let key = &*(*scan).orderByData;
        (key.sk_flags & pg_sys::SK_ISNULL as i32 == 0).then_some(key.sk_argument)
    }
}

/// Counts the scan in `pg_stat_user_indexes.idx_scan`
/// (PostgreSQL's `pgstat_count_index_scan` macro).
///
/// # Safety
/// `rel` must be an open relation.
unsafe fn count_index_scan(rel: pg_sys::Relation) {
    // SAFETY: an open relation; pgstat_assoc_relation sets pgstat_info when
    // statistics are enabled for it.
    unsafe {
        if (*rel).pgstat_info.is_null() && (*rel).pgstat_enabled {
            pg_sys::pgstat_assoc_relation(rel);
        }
        if !(*rel).pgstat_info.is_null() {
            crate::compat::count_scan(&mut *(*rel).pgstat_info);
        }
    }
}

/// Queues the heap TIDs of `batch` (elements nearest first) with their
/// ORDER BY values, reading each element again under the content lock: the
/// search read elements under a pin only, and heap TIDs, the deleted flag and
/// the error bounds (widened when a duplicate joins) may have changed; an
/// element whose version changed was freed and reused since the search met
/// it, and is skipped. Rows are queued in increasing order of value.
///
/// With `strict_order`, rows first wait in `state.held` until no element
/// still to come can have a smaller value: `threshold` is a lower bound on
/// the values of elements not yet passed to `emit` (given by `rest`, see
/// [`graph_threshold`]), and only rows at or below it are released. Released rows below a value
/// already returned are dropped (the mode's promise). Holding rows back
/// matters for `vector`, whose values are lower bounds: two elements at
/// about the same distance can have their bounds in either order, and
/// releasing each batch at once dropped up to 10% of the rows a filtered
/// query wanted (recall@20 0.90 on 3-d cosine data at 2% selectivity).
fn emit(store: &PageStore, state: &mut ScanState, batch: &[Candidate<ElementNode>], rest: Rest) {
    let codec: Codec = *store.codec();
    let mut rows: Vec<(ItemPointer, f64)> = Vec::new();
    if state.mode != IterativeScan::Off && state.filter.is_none() {
        state.returned.extend(batch.iter().map(|c| (c.node.tid, c.node.version)));
    }
    let mut max_slack = state.max_slack;
    let filter = state.filter.as_ref();
    if filter.is_some() {
        state.returned_walk += batch.len();
    }
    // The walk tested the filter when it read each element: one that did
    // not match is not read again.
    let tested = filter.is_some() && store.filter.is_some();
    for c in batch.iter().filter(|c| !c.node.deleted && !(tested && !c.node.matches)) {
        store.with_element(c.node.tid, |e| {
            // The filter on key columns, before any heap access; the exact
            // pass leaves out the matching elements returned here.
            if filter.is_some_and(|f| !f.matches(e.keys())) {
                return;
            }
            if filter.is_some() {
                state.matched += 1;
                state.returned.insert((c.node.tid, c.node.version));
            }
            if !e.is_deleted() && e.head().version == c.node.version {
                let value = codec.order_value(c.distance, state.query_norms, e.payload());
                let slack = codec.sql_distance(c.distance) - value;
                if slack.is_finite() {
                    max_slack = max_slack.max(slack);
                }
                rows.extend((0..e.heap_tid_count()).map(|i| (e.heap_tid(i), value)));
            }
        });
    }
    state.max_slack = max_slack;
    if state.mode != IterativeScan::StrictOrder {
        rows.sort_by(|a, b| a.1.total_cmp(&b.1));
        state.ready.extend(rows.into_iter().map(|(tid, value)| (tid, Some(value))));
        return;
    }
    state.held.extend(rows.into_iter().map(|(tid, value)| std::cmp::Reverse(ByValue(value, tid, ()))));
    let threshold = match rest {
        Rest::Value(v) => v,
        Rest::Frontier(f) => graph_threshold(&codec, state, f),
    };
    release_held(state, threshold);
}

/// What [`emit`] knows of the elements still to come: a lower bound on
/// their values (the exact pass), or the graph walk's frontier distance
/// (`None`: nothing is left).
#[derive(Clone, Copy)]
enum Rest {
    Value(f64),
    Frontier(Option<f32>),
}

/// An ORDER BY value with the item it belongs to (a heap TID for held
/// rows, an element for the exact pass), ordered by `(value, TID)`: ties in
/// value are broken by the TID, so orders are total and repeatable.
struct ByValue<T>(f64, ItemPointer, T);

impl<T> PartialEq for ByValue<T> {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == std::cmp::Ordering::Equal
    }
}
impl<T> Eq for ByValue<T> {}
impl<T> PartialOrd for ByValue<T> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for ByValue<T> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        key_cmp((self.0, self.1), (o.0, o.1))
    }
}

/// A row waiting for release in a `strict_order` scan: its ORDER BY value
/// and heap TID, smallest on top of a max-heap.
type Held = std::cmp::Reverse<ByValue<()>>;

/// Moves the held rows with values up to `threshold` to the ready queue,
/// smallest first, dropping those below the largest value returned.
fn release_held(state: &mut ScanState, threshold: f64) {
    while state.held.peek().is_some_and(|h| h.0 .0 <= threshold) {
        let Some(std::cmp::Reverse(ByValue(value, tid, ()))) = state.held.pop() else { break };
        if value < state.last_value {
            continue;
        }
        state.last_value = value;
        state.ready.push_back((tid, Some(value)));
    }
}

/// A lower bound on the ORDER BY values of the elements a graph walk has
/// not returned yet: the value of an element at the walk's frontier
/// distance with the largest error slack seen so far (`+∞` when the walk is
/// over, so every held row is released).
fn graph_threshold(codec: &Codec, state: &ScanState, frontier: Option<f32>) -> f64 {
    frontier.map_or(f64::INFINITY, |f| codec.sql_distance(f) - state.max_slack)
}

/// Bytes the iterative search holds.
fn search_memory(search: &ResumableSearch<ItemPointer, ElementNode>) -> usize {
    search.held() * BYTES_PER_HELD + search.visits() * BYTES_PER_VISITED
}

/// The first pass: greedy descent and one beam of `ef_search` (or, for a
/// NULL query, the first elements in graph order), under the scan lock (so
/// VACUUM cannot free and reuse an element between our reading its address
/// and its heap TIDs).
///
/// # Safety
/// `scan` must be an active scan descriptor of this AM.
unsafe fn first_pass(scan: pg_sys::IndexScanDesc, state: &mut ScanState) {
    // SAFETY: indexRelation of an active scan is open.
    let rel = IndexRel::new(unsafe { (*scan).indexRelation });
    // SAFETY: as above.
    unsafe { count_index_scan(rel.raw()) };
    // SAFETY: an active scan descriptor.
    unsafe { crate::compat::count_index_search(scan) };
    state.mode = options::iterative_scan();
    let ef_search = options::ef_search();
    // The query is read (and detoasted, which takes heavyweight locks on the
    // TOAST table) before the scan lock: no heavyweight lock is requested
    // while a page lock is held (see `IndexRel::lock_graph`).
    let codec = *PageStore::new(rel, rel.read_meta()).codec();
    // SAFETY: the key is a datum of the operator's right-hand type, which is
    // the indexed type.
    let query = unsafe { order_by_key(scan) }.map(|datum| unsafe { prepare_datum(&codec, datum) });
    // Conditions on filter columns (a multi-column index). With them the
    // scan always goes on past its first beam: every row it returns
    // matches, so the executor's LIMIT, not ef_search, says when to stop.
    // SAFETY: keyData holds numberOfKeys keys, copied in by amrescan.
    state.filter = unsafe {
        let columns = key_datum::key_columns(rel.raw());
        key_datum::scan_filter((*scan).keyData, (*scan).numberOfKeys.max(0) as usize, &columns)
    };
    if state.filter.as_ref().is_some_and(Filter::is_never) {
        state.done = true;
        return;
    }
    if state.filter.is_some() && state.mode == IterativeScan::Off {
        state.mode = IterativeScan::RelaxedOrder;
    }
    rel.lock_scans(SHARE_LOCK);
    // The entry point is read under the scan lock (VACUUM moves it before
    // it frees elements).
    let meta = rel.read_meta();
    let mut store = PageStore::new(rel, meta);
    store.filter = state.filter.clone();
    let unordered_value = query.is_some().then_some(f64::NAN);
    match (query, meta.entry) {
        (_, None) => state.done = true,
        // A NULL query, or one the metric cannot place (a zero vector under
        // cosine): every row is as near as any other, so rows come in graph
        // order, with a NULL distance or, for the zero vector, NaN (what
        // the distance function returns; no recheck is asked for).
        (None | Some(None), Some((entry, _))) => {
            state.null_query_limit = if state.filter.is_some() {
                usize::MAX
            } else if state.mode == IterativeScan::Off {
                ef_search
            } else {
                options::max_scan_tuples()
            };
            null_query_rows(&store, entry, unordered_value, state);
            state.done = true;
        }
        (Some(Some(query)), Some((entry, entry_level))) => {
            state.recheck = codec.rechecks();
            state.query_norms = codec.query_norms(&query);
            let batch = SEARCHER.with(|s| {
                let mut fresh = Searcher::default();
                let mut borrowed = s.try_borrow_mut();
                // Only if a search were ever nested in another: fresh scratch.
                let searcher = borrowed.as_deref_mut().unwrap_or(&mut fresh);
                if state.mode == IterativeScan::Off {
                    return searcher.search(&mut store, &query, entry, entry_level as usize, ef_search);
                }
                let ep = searcher.descend(&mut store, &query, entry, entry_level as usize);
                let mut search = ResumableSearch::new(&store, &ep);
                let batch = search.next_batch(&mut store, &query, ef_search, ef_search, usize::MAX);
                state.visit_limit = search.visits().saturating_add(options::max_scan_tuples());
                state.search = Some(search);
                batch
            });
            let frontier = state.search.as_ref().and_then(|s| s.frontier());
            emit(&store, state, &batch, Rest::Frontier(frontier));
            state.query = query;
            state.batch = ef_search;
            state.done = state.mode == IterativeScan::Off;
        }
    }
    LAST_SCAN_VISITS.with(|v| v.set(store.visits));
    rel.unlock_scans(SHARE_LOCK);
}

/// The next batch of an iterative scan: twice as wide as the last (up to
/// [`MAX_BATCH`]); once the visit budget or the memory limit is reached, or
/// the graph has nothing left, the next batch of the exact pass (with
/// `hnsw.exact_fallback`) or the nearest elements the walk already holds.
/// Sets `done` when nothing is left.
///
/// # Safety
/// `scan` must be an active scan descriptor of this AM.
unsafe fn next_batch(scan: pg_sys::IndexScanDesc, state: &mut ScanState) {
    // SAFETY: indexRelation of an active scan is open.
    let rel = IndexRel::new(unsafe { (*scan).indexRelation });
    state.batch = (state.batch * 2).clamp(1, MAX_BATCH.max(options::ef_search()));
    if state.exact.is_some() {
        exact_batch(rel, state);
        return;
    }
    let Some(mut search) = state.search.take() else {
        state.done = true;
        return;
    };
    rel.lock_scans(SHARE_LOCK);
    let mut store = PageStore::new(rel, rel.read_meta());
    store.filter = state.filter.clone();
    let nblocks = rel.nblocks();
    if let (Some(_), Some(f), None) = (store.meta.keys_head, state.filter.as_ref(), &state.directory_matches) {
        state.directory_matches =
            remembered_count(rel.oid(), nblocks, f).map(|count| DirectoryMatches { count, elements: None });
    }
    let mut slower = walk_slower_than_exact_pass(state, &search, nblocks, store.meta.keys_head.is_some());
    if slower && state.directory_matches.is_none() {
        // The walk's estimate of the filter's selectivity is local (a
        // filter can match half the index but nothing near the query): the
        // directory says what the exact pass would cost before it is taken.
        if let (Some(head), Some(f)) = (store.meta.keys_head, state.filter.as_ref()) {
            let matches = DirectoryMatches::collect(&rel, head, f);
            remember_count(rel.oid(), nblocks, f, matches.count);
            state.directory_matches = Some(matches);
            slower = walk_slower_than_exact_pass(state, &search, nblocks, true);
        }
    }
    let spent = search.visits() >= state.visit_limit || search_memory(&search) > options::scan_memory_limit() || slower;
    let batch = if spent && options::exact_fallback() {
        Vec::new()
    } else if spent {
        search.take_pending(state.batch)
    } else if state.filter.is_some() {
        // A filtered walk settles the matching elements the executor may
        // still want, walking through the others; it stops after at most
        // as many visits again as it has made so far, so the switch rule
        // above is asked again before the walk can cost much more than the
        // exact pass.
        let visits = search.visits();
        let limit = state.visit_limit.min(visits.saturating_add(visits.max(FILTERED_BATCH_MIN_VISITS)));
        // First the rows a LIMIT 10 still lacks, then twice as many each time.
        let guess = WANTED_ROWS_GUESS as usize;
        let want = if state.want == 0 { guess.saturating_sub(state.taken).max(1) } else { state.want };
        let (batch, passed) = search.next_matching_batch(&mut store, &state.query, FILTERED_BEAM * want, want, limit);
        state.returned_walk += passed;
        if !batch.is_empty() {
            state.want = (want * 2).clamp(guess, MAX_BATCH);
        }
        batch
    } else {
        search.next_batch(&mut store, &state.query, 2 * state.batch, state.batch, state.visit_limit)
    };
    // A filtered walk cut short by its batch's visit limit may return
    // nothing and still have elements to expand.
    let over = batch.is_empty()
        && (state.filter.is_none() || spent || search.is_exhausted() || search.visits() >= state.visit_limit);
    let frontier = if over { None } else { search.frontier() };
    emit(&store, state, &batch, Rest::Frontier(frontier));
    LAST_SCAN_VISITS.with(|v| v.set(v.get() + store.visits));
    rel.unlock_scans(SHARE_LOCK);
    if !over {
        state.search = Some(search);
    } else if options::exact_fallback() {
        // The walk is spent or exhausted: its memory goes, the exact pass
        // finds whatever it held and did not return.
        drop(search);
        state.exact = Some(ExactPass::new(exact_pass_held()));
        exact_batch(rel, state);
    } else {
        // An empty batch means nothing is left to expand or return.
        state.done = true;
    }
}

/// Whether a filtered walk should give way to the exact pass: when it has
/// already visited as many elements as the pass costs (so it never costs
/// more than twice the better of the two), or when, at the rate it has
/// found matching elements so far, the rows still wanted would take it
/// longer than the pass. The rows wanted are a guess (the access method does
/// not see the `LIMIT`): 10 at first, then twice what the executor has
/// taken. The pass costs a visit per matching element, estimated from the
/// share of the walk's elements that matched (or counted in the key
/// directory, once the estimate says to switch), plus reading what it tests
/// the filter on: [`EXACT_PASS_VISITS_PER_ENTRY`] per element with a key
/// `directory`, else [`EXACT_PASS_VISITS_PER_BLOCK`] per block. Only with
/// filter columns and `hnsw.exact_fallback`: without, the walk has no
/// cheaper way on.
fn walk_slower_than_exact_pass(
    state: &ScanState,
    search: &ResumableSearch<ItemPointer, ElementNode>,
    nblocks: u32,
    directory: bool,
) -> bool {
    if state.filter.is_none() || !options::exact_fallback() {
        return false;
    }
    let visits = search.visits() as f64;
    let seen = state.returned_walk.max(1) as f64;
    let matched = state.matched as f64;
    let elements = nblocks as f64 * ELEMENTS_PER_BLOCK_GUESS;
    let filtering =
        if directory { elements * EXACT_PASS_VISITS_PER_ENTRY } else { nblocks as f64 * EXACT_PASS_VISITS_PER_BLOCK };
    let matching = state.directory_matches.as_ref().map_or(elements * (matched / seen), |d| d.count as f64);
    let pass = filtering + matching;
    let wanted = (2.0 * state.taken as f64).max(WANTED_ROWS_GUESS);
    let still = (wanted - matched).max(0.0);
    visits >= pass || still * visits / matched.max(1.0) > pass
}

/// The entries of the key directory that match a scan's filter: how many,
/// and (when counted by this scan and they fit its memory limit) the
/// elements, sorted, which the exact pass then reads without walking the
/// directory again.
struct DirectoryMatches {
    count: usize,
    elements: Option<Vec<(ItemPointer, u8)>>,
}

impl DirectoryMatches {
    fn collect(rel: &IndexRel, head: u32, filter: &Filter) -> DirectoryMatches {
        let cap = options::scan_memory_limit() / std::mem::size_of::<(ItemPointer, u8)>();
        let mut elements = Vec::new();
        let mut count = 0;
        let mut at = Some(head);
        while let Some(b) = at {
            pgrx::check_for_interrupts!();
            at = directory::collect(
                rel,
                b,
                EXACT_PASS_BLOCKS,
                |e| {
                    let m = filter.matches(e.keys);
                    count += m as usize;
                    m && count <= cap
                },
                &mut elements,
            );
        }
        let elements = (count <= cap).then(|| {
            elements.sort_unstable();
            elements.dedup();
            elements
        });
        DirectoryMatches { count, elements }
    }
}

/// Elements from directory entries an exact pass reads under one hold of
/// the scan lock.
const CANDIDATES_PER_LOCK: usize = 4096;

/// Rows a filtered scan expects to be asked for before it has been asked for
/// any (a common `LIMIT`).
const WANTED_ROWS_GUESS: f64 = 10.0;

/// Beam of a filtered walk's batch, in matching elements, per matching
/// element it returns: the walk explores until twice the rows it returns
/// are settled, so those it returns are the nearest matches it can find.
const FILTERED_BEAM: usize = 1;

/// Fewest visits a filtered walk's batch may make before it stops to let
/// the switch rule look again (see [`next_batch`]).
const FILTERED_BATCH_MIN_VISITS: usize = 256;

/// Elements per index block, for the size of an exact pass (about 7 of 384
/// dimensions; fewer estimated elements only make the pass look cheaper).
const ELEMENTS_PER_BLOCK_GUESS: f64 = 8.0;

/// Elements an exact pass may hold within the scan's memory limit.
fn exact_pass_held() -> usize {
    (options::scan_memory_limit() / BYTES_PER_HELD).max(EXACT_PASS_MIN_HELD)
}

/// The exact pass of an iterative scan (see the module docs): every live
/// element of the index not returned by the walk, in increasing order of
/// its ORDER BY value, `held` at a time.
///
/// A pass reads the element pages (blocks `1..nblocks`) and keeps the
/// `held` elements with the smallest `(value, element TID)` above the last
/// one the previous pass returned (`after`); ties in value are ordered by
/// the TID, so no element is returned twice or skipped between passes.
struct ExactPass {
    /// Elements of the current pass still to return, farthest first.
    queue: Vec<(f64, Candidate<ElementNode>)>,
    /// The largest `(value, TID)` returned so far: the next pass starts
    /// above it.
    after: Option<(f64, ItemPointer)>,
    /// Whether the last pass left elements beyond what it kept.
    more: bool,
    /// Whether a pass has run.
    started: bool,
    /// Elements one pass keeps.
    held: usize,
    /// The query's norms, for order values.
    norms: QueryNorms,
}

impl ExactPass {
    fn new(held: usize) -> ExactPass {
        ExactPass {
            queue: Vec::new(),
            after: None,
            more: true,
            started: false,
            held,
            norms: QueryNorms { searched: 0.0, original: 0.0 },
        }
    }
}

/// Orders `(value, TID)` keys: by value, then by element TID.
fn key_cmp(a: (f64, ItemPointer), b: (f64, ItemPointer)) -> std::cmp::Ordering {
    a.0.total_cmp(&b.0).then((a.1.block, a.1.offset).cmp(&(b.1.block, b.1.offset)))
}

/// One pass over the index's elements: fills `pass.queue` with the
/// `pass.held` nearest live elements above `pass.after` that `filter`
/// accepts and `returned` does not hold. With a filter and a key directory
/// ([`directory`]) it reads the directory and then only the elements whose
/// entries match; otherwise every element page. Takes the scan lock per
/// [`EXACT_PASS_BLOCKS`] blocks (or directory pages) and checks for
/// interrupts between them.
fn exact_fill(
    rel: IndexRel,
    query: &[u32],
    filter: Option<&Filter>,
    returned: &rustc_hash::FxHashSet<(ItemPointer, u8)>,
    candidates: Option<&[(ItemPointer, u8)]>,
    pass: &mut ExactPass,
) {
    let meta = rel.read_meta();
    let (codec, m) = (meta.codec, meta.m as usize);
    pass.norms = codec.query_norms(query);
    let norms = pass.norms;
    let after = pass.after;
    let held = pass.held;
    // Max-heap on (value, TID): the farthest kept element on top.
    let mut kept: std::collections::BinaryHeap<ByValue<Candidate<ElementNode>>> = std::collections::BinaryHeap::new();
    let mut more = false;
    let mut visits = 0u64;
    // Offers element item `item` at `tid` to the pass; `version`: the
    // version its directory entry was written for, which it must still have.
    let mut consider = |tid: ItemPointer, item: &[u8], version: Option<u8>| {
        if !page::is_element_item(item) {
            return;
        }
        // The filter first, on the key blob alone: most elements fail it,
        // and need nothing more read.
        if filter.is_some_and(|f| !page::peek_keys(item).is_some_and(|k| f.matches(k))) {
            return;
        }
        let e = ElementRef::new(item, &codec, m).unwrap_or_else(|e| rel.corrupt(tid.block, e));
        let v = e.head().version;
        if e.is_free() || e.is_deleted() || version.is_some_and(|w| w != v) || returned.contains(&(tid, v)) {
            return;
        }
        visits += 1;
        let distance = codec.distance_to_payload(query, e.payload());
        let value = codec.order_value(distance, norms, e.payload());
        if after.is_some_and(|a| key_cmp((value, tid), a).is_le()) {
            return;
        }
        if kept.len() >= held {
            let top = kept.peek().map(|k| (k.0, k.1));
            if top.is_some_and(|t| key_cmp((value, tid), t).is_ge()) {
                more = true;
                return;
            }
            kept.pop();
            more = true;
        }
        kept.push(ByValue(value, tid, Candidate { distance, node: ElementNode::read(tid, &e) }));
    };
    let nblocks = rel.nblocks();
    // The elements of `elements` (sorted, from directory entries), block by
    // block, under the scan lock.
    let mut visit = |elements: &[(ItemPointer, u8)]| {
        rel.lock_scans(SHARE_LOCK);
        for group in elements.chunk_by(|a, b| a.0.block == b.0.block) {
            let b = group[0].0.block;
            if b == page::META_BLOCK || b >= nblocks {
                continue;
            }
            rel.read(b, |p| {
                // The header only: the special space at the page's end would
                // cost a cache miss per element (items are still checked).
                let r = PageRef::graph_header_only(p).unwrap_or_else(|e| rel.corrupt(b, e));
                for &(tid, version) in group {
                    if let Ok(item) = r.item(tid.offset) {
                        consider(tid, item, Some(version));
                    }
                }
            });
        }
        rel.unlock_scans(SHARE_LOCK);
    };
    match (filter, meta.keys_head, candidates) {
        // The directory's matching entries, collected before.
        (Some(_), Some(_), Some(elements)) => {
            for chunk in elements.chunks(CANDIDATES_PER_LOCK) {
                pgrx::check_for_interrupts!();
                visit(chunk);
            }
        }
        // With a key directory: the filter on its entries, then the
        // elements that match, block by block.
        (Some(f), Some(head), None) => {
            let mut at = Some(head);
            let mut elements: Vec<(ItemPointer, u8)> = Vec::new();
            while let Some(block) = at {
                pgrx::check_for_interrupts!();
                elements.clear();
                at = directory::collect(&rel, block, EXACT_PASS_BLOCKS, |e| f.matches(e.keys), &mut elements);
                elements.sort_unstable();
                elements.dedup();
                visit(&elements);
            }
        }
        _ => {
            let mut block = 1;
            while block < nblocks {
                pgrx::check_for_interrupts!();
                let end = block.saturating_add(EXACT_PASS_BLOCKS).min(nblocks);
                rel.lock_scans(SHARE_LOCK);
                for b in block..end {
                    rel.read(b, |p| {
                        if page::page_is_new(p) {
                            return;
                        }
                        let r = PageRef::new(p, PageKind::Graph).unwrap_or_else(|e| rel.corrupt(b, e));
                        for offset in 1..=r.max_offset() {
                            let item = r.item(offset).unwrap_or_else(|e| rel.corrupt(b, e));
                            consider(ItemPointer { block: b, offset }, item, None);
                        }
                    });
                }
                rel.unlock_scans(SHARE_LOCK);
                block = end;
            }
        }
    }
    LAST_SCAN_VISITS.with(|v| v.set(v.get() + visits));
    // into_sorted_vec is ascending; the queue pops from the back.
    pass.queue = kept.into_sorted_vec().into_iter().rev().map(|k| (k.0, k.2)).collect();
    pass.more = more;
    pass.started = true;
}

/// The next batch of the exact pass: up to `state.batch` elements, nearest
/// first, a new pass starting when the current one is used up. Sets `done`
/// when nothing is left.
fn exact_batch(rel: IndexRel, state: &mut ScanState) {
    let Some(mut pass) = state.exact.take() else {
        state.done = true;
        return;
    };
    if pass.queue.is_empty() && (pass.more || !pass.started) {
        let candidates = state.directory_matches.as_ref().and_then(|m| m.elements.as_deref());
        exact_fill(rel, &state.query, state.filter.as_ref(), &state.returned, candidates, &mut pass);
    }
    let n = state.batch.min(pass.queue.len());
    let taken: Vec<(f64, Candidate<ElementNode>)> = pass.queue.drain(pass.queue.len() - n..).rev().collect();
    if let Some((value, c)) = taken.last() {
        pass.after = Some((*value, c.node.tid));
    }
    let batch: Vec<Candidate<ElementNode>> = taken.into_iter().map(|(_, c)| c).collect();
    // Elements still to come have values from the next one queued on.
    let threshold = match (pass.queue.last(), pass.after) {
        (Some((next, _)), _) => *next,
        (None, Some((after, _))) if pass.more => after,
        _ => f64::INFINITY,
    };
    let threshold = Rest::Value(threshold);
    rel.lock_scans(SHARE_LOCK);
    let store = PageStore::new(rel, rel.read_meta());
    emit(&store, state, &batch, threshold);
    rel.unlock_scans(SHARE_LOCK);
    state.done = batch.is_empty();
    state.exact = Some(pass);
}

/// Rows for a query without an order (NULL, or a zero vector under
/// cosine): live elements in breadth-first order over layer 0 from the
/// entry point, at most `state.null_query_limit` elements, each with ORDER
/// BY value `value` (`None` for NULL: every row's distance to NULL is NULL).
fn null_query_rows(store: &PageStore, entry: ItemPointer, value: Option<f64>, state: &mut ScanState) {
    let mut seen = rustc_hash::FxHashSet::default();
    let mut queue = VecDeque::from([entry]);
    seen.insert(entry);
    let mut neighbors = Vec::new();
    let mut elements = 0;
    while let Some(tid) = queue.pop_front() {
        if elements >= state.null_query_limit {
            break;
        }
        let filter = state.filter.as_ref();
        let node = store.with_element(tid, |e| {
            if !e.is_deleted() && filter.is_none_or(|f| f.matches(e.keys())) {
                elements += 1;
                state.ready.extend((0..e.heap_tid_count()).map(|i| (e.heap_tid(i), value)));
            }
            ElementNode::read(tid, &e)
        });
        store.read_neighbors(&node, 0, &mut neighbors);
        queue.extend(neighbors.iter().copied().filter(|t| seen.insert(*t)));
    }
}

/// Number of elements whose distance the most recent index scan in this
/// backend computed (its work, for tuning reports such as `hnsw_recall`).
pub fn visited_in_last_scan() -> u64 {
    LAST_SCAN_VISITS.with(|v| v.get())
}

/// `amgettuple`: the next heap TID, nearest first.
#[pg_guard]
pub unsafe extern "C-unwind" fn amgettuple(
    scan: pg_sys::IndexScanDesc,
    _direction: pg_sys::ScanDirection::Type,
) -> bool {
    // SAFETY: opaque was set by ambeginscan to our ScanState.
    let state = unsafe { &mut *((*scan).opaque as *mut ScanState) };
    if !state.started {
        state.started = true;
        // SAFETY: scan is the active descriptor.
        unsafe { first_pass(scan, state) };
    }
    let (tid, value) = loop {
        if let Some(row) = state.ready.pop_front() {
            break row;
        }
        if state.done {
            if state.held.is_empty() {
                return false;
            }
            release_held(state, f64::INFINITY);
            continue;
        }
        pgrx::check_for_interrupts!();
        // SAFETY: scan is the active descriptor.
        unsafe { next_batch(scan, state) };
    };
    state.taken += 1;
    // SAFETY: setting the output fields of the active descriptor; the
    // ORDER BY arrays were allocated by ambeginscan for numberOfOrderBys keys.
    unsafe {
        (*scan).xs_heaptid = to_pg_tid(tid);
        // Hashed keys (text, uuid) can collide: the executor rechecks.
        (*scan).xs_recheck = state.filter.as_ref().is_some_and(|f| f.lossy);
        if (*scan).numberOfOrderBys > 0 && !(*scan).xs_orderbyvals.is_null() {
            match value {
                Some(v) => {
                    *(*scan).xs_orderbyvals = v.into_datum().expect("a float8 is never NULL");
                    *(*scan).xs_orderbynulls = false;
                }
                None => *(*scan).xs_orderbynulls = true,
            }
            (*scan).xs_recheckorderby = state.recheck && value.is_some();
        }
    }
    true
}

/// `amendscan`: frees the results and the search early (the state itself
/// goes with the scan's memory context).
#[pg_guard]
pub unsafe extern "C-unwind" fn amendscan(scan: pg_sys::IndexScanDesc) {
    // SAFETY: opaque was set by ambeginscan.
    let state = unsafe { &mut *((*scan).opaque as *mut ScanState) };
    state.reset();
}
