//! `hnsw_index_check(regclass)`: verifies an index's on-disk invariants and
//! returns a report, one row per check. Problems, corrupt pages included,
//! are reported as failed checks, not raised: the function reads every byte
//! through the validating decoders of [`super::page`] and follows no link
//! before checking that it points at an element it has seen.
//!
//! Checks: the meta page; every page and item; element → neighbor item
//! links; the key directory of an index with filter columns (every live
//! element has an entry of its version and keys); neighbor lists (bounds, targets present on the layer and not
//! free); every live element reachable from the entry point over layer-0
//! links, walking through deleted elements as scans do (an unreachable
//! element holding only rows the heap no longer shows, left by an insert
//! that never committed, is counted rather than failed); every live heap row
//! the index takes indexed exactly once (rows whose indexed column or
//! expression is not null, and for a partial index whose predicate holds:
//! both read from the catalog with `pg_get_indexdef` and `pg_get_expr`).
//!
//! Links to *deleted* elements are legal (VACUUM repairs them before it
//! frees the elements; an interrupted VACUUM leaves them for the next one):
//! they are counted in the detail, and so are deleted elements. A link from
//! a live element to a *free* one, a free element that the walk from the
//! entry point meets, or a free entry point is a failure: a scan could
//! follow it into a reused element. (A deleted element that nothing reaches
//! may still link to a free one while VACUUM frees a batch page by page.)
//!
//! Who may run it: the index's owner (or a superuser), since it takes the
//! index's structure and reports heap TIDs; others get SQLSTATE 42501.
//!
//! Locks: none beyond buffer share locks, one page at a time, so inserts,
//! VACUUM and queries go on while a check runs (a check of a large index
//! takes seconds). The graph may change under the check, so a finding is a
//! failure only if it still holds when re-read from the pages: a link to an
//! element the pass did not collect (inserted since) is followed on the
//! page; a link to a free element, a missing neighbor item or a bad level is
//! re-read (source and target) before it counts; the reachability walk reads
//! the entry point and every list as they are now, and an element it misses
//! is looked for again by a second walk after in-flight inserts finish
//! ([`IndexRel::wait_for_inserts`], an instant), and counts only if it is
//! still live then. The heap part reads the rows through a cursor opened
//! before the first page is read, so every row it sees was indexed before
//! the pass began. No heavyweight lock is held while another is requested
//! (the nesting rule on [`IndexRel::lock_graph`]).
//!
//! Memory: about 24 bytes per element, 12 per neighbor item and 8 per heap
//! TID, checked against `maintenance_work_mem`; more is an `ERROR` (SQLSTATE
//! 53200) that says how much to set. The heap is read through a cursor, in
//! chunks.
//!
//! A page whose *header* is damaged is rejected by PostgreSQL's own buffer
//! manager when read ("invalid page in block N of relation ..."), which
//! raises that ERROR before this function sees the page.

use pgrx::prelude::*;
use pgrx::{pg_sys, PgRelation, PgSqlErrorCode};

use super::codec::{Codec, Kind};
use super::keys;
use super::page::{self, ElementRef, ItemPointer, Meta, NeighborsRef, PageKind, PageRef};
use super::storage::{from_pg_tid, IndexRel};
use super::vacuum::{try_reserve, work_mem_bytes};
use crate::error::{raise, raise_hint};

const DELETED: u8 = 1;
const FREE: u8 = 2;

/// An element as the check remembers it.
#[derive(Clone, Copy)]
struct Element {
    tid: ItemPointer,
    neighbors: ItemPointer,
    level: u8,
    flags: u8,
}

impl Element {
    fn deleted(&self) -> bool {
        self.flags & DELETED != 0
    }

    fn free(&self) -> bool {
        self.flags & FREE != 0
    }
}

/// What the graph part collected, in address order.
#[derive(Default)]
struct Graph {
    elements: Vec<Element>,
    /// Neighbor items and their top layer.
    neighbor_items: Vec<(ItemPointer, u8)>,
    /// Heap TIDs of elements that are not deleted.
    heap_tids: Vec<ItemPointer>,
    /// Key directory pages found, and their entries: element, version,
    /// hash of the key blob.
    directory_pages: Vec<u32>,
    directory: Vec<(ItemPointer, u8, u64)>,
    /// Live elements of an index with a key directory: address, version,
    /// hash of the key blob.
    keyed: Vec<(ItemPointer, u8, u64)>,
}

impl Graph {
    fn element(&self, t: ItemPointer) -> Option<(usize, &Element)> {
        let i = self.elements.binary_search_by(|e| e.tid.cmp(&t)).ok()?;
        Some((i, &self.elements[i]))
    }

    fn bytes(&self) -> usize {
        self.elements.capacity() * std::mem::size_of::<Element>()
            + self.neighbor_items.capacity() * std::mem::size_of::<(ItemPointer, u8)>()
            + self.heap_tids.capacity() * std::mem::size_of::<ItemPointer>()
            + (self.directory.capacity() + self.keyed.capacity()) * std::mem::size_of::<(ItemPointer, u8, u64)>()
    }
}

/// Raises the out-of-memory `ERROR` when the check would need more than
/// `maintenance_work_mem`.
fn within_budget(bytes: usize) {
    let budget = work_mem_bytes();
    if bytes > budget {
        raise_hint(
            PgSqlErrorCode::ERRCODE_OUT_OF_MEMORY,
            "hnsw_index_check needs more memory than maintenance_work_mem allows",
            format!("it needs more than {} kB", bytes / 1024),
            format!("SET maintenance_work_mem = '{}MB' and run it again.", (2 * bytes).div_ceil(1 << 20)),
        );
    }
}

