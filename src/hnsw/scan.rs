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
//! twice its size (the farther half, less settled, stays for the next batch). After the first beam the scan may
//! visit `hnsw.max_scan_tuples` more elements, and hold at most
//! `hnsw.scan_mem_multiplier × work_mem` of bookkeeping; past either it
//! expands nothing more and returns what it already holds, nearest first.
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
use super::graph::{Candidate, ResumableSearch, Searcher};
use super::options::{self, IterativeScan};
use super::page::ItemPointer;
use super::prepare_datum;
use super::storage::{to_pg_tid, ElementNode, IndexRel, PageStore, SHARE_LOCK};
use crate::distance::QueryNorms;

/// Widest beam of a resumed batch.
pub const MAX_BATCH: usize = 1_000;

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
    /// Visits the search may reach in total (first pass + budget).
    visit_limit: usize,
    /// Width of the next batch.
    batch: usize,
    /// Largest value returned so far (for `strict_order`).
    last_value: f64,
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
            visit_limit: 0,
            batch: 0,
            last_value: f64::NEG_INFINITY,
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
/// it, and is skipped. Rows are queued in increasing order of value; with
/// `strict_order`, values below one already returned are dropped.
fn emit(store: &PageStore, state: &mut ScanState, batch: &[Candidate<ElementNode>]) {
    let codec: Codec = *store.codec();
    let mut rows: Vec<(ItemPointer, f64)> = Vec::new();
    for c in batch.iter().filter(|c| !c.node.deleted) {
        store.with_element(c.node.tid, |e| {
            if !e.is_deleted() && e.head().version == c.node.version {
                let value = codec.order_value(c.distance, state.query_norms, e.payload());
                rows.extend((0..e.heap_tid_count()).map(|i| (e.heap_tid(i), value)));
            }
        });
    }
    rows.sort_by(|a, b| a.1.total_cmp(&b.1));
    for (tid, value) in rows {
        if state.mode == IterativeScan::StrictOrder {
            if value < state.last_value {
                continue;
            }
            state.last_value = value;
        }
        state.ready.push_back((tid, Some(value)));
    }
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
    state.mode = options::iterative_scan();
    let ef_search = options::ef_search();
    // The query is read (and detoasted, which takes heavyweight locks on the
    // TOAST table) before the scan lock: no heavyweight lock is requested
    // while a page lock is held (see `IndexRel::lock_graph`).
    let codec = *PageStore::new(rel, rel.read_meta()).codec();
    // SAFETY: the key is a datum of the operator's right-hand type, which is
    // the indexed type.
    let query = unsafe { order_by_key(scan) }.map(|datum| unsafe { prepare_datum(&codec, datum) });
    rel.lock_scans(SHARE_LOCK);
    // The entry point is read under the scan lock (VACUUM moves it before
    // it frees elements).
    let meta = rel.read_meta();
    let mut store = PageStore::new(rel, meta);
    let unordered_value = query.is_some().then_some(f64::NAN);
    match (query, meta.entry) {
        (_, None) => state.done = true,
        // A NULL query, or one the metric cannot place (a zero vector under
        // cosine): every row is as near as any other, so rows come in graph
        // order, with a NULL distance or, for the zero vector, NaN (what
        // the distance function returns; no recheck is asked for).
        (None | Some(None), Some((entry, _))) => {
            state.null_query_limit =
                if state.mode == IterativeScan::Off { ef_search } else { options::max_scan_tuples() };
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
            emit(&store, state, &batch);
            state.query = query;
            state.batch = ef_search;
            state.done = state.mode == IterativeScan::Off;
        }
    }
    LAST_SCAN_VISITS.with(|v| v.set(store.visits));
    rel.unlock_scans(SHARE_LOCK);
}

/// The next batch of an iterative scan: twice as wide as the last (up to
/// [`MAX_BATCH`]), or, once the visit budget or the memory limit is
/// reached, the nearest elements already held. Sets `done` when nothing is
/// left.
///
/// # Safety
/// `scan` must be an active scan descriptor of this AM.
unsafe fn next_batch(scan: pg_sys::IndexScanDesc, state: &mut ScanState) {
    let Some(mut search) = state.search.take() else {
        state.done = true;
        return;
    };
    // SAFETY: indexRelation of an active scan is open.
    let rel = IndexRel::new(unsafe { (*scan).indexRelation });
    rel.lock_scans(SHARE_LOCK);
    let mut store = PageStore::new(rel, rel.read_meta());
    state.batch = (state.batch * 2).clamp(1, MAX_BATCH.max(options::ef_search()));
    let over_memory = search_memory(&search) > options::scan_memory_limit();
    let batch = if search.visits() >= state.visit_limit || over_memory {
        search.take_pending(state.batch)
    } else {
        search.next_batch(&mut store, &state.query, 2 * state.batch, state.batch, state.visit_limit)
    };
    emit(&store, state, &batch);
    LAST_SCAN_VISITS.with(|v| v.set(v.get() + store.visits));
    rel.unlock_scans(SHARE_LOCK);
    // An empty batch means nothing is left to expand or return.
    state.done = batch.is_empty();
    state.search = Some(search);
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
        let node = store.with_element(tid, |e| {
            if !e.is_deleted() {
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
            return false;
        }
        pgrx::check_for_interrupts!();
        // SAFETY: scan is the active descriptor.
        unsafe { next_batch(scan, state) };
    };
    // SAFETY: setting the output fields of the active descriptor; the
    // ORDER BY arrays were allocated by ambeginscan for numberOfOrderBys keys.
    unsafe {
        (*scan).xs_heaptid = to_pg_tid(tid);
        (*scan).xs_recheck = false;
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
