//! `aminsert`: adding one row to an existing index (Algorithm 1 on pages).
//!
//! The insert path:
//! 1. take the graph lock in share mode (exclusive if this element becomes
//!    the new entry point, or the graph is empty) and read the meta page;
//! 2. find the new element's neighbors on each layer with the same search and
//!    heuristic as the build ([`Searcher::find_insert_neighbors`]);
//! 3. a vector with the same half-precision codes as its nearest element
//!    (in practice: an identical one) takes a free heap-TID slot there
//!    instead, widening the element's stored error bounds to cover it;
//! 4. otherwise write the neighbor item, then the element item pointing at it
//!    (on the last page if they fit, else on a new page);
//! 5. add the reverse links one neighbor at a time, pruning a full list with
//!    the heuristic, re-checking it under the exclusive buffer lock;
//! 6. move the entry point if the new element is higher.
//!
//! Only one buffer lock is ever held at a time, and every change is a
//! `GenericXLog` record, so concurrent inserts and scans see consistent pages
//! and a crash at any step leaves a valid (if less connected) graph.

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::directory;
use super::graph::{prune_neighbors, random_level, relink, LinkLists, Searcher};
use super::key_datum;
use super::page::{
    self, encode_element, encode_neighbors, ElementMut, ElementRef, ItemPointer, LayerList, NeighborsRef, PageKind,
    PageRef,
};
use super::prepare_datum;
use super::storage::{from_pg_tid, ElementNode, IndexRel, PageStore, EXCLUSIVE_LOCK, SHARE_LOCK};
use crate::hnsw::graph::GraphStore;

/// `aminsert`: indexes one heap row. NULLs and (for cosine) zero vectors
/// are not indexed. Always returns `false` (no uniqueness checks).
#[pg_guard]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C-unwind" fn aminsert(
    index: pg_sys::Relation,
    values: *mut pg_sys::Datum,
    isnull: *mut bool,
    heap_tid: pg_sys::ItemPointer,
    _heap: pg_sys::Relation,
    _check_unique: pg_sys::IndexUniqueCheck::Type,
    _index_unchanged: bool,
    _index_info: *mut pg_sys::IndexInfo,
) -> bool {
    // SAFETY: values/isnull have one entry per index column, the vector
    // first.
    let (datum, null, tid) = unsafe { (*values, *isnull, from_pg_tid(&*heap_tid)) };
    if null {
        return false;
    }
    let rel = IndexRel::new(index);
    let meta = rel.read_meta();
    // SAFETY: a non-null datum of the indexed column.
    let Some(vector) = (unsafe { prepare_datum(&meta.codec, datum) }) else {
        return false;
    };
    // SAFETY: as above, one entry per column of the index's types.
    let keys = unsafe { key_datum::row_keys(&key_datum::key_columns(index), values, isnull) };
    let m = meta.m as usize;
    let level = random_level(rand::random::<f64>(), 1.0 / (m as f64).ln(), page::max_level(m));
    insert_prepared(&rel, &vector, &keys, tid, level);
    false
}