/// One report row: `(check_name, passed, detail)`.
type Row = (String, bool, String);

/// Keeps the first few problems of a check and counts the rest.
#[derive(Default)]
struct Problems {
    count: usize,
    shown: Vec<String>,
}

impl Problems {
    fn add(&mut self, p: String) {
        self.count += 1;
        if self.shown.len() < 5 {
            self.shown.push(p);
        }
    }

    fn row(&self, name: &str, ok_detail: String) -> Row {
        if self.count == 0 {
            (name.to_string(), true, ok_detail)
        } else {
            (name.to_string(), false, format!("{} problem(s): {}", self.count, self.shown.join("; ")))
        }
    }
}

fn at(t: ItemPointer) -> String {
    format!("({},{})", t.block, t.offset)
}

/// Runs `sql` (no parameters) and returns the first row's text columns.
fn query_row(sql: &str, columns: usize) -> Option<Vec<String>> {
    Spi::connect(|c| {
        let row = c.select(sql, None, &[]).ok()?.first();
        (1..=columns).map(|i| row.get::<String>(i).ok().flatten()).collect()
    })
}

/// What the heap part queries: the indexed table, the indexed column or
/// expression, and the partial index's predicate, all as SQL text
/// (qualified and quoted as `pg_get_indexdef` and `pg_get_expr` deparse
/// them).
struct HeapTarget {
    table: String,
    key: String,
    predicate: Option<String>,
}

/// The [`HeapTarget`] of index `index_oid`.
fn heap_target(index_oid: pg_sys::Oid) -> Option<HeapTarget> {
    let sql = format!(
        "SELECT i.indrelid::pg_catalog.regclass::pg_catalog.text, \
                pg_catalog.pg_get_indexdef(i.indexrelid, 1, false), \
                COALESCE(pg_catalog.pg_get_expr(i.indpred, i.indrelid), '') \
         FROM pg_catalog.pg_index i WHERE i.indexrelid = {}",
        index_oid.to_u32()
    );
    let row = query_row(&sql, 3)?;
    let predicate = (!row[2].is_empty()).then(|| row[2].clone());
    Some(HeapTarget { table: row[0].clone(), key: row[1].clone(), predicate })
}

/// The schema of the extension that owns the `hnsw` access method (quoted;
/// whatever the extension is named), to call its functions by their
/// qualified names whatever the caller's `search_path`.
fn extension_schema() -> String {
    query_row(
        "SELECT pg_catalog.quote_ident(n.nspname::pg_catalog.text) FROM pg_catalog.pg_depend d \
         JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid \
         JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace \
         WHERE d.classid = 'pg_catalog.pg_am'::pg_catalog.regclass AND d.deptype = 'e' \
           AND d.objid = (SELECT oid FROM pg_catalog.pg_am WHERE amname = 'hnsw')",
        1,
    )
    .map(|r| r[0].clone())
    .unwrap_or_else(|| "public".into())
}

/// Reads every page, one at a time under its share lock, into `graph`, reporting page
/// and item problems in `pages`.
fn collect(rel: &IndexRel, meta: &Meta, key_columns: usize, graph: &mut Graph, pages: &mut Problems) {
    let (codec, m) = (meta.codec, meta.m as usize);
    for block in 1..rel.nblocks() {
        pgrx::check_for_interrupts!();
        rel.read(block, |p| {
            if page::page_is_new(p) {
                return;
            }
            let r = match PageRef::new(p, PageKind::Graph) {
                Ok(r) => r,
                Err(e) => return pages.add(format!("block {block}: {e}")),
            };
            if page::is_directory_page(p) {
                graph.directory_pages.push(block);
                try_reserve(&mut graph.directory, r.max_offset() as usize, "hnsw_index_check");
                for offset in 1..=r.max_offset() {
                    match r.item(offset).and_then(page::DirectoryEntry::read) {
                        Ok(e) => graph.directory.push((e.element, e.version, keys_hash(e.keys))),
                        Err(e) => pages.add(format!("directory entry {}: {e}", at(ItemPointer { block, offset }))),
                    }
                }
                return;
            }
            let n = r.max_offset() as usize;
            try_reserve(&mut graph.elements, n, "hnsw_index_check");
            try_reserve(&mut graph.neighbor_items, n, "hnsw_index_check");
            try_reserve(&mut graph.heap_tids, n * page::MAX_HEAP_TIDS, "hnsw_index_check");
            for offset in 1..=r.max_offset() {
                let tid = ItemPointer { block, offset };
                let item = match r.item(offset) {
                    Ok(i) => i,
                    Err(e) => {
                        pages.add(format!("block {block}: {e}"));
                        continue;
                    }
                };
                if page::is_element_item(item) {
                    let element = ElementRef::new(item, &codec, m)
                        .and_then(|e| {
                            codec.validate_deep(e.payload()).map(|_| e).map_err(|x| page::PageError(format!("{x:?}")))
                        })
                        .and_then(|e| match keys::validate(e.keys()) {
                            Ok(n) if n == key_columns || (n == 0 && e.is_free()) => Ok(e),
                            Ok(n) => Err(page::PageError(format!("{n} filter keys, the index has {key_columns}"))),
                            Err(x) => Err(page::PageError(format!("filter keys: {x}"))),
                        });
                    match element {
                        Ok(e) => {
                            let flags = (e.is_deleted() as u8 * DELETED) | (e.is_free() as u8 * FREE);
                            if flags == 0 {
                                graph.heap_tids.extend((0..e.heap_tid_count()).map(|i| e.heap_tid(i)));
                                if meta.keys_head.is_some() {
                                    try_reserve(&mut graph.keyed, 1, "hnsw_index_check");
                                    graph.keyed.push((tid, e.head().version, keys_hash(e.keys())));
                                }
                            }
                            let (neighbors, level) = (e.neighbors(), e.level() as u8);
                            graph.elements.push(Element { tid, neighbors, level, flags });
                        }
                        Err(e) => pages.add(format!("element {}: {e}", at(tid))),
                    }
                } else {
                    match NeighborsRef::new(item, m) {
                        Ok(n) => graph.neighbor_items.push((tid, n.level() as u8)),
                        Err(e) => pages.add(format!("neighbor item {}: {e}", at(tid))),
                    }
                }
            }
        });
        within_budget(graph.bytes());
    }
}

