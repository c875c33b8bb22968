//! `ambuild` and `ambuildempty`: `CREATE INDEX ... USING hnsw`.
//!
//! The build path:
//! 1. decide how many threads insert into the graph: the leader (this
//!    backend's own thread) plus the parallel workers PostgreSQL would plan
//!    for this table ([`build_threads`]); workers are threads of this
//!    backend, never processes, and never call into PostgreSQL;
//! 2. scan the heap (`table_index_build_scan`, on the leader) and load each
//!    value into a [`ParallelInsert`] over a [`MemoryGraph`] in its codec's
//!    build form ([`super::prepare_datum`]: normalised for cosine; NULLs
//!    and, for cosine, zero vectors are not indexed; then
//!    [`Codec::build_form`]: a `vector` is held, and compared, as its
//!    half-precision payload); worker threads link
//!    loaded elements into the graph as they arrive, and the leader joins
//!    them once the scan is done (with one thread, the leader links each row
//!    right after loading it, so the graph depends only on the rows and
//!    their order);
//! 3. if the graph, the threads' scratch space and the page layout
//!    [`write_graph`] will need would outgrow `maintenance_work_mem`, stop
//!    loading, link what is loaded, write it out and go on with on-disk
//!    inserts on the leader (slower; a NOTICE says so, as pgvector does);
//! 4. lay the graph out on pages ([`write_graph`]): element and neighbor
//!    items packed in insertion order, written one page at a time, then the
//!    meta page with the entry point; WAL-log every page once as a full
//!    image.
//!
//! A cancel, `statement_timeout` or error in any phase unwinds through
//! [`Workers`]' `Drop`, which stops and joins the threads before the graph
//! is freed; the leader checks for interrupts between the elements it
//! links and the pages it writes.

use std::sync::Arc;

use pgrx::prelude::*;
use pgrx::{pg_sys, PgMemoryContexts, PgSqlErrorCode};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::codec::{BuildSpace, Codec, Kind};
use super::graph::{random_level, InsertFailure, MemoryGraph, OutOfMemory, ParallelInsert, Params, Scratch};
use super::key_datum::{self, KeyColumn};
use super::page::{
    self, encode_element, encode_neighbors, item_footprint, ItemPointer, Meta, PageImage, PageKind, EMPTY_PAGE_SPACE,
};
use super::storage::{from_pg_tid, IndexRel};
use super::{index_codec, insert, options, prepare_datum, PROGRESS_PHASE_LOAD, PROGRESS_PHASE_WRITE};
use crate::error::{raise, raise_detail};

/// Seed of the level draws during a build, so the same rows in the same
/// order give the same levels (and, with one thread, the same graph);
/// inserts after the build draw from entropy.
const BUILD_SEED: u64 = 0x5eed_0f_4e5f;

/// Bytes [`write_graph`] needs per element for the page layout (two item
/// addresses), counted against `maintenance_work_mem` while loading.
const LAYOUT_BYTES_PER_ELEMENT: usize = 2 * std::mem::size_of::<ItemPointer>() + 2;

/// Bytes of bookkeeping per row in the build's key table (hash entry and
/// vector header), counted against `maintenance_work_mem` with the keys.
const KEY_ENTRY_BYTES: usize = 48;

/// Page images [`write_graph`] may hold at once (pages still receiving
/// neighbor items), counted against `maintenance_work_mem` while loading.
const LAYOUT_OPEN_PAGES: usize = 16;

