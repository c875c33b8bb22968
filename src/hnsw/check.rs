//! `hnsw_index_check(regclass)`: verifies an index's on-disk invariants and
//! returns a report, one row per check. Problems, corrupt pages included,
//! are reported as failed checks, not raised: the function reads every byte
//! through the validating decoders of [`super::page`] and follows no link
//! before checking that it points at an element it has seen.
//!
//! Checks: the meta page; every page and item; element → neighbor item
//! links; neighbor lists (bounds, targets live and present on the layer);
//! every live element reachable from the entry point; every live heap row
//! indexed exactly once. The graph is checked under the graph lock in
//! exclusive mode, so in-flight inserts finish first.
//!
//! A page whose *header* is damaged is rejected by PostgreSQL's own buffer
//! manager when read ("invalid page in block N of relation ..."), which
//! raises that ERROR before this function sees the page.

use pgrx::prelude::*;
use pgrx::{pg_sys, PgRelation, PgSqlErrorCode};
use rustc_hash::{FxHashMap, FxHashSet};

use super::codec::{Codec, Kind};
use super::page::{self, ElementRef, ItemPointer, Meta, NeighborsRef, PageKind, PageRef};
use super::storage::{IndexRel, EXCLUSIVE_LOCK, SHARE_LOCK};
use crate::error::raise;