/// Calls `f(layer, list, spare)` for each layer `0..=level` of the neighbor
/// item at `n` (already known to be a valid neighbor item of level >=
/// `level`); the last `spare` links of `list` are spare links.
fn read_lists(rel: &IndexRel, m: usize, n: ItemPointer, level: usize, mut f: impl FnMut(usize, &[ItemPointer], usize)) {
    let mut list = Vec::new();
    rel.read(n.block, |p| {
        let item = PageRef::new(p, PageKind::Graph).and_then(|r| r.item(n.offset));
        if let Ok(item) = item {
            if let Ok(items) = NeighborsRef::new(item, m) {
                for layer in 0..=level.min(items.level()) {
                    list.clear();
                    let spare = items.read_layer(layer, &mut list);
                    f(layer, &list, spare);
                }
            }
        }
    });
}

/// Element `t` as its page holds it now (not as [`collect`] saw it):
/// `None` if `t` is not a valid element item.
fn live_element(rel: &IndexRel, meta: &Meta, t: ItemPointer) -> Option<Element> {
    if t.block == page::META_BLOCK || t.block >= rel.nblocks() {
        return None;
    }
    rel.read(t.block, |p| {
        let item = PageRef::new(p, PageKind::Graph).and_then(|r| r.item(t.offset)).ok()?;
        if !page::is_element_item(item) {
            return None;
        }
        let e = ElementRef::new(item, &meta.codec, meta.m as usize).ok()?;
        let flags = (e.is_deleted() as u8 * DELETED) | (e.is_free() as u8 * FREE);
        Some(Element { tid: t, neighbors: e.neighbors(), level: e.level() as u8, flags })
    })
}

/// The top layer of the neighbor item at `n` as its page holds it now.
fn live_neighbor_level(rel: &IndexRel, m: usize, n: ItemPointer) -> Option<u8> {
    if n.block == page::META_BLOCK || n.block >= rel.nblocks() {
        return None;
    }
    rel.read(n.block, |p| {
        let item = PageRef::new(p, PageKind::Graph).and_then(|r| r.item(n.offset)).ok()?;
        NeighborsRef::new(item, m).ok().map(|x| x.level() as u8)
    })
}

/// Whether element `e`'s list on `layer`, as its page holds it now, links
/// to `t`.
fn still_links(rel: &IndexRel, m: usize, e: &Element, layer: usize, t: ItemPointer) -> bool {
    if live_neighbor_level(rel, m, e.neighbors).is_none_or(|l| (l as usize) < layer) {
        return false;
    }
    let mut found = false;
    read_lists(rel, m, e.neighbors, layer, |l, list, _| found |= l == layer && list.contains(&t));
    found
}

/// What is wrong with a link from `source` on `layer` to `target` (`None`:
/// not an element), or `None` if nothing is.
fn link_problem(source: &Element, layer: usize, t: ItemPointer, target: Option<&Element>) -> Option<String> {
    match target {
        None => Some(format!("{} layer {layer} links to {}, not an element", at(source.tid), at(t))),
        // From a live element: a scan could follow it into a reused element.
        // (From a deleted one it matters only if scans reach that element:
        // see the reachability check; VACUUM frees unreachable elements page
        // by page.)
        Some(x) if x.free() && !source.deleted() && !source.free() => {
            Some(format!("{} links to free element {}", at(source.tid), at(t)))
        }
        Some(x) if x.free() => None,
        Some(x) if (x.level as usize) < layer => {
            Some(format!("{} layer {layer} links to {} of level {}", at(source.tid), at(t), x.level))
        }
        Some(_) => None,
    }
}

/// [`link_problem`] as the pages hold it now: the link still there, source
/// and target re-read. The problem a concurrent insert or VACUUM made only
/// for the moment of the first reading is gone here.
fn link_problem_now(rel: &IndexRel, meta: &Meta, source: &Element, layer: usize, t: ItemPointer) -> Option<String> {
    let source = live_element(rel, meta, source.tid)?;
    if source.free() || !still_links(rel, meta.m as usize, &source, layer, t) {
        return None;
    }
    link_problem(&source, layer, t, live_element(rel, meta, t).as_ref())
}

