//! The `hnsw` index access method.
//!
//! Where to look:
//! - [`graph`]: the algorithm (search, neighbor selection, levels), pure Rust;
//! - [`page`]: the on-disk format, pure Rust;
//! - [`storage`]: buffer access and the graph over buffer pages;
//! - [`build`] (`CREATE INDEX`), [`insert`] (`INSERT`), [`scan`]
//!   (`ORDER BY ... LIMIT`), [`vacuum`] (`VACUUM`), [`cost`] (planner),
//!   [`options`] (`WITH (...)`, `hnsw.ef_search`).
//!
//! See the PostgreSQL documentation, "Index Access Method Interface
//! Definition", for the callbacks wired up in [`hnsw_handler`].

pub mod build;
pub mod check;
pub mod cost;
pub mod graph;
pub mod insert;
pub mod options;
pub mod page;
pub mod recall;
pub mod scan;
pub mod storage;
pub mod vacuum;

use pgrx::prelude::*;
use pgrx::{pg_sys, PgBox, PgSqlErrorCode};

use crate::distance::Metric;
use crate::error::{raise, raise_hint};

/// `pg_stat_progress_create_index.phase` while scanning the heap and
/// building the graph.
pub const PROGRESS_PHASE_LOAD: i64 = 2;
/// ... while writing the graph to index pages.
pub const PROGRESS_PHASE_WRITE: i64 = 3;

/// Raises the dimension-mismatch error for a vector that does not match the
/// index (SQLSTATE 22000).
pub fn dimension_mismatch(expected: usize, got: usize) -> ! {
    raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, format!("different vector dimensions {expected} and {got}"))
}

/// Dimensions of the indexed column, from its `vector(n)` type modifier.
/// Refuses columns without one, or with more than 2,000 dimensions.
pub fn index_dims(index: pg_sys::Relation) -> usize {
    // SAFETY: an index relation has a tuple descriptor with one attribute.
    let typmod = unsafe {
        let desc = (*index).rd_att;
        (*desc).attrs.as_slice((*desc).natts as usize)[0].atttypmod
    };
    if typmod < 1 {
        raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "column does not have dimensions");
    }
    if typmod as usize > page::MAX_INDEX_DIMS {
        raise_hint(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("column cannot have more than {} dimensions for hnsw index", page::MAX_INDEX_DIMS),
            format!("the column has {typmod} dimensions"),
            "Index a lower-dimensional projection, or use an exact scan.",
        );
    }
    typmod as usize
}

/// The metric of the index's operator class, from its support function 1
/// (`hnsw_*_support()`, which returns the metric's code).
pub fn index_metric(index: pg_sys::Relation) -> Metric {
    // SAFETY: support procedure 1 of the first column exists for our
    // opclasses; it takes no arguments and returns an int4 code.
    let code = unsafe {
        let proc = pg_sys::index_getprocid(index, 1, 1);
        if proc == pg_sys::InvalidOid {
            raise(PgSqlErrorCode::ERRCODE_UNDEFINED_FUNCTION, "hnsw operator class has no support function 1");
        }
        pg_sys::OidFunctionCall0Coll(proc, pg_sys::InvalidOid).value() as i32
    };
    Metric::from_code(code as u8).unwrap_or_else(|| {
        raise(PgSqlErrorCode::ERRCODE_INVALID_OBJECT_DEFINITION, format!("unknown hnsw metric {code}"))
    })
}

/// Support function of `vector_l2_ops`.
#[pg_extern(immutable, parallel_safe)]
fn hnsw_l2_support() -> i32 {
    Metric::L2 as i32
}

/// Support function of `vector_ip_ops`.
#[pg_extern(immutable, parallel_safe)]
fn hnsw_ip_support() -> i32 {
    Metric::InnerProduct as i32
}

/// Support function of `vector_cosine_ops`.
#[pg_extern(immutable, parallel_safe)]
fn hnsw_cosine_support() -> i32 {
    Metric::Cosine as i32
}

/// Support function of `vector_l1_ops`.
#[pg_extern(immutable, parallel_safe)]
fn hnsw_l1_support() -> i32 {
    Metric::L1 as i32
}

/// `amvalidate`: the operator classes are created by our own script.
#[pg_guard]
unsafe extern "C-unwind" fn amvalidate(_opclassoid: pg_sys::Oid) -> bool {
    true
}

/// `amphasename`: names of the build phases in `pg_stat_progress_create_index`.
#[pg_guard]
unsafe extern "C-unwind" fn amphasename(phase: i64) -> *mut std::ffi::c_char {
    let name: &'static std::ffi::CStr = match phase {
        PROGRESS_PHASE_LOAD => c"loading tuples",
        PROGRESS_PHASE_WRITE => c"writing index pages",
        _ => return std::ptr::null_mut(),
    };
    name.as_ptr() as *mut std::ffi::c_char
}

/// The index AM handler: fills in an `IndexAmRoutine` with our callbacks.
#[pg_extern(sql = "
CREATE FUNCTION hnsw_handler(internal) RETURNS index_am_handler
    LANGUAGE c AS 'MODULE_PATHNAME', '@FUNCTION_NAME@';
")]
fn hnsw_handler(_fcinfo: pg_sys::FunctionCallInfo) -> PgBox<pg_sys::IndexAmRoutine> {
    // SAFETY: makeNode-equivalent allocation of a zeroed IndexAmRoutine.
    let mut am = unsafe { PgBox::<pg_sys::IndexAmRoutine>::alloc_node(pg_sys::NodeTag::T_IndexAmRoutine) };
    am.amstrategies = 0;
    am.amsupport = 1;
    am.amoptsprocnum = 0;
    am.amcanorder = false;
    am.amcanorderbyop = true;
    am.amcanbackward = false;
    am.amcanunique = false;
    am.amcanmulticol = false;
    am.amoptionalkey = true;
    am.amsearcharray = false;
    am.amsearchnulls = false;
    am.amstorage = false;
    am.amclusterable = false;
    am.ampredlocks = false;
    am.amcanparallel = false;
    am.amcaninclude = false;
    am.amusemaintenanceworkmem = false;
    am.amparallelvacuumoptions = pg_sys::VACUUM_OPTION_PARALLEL_BULKDEL as u8;
    am.amkeytype = pg_sys::InvalidOid;

    am.ambuild = Some(build::ambuild);
    am.ambuildempty = Some(build::ambuildempty);
    am.aminsert = Some(insert::aminsert);
    am.ambulkdelete = Some(vacuum::ambulkdelete);
    am.amvacuumcleanup = Some(vacuum::amvacuumcleanup);
    am.amcostestimate = Some(cost::amcostestimate);
    am.amoptions = Some(options::amoptions);
    am.amvalidate = Some(amvalidate);
    am.ambuildphasename = Some(amphasename);
    am.ambeginscan = Some(scan::ambeginscan);
    am.amrescan = Some(scan::amrescan);
    am.amgettuple = Some(scan::amgettuple);
    am.amendscan = Some(scan::amendscan);
    am.into_pg_boxed()
}
