//! `ambuild` and `ambuildempty`: `CREATE INDEX ... USING hnsw`.
//!
//! The build path:
//! 1. scan the heap with the table AM's `index_build_range_scan`, inserting
//!    each value into a [`MemoryGraph`] in its codec's working form
//!    ([`super::prepare_datum`]: normalised for cosine; NULLs and, for
//!    cosine, zero vectors are not indexed);
//! 2. if the graph outgrows `maintenance_work_mem`, write it out and go on
//!    with on-disk inserts (slower; a NOTICE says so, as pgvector does);
//! 3. lay the graph out on pages ([`write_graph`]): element and neighbor items
//!    packed in insertion order, then the meta page with the entry point;
//! 4. WAL-log every page once as a full image.

use pgrx::prelude::*;
use pgrx::{pg_sys, PgMemoryContexts, PgSqlErrorCode};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::codec::Codec;
use super::graph::{random_level, MemoryGraph, Params};
use super::page::{
    self, encode_element, encode_neighbors, item_footprint, ItemPointer, Meta, PageImage, PageKind, EMPTY_PAGE_SPACE,
};
use super::storage::{from_pg_tid, IndexRel};
use super::{index_codec, insert, options, prepare_datum, PROGRESS_PHASE_LOAD, PROGRESS_PHASE_WRITE};
use crate::error::raise;

/// Seed of the level draws during a build, so the same rows in the same
/// order give the same graph (inserts after the build draw from entropy).
const BUILD_SEED: u64 = 0x5eed_0f_4e5f;

/// Everything the heap-scan callback needs.
struct BuildState {
    rel: IndexRel,
    codec: Codec,
    params: Params,
    max_level: usize,
    graph: Option<MemoryGraph<Codec>>,
    memory_limit: usize,
    rng: SmallRng,
    index_tuples: f64,
    tmp: PgMemoryContexts,
}

fn progress(param: u32, value: i64) {
    // SAFETY: plain progress-reporting call on the current backend.
    unsafe { pg_sys::pgstat_progress_update_param(param as i32, value) }
}

/// The meta page contents of an index of `codec` elements.
fn meta_for(codec: Codec, params: Params, entry: Option<(ItemPointer, u16)>) -> Meta {
    Meta {
        codec,
        m: params.m as u32,
        ef_construction: params.ef_construction as u32,
        entry,
        free_hint: None,
        healed_blocks: 0,
    }
}

/// `ambuild`: builds the index over every row of `heap`.
#[pg_guard]
pub unsafe extern "C-unwind" fn ambuild(
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
    index_info: *mut pg_sys::IndexInfo,
) -> *mut pg_sys::IndexBuildResult {
    let rel = IndexRel::new(index);
    if rel.nblocks() != 0 {
        raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("index \"{}\" already contains data", rel.name()));
    }
    let params = options::params_of(index);
    let codec = index_codec(index);
    let max_level = page::max_level(params.m);
    // SAFETY: reading a GUC variable of this backend.
    let memory_limit = unsafe { pg_sys::maintenance_work_mem } as usize * 1024;
    let mut state = BuildState {
        rel,
        codec,
        params,
        max_level,
        graph: Some(MemoryGraph::new(codec, params, max_level)),
        memory_limit,
        rng: SmallRng::seed_from_u64(BUILD_SEED),
        index_tuples: 0.0,
        tmp: PgMemoryContexts::new("hnsw build tuple"),
    };
    progress(pg_sys::PROGRESS_CREATEIDX_SUBPHASE, PROGRESS_PHASE_LOAD);
    // SAFETY: heap and index are open and locked by CREATE INDEX; the
    // callback receives `state` back as its last argument. The scan returns
    // the number of live heap tuples it saw (all of them, not only those a
    // partial index's predicate admits): what PostgreSQL records as the
    // table's reltuples.
    let heap_tuples = unsafe {
        let am = (*heap).rd_tableam;
        let scan = (*am).index_build_range_scan.expect("table AM without index_build_range_scan");
        scan(
            heap,
            index,
            index_info,
            true,
            false,
            true,
            0,
            pg_sys::InvalidBlockNumber,
            Some(build_callback),
            &mut state as *mut BuildState as *mut std::ffi::c_void,
            std::ptr::null_mut(),
        )
    };
    if let Some(graph) = state.graph.take() {
        progress(pg_sys::PROGRESS_CREATEIDX_SUBPHASE, PROGRESS_PHASE_WRITE);
        write_graph(&state.rel, &graph);
    }
    // SAFETY: palloc0 returns zeroed memory for the result struct.
    unsafe {
        let result = pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexBuildResult>()) as *mut pg_sys::IndexBuildResult;
        (*result).heap_tuples = heap_tuples;
        (*result).index_tuples = state.index_tuples;
        result
    }
}

/// Called by the table AM for each heap tuple to index.
#[pg_guard]
unsafe extern "C-unwind" fn build_callback(
    _index: pg_sys::Relation,
    tid: pg_sys::ItemPointer,
    values: *mut pg_sys::Datum,
    isnull: *mut bool,
    _tuple_is_alive: bool,
    state: *mut std::ffi::c_void,
) {
    // SAFETY: `state` is the BuildState passed to index_build_range_scan;
    // values/isnull have one entry per index column (one column here).
    let (state, datum, null, tid) = unsafe { (&mut *(state as *mut BuildState), *values, *isnull, from_pg_tid(&*tid)) };
    if null {
        return;
    }
    let codec = state.codec;
    // SAFETY: a non-null datum of the indexed column; detoasted copies go
    // to the per-tuple context, reset right after.
    let prepared = state.tmp.switch_to(|_| unsafe { prepare_datum(&codec, datum) });
    state.tmp.reset();
    let Some(vector) = prepared else {
        return;
    };
    let level = random_level(state.rng.gen::<f64>(), state.params.level_multiplier(), state.max_level);
    match state.graph.as_mut() {
        Some(graph) => {
            graph.insert(&vector, tid.pack(), level);
            if graph.memory_bytes() > state.memory_limit {
                spill_to_disk(state);
            }
        }
        None => insert::insert_prepared(&state.rel, &vector, tid, level),
    }
    state.index_tuples += 1.0;
    if (state.index_tuples as u64) % 1000 == 0 {
        progress(pg_sys::PROGRESS_CREATEIDX_TUPLES_DONE, state.index_tuples as i64);
    }
}

