//! `ambeginscan` / `amrescan` / `amgettuple` / `amendscan`: ordered scans
//! for `ORDER BY embedding <op> $1 LIMIT k`.
//!
//! The scan path: on the first `amgettuple`, read the query from the ORDER BY
//! key, normalise it for cosine, then run the k-NN search (greedy descent
//! from the entry point, beam of `hnsw.ef_search` on layer 0) over the
//! buffer pages. Results are returned nearest first; each element's heap TIDs
//! are read only when it is reached, so `LIMIT 10` touches ten elements more.
//! A scan returns at most `hnsw.ef_search` elements: raise it for larger
//! LIMITs. A NULL query, or a zero query under cosine, returns no rows.

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
    /// Heap TIDs of the results, nearest element first.
    heap_tids: Vec<ItemPointer>,
    next: usize,
    searcher: Searcher<ItemPointer, ElementNode>,
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
    rel.lock_scans(SHARE_LOCK);
    let meta = rel.read_meta();
    let mut store = PageStore::new(rel, meta);
    // SAFETY: as above.
    let query = unsafe { query_vector(scan, &store) };
    if let (Some(query), Some((entry, entry_level))) = (query, meta.entry) {
        let results = state.searcher.search(&mut store, &query, entry, entry_level as usize, options::ef_search());
        // The search read elements under a pin only; heap TIDs and the
        // deleted flag can change meanwhile, so they are read again here under
        // the content lock (the pages were just visited, so this is cheap).
        let tids = &mut state.heap_tids;
        for c in results.iter().filter(|c| !c.node.deleted) {
            store.with_element(c.node.tid, |e| {
                if !e.is_deleted() {
                    tids.extend((0..e.heap_tid_count()).map(|i| e.heap_tid(i)));
                }
            });
        }
    }
    rel.unlock_scans(SHARE_LOCK);
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
    let Some(&tid) = state.heap_tids.get(state.next) else {
        return false;
    };
    state.next += 1;
    // SAFETY: setting the output fields of the active descriptor.
    unsafe {
        (*scan).xs_heaptid = to_pg_tid(tid);
        (*scan).xs_recheck = false;
        (*scan).xs_recheckorderby = false;
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