/// The neighbor-list check over every element that is not free.
fn check_lists(rel: &IndexRel, meta: &Meta, graph: &Graph) -> Row {
    let m = meta.m as usize;
    let mut p = Problems::default();
    let mut deleted_links = 0usize;
    let (mut links0, mut spare0) = (0usize, 0usize);
    // Links that look wrong in the collected state: (source, layer, target).
    let mut suspects: Vec<(Element, usize, ItemPointer)> = Vec::new();
    // Elements in the order of their neighbor items, so each page is read
    // about once.
    let mut order: Vec<u32> = Vec::new();
    try_reserve(&mut order, graph.elements.len(), "hnsw_index_check");
    order.extend((0..graph.elements.len() as u32).filter(|&i| !graph.elements[i as usize].free()));
    order.sort_by_key(|&i| graph.elements[i as usize].neighbors);
    for i in order {
        let e = graph.elements[i as usize];
        let collected = graph.neighbor_items.binary_search_by(|x| x.0.cmp(&e.neighbors)).ok();
        let mut e = e;
        if !collected.is_some_and(|n| graph.neighbor_items[n].1 >= e.level) {
            // Missing or too small when collected: as the pages hold it now
            // (an insert may have written it, or reused the element, since).
            let Some(now) = live_element(rel, meta, e.tid).filter(|x| !x.free()) else { continue };
            e = now;
            match live_neighbor_level(rel, m, e.neighbors) {
                None => {
                    p.add(format!("element {} points at a missing neighbor item", at(e.tid)));
                    continue;
                }
                Some(room) if room < e.level => {
                    p.add(format!("element {} has level {} but room for {room}", at(e.tid), e.level));
                    continue;
                }
                Some(_) => {}
            }
        }
        read_lists(rel, m, e.neighbors, e.level as usize, |layer, list, spare| {
            let max = if layer == 0 { 2 * m } else { m };
            if list.len() > max {
                p.add(format!("{} layer {layer}: {} links > {max}", at(e.tid), list.len()));
            }
            if (1..list.len()).any(|i| list[..i].contains(&list[i])) {
                p.add(format!("{} layer {layer} links to the same element twice", at(e.tid)));
            }
            if layer == 0 {
                (links0, spare0) = (links0 + list.len(), spare0 + spare);
            }
            for &t in list {
                let target = graph.element(t).map(|(_, x)| x);
                if link_problem(&e, layer, t, target).is_some() {
                    try_reserve(&mut suspects, 1, "hnsw_index_check");
                    suspects.push((e, layer, t));
                } else {
                    deleted_links += target.is_some_and(|x| x.deleted() && !x.free()) as usize;
                }
            }
        });
    }
    // Findings against what was collected, settled against the pages now
    // (after the list pass, so no page is locked here).
    for (e, layer, t) in suspects {
        pgrx::check_for_interrupts!();
        if let Some(problem) = link_problem_now(rel, meta, &e, layer, t) {
            p.add(problem);
        }
    }
    p.row(
        "neighbor lists",
        format!(
            "within bounds, pointing at elements that are not free; {deleted_links} links to deleted elements; \
             {links0} layer-0 links, {spare0} of them spare"
        ),
    )
}

const REACHABLE: &str = "reachable from entry point";

/// What the reachability walk found, settled into a report row once the heap
/// part has read which rows are visible ([`Reachability::row`]).
#[derive(Default)]
struct Reachability {
    problems: Problems,
    /// Live elements the walk did not reach, each with its number of heap
    /// TIDs, which follow one another in `unreachable_tids`.
    unreachable: Vec<(ItemPointer, u8)>,
    unreachable_tids: Vec<ItemPointer>,
    live: usize,
    /// Elements (live or deleted) the walk reached only through spare links.
    spare_only: usize,
    note: &'static str,
}

impl Reachability {
    /// The report row. An unreachable element whose heap TIDs all belong to
    /// rows that are not visible (`visible` answers from the heap part; an
    /// insert killed before its links were written and its transaction
    /// committed leaves such an element, and a VACUUM that skips index
    /// vacuuming keeps it) costs nothing: no query has a row to find there,
    /// and the next VACUUM that cleans the index frees it. It is counted in
    /// the detail; any other unreachable element fails the check. `visible`
    /// is `None` when the heap part was skipped (every unreachable element
    /// fails).
    fn row(mut self, visible: Option<&dyn Fn(ItemPointer) -> bool>) -> Row {
        let mut dead_rows = 0usize;
        let mut tids = self.unreachable_tids.as_slice();
        for &(tid, count) in &self.unreachable {
            let (heap_tids, rest) = tids.split_at((count as usize).min(tids.len()));
            tids = rest;
            match visible {
                Some(visible) if !heap_tids.iter().any(|&t| visible(t)) => dead_rows += 1,
                _ => self.problems.add(format!("element {} unreachable", at(tid))),
            }
        }
        let live = self.live - dead_rows;
        let spare_note = match self.spare_only {
            0 => String::new(),
            // Reachable, but an insert may take a spare link's slot; the
            // next VACUUM that walks the index gives them a selected link.
            n => format!("; {n} reached only through spare links"),
        };
        let detail = match dead_rows {
            0 => format!("all {live} live elements{}{spare_note}", self.note),
            n => format!(
                "all {live} live elements of visible rows{}; {n} unreachable element(s) only for rows not visible \
                 (an insert that did not commit; VACUUM frees them){spare_note}",
                self.note
            ),
        };
        self.problems.row(REACHABLE, detail)
    }

    /// Bytes held, for the check's memory budget.
    fn bytes(&self) -> usize {
        self.unreachable.capacity() * std::mem::size_of::<(ItemPointer, u8)>()
            + self.unreachable_tids.capacity() * std::mem::size_of::<ItemPointer>()
    }

    /// Records unreachable element `t`, reading its heap TIDs from its item
    /// (none if it cannot be read: `collect` reported that).
    fn add_unreachable(&mut self, rel: &IndexRel, meta: &Meta, t: ItemPointer) {
        try_reserve(&mut self.unreachable, 1, "hnsw_index_check");
        try_reserve(&mut self.unreachable_tids, page::MAX_HEAP_TIDS, "hnsw_index_check");
        let tids = &mut self.unreachable_tids;
        let count = rel.read(t.block, |p| {
            let item = PageRef::new(p, PageKind::Graph).and_then(|r| r.item(t.offset));
            let element = item.and_then(|item| ElementRef::new(item, &meta.codec, meta.m as usize));
            element.map_or(0, |e| {
                let n = e.heap_tid_count().min(page::MAX_HEAP_TIDS);
                tids.extend((0..n).map(|i| e.heap_tid(i)));
                n
            })
        });
        self.unreachable.push((t, count as u8));
    }
}