/// Writes the in-memory graph out and switches the build to on-disk inserts.
fn spill_to_disk(state: &mut BuildState) {
    let graph = state.graph.take().expect("graph in memory");
    pgrx::ereport!(
        NOTICE,
        PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
        format!("hnsw graph no longer fits into maintenance_work_mem after {} tuples", state.index_tuples as u64),
        "Building will take significantly more time. Increase maintenance_work_mem to speed up builds."
    );
    write_graph(&state.rel, &graph);
}

/// Where each element's two items go: `(element item, neighbor item)`.
///
/// Element items fill pages in insertion order; each neighbor item goes to
/// the first earlier page with room (else the current one), so the space an
/// element item cannot use at the end of a page is filled with neighbor
/// items instead of being wasted.
fn place(graph: &MemoryGraph<Codec>, m: usize) -> Vec<(ItemPointer, ItemPointer)> {
    struct Page {
        free: usize,
        items: u16,
    }
    let mut pages: Vec<Page> = vec![Page { free: EMPTY_PAGE_SPACE, items: 0 }];
    let mut first_with_room = 0usize;
    let put = |pages: &mut Vec<Page>, index: usize, size: usize| {
        let p = &mut pages[index];
        p.free -= item_footprint(size);
        p.items += 1;
        ItemPointer { block: index as u32 + 1, offset: p.items }
    };
    let codec = *graph.space();
    (0..graph.len() as u32)
        .map(|id| {
            let element_size = page::element_item_size(codec.payload_len(graph.vector(id)));
            if item_footprint(element_size) > pages.last().unwrap().free {
                pages.push(Page { free: EMPTY_PAGE_SPACE, items: 0 });
            }
            let last = pages.len() - 1;
            let e = put(&mut pages, last, element_size);
            let size = page::neighbor_item_size(m, graph.level(id));
            while first_with_room < last && pages[first_with_room].free < item_footprint(page::neighbor_item_size(m, 0))
            {
                first_with_room += 1;
            }
            let target =
                (first_with_room..=last).find(|&i| pages[i].free >= item_footprint(size)).unwrap_or_else(|| {
                    pages.push(Page { free: EMPTY_PAGE_SPACE, items: 0 });
                    pages.len() - 1
                });
            let n = put(&mut pages, target, size);
            (e, n)
        })
        .collect()
}

/// Lays `graph` out on pages after the meta page and writes them, then
/// WAL-logs the whole index. The index must be empty.
pub fn write_graph(rel: &IndexRel, graph: &MemoryGraph<Codec>) {
    let (params, codec) = (graph.params(), *graph.space());
    let placement = place(graph, params.m);
    let entry = graph.entry().map(|(id, level)| (placement[id as usize].0, level as u16));
    let mut meta_page = PageImage::new(PageKind::Meta);
    meta_for(codec, params, entry).write_page(&mut meta_page.0);
    let meta_block = rel.append_unlogged_image(&meta_page.0);
    assert_eq!(meta_block, page::META_BLOCK, "meta page must be block 0");

    let npages = placement.iter().map(|(e, n)| e.block.max(n.block)).max().unwrap_or(0) as usize;
    let mut images: Vec<Box<PageImage>> = (0..npages).map(|_| PageImage::new(PageKind::Graph)).collect();
    let mut add = |at: ItemPointer, item: &[u8]| {
        let offset = page::add_item(&mut images[at.block as usize - 1].0, item);
        assert_eq!(offset, Some(at.offset), "placement matches page layout");
    };
    for id in 0..graph.len() as u32 {
        let (etid, ntid) = placement[id as usize];
        let tids: Vec<ItemPointer> = graph.heap_tids(id).iter().map(|&t| ItemPointer::unpack(t)).collect();
        add(etid, &encode_element(graph.level(id), &tids, ntid, &codec.encode(graph.vector(id))));
        let lists: Vec<Vec<ItemPointer>> = (0..=graph.level(id))
            .map(|layer| graph.neighbor_ids(id, layer).iter().map(|&n| placement[n as usize].0).collect())
            .collect();
        add(ntid, &encode_neighbors(params.m, graph.level(id), &lists));
    }
    for (i, image) in images.iter().enumerate() {
        let written = rel.append_unlogged_image(&image.0);
        assert_eq!(written as usize, i + 1, "pages are written in order");
    }
    rel.log_all_pages();
}

/// `ambuildempty`: the init fork of an unlogged index (an empty meta page).
#[pg_guard]
pub unsafe extern "C-unwind" fn ambuildempty(index: pg_sys::Relation) {
    let params = options::params_of(index);
    let meta = meta_for(index_codec(index), params, None);
    let rel = IndexRel::init_fork(index);
    let mut image = PageImage::new(PageKind::Meta);
    meta.write_page(&mut image.0);
    rel.append_unlogged_image(&image.0);
    rel.log_all_pages();
}
