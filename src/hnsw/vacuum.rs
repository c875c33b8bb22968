//! `ambulkdelete` and `amvacuumcleanup`: removing dead rows from the graph.
//!
//! The vacuum path, in three passes (as pgvector's `hnswvacuum.c`):
//! 1. **Remove heap TIDs** that VACUUM's callback reports dead; an element left
//!    with none is marked *deleted*. Scans still walk through deleted
//!    elements (their links keep the graph connected) but never return them,
//!    and inserts never link to them.
//! 2. **Repair** every live element whose neighbor list points at a deleted
//!    element: the candidates are its live neighbors plus the live neighbors
//!    of the deleted ones, pruned with the neighbor-selection heuristic
//!    (inserts run concurrently; each list is rewritten only if it did not
//!    change meanwhile).
//! 3. **Free**, with inserts and scans locked out: drop any link to a deleted
//!    element that a concurrent insert added, move the entry point if it was
//!    deleted, and mark deleted elements *free*. Inserts reuse free elements
//!    in place, found through the meta page's free hint.

use pgrx::pg_sys;
use pgrx::prelude::*;
use rustc_hash::FxHashSet;

use super::graph::{Candidate, GraphStore};
use super::page::{self, ElementMut, ElementRef, ItemPointer, NeighborsRef, PageKind, PageRef};
use super::storage::{to_pg_tid, ElementNode, IndexRel, PageStore, EXCLUSIVE_LOCK, SHARE_LOCK};

/// What pass 1 found.
#[derive(Default)]
struct Removal {
    live_tids: f64,
    removed_tids: f64,
    /// Elements that are deleted (now or by an earlier VACUUM) but not free.
    deleted: FxHashSet<ItemPointer>,
}

fn vacuum_delay() {
    // SAFETY: VACUUM may sleep here for cost-based delay; no locks are held.
    unsafe { pg_sys::vacuum_delay_point() };
}

/// Pass 1: removes heap TIDs for which `dead` is true and marks emptied
/// elements deleted.
fn remove_dead_tids(rel: &IndexRel, mut dead: impl FnMut(ItemPointer) -> bool) -> Removal {
    let meta = rel.read_meta();
    let (codec, m) = (meta.codec, meta.m as usize);
    let mut out = Removal::default();
    for block in 1..rel.nblocks() {
        vacuum_delay();
        rel.modify(block, |p| {
            let mut changed = false;
            rel.for_each_element_mut(block, p, &codec, m, |offset, e| {
                if e.is_free() {
                    return;
                }
                if !e.is_deleted() {
                    let removed = e.retain_heap_tids(|t| !dead(t));
                    if removed > 0 {
                        changed = true;
                        if e.heap_tid_count() == 0 {
                            e.set_deleted();
                        }
                    }
                    out.removed_tids += removed as f64;
                    out.live_tids += e.heap_tid_count() as f64;
                }
                if e.is_deleted() {
                    out.deleted.insert(ItemPointer { block, offset });
                }
            });
            changed.then_some(())
        });
    }
    out
}

/// Number of heap TIDs held by live elements (read-only, share locks).
fn count_live_tids(rel: &IndexRel) -> f64 {
    let store = PageStore::new(*rel, rel.read_meta());
    let mut n = 0.0;
    for block in 1..rel.nblocks() {
        for_each_live_element(&store, block, |e| n += e.heap_tids as f64);
    }
    n
}

/// Calls `f` with every live (not deleted, not free) element of `block`.
fn for_each_live_element(store: &PageStore, block: u32, mut f: impl FnMut(ElementNode)) {
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
            if !e.is_deleted() {
                f(ElementNode::read(ItemPointer { block, offset }, &e));
            }
        }
    });
}

/// Rewrites `node`'s list on `layer` from `old` to `new`, only if it still
/// equals `old`; returns whether it did.
fn replace_list(store: &PageStore, node: &ElementNode, layer: usize, old: &[ItemPointer], new: &[ItemPointer]) -> bool {
    let (rel, m, at) = (store.rel, store.meta.m as usize, node.neighbors);
    rel.modify(at.block, |p| {
        let range = rel.item_range(at.block, p, at.offset);
        let mut current = Vec::new();
        NeighborsRef::new(&p[range.clone()], m)
            .unwrap_or_else(|e| rel.corrupt(at.block, e))
            .read_layer(layer, &mut current);
        if current != old {
            return None;
        }
        page::set_layer(&mut p[range], m, layer, new).unwrap_or_else(|e| rel.corrupt(at.block, e));
        Some(())
    })
    .is_some()
}