/// One walk over layer-0 links from the entry point, reading the meta page
/// and every list as the pages hold them now.
#[derive(Default)]
struct Walk {
    /// Collected elements reached, a bitmap in `graph.elements` order.
    seen: Vec<u64>,
    /// Elements met that the pass did not collect (or collected free):
    /// inserted or reused since, and whether the walk reached them. Node
    /// `graph.elements.len() + i` of the walk is `late[i]`.
    late: Vec<(Element, bool)>,
    late_index: rustc_hash::FxHashMap<ItemPointer, u32>,
    /// Elements reached only through spare links.
    spare_only: usize,
    /// Links to elements that were free when the walk met them:
    /// `(source, layer, target)`, settled by [`free_link_now`].
    free_links: Vec<(Element, usize, ItemPointer)>,
    /// The entry point is deleted (VACUUM will move it).
    entry_deleted: bool,
}

impl Walk {
    fn reached(&self, i: usize) -> bool {
        self.seen[i / 64] & (1 << (i % 64)) != 0
    }

    /// Bytes held, beyond the collected graph.
    fn bytes(&self) -> usize {
        self.seen.capacity() * 8
            + self.late.capacity() * std::mem::size_of::<(Element, bool)>()
            + self.late_index.capacity() * 16
            + self.free_links.capacity() * std::mem::size_of::<(Element, usize, ItemPointer)>()
    }
}

/// The walk of [`check_reachable`]: through live and deleted (not free)
/// elements, as scans walk, first over selected links, then on from the
/// spare ones. `Err` names a problem with the entry point (`Ok(None)`: the
/// graph is empty). Nodes are `u32`s: an index into `graph.elements`, or
/// past its end into [`Walk::late`].
fn walk(rel: &IndexRel, meta: &Meta, graph: &Graph) -> Result<Option<Walk>, String> {
    let (m, n) = (meta.m as usize, graph.elements.len());
    let mut w = Walk::default();
    let words = n.div_ceil(64);
    try_reserve(&mut w.seen, words, "hnsw_index_check");
    w.seen.resize(words, 0);
    // The element at `t` as the walk sees it and its node number:
    // collected and not free, or else as its page holds it now (a free one
    // gets no node number).
    let lookup = |w: &mut Walk, t: ItemPointer| -> Option<(u32, Element)> {
        if let Some((j, y)) = graph.element(t).filter(|(_, y)| !y.free()) {
            return Some((j as u32, *y));
        }
        if let Some(&k) = w.late_index.get(&t) {
            return Some((k, w.late[k as usize - n].0));
        }
        let y = live_element(rel, meta, t)?;
        if y.free() {
            return Some((u32::MAX, y));
        }
        if w.late_index.try_reserve(1).is_err() {
            raise(PgSqlErrorCode::ERRCODE_OUT_OF_MEMORY, "out of memory in hnsw_index_check".to_string());
        }
        try_reserve(&mut w.late, 1, "hnsw_index_check");
        let k = (n + w.late.len()) as u32;
        w.late.push((y, false));
        w.late_index.insert(t, k);
        Some((k, y))
    };
    // Marks node `k` reached; whether it was not before.
    let mark = |w: &mut Walk, k: u32| {
        let k = k as usize;
        if k < n {
            let new = !w.reached(k);
            w.seen[k / 64] |= 1 << (k % 64);
            new
        } else {
            !std::mem::replace(&mut w.late[k - n].1, true)
        }
    };
    // The entry point as it is now, read twice if it looks wrong (it may
    // have moved between the meta page and the element).
    let mut entry = Err(String::new());
    for _ in 0..2 {
        let now = rel.read(page::META_BLOCK, Meta::read_page).map_err(|e| e.0)?;
        let Some((tid, level)) = now.entry else { return Ok(None) };
        entry = match lookup(&mut w, tid) {
            Some((k, e)) if !e.free() && e.level as u16 == level => Ok((k, e)),
            _ => Err(format!("entry point {} level {level} is not an element of that level", at(tid))),
        };
        if entry.is_ok() {
            break;
        }
    }
    let (start, start_element) = entry?;
    w.entry_deleted = start_element.deleted();
    mark(&mut w, start);
    let mut queue: Vec<u32> = vec![start];
    // Layer-0 spare links met during the walk over selected links.
    let mut deferred: Vec<u32> = Vec::new();
    let mut through_spare = false;
    let mut links: Vec<(usize, ItemPointer, bool)> = Vec::new();
    loop {
        while let Some(k) = queue.pop() {
            pgrx::check_for_interrupts!();
            let x = if (k as usize) < n { graph.elements[k as usize] } else { w.late[k as usize - n].0 };
            links.clear();
            read_lists(rel, m, x.neighbors, x.level as usize, |layer, list, spare| {
                let selected = list.len() - spare;
                links.extend(list.iter().enumerate().map(|(i, &t)| (layer, t, i >= selected)));
            });
            for &(layer, t, spare) in &links {
                let Some((j, y)) = lookup(&mut w, t) else { continue }; // not an element: the list check reports it
                if y.free() {
                    try_reserve(&mut w.free_links, 1, "hnsw_index_check");
                    w.free_links.push((x, layer, t));
                } else if layer == 0 && spare {
                    try_reserve(&mut deferred, 1, "hnsw_index_check");
                    deferred.push(j);
                } else if layer == 0 && mark(&mut w, j) {
                    w.spare_only += through_spare as usize;
                    try_reserve(&mut queue, 1, "hnsw_index_check");
                    queue.push(j);
                }
            }
            within_budget(graph.bytes() + w.bytes() + 4 * (queue.capacity() + deferred.capacity()));
        }
        through_spare = true;
        for j in std::mem::take(&mut deferred) {
            if mark(&mut w, j) {
                w.spare_only += 1;
                try_reserve(&mut queue, 1, "hnsw_index_check");
                queue.push(j);
            }
        }
        if queue.is_empty() {
            break;
        }
    }
    Ok(Some(w))
}