/// Inserts `vector` (in the index codec's working form, see
/// [`prepare_datum`]) with filter keys `keys` (a key blob of
/// [`super::keys`], empty for a single-column index) for heap row
/// `heap_tid` with top layer `level` into the on-disk graph.
pub fn insert_prepared(rel: &IndexRel, vector: &[u32], keys: &[u8], heap_tid: ItemPointer, level: usize) {
    let mut mode = SHARE_LOCK;
    rel.lock_graph(mode);
    let mut meta = rel.read_meta();
    if meta.entry.is_none_or(|(_, entry_level)| level > entry_level as usize) {
        rel.unlock_graph(mode);
        mode = EXCLUSIVE_LOCK;
        rel.lock_graph(mode);
        meta = rel.read_meta();
    }
    let mut store = PageStore::new(*rel, meta);
    let stored = meta.codec.encode(vector);
    let Some((entry, entry_level)) = meta.entry else {
        let (etid, _) = write_element(&store, level, heap_tid, &vec![Vec::new(); level + 1], 0, keys, &stored);
        rel.set_entry(Some((etid, level as u16)));
        rel.unlock_graph(mode);
        return;
    };
    let params = store.params();
    let mut searcher = Searcher::default();
    // The search walks selected links only, as the build's do.
    store.walk_spare = false;
    let (lists, spare0) =
        searcher.find_insert_neighbors(&mut store, vector, level, entry, entry_level as usize, &params);
    store.walk_spare = true;
    let nearest = lists[0].first().map_or(f32::NAN, |c| c.distance);
    // Rows with equal vectors share an element only without filter columns,
    // as in the build: with them each row keeps its own element and key
    // directory entry (an element that lost its entry to a failed insert
    // must not take in a committed row).
    let duplicates = if keys.is_empty() { lists[0].as_slice() } else { &[] };
    for c in duplicates.iter().take_while(|c| c.distance == nearest) {
        if !c.node.deleted && add_duplicate(&store, c.node.tid, keys, &stored, heap_tid) {
            rel.unlock_graph(mode);
            return;
        }
    }
    let tids: Vec<Vec<ItemPointer>> = lists.iter().map(|l| l.iter().map(|c| c.node.tid).collect()).collect();
    let (etid, ntid) = write_element(&store, level, heap_tid, &tids, spare0, keys, &stored);
    let new = store.node(etid);
    debug_assert_eq!(new.neighbors, ntid);
    // Searches end on layer 0, so `new` needs an inbound link there, not
    // only on an upper layer.
    let mut linked = false;
    for (layer, list) in lists.iter().enumerate() {
        let selected = if layer == 0 { list.len() - spare0 } else { list.len() };
        for c in &list[..selected] {
            let kept = add_reverse_link(&mut store, &c.node, &new, layer);
            linked |= kept && layer == 0;
        }
    }
    if !linked {
        if let Some(nearest) = lists[0].first() {
            relink::force_link(&mut store, nearest.node.tid, new.tid);
        }
    }
    if level > entry_level as usize {
        // Layer-0 reachability from the entry point: everything reachable
        // from the old entry stays so once the new one links to it. (A
        // deleted old entry is not linked; VACUUM, which is about to move
        // the entry point off it, relinks what only it reached.)
        relink::force_link(&mut store, etid, entry);
        rel.set_entry(Some((etid, level as u16)));
    }
    rel.unlock_graph(mode);
}

/// Adds `heap_tid` to element `tid` if it stores the same vector as
/// `payload` ([`Codec::same_vector`](super::codec::Codec::same_vector)) and
/// the same filter keys, and has a free slot. Returns whether it did.
fn add_duplicate(store: &PageStore, tid: ItemPointer, keys: &[u8], payload: &[u8], heap_tid: ItemPointer) -> bool {
    let (codec, m) = (store.meta.codec, store.meta.m as usize);
    let has_room = |e: &ElementRef| e.heap_tid_count() < e.head().tid_slots as usize;
    if !store.with_element(tid, |e| has_room(&e) && e.keys() == keys && codec.same_vector(e.payload(), payload)) {
        return false;
    }
    let rel = store.rel;
    rel.modify(tid.block, |p| {
        let range = rel.item_range(tid.block, p, tid.offset);
        let mut e = ElementMut::new(&mut p[range], &codec, m).unwrap_or_else(|e| rel.corrupt(tid.block, e));
        (!e.is_deleted()
            && e.keys() == keys
            && codec.same_vector(e.payload(), payload)
            && e.push_duplicate(heap_tid, &codec, payload))
        .then_some(())
    })
    .is_some()
}

/// Puts `item` on the last page if it fits (and is not a key directory
/// page), else on a new page.
fn put_item(rel: &IndexRel, item: &[u8]) -> ItemPointer {
    let nblocks = rel.nblocks();
    if nblocks > 1 {
        let last = nblocks - 1;
        let offset = rel.modify(last, |p| {
            // A zeroed page is one another backend is still appending (or
            // one a crash left behind): never ours to format.
            if page::page_is_new(p) {
                return None;
            }
            PageRef::new(p, PageKind::Graph).unwrap_or_else(|e| rel.corrupt(last, e));
            if page::is_directory_page(p) {
                return None;
            }
            page::add_item(p, item)
        });
        if let Some(offset) = offset {
            return ItemPointer { block: last, offset };
        }
    }
    let mut offset = 0;
    let block =
        rel.append(PageKind::Graph, |p| offset = page::add_item(p, item).expect("an item always fits an empty page"));
    ItemPointer { block, offset }
}

/// How many pages past the meta page's free hint one insert looks at for a
/// free element before appending instead.
const FREE_SCAN_PAGES: u32 = 16;