/// The repaired list of `node` on `layer`: every live neighbor it had stays
/// (so repair never takes away anyone's inbound link), and the slots of the
/// deleted ones are refilled from *their* live neighbors, chosen with the
/// neighbor-selection heuristic and then nearest first.
fn repaired_list(
    store: &mut PageStore,
    node: &ElementNode,
    layer: usize,
    current: &[ItemPointer],
    deleted: &FxHashSet<ItemPointer>,
) -> Vec<ItemPointer> {
    let base = store.vector(node.tid).to_vec();
    let kept: Vec<ItemPointer> = current.iter().filter(|t| !deleted.contains(t)).copied().collect();
    let mut selected: Vec<Candidate<ElementNode>> = kept
        .iter()
        .filter_map(|&k| store.visit(&base, k))
        .map(|(distance, node)| Candidate { distance, node })
        .collect();
    let mut second = Vec::new();
    let mut extra: Vec<ItemPointer> = Vec::new();
    for d in current.iter().filter(|t| deleted.contains(t)) {
        let dnode = store.node(*d);
        store.read_neighbors(&dnode, layer, &mut second);
        extra.extend(second.iter().filter(|t| !deleted.contains(t) && **t != node.tid && !kept.contains(t)));
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
    selected.iter().map(|c| c.node.tid).collect()
}

/// Pass 2: repairs lists that point at deleted elements (concurrently with
/// inserts, under the graph lock in share mode).
fn repair(rel: &IndexRel, deleted: &FxHashSet<ItemPointer>) {
    rel.lock_graph(SHARE_LOCK);
    let mut store = PageStore::new(*rel, rel.read_meta());
    let mut lists = Vec::new();
    for block in 1..rel.nblocks() {
        vacuum_delay();
        let mut live = Vec::new();
        for_each_live_element(&store, block, |n| live.push(n));
        for node in live {
            for layer in 0..=node.level as usize {
                for _attempt in 0..3 {
                    store.read_neighbors(&node, layer, &mut lists);
                    if !lists.iter().any(|t| deleted.contains(t)) {
                        break;
                    }
                    let current = lists.clone();
                    let new = repaired_list(&mut store, &node, layer, &current, deleted);
                    if replace_list(&store, &node, layer, &current, &new) {
                        break;
                    }
                }
            }
            store.clear_cache();
        }
    }
    rel.unlock_graph(SHARE_LOCK);
}

/// One pass over every live element: drops
/// links to `deleted` elements, picks a new entry point if the current one
/// is deleted (the highest live element), and links any live element that
/// no list points to from its nearest live neighbor (replacing that list's
/// farthest entry when full). HNSW pruning by concurrent inserts can, rarely,
/// leave an element without inbound links; this is where VACUUM heals it.
/// Returns the entry point to use.
fn drop_links_and_heal(
    rel: &IndexRel,
    store: &PageStore,
    entry: Option<(ItemPointer, u16)>,
    deleted: &FxHashSet<ItemPointer>,
) -> Option<(ItemPointer, u16)> {
    let mut highest: Option<(ItemPointer, u16)> = None;
    let mut lists = Vec::new();
    let mut all_live: Vec<ElementNode> = Vec::new();
    let mut inbound: rustc_hash::FxHashMap<ItemPointer, u32> = rustc_hash::FxHashMap::default();
    for block in 1..rel.nblocks() {
        let mut live = Vec::new();
        for_each_live_element(store, block, |n| live.push(n));
        for node in live {
            if highest.is_none_or(|(_, l)| node.level as u16 > l) {
                highest = Some((node.tid, node.level as u16));
            }
            for layer in 0..=node.level as usize {
                store.read_neighbors(&node, layer, &mut lists);
                if lists.iter().any(|t| deleted.contains(t)) {
                    let kept: Vec<ItemPointer> = lists.iter().filter(|t| !deleted.contains(t)).copied().collect();
                    replace_list(store, &node, layer, &lists.clone(), &kept);
                    lists = kept;
                }
                for &t in &lists {
                    *inbound.entry(t).or_default() += 1;
                }
            }
            all_live.push(node);
        }
    }
    let entry = if entry.is_none_or(|(e, _)| deleted.contains(&e)) { highest } else { entry };
    let mut store = PageStore::new(*rel, rel.read_meta());
    let orphans: Vec<ElementNode> = all_live
        .iter()
        .filter(|n| !inbound.contains_key(&n.tid) && entry.is_none_or(|(e, _)| e != n.tid))
        .copied()
        .collect();
    for node in orphans {
        // Link from one of its live layer-0 neighbors: append when there is
        // room, else overwrite the farthest entry that keeps another inbound
        // link (so healing never strands anyone else).
        store.read_neighbors(&node, 0, &mut lists);
        let hosts: Vec<ItemPointer> = lists.iter().filter(|t| !deleted.contains(t)).copied().collect();
        for host in hosts {
            let host = store.node(host);
            let mut host_list = Vec::new();
            store.read_neighbors(&host, 0, &mut host_list);
            let mut new = host_list.clone();
            if new.len() < store.params().max_neighbors(0) {
                new.push(node.tid);
            } else {
                let base = store.vector(host.tid).to_vec();
                let mut replaceable: Vec<(f32, usize)> = new
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| inbound.get(t).copied().unwrap_or(0) >= 2)
                    .filter_map(|(i, &t)| store.visit(&base, t).map(|(d, _)| (d, i)))
                    .collect();
                replaceable.sort_by(|a, b| b.0.total_cmp(&a.0));
                let Some(&(_, i)) = replaceable.first() else { continue };
                *inbound.entry(new[i]).or_default() -= 1;
                new[i] = node.tid;
            }
            if replace_list(&store, &host, 0, &host_list, &new) {
                *inbound.entry(node.tid).or_default() += 1;
                break;
            }
        }
        store.clear_cache();
    }
    entry
}