struct Element {
    level: usize,
    deleted: bool,
    free: bool,
    neighbors: ItemPointer,
    heap_tids: Vec<ItemPointer>,
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

/// The indexed table and column, for the heap check.
fn heap_target(index_oid: pg_sys::Oid) -> Option<(String, String)> {
    Spi::connect(|c| {
        let sql = format!(
            "SELECT i.indrelid::regclass::text, quote_ident(a.attname::text) FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
             WHERE i.indexrelid = {} AND i.indkey[0] <> 0",
            index_oid.to_u32()
        );
        let row = c.select(&sql, None, &[]).ok()?.first();
        Some((row.get::<String>(1).ok()??, row.get::<String>(2).ok()??))
    })
}

fn parse_ctid(s: &str) -> Option<ItemPointer> {
    let (b, o) = s.trim_matches(|c| c == '(' || c == ')').split_once(',')?;
    Some(ItemPointer { block: b.parse().ok()?, offset: o.parse().ok()? })
}

fn check_graph(rel: &IndexRel) -> (Vec<Row>, Option<FxHashMap<ItemPointer, Element>>) {
    let mut rows = Vec::new();
    if rel.nblocks() == 0 {
        rows.push(("meta page".into(), false, "the index has no pages".into()));
        return (rows, None);
    }
    let meta = match rel.read(page::META_BLOCK, Meta::read_page) {
        Ok(m) => {
            rows.push((
                "meta page".into(),
                true,
                format!("{:?} m {} ef_construction {}", m.codec, m.m, m.ef_construction),
            ));
            m
        }
        Err(e) => {
            rows.push(("meta page".into(), false, e.0));
            return (rows, None);
        }
    };
    let (codec, m) = (meta.codec, meta.m as usize);
    let mut elements: FxHashMap<ItemPointer, Element> = FxHashMap::default();
    let mut neighbor_items: FxHashMap<ItemPointer, Vec<Vec<ItemPointer>>> = FxHashMap::default();
    let mut pages = Problems::default();
    let nblocks = rel.nblocks();
    for block in 1..nblocks {
        rel.read(block, |p| {
            if page::page_is_new(p) {
                return;
            }
            let r = match PageRef::new(p, PageKind::Graph) {
                Ok(r) => r,
                Err(e) => return pages.add(format!("block {block}: {e}")),
            };
            for offset in 1..=r.max_offset() {
                let at = ItemPointer { block, offset };
                let item = match r.item(offset) {
                    Ok(i) => i,
                    Err(e) => {
                        pages.add(format!("block {block}: {e}"));
                        continue;
                    }
                };
                if page::is_element_item(item) {
                    match ElementRef::new(item, &codec, m).and_then(|e| {
                        codec.validate_deep(e.payload()).map(|_| e).map_err(|x| page::PageError(format!("{x:?}")))
                    }) {
                        Ok(e) => {
                            let heap_tids = (0..e.heap_tid_count()).map(|i| e.heap_tid(i)).collect();
                            let (level, deleted, free, neighbors) =
                                (e.level(), e.is_deleted(), e.is_free(), e.neighbors());
                            elements.insert(at, Element { level, deleted, free, neighbors, heap_tids });
                        }
                        Err(e) => pages.add(format!("element ({block},{offset}): {e}")),
                    }
                } else {
                    match NeighborsRef::new(item, m) {
                        Ok(n) => {
                            let lists = (0..=n.level())
                                .map(|layer| {
                                    let mut l = Vec::new();
                                    n.read_layer(layer, &mut l);
                                    l
                                })
                                .collect();
                            neighbor_items.insert(at, lists);
                        }
                        Err(e) => pages.add(format!("neighbor item ({block},{offset}): {e}")),
                    }
                }
            }
        });
    }
    let live = elements.values().filter(|e| !e.deleted).count();
    rows.push(pages.row("pages and items", format!("{} pages, {} elements ({live} live)", nblocks, elements.len())));

    let mut lists = Problems::default();
    for (at, e) in elements.iter().filter(|(_, e)| !e.deleted) {
        let Some(n) = neighbor_items.get(&e.neighbors) else {
            lists.add(format!("element ({},{}) points at a missing neighbor item", at.block, at.offset));
            continue;
        };
        if n.len() <= e.level {
            lists.add(format!(
                "element ({},{}) has level {} but room for {}",
                at.block,
                at.offset,
                e.level,
                n.len() - 1
            ));
            continue;
        }
        for (layer, list) in n.iter().enumerate().take(e.level + 1) {
            let max = if layer == 0 { 2 * m } else { m };
            if list.len() > max {
                lists.add(format!("({},{}) layer {layer}: {} links > {max}", at.block, at.offset, list.len()));
            }
            for t in list {
                match elements.get(t) {
                    None => lists.add(format!(
                        "({},{}) layer {layer} links to ({},{}), not an element",
                        at.block, at.offset, t.block, t.offset
                    )),
                    Some(x) if x.deleted || x.free => {
                        lists.add(format!("({},{}) links to deleted ({},{})", at.block, at.offset, t.block, t.offset))
                    }
                    Some(x) if x.level < layer => lists.add(format!(
                        "({},{}) layer {layer} links to ({},{}) of level {}",
                        at.block, at.offset, t.block, t.offset, x.level
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    rows.push(lists.row("neighbor lists", "within bounds, pointing at live elements".into()));

    // Reachability: breadth-first over every layer's links from the entry point.
    let mut reach = Problems::default();
    match meta.entry {
        None if live > 0 => reach.add(format!("no entry point but {live} live elements")),
        None => {}
        Some((entry, level)) => match elements.get(&entry) {
            Some(e) if !e.deleted && e.level == level as usize => {
                let mut seen: FxHashSet<ItemPointer> = FxHashSet::default();
                let mut queue = vec![entry];
                seen.insert(entry);
                while let Some(t) = queue.pop() {
                    let Some(e) = elements.get(&t) else { continue };
                    let Some(n) = neighbor_items.get(&e.neighbors) else { continue };
                    for list in n.iter().take(e.level + 1) {
                        for &x in list {
                            if elements.get(&x).is_some_and(|x| !x.deleted) && seen.insert(x) {
                                queue.push(x);
                            }
                        }
                    }
                }
                for (at, _) in elements.iter().filter(|(at, e)| !e.deleted && !seen.contains(at)) {
                    reach.add(format!("element ({},{}) unreachable", at.block, at.offset));
                }
            }
            _ => reach.add(format!(
                "entry point ({},{}) level {level} is not a live element of that level",
                entry.block, entry.offset
            )),
        },
    }
    rows.push(reach.row("reachable from entry point", format!("all {live} live elements")));
    (rows, Some(elements))
}

fn check_heap(index_oid: pg_sys::Oid, codec: &Codec, elements: &FxHashMap<ItemPointer, Element>) -> Row {
    let name = "heap rows indexed once".to_string();
    let Some((table, column)) = heap_target(index_oid) else {
        return (name, true, "skipped: expression index".into());
    };
    let mut count: FxHashMap<ItemPointer, u32> = FxHashMap::default();
    for e in elements.values().filter(|e| !e.deleted) {
        for t in &e.heap_tids {
            *count.entry(*t).or_default() += 1;
        }
    }
    // Zero vectors are not indexed under cosine distance.
    let filter = match (codec.kind(), codec.normalizes()) {
        (_, false) => String::new(),
        (Kind::Vector, true) => format!(" AND vector_norm({column}) > 0"),
        (_, true) => format!(" AND l2_norm({column}) > 0"),
    };
    let sql = format!("SELECT ctid::text FROM {table} WHERE {column} IS NOT NULL{filter}");
    let heap: Vec<ItemPointer> = Spi::connect(|c| {
        c.select(&sql, None, &[])
            .map(|rows| rows.filter_map(|r| r.get::<String>(1).ok().flatten().and_then(|s| parse_ctid(&s))).collect())
            .unwrap_or_default()
    });
    let mut p = Problems::default();
    for t in &heap {
        match count.get(t) {
            None => p.add(format!("row {:?} is not indexed", (t.block, t.offset))),
            Some(&n) if n > 1 => p.add(format!("row {:?} is indexed {n} times", (t.block, t.offset))),
            Some(_) => {}
        }
    }
    let extra = count.len().saturating_sub(heap.len());
    p.row(&name, format!("{} rows; {extra} index entries for rows not visible (not yet vacuumed)", heap.len()))
}

/// Checks the on-disk invariants of an `hnsw` index and returns one row per
/// check (`check_name`, `passed`, `detail`).
#[pg_extern(parallel_unsafe)]
fn hnsw_index_check(
    index: PgRelation,
) -> TableIterator<'static, (name!(check_name, String), name!(passed, bool), name!(detail, String))> {
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
    rel.lock_graph(EXCLUSIVE_LOCK);
    rel.lock_scans(SHARE_LOCK);
    let (mut rows, elements) = check_graph(&rel);
    rel.unlock_scans(SHARE_LOCK);
    rel.unlock_graph(EXCLUSIVE_LOCK);
    if let Some(elements) = elements {
        if let Ok(meta) = rel.read(page::META_BLOCK, Meta::read_page) {
            rows.push(check_heap(index.oid(), &meta.codec, &elements));
        }
    }
    TableIterator::new(rows)
}
