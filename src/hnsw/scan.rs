//! `ambeginscan` / `amrescan` / `amgettuple` / `amendscan`: ordered scans
//! for `ORDER BY embedding <op> $1 LIMIT k`.
//!
//! The scan path: on the first `amgettuple`, read the query from the ORDER BY
//! key, normalise it for cosine, then run the k-NN search (greedy descent
//! from the entry point, beam of `hnsw.ef_search` on layer 0) over the
//! buffer pages. A scan returns at most `hnsw.ef_search` elements: raise it
//! for larger LIMITs. A NULL query, or a zero query under cosine, returns no
//! rows.
//!
//! Exact order: pages store vectors in half precision, so the search's
//! distances are approximate. Each result is returned with a lower bound of
//! its exact distance ([`distance::lower_bound`], from the error stored with
//! the element), in increasing order of that bound, and with
//! `xs_recheckorderby` set: the executor computes the exact distance from the
//! heap row and reorders (PostgreSQL's "ORDER BY recheck", as GiST's KNN
//! scans use), so rows come out in exact distance order.

use pgrx::prelude::*;
use pgrx::{pg_sys, PgMemoryContexts};

use super::graph::Searcher;
use super::options;
use super::page::ItemPointer;
use super::storage::{to_pg_tid, ElementNode, IndexRel, PageStore, SHARE_LOCK};
use crate::distance;
use crate::vector::Vector;

/// Per-scan state, allocated in the scan's memory context.
#[derive(Default)]
struct ScanState {
    started: bool,
    /// Heap TIDs of the results with the lower bound of their exact
    /// distance, in increasing order of the bound.
    heap_tids: Vec<(ItemPointer, f64)>,
    next: usize,
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
        self.started = false;
        self.heap_tids.clear();
        self.next = 0;
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
        // Where amgettuple returns the ORDER BY values (the lower bounds).
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

/// The query vector of the scan, prepared for the graph's metric, or `None`
/// when the scan returns no rows (NULL query, zero vector under cosine).
unsafe fn query_vector(scan: pg_sys::IndexScanDesc, store: &PageStore) -> Option<Vec<f32>> {
    // SAFETY: the executor provides one ORDER BY key for our operators.
    let key = unsafe {
        if (*scan).numberOfOrderBys < 1 {
            return None;
        }
        &*(*scan).orderByData
    };
    if key.sk_flags & pg_sys::SK_ISNULL as i32 != 0 {
        return None;
    }
    // SAFETY: a non-null vector datum (the operator's right-hand type).
    let v = unsafe { Vector::from_raw_datum(key.sk_argument) };
    if v.dim() != store.meta.dims as usize {
        super::dimension_mismatch(store.meta.dims as usize, v.dim());
    }
    let mut q = v.as_slice().to_vec();
    if store.metric().normalizes() && !distance::normalize_in_place(&mut q) {
        return None;
    }
    Some(q)
}

/// Runs the k-NN search for the scan's query and collects the heap TIDs of
/// the results, all under the scan lock (so VACUUM cannot free and reuse an
/// element between our reading its address and its heap TIDs).
unsafe fn search(scan: pg_sys::IndexScanDesc, state: &mut ScanState) {
    // SAFETY: indexRelation of an active scan is open.
    let rel = IndexRel::new(unsafe { (*scan).indexRelation });
    // The query is read (and detoasted, which takes heavyweight locks on the
    // TOAST table) before the scan lock: no heavyweight lock is requested
    // while a page lock is held (see `IndexRel::lock_graph`).
    // SAFETY: as above.
    let query = unsafe { query_vector(scan, &PageStore::new(rel, rel.read_meta())) };
    rel.lock_scans(SHARE_LOCK);
    // The entry point is read under the scan lock (VACUUM moves it before
    // it frees elements).
    let meta = rel.read_meta();
    let mut store = PageStore::new(rel, meta);
    if let (Some(query), Some((entry, entry_level))) = (query, meta.entry) {
        let ef_search = options::ef_search();
        let results = SEARCHER.with(|s| match s.try_borrow_mut() {
            Ok(mut searcher) => searcher.search(&mut store, &query, entry, entry_level as usize, ef_search),
            // Only if a search were ever nested in another: use fresh scratch.
            Err(_) => Searcher::default().search(&mut store, &query, entry, entry_level as usize, ef_search),
        });
        let (metric, query_norm) = (store.metric(), distance::norm(&query));
        // The search read elements under a pin only; heap TIDs, the deleted
        // flag and the error bounds (widened when a duplicate joins) can
        // change meanwhile, so they are read again here under the content
        // lock (the pages were just visited, so this is cheap).
        let tids = &mut state.heap_tids;
        for c in results.iter().filter(|c| !c.node.deleted) {
            store.with_element(c.node.tid, |e| {
                if !e.is_deleted() {
                    let bound = distance::lower_bound(metric, c.distance, query_norm, e.err_l2(), e.err_l1(), e.norm());
                    tids.extend((0..e.heap_tid_count()).map(|i| (e.heap_tid(i), bound)));
                }
            });
        }
        tids.sort_by(|a, b| a.1.total_cmp(&b.1));
    }
    LAST_SCAN_VISITS.with(|v| v.set(store.visits));
    rel.unlock_scans(SHARE_LOCK);
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
        unsafe { search(scan, state) };
    }
    let Some(&(tid, bound)) = state.heap_tids.get(state.next) else {
        return false;
    };
    state.next += 1;
    // SAFETY: setting the output fields of the active descriptor; the
    // ORDER BY arrays were allocated by ambeginscan for numberOfOrderBys keys.
    unsafe {
        (*scan).xs_heaptid = to_pg_tid(tid);
        (*scan).xs_recheck = false;
        if (*scan).numberOfOrderBys > 0 && !(*scan).xs_orderbyvals.is_null() {
            *(*scan).xs_orderbyvals = bound.into_datum().expect("a float8 is never NULL");
            *(*scan).xs_orderbynulls = false;
            (*scan).xs_recheckorderby = true;
        }
    }
    true
}

/// `amendscan`: frees the results early (the state itself goes with the
/// scan's memory context).
#[pg_guard]
pub unsafe extern "C-unwind" fn amendscan(scan: pg_sys::IndexScanDesc) {
    // SAFETY: opaque was set by ambeginscan.
    let state = unsafe { &mut *((*scan).opaque as *mut ScanState) };
    state.reset();
    state.heap_tids = Vec::new();
}