/// Reachability: every live element reached by a walk over layer-0 links
/// from the entry point, through live and deleted (not free) elements, as
/// scans walk: first over selected links, then on from the spare ones (the
/// elements it reaches only then are counted: an insert may take a spare
/// link's slot). Layer 0 is where every search ends, so an element
/// reachable only through upper layers is missed by nearly every query: it
/// counts as unreachable (unless it holds only rows that are not visible,
/// see [`Reachability::row`]). A free element that an element of the walk
/// links to (on any layer) is a failure: a scan could follow that link into
/// a reused element.
///
/// The walk reads the pages as they are now while inserts and VACUUM go
/// on; elements it misses are looked for by a second walk after the
/// inserts in flight have finished, and count only if that one misses them
/// too and they are still live.
fn check_reachable(rel: &IndexRel, meta: &Meta, graph: &Graph, live: usize) -> Reachability {
    let mut r = Reachability { live, ..Default::default() };
    let first = match walk(rel, meta, graph) {
        Ok(Some(w)) => w,
        Ok(None) => {
            if live > 0 && live_element_count(rel, meta, graph) > 0 {
                r.problems.add(format!("no entry point but {live} live elements"));
            }
            r.note = " (empty graph)";
            return r;
        }
        Err(e) => {
            r.problems.add(e);
            return r;
        }
    };
    let mut missed: Vec<usize> = Vec::new();
    for (i, x) in graph.elements.iter().enumerate() {
        if x.flags == 0 && !first.reached(i) {
            try_reserve(&mut missed, 1, "hnsw_index_check");
            missed.push(i);
        }
    }
    let mut last = first;
    if !missed.is_empty() {
        rel.wait_for_inserts();
        match walk(rel, meta, graph) {
            Ok(Some(second)) => {
                missed.retain(|&i| !second.reached(i));
                last.free_links.extend(second.free_links.iter().copied());
                (last.spare_only, last.entry_deleted) = (second.spare_only, second.entry_deleted);
            }
            Ok(None) => missed.clear(), // emptied meanwhile: nothing is live
            Err(e) => r.problems.add(e),
        }
    }
    r.spare_only = last.spare_only;
    for &(x, layer, t) in &last.free_links {
        pgrx::check_for_interrupts!();
        if free_link_now(rel, meta, &x, layer, t) {
            r.problems.add(format!("free element {} is reachable (linked from {})", at(t), at(x.tid)));
        }
    }
    for i in missed {
        pgrx::check_for_interrupts!();
        let tid = graph.elements[i].tid;
        if live_element(rel, meta, tid).is_some_and(|x| x.flags == 0) {
            r.add_unreachable(rel, meta, tid);
            within_budget(graph.bytes() + r.bytes());
        }
    }
    if last.entry_deleted {
        r.note = " (the entry point is deleted: VACUUM will move it)";
    }
    r
}

/// Whether element `x` (met by the walk, so reachable) still links on
/// `layer` to `t` and `t` is still free, re-read from the pages.
fn free_link_now(rel: &IndexRel, meta: &Meta, x: &Element, layer: usize, t: ItemPointer) -> bool {
    live_element(rel, meta, x.tid).is_some_and(|x| !x.free() && still_links(rel, meta.m as usize, &x, layer, t))
        && live_element(rel, meta, t).is_some_and(|t| t.free())
}

/// Hash of a key blob, to compare an element's keys with its directory
/// entry's without keeping either.
fn keys_hash(keys: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    keys.hash(&mut h);
    h.finish()
}

