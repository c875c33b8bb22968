//! Index options (`WITH (m = 16, ef_construction = 64, quantization =
//! 'half')`; `quantization` is ours, `'int8'` stores `vector` elements as
//! 8-bit codes, see [`super::codec::VectorCodes`]) and the `hnsw.*`
//! GUCs: `ef_search`, and the iterative-scan settings `iterative_scan`,
//! `max_scan_tuples`, `scan_mem_multiplier` (pgvector 0.8's names, ranges and
//! defaults).
//!
//! Reloptions are registered in `_PG_init` with `add_reloption_kind`, as
//! contrib/bloom and pgvector do; PostgreSQL itself then reports a value out
//! of range with the option's name and bounds. The combination rule
//! `ef_construction >= 2·M` is checked by [`amoptions`] whenever options are
//! validated: at `CREATE INDEX` and at `ALTER INDEX ... SET/RESET`, so an
//! `ALTER` can never leave options that a later `REINDEX` would refuse.
//!
//! `ALTER INDEX ... SET (m = ..., ef_construction = ...)` changes only the
//! options stored in the catalog: the existing graph keeps the values it was
//! built with (its meta page's), for inserts and for the planner's cost, and
//! the new values take effect at the next `REINDEX`.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use pgrx::PostgresGucEnum;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::raise_detail;
use crate::hnsw::codec::VectorCodes;
use crate::hnsw::graph::Params;
use crate::hnsw::page::{Meta, META_BLOCK};
use crate::hnsw::storage::IndexRel;

/// Default `M`.
pub const DEFAULT_M: i32 = 16;
/// Range of `M`.
pub const M_RANGE: (i32, i32) = (2, 100);
/// Default `ef_construction`.
pub const DEFAULT_EF_CONSTRUCTION: i32 = 64;
/// Range of `ef_construction` (it must also be at least `2·M`).
pub const EF_CONSTRUCTION_RANGE: (i32, i32) = (4, 1000);
/// Default `hnsw.ef_search`.
pub const DEFAULT_EF_SEARCH: i32 = 40;

/// `hnsw.ef_search`: the size of the candidate list during a scan, which is
/// also the most rows one index scan returns.
pub static EF_SEARCH: GucSetting<i32> = GucSetting::<i32>::new(DEFAULT_EF_SEARCH);

/// `hnsw.debug_vacuum_batch_blocks`: for tests only (hidden from `SHOW ALL`,
/// superuser-only). When above 0, VACUUM handles deleted elements in batches
/// of at most this many index blocks instead of as many as
/// `maintenance_work_mem` allows, so the batching path can be tested on a
/// small index.
pub static DEBUG_VACUUM_BATCH_BLOCKS: GucSetting<i32> = GucSetting::<i32>::new(0);

/// `hnsw.iterative_scan`: whether an index scan that has returned its
/// `ef_search` nearest elements goes on searching when the executor wants
/// more rows (because a `WHERE` clause rejected some).
#[derive(PostgresGucEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum IterativeScan {
    /// One beam of `ef_search`, as before: at most that many elements.
    #[name = c"off"]
    Off,
    /// Go on in batches; a later batch may hold rows nearer than the last
    /// returned one (returned anyway, so rows can come out slightly out of
    /// order).
    #[name = c"relaxed_order"]
    RelaxedOrder,
    /// Go on in batches, returning rows in order: a row a later batch finds
    /// nearer than one already returned is skipped.
    #[name = c"strict_order"]
    StrictOrder,
}

/// `hnsw.iterative_scan` (default `off`).
pub static ITERATIVE_SCAN: GucSetting<IterativeScan> = GucSetting::<IterativeScan>::new(IterativeScan::Off);
/// Default `hnsw.max_scan_tuples`.
pub const DEFAULT_MAX_SCAN_TUPLES: i32 = 20_000;
/// `hnsw.max_scan_tuples`: elements an iterative scan may visit after its
/// first pass (a soft limit: the batch under way finishes its expansion).
pub static MAX_SCAN_TUPLES: GucSetting<i32> = GucSetting::<i32>::new(DEFAULT_MAX_SCAN_TUPLES);
/// `hnsw.exact_fallback` (default on): whether an iterative scan that has
/// spent `hnsw.max_scan_tuples` (or its memory, or exhausted the graph)
/// goes on with an exact pass over the index's own elements, so a filter
/// the graph could not satisfy still yields every row that matches (see
/// the scan module). Off: the scan stops there, as pgvector's does.
pub static EXACT_FALLBACK: GucSetting<bool> = GucSetting::<bool>::new(true);
/// `hnsw.scan_mem_multiplier`: an iterative scan's memory as a multiple of
/// `work_mem`.
pub static SCAN_MEM_MULTIPLIER: GucSetting<f64> = GucSetting::<f64>::new(1.0);