/// Pass 3: with inserts and scans locked out, drops remaining links to
/// deleted elements, moves the entry point if needed, and frees the deleted
/// elements for reuse.
fn free_deleted(rel: &IndexRel, deleted: &FxHashSet<ItemPointer>) {
    rel.lock_graph(EXCLUSIVE_LOCK);
    rel.lock_scans(EXCLUSIVE_LOCK);
    let meta = rel.read_meta();
    let store = PageStore::new(*rel, meta);
    let (codec, m) = (meta.codec, meta.m as usize);
    let entry = drop_links_and_heal(rel, &store, meta.entry, deleted);
    if entry != meta.entry {
        rel.set_entry(entry);
    }
    let mut first_free: Option<u32> = None;
    for &t in deleted {
        let neighbors = rel.modify(t.block, |p| {
            let range = rel.item_range(t.block, p, t.offset);
            let mut e = ElementMut::new(&mut p[range], &codec, m).unwrap_or_else(|e| rel.corrupt(t.block, e));
            e.set_free();
            Some(e.neighbors())
        });
        if let Some(at) = neighbors {
            rel.modify(at.block, |p| {
                let range = rel.item_range(at.block, p, at.offset);
                page::clear_neighbors(&mut p[range], m).unwrap_or_else(|e| rel.corrupt(at.block, e));
                Some(())
            });
        }
        first_free = Some(first_free.map_or(t.block, |b| b.min(t.block)));
    }
    if let Some(b) = first_free {
        let current = rel.read_meta().free_hint;
        rel.set_free_hint(Some(current.map_or(b, |h| h.min(b))));
    }
    rel.unlock_scans(EXCLUSIVE_LOCK);
    rel.unlock_graph(EXCLUSIVE_LOCK);
}

fn new_stats(stats: *mut pg_sys::IndexBulkDeleteResult) -> *mut pg_sys::IndexBulkDeleteResult {
    if stats.is_null() {
        // SAFETY: zeroed allocation of the stats struct VACUUM expects.
        unsafe { pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexBulkDeleteResult>()) as *mut _ }
    } else {
        stats
    }
}

/// `ambulkdelete`: passes 1–3 above.
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
    let removal = remove_dead_tids(&rel, |t| {
        let mut tid = to_pg_tid(t);
        // SAFETY: the callback VACUUM gave us, with its own state.
        unsafe { callback(&mut tid, callback_state) }
    });
    if !removal.deleted.is_empty() {
        repair(&rel, &removal.deleted);
        free_deleted(&rel, &removal.deleted);
    }
    // SAFETY: stats is a valid struct (allocated above or passed in).
    unsafe {
        (*stats).tuples_removed += removal.removed_tids;
        (*stats).num_index_tuples = removal.live_tids;
        (*stats).num_pages = rel.nblocks();
    }
    stats
}

/// `amvacuumcleanup`: heals elements left without inbound links (see
/// [`drop_links_and_heal`]) and reports index statistics.
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
    if rel.nblocks() > 0 {
        // Concurrent inserts may go on: every list change is compare-and-set,
        // and an element inserted during the pass at worst gains a link.
        rel.lock_graph(SHARE_LOCK);
        let meta = rel.read_meta();
        let store = PageStore::new(rel, meta);
        drop_links_and_heal(&rel, &store, meta.entry, &FxHashSet::default());
        rel.unlock_graph(SHARE_LOCK);
    }
    let stats = if stats.is_null() {
        let s = new_stats(stats);
        // SAFETY: s was just allocated.
        unsafe { (*s).num_index_tuples = count_live_tids(&rel) };
        s
    } else {
        stats
    };
    // SAFETY: stats is valid.
    unsafe { (*stats).num_pages = rel.nblocks() };
    stats
}