/// The key directory of an index with filter columns: every directory page
/// on the chain from the meta page, and every live element with an entry
/// of its version and keys. An element without one counts only if it is
/// still so after in-flight inserts finish (an insert writes the entry
/// after the element) and the directory, read again, still lacks it.
///
/// An element whose rows the heap does not show (`visible`, from the heap
/// part, when it could run) is left out: an insert that failed between the
/// element and its entry leaves one until VACUUM frees it. Pages not on the
/// chain are reported in the detail, not as a failure.
fn check_directory(
    rel: &IndexRel,
    meta: &Meta,
    graph: &mut Graph,
    visible: Option<&dyn Fn(ItemPointer) -> bool>,
) -> Row {
    let name = "key directory";
    if meta.keys_head.is_none() {
        let detail = if graph.directory_pages.is_empty() {
            "none (an index without filter columns, or built before format 6: REINDEX adds one)"
        } else {
            "directory pages but no chain on the meta page"
        };
        return (name.into(), graph.directory_pages.is_empty(), detail.into());
    }
    let mut problems = Problems::default();
    let chain = super::directory::pages(rel, meta);
    let mut on_chain = chain.clone();
    on_chain.sort_unstable();
    // A page not (yet) on the chain: an insert between extending the index
    // and linking the page, or one a crash left there. Its entries do not
    // count (no scan reads them).
    let unlinked: Vec<u32> =
        graph.directory_pages.iter().copied().filter(|b| on_chain.binary_search(b).is_err()).collect();
    if !unlinked.is_empty() {
        graph.directory.clear();
        for &b in &chain {
            rel.read(b, |p| {
                let Ok(r) = PageRef::new(p, PageKind::Graph) else { return };
                for offset in 1..=r.max_offset() {
                    if let Ok(e) = r.item(offset).and_then(page::DirectoryEntry::read) {
                        graph.directory.push((e.element, e.version, keys_hash(e.keys)));
                    }
                }
            });
        }
    }
    graph.directory.sort_unstable();
    let has = |d: &[(ItemPointer, u8, u64)], k: &(ItemPointer, u8, u64)| d.binary_search(k).is_ok();
    let mut missing: Vec<(ItemPointer, u8, u64)> =
        graph.keyed.iter().filter(|k| !has(&graph.directory, k)).copied().collect();
    if !missing.is_empty() {
        rel.wait_for_inserts();
        let mut again = Vec::new();
        let wanted: rustc_hash::FxHashSet<(ItemPointer, u8)> = missing.iter().map(|k| (k.0, k.1)).collect();
        for &b in &super::directory::pages(rel, meta) {
            rel.read(b, |p| {
                let Ok(r) = PageRef::new(p, PageKind::Graph) else { return };
                for offset in 1..=r.max_offset() {
                    if let Ok(e) = r.item(offset).and_then(page::DirectoryEntry::read) {
                        if wanted.contains(&(e.element, e.version)) {
                            again.push((e.element, e.version, keys_hash(e.keys)));
                        }
                    }
                }
            });
        }
        again.sort_unstable();
        missing.retain(|k| {
            !has(&again, k)
                && live_element(rel, meta, k.0).is_some_and(|e| e.flags == 0)
                && super::directory::is_current(rel, &meta.codec, meta.m as usize, k.0, k.1)
                && visible.is_none_or(|v| element_heap_tids(rel, meta, k.0).into_iter().any(v))
        });
    }
    for k in &missing {
        problems.add(format!("element {} (version {}) has no directory entry with its keys", at(k.0), k.1));
    }
    let live: rustc_hash::FxHashSet<(ItemPointer, u8)> = graph.keyed.iter().map(|k| (k.0, k.1)).collect();
    let stale = graph.directory.iter().filter(|d| !live.contains(&(d.0, d.1))).count();
    let unlinked = if unlinked.is_empty() {
        String::new()
    } else {
        format!("; {} page(s) not on the chain, ignored", unlinked.len())
    };
    problems.row(
        name,
        format!(
            "{} entries on {} pages for {} live elements ({stale} for freed, deleted or reused elements, dropped by VACUUM){unlinked}",
            graph.directory.len(),
            chain.len(),
            graph.keyed.len()
        ),
    )
}

/// The heap TIDs element `t` holds now (none if it is not an element).
fn element_heap_tids(rel: &IndexRel, meta: &Meta, t: ItemPointer) -> Vec<ItemPointer> {
    if t.block == page::META_BLOCK || t.block >= rel.nblocks() {
        return Vec::new();
    }
    rel.read(t.block, |p| {
        let Ok(item) = PageRef::new(p, PageKind::Graph).and_then(|r| r.item(t.offset)) else { return Vec::new() };
        if !page::is_element_item(item) {
            return Vec::new();
        }
        ElementRef::new(item, &meta.codec, meta.m as usize)
            .map(|e| (0..e.heap_tid_count()).map(|i| e.heap_tid(i)).collect())
            .unwrap_or_default()
    })
}

/// How many collected live elements are still live now (for the empty
/// graph's case: VACUUM may have emptied the index since they were read).
fn live_element_count(rel: &IndexRel, meta: &Meta, graph: &Graph) -> usize {
    graph
        .elements
        .iter()
        .filter(|x| x.flags == 0)
        .filter(|x| live_element(rel, meta, x.tid).is_some_and(|y| y.flags == 0))
        .count()
}

/// Opens the heap part's cursor over the rows index `index_oid` takes (see
/// [`check_heap`]) and returns its name, `None` if the index's catalog row
/// was not found. Opened before the graph is read: the cursor's snapshot
/// then sees only rows whose index entries were written before that.
fn open_heap_cursor(index_oid: pg_sys::Oid, codec: &Codec) -> Option<String> {
    let HeapTarget { table, key, predicate } = heap_target(index_oid)?;
    // Zero vectors are not indexed under cosine distance.
    let filter = match (codec.kind(), codec.normalizes()) {
        (_, false) => String::new(),
        (Kind::Vector, true) => format!(" AND {}.vector_norm({key}) OPERATOR(pg_catalog.>) 0", extension_schema()),
        (_, true) => format!(" AND {}.l2_norm({key}) OPERATOR(pg_catalog.>) 0", extension_schema()),
    };
    let predicate = predicate.map_or(String::new(), |p| format!(" AND ({p})"));
    let sql = format!("SELECT ctid FROM {table} WHERE ({key}) IS NOT NULL{filter}{predicate}");
    Some(Spi::connect(|c| c.open_cursor(sql.as_str(), &[]).detach_into_name()))
}