/// The reloption kind PostgreSQL assigned to `hnsw` in this backend.
static RELOPT_KIND: AtomicU32 = AtomicU32::new(0);

/// The parsed `WITH (...)` options, laid out as `build_reloptions` fills them.
#[repr(C)]
struct HnswOptions {
    vl_len_: i32,
    m: i32,
    ef_construction: i32,
    /// [`QUANTIZATION_VALUES`] index of `quantization`.
    quantization: i32,
}

/// The values of the index option `quantization` (how a `vector` index
/// stores element values), in the order of their enum numbers.
pub const QUANTIZATION_VALUES: [VectorCodes; 2] = [VectorCodes::Half, VectorCodes::Int8];

/// Default `quantization`: binary16 codes.
pub const DEFAULT_QUANTIZATION: VectorCodes = VectorCodes::Half;

/// Registers the reloptions and the GUC; called once per backend from `_PG_init`.
pub fn init() {
    // SAFETY: called from _PG_init in a backend; the strings are static.
    unsafe {
        let kind = pg_sys::add_reloption_kind();
        RELOPT_KIND.store(kind, Ordering::Relaxed);
        pg_sys::add_int_reloption(
            kind,
            c"m".as_ptr(),
            c"Max number of connections per element (M)".as_ptr(),
            DEFAULT_M,
            M_RANGE.0,
            M_RANGE.1,
            pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE,
        );
        pg_sys::add_int_reloption(
            kind,
            c"ef_construction".as_ptr(),
            c"Size of the dynamic candidate list for construction".as_ptr(),
            DEFAULT_EF_CONSTRUCTION,
            EF_CONSTRUCTION_RANGE.0,
            EF_CONSTRUCTION_RANGE.1,
            pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE,
        );
        // PostgreSQL keeps the member array: leaked once per backend. The
        // names are static C strings.
        let mut members: Vec<pg_sys::relopt_enum_elt_def> = QUANTIZATION_VALUES
            .iter()
            .enumerate()
            .map(|(i, q)| pg_sys::relopt_enum_elt_def { string_val: q.c_name().as_ptr(), symbol_val: i as i32 })
            .collect();
        members.push(pg_sys::relopt_enum_elt_def { string_val: std::ptr::null(), symbol_val: 0 });
        let members = Box::leak(members.into_boxed_slice());
        pg_sys::add_enum_reloption(
            kind,
            c"quantization".as_ptr(),
            c"How vector elements are stored: half (binary16) or int8 (8-bit codes, half the size)".as_ptr(),
            members.as_mut_ptr(),
            QUANTIZATION_VALUES.iter().position(|&q| q == DEFAULT_QUANTIZATION).unwrap_or(0) as i32,
            c"Valid values are \"half\" and \"int8\".".as_ptr(),
            pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE,
        );
    }
    GucRegistry::define_int_guc(
        c"hnsw.ef_search",
        c"Sets the size of the dynamic candidate list for search",
        c"Valid range is 1..1000. An index scan returns at most this many rows, so LIMIT above it needs a larger value.",
        &EF_SEARCH,
        1,
        1000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"hnsw.iterative_scan",
        c"Sets the mode for iterative scans",
        c"off, relaxed_order or strict_order: whether a scan continues past ef_search elements when a WHERE clause filters rows.",
        &ITERATIVE_SCAN,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"hnsw.max_scan_tuples",
        c"Sets the max number of tuples to visit for iterative scans",
        c"A soft budget of graph elements visited after the first pass; past it the scan returns what it already holds, nearest first, then (with hnsw.exact_fallback) goes on with an exact pass over the index.",
        &MAX_SCAN_TUPLES,
        1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"hnsw.exact_fallback",
        c"Lets an iterative scan finish with an exact pass over the index",
        c"When an iterative scan has spent hnsw.max_scan_tuples, its memory, or the graph, it reads the remaining index elements in exact distance order instead of stopping, so filtered queries return every matching row.",
        &EXACT_FALLBACK,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"hnsw.scan_mem_multiplier",
        c"Sets the multiple of work_mem to use for iterative scans",
        c"An iterative scan stops expanding once its bookkeeping would exceed this multiple of work_mem.",
        &SCAN_MEM_MULTIPLIER,
        1.0,
        1000.0,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"hnsw.debug_vacuum_batch_blocks",
        c"For tests: most index blocks one VACUUM batch covers (0 = as maintenance_work_mem allows)",
        c"",
        &DEBUG_VACUUM_BATCH_BLOCKS,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::NO_SHOW_ALL,
    );
}