/// Claims a free element (one VACUUM freed) whose neighbor item has room for
/// `level`, rewriting both items in place; returns `(element, neighbors)`.
/// Looks at a few pages from the meta page's free hint, and moves the hint
/// past pages that had nothing to offer.
fn reuse_free_element(
    store: &PageStore,
    level: usize,
    heap_tid: ItemPointer,
    lists: &[Vec<ItemPointer>],
    spare0: usize,
    keys: &[u8],
    payload: &[u8],
) -> Option<(ItemPointer, ItemPointer)> {
    let hint = store.meta.free_hint?;
    let rel = store.rel;
    let (codec, m) = (store.meta.codec, store.meta.m as usize);
    let nblocks = rel.nblocks();
    let end = nblocks.min(hint.saturating_add(FREE_SCAN_PAGES));
    // First scanned block that still has a free element after this insert.
    let mut still_free: Option<u32> = None;
    for block in hint..end {
        let mut remaining = false;
        let claimed = rel.modify(block, |p| {
            let mut claimed = None;
            rel.for_each_element_mut(block, p, &codec, m, |offset, e| {
                if !e.is_free() {
                    return;
                }
                if claimed.is_none() && e.capacity() >= level && e.fits(keys.len(), payload.len()) {
                    e.reuse(level, heap_tid, keys, payload);
                    claimed = Some((offset, e.neighbors()));
                } else {
                    remaining = true;
                }
            });
            claimed
        });
        if remaining && still_free.is_none() {
            still_free = Some(block);
        }
        if let Some((offset, ntid)) = claimed {
            let next = still_free.unwrap_or(block);
            if next != hint {
                rel.set_free_hint(Some(next));
            }
            rel.modify(ntid.block, |p| {
                let range = rel.item_range(ntid.block, p, ntid.offset);
                let capacity =
                    NeighborsRef::new(&p[range.clone()], m).unwrap_or_else(|e| rel.corrupt(ntid.block, e)).level();
                for layer in 0..=capacity {
                    let list = lists.get(layer).map(Vec::as_slice).unwrap_or(&[]);
                    let spare = if layer == 0 { spare0.min(list.len()) } else { 0 };
                    page::set_layer(&mut p[range.clone()], m, layer, list, spare)
                        .unwrap_or_else(|e| rel.corrupt(ntid.block, e));
                }
                Some(())
            });
            return Some((ItemPointer { block, offset }, ntid));
        }
    }
    rel.set_free_hint(still_free.or((end < nblocks).then_some(end)));
    None
}

/// Writes a new element: into a free element if VACUUM left one, otherwise
/// its neighbor item and then its element item at the end of the index.
/// The last `spare0` links of `lists[0]` are spare links; `keys` is the
/// element's key blob. Returns `(element, neighbors)` addresses.
fn write_element(
    store: &PageStore,
    level: usize,
    heap_tid: ItemPointer,
    lists: &[Vec<ItemPointer>],
    spare0: usize,
    keys: &[u8],
    payload: &[u8],
) -> (ItemPointer, ItemPointer) {
    let (etid, ntid) = match reuse_free_element(store, level, heap_tid, lists, spare0, keys, payload) {
        Some(at) => at,
        None => {
            let ntid = put_item(&store.rel, &encode_neighbors(store.meta.m as usize, level, lists, spare0));
            (put_item(&store.rel, &encode_element(level, &[heap_tid], ntid, keys, payload)), ntid)
        }
    };
    // The key directory's entry, after the element it points to (a reused
    // element has a new version, so its old entry no longer counts).
    if store.meta.keys_head.is_some() {
        let version = store.with_element(etid, |e| e.head().version);
        directory::append(&store.rel, etid, version, keys);
    }
    (etid, ntid)
}

/// Reads the list of `node` on `layer` from a locked page image.
fn list_in(
    rel: &IndexRel,
    p: &[u8],
    node: &ElementNode,
    layer: usize,
    m: usize,
) -> (std::ops::Range<usize>, LayerList) {
    let at = node.neighbors;
    let range = rel.item_range(at.block, p, at.offset);
    let n = NeighborsRef::new(&p[range.clone()], m).unwrap_or_else(|e| rel.corrupt(at.block, e));
    let mut links = Vec::new();
    let spare = n.read_layer(layer, &mut links);
    (range, LayerList { links, spare })
}

/// Writes `list` as layer `layer` of the neighbor item `item` (in block
/// `block` of `rel`, locked).
fn write_list(list: &LayerList, rel: &IndexRel, item: &mut [u8], block: u32, m: usize, layer: usize) {
    page::set_layer(item, m, layer, &list.links, list.spare).unwrap_or_else(|e| rel.corrupt(block, e));
}

