//! `ambulkdelete` and `amvacuumcleanup`: removing dead heap TIDs.
//!
//! VACUUM's callback says which heap TIDs are dead. Each element drops those
//! TIDs; an element left with none is marked deleted: scans still walk
//! through it (its links keep the graph connected) but never return it.

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::page::{self, ElementMut, PageKind, PageRef};
use super::storage::{to_pg_tid, IndexRel};

/// Counts of one pass over the element items.
#[derive(Default)]
struct PassCounts {
    live_tids: f64,
    removed_tids: f64,
}

/// Visits every element item, removing heap TIDs for which `dead` is true
/// and marking emptied elements deleted.
fn remove_dead_tids(rel: &IndexRel, mut dead: impl FnMut(page::ItemPointer) -> bool) -> PassCounts {
    let meta = rel.read_meta();
    let (dims, m) = (meta.dims as usize, meta.m as usize);
    let mut counts = PassCounts::default();
    for block in 1..rel.nblocks() {
        // SAFETY: VACUUM may sleep here for cost-based delay; no locks held.
        unsafe { pg_sys::vacuum_delay_point() };
        rel.modify(block, |p| {
            if page::page_is_new(p) {
                return None;
            }
            let max_offset = PageRef::new(p, PageKind::Graph)
                .unwrap_or_else(|e| rel.corrupt(block, e))
                .max_offset();
            let mut changed = false;
            for offset in 1..=max_offset {
                let range = PageRef::new(p, PageKind::Graph)
                    .and_then(|r| r.item_range(offset))
                    .unwrap_or_else(|e| rel.corrupt(block, e));
                if !page::is_element_item(&p[range.clone()]) {
                    continue;
                }
                let mut e = ElementMut::new(&mut p[range], dims, m)
                    .unwrap_or_else(|e| rel.corrupt(block, e));
                if e.is_deleted() {
                    continue;
                }
                let removed = e.retain_heap_tids(|t| !dead(t));
                let left = e.heap_tid_count();
                if removed > 0 {
                    changed = true;
                    if left == 0 {
                        e.set_deleted();
                    }
                }
                counts.removed_tids += removed as f64;
                counts.live_tids += left as f64;
            }
            changed.then_some(())
        });
    }
    counts
}

/// `ambulkdelete`.
#[pg_guard]
pub unsafe extern "C-unwind" fn ambulkdelete(
    info: *mut pg_sys::IndexVacuumInfo,
    stats: *mut pg_sys::IndexBulkDeleteResult,
    callback: pg_sys::IndexBulkDeleteCallback,
    callback_state: *mut std::ffi::c_void,
) -> *mut pg_sys::IndexBulkDeleteResult {
    // SAFETY: VACUUM passes a valid info struct; stats is null or ours.
    unsafe {
        let stats = if stats.is_null() {
            pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexBulkDeleteResult>())
                as *mut pg_sys::IndexBulkDeleteResult
        } else {
            stats
        };
        let rel = IndexRel::new((*info).index);
        let callback = callback.expect("VACUUM callback");
        let counts = remove_dead_tids(&rel, |t| {
            let mut tid = to_pg_tid(t);
            callback(&mut tid, callback_state)
        });
        (*stats).tuples_removed += counts.removed_tids;
        (*stats).num_index_tuples = counts.live_tids;
        (*stats).num_pages = rel.nblocks();
        stats
    }
}

/// `amvacuumcleanup`: reports index statistics.
#[pg_guard]
pub unsafe extern "C-unwind" fn amvacuumcleanup(
    info: *mut pg_sys::IndexVacuumInfo,
    stats: *mut pg_sys::IndexBulkDeleteResult,
) -> *mut pg_sys::IndexBulkDeleteResult {
    // SAFETY: as in ambulkdelete.
    unsafe {
        if (*info).analyze_only {
            return stats;
        }
        let rel = IndexRel::new((*info).index);
        let stats = if stats.is_null() {
            let s = pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexBulkDeleteResult>())
                as *mut pg_sys::IndexBulkDeleteResult;
            (*s).num_index_tuples = remove_dead_tids(&rel, |_| false).live_tids;
            s
        } else {
            stats
        };
        (*stats).num_pages = rel.nblocks();
        stats
    }
}