/// `amoptions`: parses and validates `WITH (...)` (`validate` raises on bad
/// values).
#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn amoptions(reloptions: pg_sys::Datum, validate: bool) -> *mut pg_sys::bytea {
    let table = [
        crate::compat::relopt(c"m", pg_sys::relopt_type::RELOPT_TYPE_INT, std::mem::offset_of!(HnswOptions, m)),
        crate::compat::relopt(
            c"ef_construction",
            pg_sys::relopt_type::RELOPT_TYPE_INT,
            std::mem::offset_of!(HnswOptions, ef_construction),
        ),
        crate::compat::relopt(
            c"quantization",
            pg_sys::relopt_type::RELOPT_TYPE_ENUM,
            std::mem::offset_of!(HnswOptions, quantization),
        ),
    ];
    // SAFETY: the table describes HnswOptions exactly; build_reloptions
    // pallocs a struct of the given size (or returns null for no options).
    let parsed = unsafe {
        pg_sys::build_reloptions(
            reloptions,
            validate,
            RELOPT_KIND.load(Ordering::Relaxed),
            std::mem::size_of::<HnswOptions>(),
            table.as_ptr(),
            table.len() as i32,
        ) as *mut pg_sys::bytea
    };
    if validate {
        // SAFETY: null or the struct just built.
        let (m, ef) = unsafe { values(parsed as *const HnswOptions) };
        check_combination(m, ef);
    }
    parsed
}

/// `(m, ef_construction)` from parsed options, defaults for a null pointer.
///
/// # Safety
/// `opts` is null or points at an `HnswOptions` built by [`amoptions`].
unsafe fn values(opts: *const HnswOptions) -> (i32, i32) {
    if opts.is_null() {
        (DEFAULT_M, DEFAULT_EF_CONSTRUCTION)
    } else {
        // SAFETY: the caller's contract.
        unsafe { ((*opts).m, (*opts).ef_construction) }
    }
}

/// Raises pgvector's error (SQLSTATE 22023) unless `ef_construction >= 2·m`.
fn check_combination(m: i32, ef: i32) {
    if ef < 2 * m {
        raise_detail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "ef_construction must be greater than or equal to 2 * m",
            format!("m = {m}, ef_construction = {ef}"),
        );
    }
}

/// The construction parameters in an index's options (defaults when none
/// were given), checking that `ef_construction >= 2·M`: for building a new
/// graph (`CREATE INDEX`, `REINDEX`). An existing graph's parameters are on
/// its meta page ([`graph_m`]).
pub fn params_of(index: pg_sys::Relation) -> Params {
    // SAFETY: rd_options is null or the struct amoptions built.
    let (m, ef) = unsafe { values((*index).rd_options as *const HnswOptions) };
    check_combination(m, ef);
    Params { m: m as usize, ef_construction: ef as usize }
}

/// How a new graph stores `vector` values (the option `quantization`, its
/// default when not given). An existing graph's choice is in its meta page
/// (its codec's kind), so `ALTER INDEX ... SET (quantization = ...)` takes
/// effect at the next `REINDEX`, as `m` does.
pub fn vector_codes_of(index: pg_sys::Relation) -> VectorCodes {
    // SAFETY: rd_options is null or the struct amoptions built.
    let opts = unsafe { (*index).rd_options as *const HnswOptions };
    if opts.is_null() {
        return DEFAULT_QUANTIZATION;
    }
    // SAFETY: as above, non-null.
    let value = unsafe { (*opts).quantization };
    QUANTIZATION_VALUES.get(value as usize).copied().unwrap_or(DEFAULT_QUANTIZATION)
}

/// `M` of the index's existing graph, from its meta page; the options' `M`
/// if the meta page cannot be read (an index still being built, or a damaged
/// one: the planner must not fail on that). Never raises.
pub fn graph_m(index: pg_sys::Relation) -> usize {
    let rel = IndexRel::new(index);
    let from_meta = (rel.nblocks() > 0).then(|| rel.read(META_BLOCK, Meta::read_page).ok()).flatten();
    match from_meta {
        Some(meta) => meta.m as usize,
        // SAFETY: rd_options is null or the struct amoptions built.
        None => unsafe { values((*index).rd_options as *const HnswOptions) }.0 as usize,
    }
}

/// The current `hnsw.ef_search`.
pub fn ef_search() -> usize {
    EF_SEARCH.get().max(1) as usize
}

/// The current `hnsw.iterative_scan`.
pub fn iterative_scan() -> IterativeScan {
    ITERATIVE_SCAN.get()
}

/// The current `hnsw.max_scan_tuples`.
pub fn max_scan_tuples() -> usize {
    MAX_SCAN_TUPLES.get().max(1) as usize
}

/// The current `hnsw.exact_fallback`.
pub fn exact_fallback() -> bool {
    EXACT_FALLBACK.get()
}

/// Bytes an iterative scan may hold: `hnsw.scan_mem_multiplier × work_mem`.
pub fn scan_memory_limit() -> usize {
    // SAFETY: reading a GUC variable of this backend.
    let work_mem_kb = unsafe { pg_sys::work_mem } as f64;
    (SCAN_MEM_MULTIPLIER.get() * work_mem_kb * 1024.0) as usize
}