/// Links `node -> new` on `layer`: appends when a selected slot is free
/// (giving up a spare link if need be), otherwise prunes with the heuristic
/// (computed without locks, then written only if the list did not change
/// meanwhile; retried a few times). Returns whether `node` now links to
/// `new` (with a selected link).
pub fn add_reverse_link(store: &mut PageStore, node: &ElementNode, new: &ElementNode, layer: usize) -> bool {
    if layer > node.level as usize {
        return false;
    }
    let rel = store.rel;
    let m = store.meta.m as usize;
    let max = store.params().max_neighbors(layer);
    let block = node.neighbors.block;
    for _attempt in 0..3 {
        let mut full: Option<LayerList> = None;
        rel.modify(block, |p| {
            let (range, mut list) = list_in(&rel, p, node, layer, m);
            if list.selected().contains(&new.tid) {
                return None;
            }
            if list.selected().len() >= max {
                full = Some(list);
                return None;
            }
            list.append(new.tid, max);
            write_list(&list, &rel, &mut p[range], block, m, layer);
            Some(())
        });
        let Some(current) = full else {
            return true;
        };
        let base = store.vector(node.tid).to_vec();
        let nodes: Vec<ElementNode> =
            current.links.iter().filter_map(|&k| store.visit(&base, k).map(|(_, n)| n)).collect();
        let (links, spare) = prune_neighbors(store, node, &nodes, *new, max, layer == 0);
        let kept = LayerList { links, spare };
        if !kept.selected().contains(&new.tid) {
            return false;
        }
        let mut raced = false;
        rel.modify(block, |p| {
            let (range, list) = list_in(&rel, p, node, layer, m);
            if list != current {
                raced = true;
                return None;
            }
            write_list(&kept, &rel, &mut p[range], block, m, layer);
            Some(())
        });
        if !raced {
            // Never relink a deleted element: VACUUM relies on inserts not
            // adding links to elements they read as deleted (vacuum.rs, (a)).
            // An element kept only as a spare link counts as dropped: the
            // next append may take its slot.
            let deleted = |t: &ItemPointer| nodes.iter().any(|n| n.tid == *t && n.deleted);
            for dropped in current.links.iter().copied().filter(|c| !kept.selected().contains(c) && !deleted(c)) {
                relink::relink(store, new.tid, dropped, layer);
            }
            return true;
        }
    }
    false
}

/// The page graph's lists as the relink policy ([`relink`]) edits them:
/// each call locks the one page it reads or writes, and writes only if the
/// list did not change since it was read.
impl LinkLists for PageStore {
    type Key = ItemPointer;

    fn level(&mut self, k: ItemPointer) -> usize {
        self.node(k).level as usize
    }

    fn is_deleted(&mut self, k: ItemPointer) -> bool {
        self.node(k).deleted
    }

    fn own_neighbors(&mut self, k: ItemPointer, out: &mut Vec<ItemPointer>) {
        let node = self.node(k);
        self.read_selected(&node, 0, out);
    }

    fn links_to(&mut self, from: ItemPointer, to: ItemPointer) -> bool {
        let node = self.node(from);
        if node.deleted {
            return false;
        }
        let mut selected = Vec::new();
        self.read_selected(&node, 0, &mut selected);
        selected.contains(&to)
    }

    fn distances(&mut self, owner: ItemPointer, list: &[ItemPointer]) -> Vec<f32> {
        let v = self.vector(owner).to_vec();
        list.iter().map(|&t| self.visit(&v, t).map_or(f32::INFINITY, |x| x.0)).collect()
    }

    fn append(&mut self, owner: ItemPointer, layer: usize, k: ItemPointer) -> Result<(), Vec<ItemPointer>> {
        let node = self.node(owner);
        let (rel, m, block) = (self.rel, self.meta.m as usize, node.neighbors.block);
        let max = self.params().max_neighbors(layer);
        let mut full = None;
        rel.modify(block, |p| {
            let (range, mut list) = list_in(&rel, p, &node, layer, m);
            if list.selected().contains(&k) {
                return None;
            }
            if list.selected().len() >= max {
                full = Some(list.selected().to_vec());
                return None;
            }
            list.append(k, max);
            write_list(&list, &rel, &mut p[range], block, m, layer);
            Some(())
        });
        full.map_or(Ok(()), Err)
    }

    fn replace(
        &mut self,
        owner: ItemPointer,
        layer: usize,
        expected: &[ItemPointer],
        at: usize,
        k: ItemPointer,
    ) -> bool {
        let node = self.node(owner);
        let (rel, m, block) = (self.rel, self.meta.m as usize, node.neighbors.block);
        rel.modify(block, |p| {
            let (range, mut list) = list_in(&rel, p, &node, layer, m);
            if list.selected() != expected || at >= list.links.len() {
                return None;
            }
            list.links[at] = k;
            write_list(&list, &rel, &mut p[range], block, m, layer);
            Some(())
        })
        .is_some()
    }
}