/// Every live heap row indexed exactly once: the index's heap TIDs sorted,
/// the heap's rows read through a cursor in chunks. The rows are those the
/// index takes: its column or expression not null (and, under cosine
/// distance, not a zero vector), and for a partial index its predicate
/// true. Also returns which of the index's heap TIDs (`graph.heap_tids`,
/// now sorted and deduplicated) are rows the check's snapshot sees: a bitmap
/// in their order (`None` only if the index's catalog row was not found).
fn check_heap(cursor: Option<String>, graph: &mut Graph) -> (Row, Option<Vec<u64>>) {
    let name = "heap rows indexed once".to_string();
    let Some(cursor) = cursor else {
        return ((name, false, "skipped: the index's pg_index row was not found".into()), None);
    };
    let tids = &mut graph.heap_tids;
    tids.sort_unstable();
    let mut p = Problems::default();
    for w in tids.chunk_by(|a, b| a == b).filter(|w| w.len() > 1) {
        p.add(format!("row {} is indexed {} times", at(w[0]), w.len()));
    }
    tids.dedup();
    let mut found: Vec<u64> = Vec::new();
    let words = tids.len().div_ceil(64);
    try_reserve(&mut found, words, "hnsw_index_check");
    found.resize(words, 0);
    let mut heap_rows = 0usize;
    // One SPI session per chunk, so each chunk's rows are freed before the next.
    loop {
        pgrx::check_for_interrupts!();
        let rows: Vec<ItemPointer> = Spi::connect(|c| {
            let mut cursor = c.find_cursor(&cursor).expect("the check's cursor is open");
            let rows: Vec<ItemPointer> = cursor
                .fetch(10_000)
                .map(|t| {
                    t.filter_map(|r| r.get::<pg_sys::ItemPointerData>(1).ok().flatten())
                        .map(|t| from_pg_tid(&t))
                        .collect()
                })
                .unwrap_or_default();
            if !rows.is_empty() {
                cursor.detach_into_name();
            }
            rows
        });
        if rows.is_empty() {
            break;
        }
        heap_rows += rows.len();
        for t in rows {
            match tids.binary_search(&t) {
                Ok(i) => found[i / 64] |= 1 << (i % 64),
                Err(_) => p.add(format!("row {} is not indexed", at(t))),
            }
        }
    }
    let extra = (0..tids.len()).filter(|&i| found[i / 64] & (1 << (i % 64)) == 0).count();
    (
        p.row(&name, format!("{heap_rows} rows; {extra} index entries for rows not visible (not yet vacuumed)")),
        Some(found),
    )
}

/// Checks the on-disk invariants of an `hnsw` index and returns one row per
/// check (`check_name`, `passed`, `detail`). Only the index's owner (or a
/// superuser) may run it (SQLSTATE 42501 otherwise).
#[pg_extern(parallel_unsafe)]
fn hnsw_index_check(
    index: PgRelation,
) -> TableIterator<'static, (name!(check_name, String), name!(passed, bool), name!(detail, String))> {
    // SAFETY: checking ownership of an existing relation for the current user.
    if !unsafe { crate::compat::owns_relation(index.oid(), pg_sys::GetUserId()) } {
        raise(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, format!("must be owner of index {}", index.name()));
    }
    // SAFETY: PgRelation holds an open relation; rd_rel is valid.
    let (relkind, relam) = unsafe { ((*index.rd_rel).relkind as u8, (*index.rd_rel).relam) };
    // SAFETY: get_am_name looks up the catalog and returns a palloc'd name or null.
    let am = unsafe {
        let p = pg_sys::get_am_name(relam);
        if p.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    if relkind != pg_sys::RELKIND_INDEX || am != "hnsw" {
        raise(PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE, format!("\"{}\" is not an hnsw index", index.name()));
    }
    let rel = IndexRel::new(index.as_ptr());
    let mut rows = Vec::new();
    if rel.nblocks() == 0 {
        rows.push(("meta page".into(), false, "the index has no pages".into()));
        return TableIterator::new(rows);
    }
    let meta = match rel.read(page::META_BLOCK, Meta::read_page) {
        Ok(m) => m,
        Err(e) => {
            rows.push(("meta page".into(), false, e.0));
            return TableIterator::new(rows);
        }
    };
    let cursor = open_heap_cursor(index.oid(), &meta.codec);
    rows.push((
        "meta page".into(),
        true,
        format!("{:?} m {} ef_construction {}", meta.codec, meta.m, meta.ef_construction),
    ));
    let mut graph = Graph::default();
    let mut pages = Problems::default();
    let key_columns = super::key_datum::key_columns(rel.raw()).len();
    collect(&rel, &meta, key_columns, &mut graph, &mut pages);
    let pause = super::vacuum::DEBUG_CHECK_PAUSE_LOCK.get();
    if pause > 0 {
        super::vacuum::debug_wait_for_advisory_lock(pause);
    }
    let live = graph.elements.iter().filter(|e| e.flags == 0).count();
    let free = graph.elements.iter().filter(|e| e.free()).count();
    let deleted = graph.elements.len() - live - free;
    rows.push(pages.row(
        "pages and items",
        format!(
            "{} pages, {} elements ({live} live, {deleted} deleted, {free} free)",
            rel.nblocks(),
            graph.elements.len()
        ),
    ));
    rows.push(check_lists(&rel, &meta, &graph));
    let reachability = check_reachable(&rel, &meta, &graph, live);
    let (heap, found) = check_heap(cursor, &mut graph);
    let tids = std::mem::take(&mut graph.heap_tids);
    let visible = |t: ItemPointer| {
        let found = found.as_deref().unwrap_or_default();
        tids.binary_search(&t).is_ok_and(|i| found.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0))
    };
    let visible = found.is_some().then_some(&visible as &dyn Fn(ItemPointer) -> bool);
    let directory = check_directory(&rel, &meta, &mut graph, visible);
    rows.push(directory);
    rows.push(reachability.row(visible));
    rows.push(heap);
    TableIterator::new(rows)
}
