//! The few server APIs that differ between the PostgreSQL versions pg_hnsw
//! builds for (Cargo features `pg15` to `pg18`), each behind one function or
//! type so that the access method's modules call them the same way on all.
//!
//! - PostgreSQL 16 renamed `RelFileNode` (`rd_node`) to `RelFileLocator`
//!   (`rd_locator`), replaced `pg_class_ownercheck` by `object_ownercheck`
//!   and renamed the table statistics' `t_counts.t_numscans` to
//!   `counts.numscans`.
//! - PostgreSQL 18 stores a tuple descriptor's attributes behind its compact
//!   attributes (`TupleDescAttr`), counts index searches for `EXPLAIN`
//!   (`instrument->nsearches`), gives `vacuum_delay_point` an
//!   `is_analyze` argument and reloption tables an `isset_offset`.

use pgrx::pg_sys;

/// The physical file of a relation, as buffer lookups name it.
#[cfg(feature = "pg15")]
pub type RelFile = pg_sys::RelFileNode;
/// The physical file of a relation, as buffer lookups name it.
#[cfg(any(feature = "pg16", feature = "pg17", feature = "pg18"))]
pub type RelFile = pg_sys::RelFileLocator;

/// The physical file of `rel`.
///
/// # Safety
/// `rel` must be an open relation.
pub unsafe fn rel_file(rel: pg_sys::Relation) -> RelFile {
    // SAFETY: the caller passes an open relation, whose file is set.
    #[cfg(feature = "pg15")]
    let file = unsafe { (*rel).rd_node };
    // SAFETY: as above.
    #[cfg(any(feature = "pg16", feature = "pg17", feature = "pg18"))]
    let file = unsafe { (*rel).rd_locator };
    file
}

/// Whether `a` and `b` name the same file.
pub fn same_file(a: &RelFile, b: &RelFile) -> bool {
    #[cfg(feature = "pg15")]
    let same = a.spcNode == b.spcNode && a.dbNode == b.dbNode && a.relNode == b.relNode;
    #[cfg(any(feature = "pg16", feature = "pg17", feature = "pg18"))]
    let same = a.spcOid == b.spcOid && a.dbOid == b.dbOid && a.relNumber == b.relNumber;
    same
}

/// Whether `role` owns relation `relid` (superusers own everything).
///
/// # Safety
/// Must run inside a transaction (it reads the catalog); raises if the
/// relation does not exist.
pub unsafe fn owns_relation(relid: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    // SAFETY: a catalog lookup inside the caller's transaction.
    #[cfg(feature = "pg15")]
    let owns = unsafe { pg_sys::pg_class_ownercheck(relid, role) };
    // SAFETY: as above; pg_class's own oid names the catalog.
    #[cfg(any(feature = "pg16", feature = "pg17", feature = "pg18"))]
    let owns = unsafe { pg_sys::object_ownercheck(pg_sys::RelationRelationId, relid, role) };
    owns
}

/// The attribute `i` (from 0) of tuple descriptor `desc`.
///
/// # Safety
/// `desc` must be a valid tuple descriptor with more than `i` attributes;
/// the reference lives as long as the descriptor.
pub unsafe fn tuple_desc_attr<'a>(desc: pg_sys::TupleDesc, i: usize) -> &'a pg_sys::FormData_pg_attribute {
    // SAFETY: the caller guarantees `i < natts`, so the slice covers it.
    #[cfg(any(feature = "pg15", feature = "pg16", feature = "pg17"))]
    let attr = unsafe { &(*desc).attrs.as_slice((*desc).natts as usize)[i] };
    // SAFETY: as above; TupleDescAttr (a static inline function in C, a
    // shim in pgrx) only computes the address past the compact attributes.
    #[cfg(feature = "pg18")]
    let attr = unsafe { &*pg_sys::TupleDescAttr(desc, i as i32) };
    attr
}

/// PostgreSQL's `vacuum_delay_point` for VACUUM (not ANALYZE).
///
/// # Safety
/// Only where VACUUM may sleep and check for interrupts: no buffer lock
/// held, inside a transaction.
pub unsafe fn vacuum_delay_point() {
    // SAFETY: the caller's conditions are this function's.
    #[cfg(any(feature = "pg15", feature = "pg16", feature = "pg17"))]
    unsafe {
        pg_sys::vacuum_delay_point()
    };
    // SAFETY: as above.
    #[cfg(feature = "pg18")]
    unsafe {
        pg_sys::vacuum_delay_point(false)
    };
}

/// A reloption table entry for an option at byte `offset` of the options
/// struct (no "was it set" flag).
pub fn relopt(
    optname: &'static std::ffi::CStr,
    opttype: pg_sys::relopt_type::Type,
    offset: usize,
) -> pg_sys::relopt_parse_elt {
    pg_sys::relopt_parse_elt {
        optname: optname.as_ptr(),
        opttype,
        offset: offset as i32,
        #[cfg(feature = "pg18")]
        isset_offset: 0,
    }
}

/// Adds one index scan to a relation's pending statistics.
pub fn count_scan(stats: &mut pg_sys::PgStat_TableStatus) {
    #[cfg(feature = "pg15")]
    {
        stats.t_counts.t_numscans += 1;
    }
    #[cfg(any(feature = "pg16", feature = "pg17", feature = "pg18"))]
    {
        stats.counts.numscans += 1;
    }
}

/// Marks an index path the index cannot serve as disabled. PostgreSQL 18
/// compares paths by their number of disabled nodes before their cost, so
/// an infinite cost alone would still beat a sequential scan that
/// `enable_seqscan = off` disabled; two disabled nodes lose to it (as
/// pgvector's cost estimate does). Earlier versions use the cost alone.
///
/// # Safety
/// `path` is the `IndexPath` the planner passed to `amcostestimate`.
pub unsafe fn disable_path(path: *mut pg_sys::IndexPath) {
    #[cfg(feature = "pg18")]
    {
        (*path).path.disabled_nodes = 2;
    }
    #[cfg(not(feature = "pg18"))]
    let _ = path;
}

/// Counts one index search in the scan's instrumentation (PostgreSQL 18's
/// `Index Searches` line of `EXPLAIN ANALYZE`; earlier versions have none).
///
/// # Safety
/// `scan` must be an active scan descriptor.
pub unsafe fn count_index_search(scan: pg_sys::IndexScanDesc) {
    // SAFETY: the executor sets `instrument` (or leaves it NULL) before the
    // first amgettuple.
    #[cfg(feature = "pg18")]
    unsafe {
        if !(*scan).instrument.is_null() {
            (*(*scan).instrument).nsearches += 1;
        }
    }
    #[cfg(not(feature = "pg18"))]
    let _ = scan;
}