/// The worker threads of a build; stopping and joining them on drop, so an
/// ERROR (cancel, timeout) unwinding through `ambuild` never leaves a
/// thread running over a graph being freed.
struct Workers {
    shared: Arc<ParallelInsert<BuildSpace>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` threads linking elements of `shared`; fewer if the system
    /// refuses to create more (the leader links whatever they leave).
    ///
    /// The threads start with every signal blocked (they inherit the mask
    /// the leader holds while creating them), so PostgreSQL's signal
    /// handlers (cancel, timeouts, latches) always run on the leader.
    fn start(shared: &Arc<ParallelInsert<BuildSpace>>, n: usize) -> Workers {
        let mut handles = Vec::with_capacity(n);
        // SAFETY: zeroed sigset_t values are valid to pass to sigfillset and
        // pthread_sigmask, which only touch this thread's mask.
        let old = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
            old
        };
        for i in 0..n {
            let s = Arc::clone(shared);
            match std::thread::Builder::new().name(format!("hnsw build {}", i + 1)).spawn(move || s.work()) {
                Ok(h) => handles.push(h),
                Err(_) => break,
            }
        }
        // SAFETY: restores the leader's own mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        Workers { shared: Arc::clone(shared), handles }
    }

    /// Stops the threads and waits for them.
    fn join(&mut self) {
        self.shared.stop();
        for h in self.handles.drain(..) {
            // A worker catches its own panics (see `ParallelInsert::work`).
            let _ = h.join();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.join();
    }
}

/// The in-memory phase: the shared graph and its worker threads.
struct InMemory {
    shared: Arc<ParallelInsert<BuildSpace>>,
    workers: Workers,
}

/// Key blobs of a multi-column index's rows, by packed heap TID, until the
/// graph is written out (each row is an element of its own there: rows
/// with equal vectors are not merged, see [`Tuning::merge_duplicates`]).
///
/// [`Tuning::merge_duplicates`]: super::graph::Tuning::merge_duplicates
type KeyTable = rustc_hash::FxHashMap<u64, Vec<u8>>;

/// Everything the heap-scan callback needs.
struct BuildState {
    rel: IndexRel,
    codec: Codec,
    /// The filter columns after the vector (none for one column).
    key_columns: Vec<KeyColumn>,
    /// Key blobs of the rows in the in-memory graph, by heap TID (empty
    /// for a single-column index, whose elements have none).
    keys: KeyTable,
    /// Bytes `keys` holds (see [`KEY_ENTRY_BYTES`]).
    keys_bytes: usize,
    params: Params,
    max_level: usize,
    /// Threads inserting (the leader included).
    threads: usize,
    /// `None` before the first row and after the graph was written out
    /// (then rows go to disk if `spilled`).
    memory: Option<InMemory>,
    spilled: bool,
    memory_limit: usize,
    rng: SmallRng,
    index_tuples: f64,
    tmp: PgMemoryContexts,
    /// The leader's search scratch space.
    scratch: Scratch,
    /// Most bytes the build counted against `maintenance_work_mem`, and
    /// elements in memory then (for the DEBUG1 summary).
    peak: (usize, usize),
}

fn progress(param: u32, value: i64) {
    // SAFETY: plain progress-reporting call on the current backend.
    unsafe { pg_sys::pgstat_progress_update_param(param as i32, value) }
}

/// The meta page contents of an index of `codec` elements.
/// `keys_head` is the first key directory page of an index with filter
/// columns (`None` without).
fn meta_for(codec: Codec, params: Params, entry: Option<(ItemPointer, u16)>, keys_head: Option<u32>) -> Meta {
    Meta {
        codec,
        m: params.m as u32,
        ef_construction: params.ef_construction as u32,
        entry,
        free_hint: None,
        healed_blocks: 0,
        keys_head,
        keys_hint: None,
    }
}

/// Raises the out-of-memory error for a failed graph allocation
/// (SQLSTATE 53200).
fn out_of_memory(e: OutOfMemory) -> ! {
    raise_detail(
        PgSqlErrorCode::ERRCODE_OUT_OF_MEMORY,
        "out of memory",
        format!("Failed on request of size {} bytes while building the hnsw graph.", e.bytes),
    )
}

/// Raises the error a failed worker thread reported.
fn worker_failed(f: InsertFailure) -> ! {
    match f {
        InsertFailure::OutOfMemory(e) => out_of_memory(e),
        InsertFailure::Panic(message) => {
            raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("hnsw build thread failed: {message}"))
        }
    }
}

/// How many threads a build of `index` on `heap` uses: one (the leader)
/// plus the parallel workers PostgreSQL plans for an index build of this
/// table (`plan_create_index_workers`: the table's `parallel_workers`
/// reloption if set, otherwise by table size, capped by
/// `max_parallel_maintenance_workers` and by `maintenance_work_mem` at 32 MB
/// per participant; none for temporary tables), capped by
/// `max_worker_processes` and `max_parallel_workers`, as pgvector's workers
/// are.
fn build_threads(heap: pg_sys::Relation, index: pg_sys::Relation) -> usize {
    // SAFETY: both relations are open and locked by CREATE INDEX (as
    // plan_create_index_workers requires); the GUCs are this backend's.
    let (planned, max_processes, max_parallel) = unsafe {
        (
            pg_sys::plan_create_index_workers((*heap).rd_id, (*index).rd_id),
            pg_sys::max_worker_processes,
            pg_sys::max_parallel_workers,
        )
    };
    1 + planned.min(max_processes).min(max_parallel).max(0) as usize
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
    key_datum::check_columns(index);
    let codec = index_codec(index);
    let key_columns = key_datum::key_columns(index);
    let threads = build_threads(heap, index);
    // SAFETY: reading a GUC variable of this backend.
    let memory_limit = unsafe { pg_sys::maintenance_work_mem } as usize * 1024;
    let mut state = BuildState {
        rel,
        codec,
        key_columns,
        keys: KeyTable::default(),
        keys_bytes: 0,
        params,
        max_level: page::max_level(params.m),
        threads,
        memory: None,
        spilled: false,
        memory_limit,
        rng: SmallRng::seed_from_u64(BUILD_SEED),
        index_tuples: 0.0,
        tmp: PgMemoryContexts::new("hnsw build tuple"),
        scratch: Scratch::default(),
        peak: (0, 0),
    };
    progress(pg_sys::PROGRESS_CREATEIDX_SUBPHASE, PROGRESS_PHASE_LOAD);
    // SAFETY: heap and index are open and locked by CREATE INDEX; the
    // callback receives `state` back as its last argument. The call goes
    // through pgrx's guarded binding of PostgreSQL's wrapper, so an ERROR
    // raised inside the scan (a cancel, a bad row) unwinds our frames as a
    // Rust panic instead of jumping over them. The scan returns the number
    // of live heap tuples it saw (all of them, not only those a partial
    // index's predicate admits): what PostgreSQL records as reltuples.
    let heap_tuples = unsafe {
        pg_sys::table_index_build_scan(
            heap,
            index,
            index_info,
            true,
            true,
            Some(build_callback),
            &mut state as *mut BuildState as *mut std::ffi::c_void,
            std::ptr::null_mut(),
        )
    };
    if let Some(graph) = finish_in_memory(&mut state) {
        progress(pg_sys::PROGRESS_CREATEIDX_SUBPHASE, PROGRESS_PHASE_WRITE);
        write_graph(&state.rel, &graph, &state.keys, !state.key_columns.is_empty());
        drop(graph);
        pgrx::ereport!(
            DEBUG1,
            PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
            format!(
                "hnsw graph: {} elements, {:.1} MB of maintenance_work_mem at most, {} threads",
                state.peak.1,
                state.peak.0 as f64 / (1 << 20) as f64,
                state.threads
            )
        );
    } else if !state.spilled {
        // No row was indexed: an empty index (meta page only).
        let empty = MemoryGraph::new(BuildSpace(codec), params, state.max_level);
        write_graph(&state.rel, &empty, &KeyTable::default(), !state.key_columns.is_empty());
    }
    // SAFETY: palloc0 returns zeroed memory for the result struct.
    unsafe {
        let result = pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexBuildResult>()) as *mut pg_sys::IndexBuildResult;
        (*result).heap_tuples = heap_tuples;
        (*result).index_tuples = state.index_tuples;
        result
    }
}

/// Called by the table AM for each heap tuple to index (on the leader).
#[pg_guard]
unsafe extern "C-unwind" fn build_callback(
    _index: pg_sys::Relation,
    tid: pg_sys::ItemPointer,
    values: *mut pg_sys::Datum,
    isnull: *mut bool,
    _tuple_is_alive: bool,
    state: *mut std::ffi::c_void,
) {
    // SAFETY: `state` is the BuildState passed to table_index_build_scan;
    // values/isnull have one entry per index column, the vector first.
    let (state, datum, null, tid) = unsafe { (&mut *(state as *mut BuildState), *values, *isnull, from_pg_tid(&*tid)) };
    if null {
        return;
    }
    let codec = state.codec;
    let columns = &state.key_columns;
    // SAFETY: non-null datums of the indexed columns; detoasted copies go
    // to the per-tuple context, reset right after.
    let prepared = state.tmp.switch_to(|_| unsafe {
        prepare_datum(&codec, datum).map(|v| (v, key_datum::row_keys(columns, values, isnull)))
    });
    state.tmp.reset();
    let Some((vector, keys)) = prepared else {
        return;
    };
    let level = random_level(state.rng.gen::<f64>(), state.params.level_multiplier(), state.max_level);
    // The graph in memory holds rows in their build form (see
    // `Codec::build_form`); rows inserted on disk stay in working form.
    let form = (!state.spilled).then(|| codec.build_form(&vector));
    if let (None, Some(form)) = (&state.memory, &form) {
        start_in_memory(state, form);
    }
    let form_len = form.as_ref().map_or(0, Vec::len);
    let needed = state.memory.as_ref().map(|mem| {
        let shared = &mem.shared;
        let held = shared.memory_bytes()
            + state.scratch.memory_bytes()
            + layout_bytes(shared.loaded() as usize)
            + state.keys_bytes;
        (held, held + shared.bytes_for_next(form_len, level) + LAYOUT_BYTES_PER_ELEMENT, shared.loaded() as usize)
    });
    let over = needed.is_some_and(|(held, next, n)| {
        if held > state.peak.0 {
            state.peak = (held, n);
        }
        next > state.memory_limit
    });
    if over {
        spill_to_disk(state);
    }
    match (&state.memory, form) {
        (Some(mem), Some(form)) => {
            let shared = Arc::clone(&mem.shared);
            shared.load(&form, tid.pack(), level).unwrap_or_else(|e| out_of_memory(e));
            if !keys.is_empty() {
                state.keys_bytes += KEY_ENTRY_BYTES + keys.len();
                state.keys.insert(tid.pack(), keys);
            }
            if state.threads == 1 {
                // The leader alone: link right away, in heap order.
                shared.link_one(&mut state.scratch).unwrap_or_else(|e| out_of_memory(e));
            } else if shared.loaded() % 1024 == 0 {
                if let Some(f) = shared.failure() {
                    worker_failed(f);
                }
            }
            if shared.loaded() % 1024 == 0 {
                progress(pg_sys::PROGRESS_CREATEIDX_TUPLES_DONE, shared.linked() as i64);
            }
        }
        _ => {
            insert::insert_prepared(&state.rel, &vector, &keys, tid, level);
            if (state.index_tuples as u64) % 1024 == 0 {
                progress(pg_sys::PROGRESS_CREATEIDX_TUPLES_DONE, state.index_tuples as i64);
            }
        }
    }
    state.index_tuples += 1.0;
}

/// Bytes [`write_graph`] will need to lay out `n` elements.
fn layout_bytes(n: usize) -> usize {
    n * LAYOUT_BYTES_PER_ELEMENT + LAYOUT_OPEN_PAGES * std::mem::size_of::<PageImage>()
}

/// Creates the in-memory graph on the first row (whose working form fixes
/// the vector length of dense types) and starts the worker threads.
fn start_in_memory(state: &mut BuildState, first: &[u32]) {
    let vector_len = match state.codec.kind() {
        Kind::SparseVec => None,
        _ => Some(first.len()),
    };
    let mut graph = MemoryGraph::with_vector_len(BuildSpace(state.codec), state.params, state.max_level, vector_len);
    graph.set_merge_duplicates(state.key_columns.is_empty());
    let shared = Arc::new(ParallelInsert::new(graph));
    let workers = Workers::start(&shared, state.threads - 1);
    // Fewer threads if the system would not start them all.
    state.threads = workers.handles.len() + 1;
    if !state.spilled && state.threads > 1 {
        pgrx::ereport!(
            DEBUG1,
            PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
            format!("using {} parallel workers", state.threads - 1),
            format!("The workers are threads of this backend; {} threads insert into the graph.", state.threads)
        );
    }
    state.memory = Some(InMemory { shared, workers });
}

/// Links everything loaded (the leader helping the workers), stops the
/// workers and returns the graph; `None` if nothing was loaded into memory.
fn finish_in_memory(state: &mut BuildState) -> Option<MemoryGraph<BuildSpace>> {
    let InMemory { shared, mut workers } = state.memory.take()?;
    shared.close();
    let mut last_report = 0;
    loop {
        pgrx::check_for_interrupts!();
        if let Some(f) = shared.failure() {
            worker_failed(f);
        }
        let linked_one = shared.link_one(&mut state.scratch).unwrap_or_else(|e| out_of_memory(e));
        let linked = shared.linked();
        if linked >= last_report + 1024 {
            last_report = linked;
            progress(pg_sys::PROGRESS_CREATEIDX_TUPLES_DONE, linked as i64);
        }
        if !linked_one {
            if linked >= shared.loaded() {
                break;
            }
            // The workers are finishing their last elements.
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }
    workers.join();
    if let Some(f) = shared.failure() {
        worker_failed(f);
    }
    drop(workers);
    let shared = Arc::try_unwrap(shared)
        .unwrap_or_else(|_| raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "hnsw build threads still hold the graph"));
    let mut graph = shared.into_graph().unwrap_or_else(|e| out_of_memory(e));
    // Concurrent prunes (and, rarely, pruning with few slots) can leave an
    // element without inbound links: link it from its nearest neighbor.
    graph.repair_reachability(&mut state.scratch).unwrap_or_else(|e| out_of_memory(e));
    let held = graph.memory_bytes() + state.scratch.memory_bytes() + layout_bytes(graph.len());
    if held > state.peak.0 {
        state.peak = (held, graph.len());
    }
    Some(graph)
}

/// Writes the in-memory graph out and switches the build to on-disk inserts.
fn spill_to_disk(state: &mut BuildState) {
    let Some(graph) = finish_in_memory(state) else { return };
    state.spilled = true;
    let keys = std::mem::take(&mut state.keys);
    state.keys_bytes = 0;
    pgrx::ereport!(
        NOTICE,
        PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
        format!("hnsw graph no longer fits into maintenance_work_mem after {} tuples", state.index_tuples as u64),
        "Building will take significantly more time. Increase maintenance_work_mem to speed up builds."
    );
    write_graph(&state.rel, &graph, &keys, !state.key_columns.is_empty());
}

/// Where each element's two items go, `(element item, neighbor item)`, and
/// how many items each page gets.
///
/// Element items fill pages in insertion order; each neighbor item goes to
/// the first earlier page with room (else the current one), so the space an
/// element item cannot use at the end of a page is filled with neighbor
/// items instead of being wasted.
fn place(graph: &MemoryGraph<BuildSpace>, m: usize, keys: &KeyTable) -> (Vec<(ItemPointer, ItemPointer)>, Vec<u16>) {
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
    let codec = graph.space().0;
    let mut placement = Vec::new();
    if placement.try_reserve_exact(graph.len()).is_err() {
        out_of_memory(OutOfMemory { bytes: graph.len() * std::mem::size_of::<(ItemPointer, ItemPointer)>() });
    }
    for id in 0..graph.len() as u32 {
        // A build form has the payload length of its working form.
        let element_size = page::element_item_size(
            graph.heap_tids(id).len(),
            page::keys_size(keys_of(graph, keys, id).len()) + codec.payload_len(graph.vector(id)),
        );
        if item_footprint(element_size) > pages.last().unwrap().free {
            pages.push(Page { free: EMPTY_PAGE_SPACE, items: 0 });
        }
        let last = pages.len() - 1;
        let e = put(&mut pages, last, element_size);
        let size = page::neighbor_item_size(m, graph.level(id));
        while first_with_room < last && pages[first_with_room].free < item_footprint(page::neighbor_item_size(m, 0)) {
            first_with_room += 1;
        }
        let target = (first_with_room..=last).find(|&i| pages[i].free >= item_footprint(size)).unwrap_or_else(|| {
            pages.push(Page { free: EMPTY_PAGE_SPACE, items: 0 });
            pages.len() - 1
        });
        let n = put(&mut pages, target, size);
        placement.push((e, n));
    }
    let items = pages.iter().map(|p| p.items).collect();
    (placement, items)
}

/// The key blob of element `id` (empty for a single-column index).
fn keys_of<'a>(graph: &MemoryGraph<BuildSpace>, keys: &'a KeyTable, id: u32) -> &'a [u8] {
    graph.heap_tids(id).first().and_then(|t| keys.get(t)).map_or(&[], Vec::as_slice)
}

/// Lays `graph` out on pages after the meta page and writes them, then
/// WAL-logs the whole index; `keys` holds the elements' filter keys. With
/// filter columns (`keyed`), the key directory follows the graph pages
/// ([`super::directory`]): one entry per element, at least one page. The
/// index must be empty.
///
/// Items are added in insertion order; a page is written (in block order)
/// as soon as all its items are in, so only the few pages still receiving
/// neighbor items are held in memory.
pub fn write_graph(rel: &IndexRel, graph: &MemoryGraph<BuildSpace>, keys: &KeyTable, keyed: bool) {
    let (params, codec) = (graph.params(), graph.space().0);
    let (placement, items) = place(graph, params.m, keys);
    let entry = graph.entry().map(|(id, level)| (placement[id as usize].0, level as u16));
    let mut meta_page = PageImage::new(PageKind::Meta);
    // The directory starts right after the graph pages (none when empty).
    let graph_pages = if graph.is_empty() { 0 } else { items.len() as u32 };
    let keys_head = keyed.then_some(graph_pages + 1);
    meta_for(codec, params, entry, keys_head).write_page(&mut meta_page.0);
    let meta_block = rel.append_unlogged_image(&meta_page.0);
    assert_eq!(meta_block, page::META_BLOCK, "meta page must be block 0");
    if graph.is_empty() {
        if keyed {
            write_directory(rel, &[], 1);
        }
        rel.log_all_pages();
        return;
    }
    // Open pages: block `written + 1 + i` is `open[i]`, with its items added.
    let mut open: std::collections::VecDeque<(Box<PageImage>, u16)> = std::collections::VecDeque::new();
    let mut written = 0u32;
    let mut add = |at: ItemPointer, item: &[u8], open: &mut std::collections::VecDeque<(Box<PageImage>, u16)>| {
        let i = (at.block - written - 1) as usize;
        while open.len() <= i {
            open.push_back((PageImage::new(PageKind::Graph), 0));
        }
        let (image, added) = &mut open[i];
        let offset = page::add_item(&mut image.0, item);
        assert_eq!(offset, Some(at.offset), "placement matches page layout");
        *added += 1;
        // Write out every leading page that is complete.
        while let Some((image, added)) = open.front() {
            if *added < items[written as usize] {
                break;
            }
            let block = rel.append_unlogged_image(&image.0);
            assert_eq!(block, written + 1, "pages are written in order");
            written += 1;
            open.pop_front();
            pgrx::check_for_interrupts!();
        }
    };
    for id in 0..graph.len() as u32 {
        let (etid, ntid) = placement[id as usize];
        let tids: Vec<ItemPointer> = graph.heap_tids(id).iter().map(|&t| ItemPointer::unpack(t)).collect();
        let payload = codec.build_payload(graph.vector(id));
        add(etid, &encode_element(graph.level(id), &tids, ntid, keys_of(graph, keys, id), &payload), &mut open);
        let lists: Vec<Vec<ItemPointer>> = (0..=graph.level(id))
            .map(|layer| graph.neighbor_ids(id, layer).iter().map(|&n| placement[n as usize].0).collect())
            .collect();
        add(ntid, &encode_neighbors(params.m, graph.level(id), &lists, graph.spare_links(id)), &mut open);
    }
    assert!(open.is_empty(), "every page was written");
    if let Some(head) = keys_head {
        let entries: Vec<(ItemPointer, &[u8])> =
            (0..graph.len() as u32).map(|id| (placement[id as usize].0, keys_of(graph, keys, id))).collect();
        write_directory(rel, &entries, head);
    }
    rel.log_all_pages();
}

/// Writes the key directory of a new index from block `head` on: an entry
/// per `(element, key blob)` (version 0: a new element), chained, at least
/// one page.
fn write_directory(rel: &IndexRel, entries: &[(ItemPointer, &[u8])], head: u32) {
    let mut image = PageImage::new(PageKind::Graph);
    page::init_directory_page(&mut image.0);
    let mut block = head;
    for &(element, keys) in entries {
        let item = page::DirectoryEntry { element, version: 0, keys }.encode();
        if page::add_item(&mut image.0, &item).is_none() {
            page::set_directory_next(&mut image.0, block + 1);
            let written = rel.append_unlogged_image(&image.0);
            assert_eq!(written, block, "directory pages are written in order");
            block += 1;
            page::init_directory_page(&mut image.0);
            page::add_item(&mut image.0, &item).expect("an entry always fits an empty page");
            pgrx::check_for_interrupts!();
        }
    }
    let written = rel.append_unlogged_image(&image.0);
    assert_eq!(written, block, "directory pages are written in order");
}

/// `ambuildempty`: the init fork of an unlogged index (an empty meta page).
#[pg_guard]
pub unsafe extern "C-unwind" fn ambuildempty(index: pg_sys::Relation) {
    let params = options::params_of(index);
    let keyed = !key_datum::key_columns(index).is_empty();
    let meta = meta_for(index_codec(index), params, None, keyed.then_some(1));
    let rel = IndexRel::init_fork(index);
    let mut image = PageImage::new(PageKind::Meta);
    meta.write_page(&mut image.0);
    rel.append_unlogged_image(&image.0);
    if keyed {
        write_directory(&rel, &[], 1);
    }
    rel.log_all_pages();
}
