//! The `hnsw` index access method.
//!
//! Where to look:
//! - [`graph`]: the algorithm (search, neighbor selection, levels), pure Rust;
//! - [`codec`]: how each element type (`vector`, `halfvec`, `bit`,
//!   `sparsevec`) is held in the graph and on pages, pure Rust;
//! - [`page`]: the on-disk format, pure Rust;
//! - [`directory`]: the key directory of an index with filter columns;
//! - [`storage`]: buffer access and the graph over buffer pages;
//! - [`build`] (`CREATE INDEX`), [`insert`] (`INSERT`), [`scan`]
//!   (`ORDER BY ... LIMIT`), [`vacuum`] (`VACUUM`), [`cost`] (planner),
//!   [`options`] (`WITH (...)`, `hnsw.ef_search`).
//!
//! See the PostgreSQL documentation, "Index Access Method Interface
//! Definition", for the callbacks wired up in [`hnsw_handler`].

pub mod build;
pub mod check;
pub mod codec;
pub mod cost;
pub mod directory;
pub mod graph;
pub mod insert;
pub mod key_datum;
pub mod keys;
pub mod options;
pub mod page;
pub mod scan;
pub mod storage;
pub mod vacuum;

use pgrx::prelude::*;
use pgrx::{pg_sys, PgBox, PgSqlErrorCode};

use crate::distance::Metric;
use crate::error::{raise, raise_detail, raise_hint};
use crate::vector::bit::VarBit;
use crate::vector::halfvec::HalfVec;
use crate::vector::sparsevec::SparseVec;
use crate::vector::Vector;
use codec::{Codec, CodecError, Kind};

/// `pg_stat_progress_create_index.phase` while scanning the heap and
/// building the graph.
pub const PROGRESS_PHASE_LOAD: i64 = 2;
/// ... while writing the graph to index pages.
pub const PROGRESS_PHASE_WRITE: i64 = 3;

/// Raises the dimension-mismatch error for a value that does not match the
/// index (SQLSTATE 22000), in the wording of the type's own operators.
pub fn dimension_mismatch(kind: Kind, expected: usize, got: usize) -> ! {
    let message = match kind {
        Kind::Vector => format!("different vector dimensions {expected} and {got}"),
        Kind::HalfVec => format!("different halfvec dimensions {expected} and {got}"),
        Kind::SparseVec => format!("different sparsevec dimensions {expected} and {got}"),
        Kind::Bit => format!("different bit lengths {expected} and {got}"),
    };
    raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, message)
}

/// The element codec of an index: its type and metric from the operator
/// class (support function 1 returns `kind << 8 | metric`, see
/// [`support_code`]), its dimensions from the indexed column's type modifier
/// (`vector(n)`, `bit(n)`, ...). Raises pgvector's errors for columns
/// without dimensions, with too many, and for `varbit`.
pub fn index_codec(index: pg_sys::Relation) -> Codec {
    // SAFETY: an index relation has a tuple descriptor with one attribute.
    let (typmod, typid) = unsafe {
        let desc = (*index).rd_att;
        let attr = crate::compat::tuple_desc_attr(desc, 0);
        (attr.atttypmod, attr.atttypid)
    };
    if typid == pg_sys::VARBITOID {
        raise(PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED, "type not supported for hnsw index");
    }
    // SAFETY: support procedure 1 of the first column exists for our
    // opclasses; it takes no arguments and returns an int4 code.
    let code = unsafe {
        let proc = pg_sys::index_getprocid(index, 1, 1);
        if proc == pg_sys::InvalidOid {
            raise(PgSqlErrorCode::ERRCODE_UNDEFINED_FUNCTION, "hnsw operator class has no support function 1");
        }
        pg_sys::OidFunctionCall0Coll(proc, pg_sys::InvalidOid).value() as i32
    };
    let (kind, metric) = ((code >> 8) as u8, code as u8);
    let kind = Kind::from_code(kind).unwrap_or_else(|| {
        raise(PgSqlErrorCode::ERRCODE_INVALID_OBJECT_DEFINITION, format!("unknown hnsw element kind {kind}"))
    });
    if typmod < 1 {
        raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "column does not have dimensions");
    }
    if typmod as usize > kind.max_dims() {
        raise_hint(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("column cannot have more than {} dimensions for hnsw index", kind.max_dims()),
            format!("the column has {typmod} dimensions"),
            "Index a lower-dimensional projection (e.g. an expression index on a subvector or binary_quantize), or use an exact scan.",
        );
    }
    let codec = Codec::from_codes(kind as u8, metric, typmod as usize)
        .unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_INVALID_OBJECT_DEFINITION, e));
    let codes = options::vector_codes_of(index);
    // On other types the option is ignored with a warning, not refused:
    // `ALTER INDEX ... SET` cannot see the column type, and an error here
    // would make every later rebuild (TRUNCATE, REINDEX, a restored dump)
    // fail after an ALTER that succeeded.
    if codes != options::DEFAULT_QUANTIZATION && kind != Kind::Vector {
        pgrx::ereport!(
            WARNING,
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "quantization = '{}' applies to vector columns only; this {} index stores its values exactly",
                codes.name(),
                kind.type_name()
            )
        );
    }
    codec.with_vector_codes(codes)
}

/// Reads a non-null datum of the index's type into `codec`'s working form.
/// `None` when the value is not indexed (a zero vector under cosine). Raises
/// the type's dimension error for a value that does not match the index, and
/// pgvector's error for a `sparsevec` row with too many non-zero elements.
///
/// # Safety
/// `datum` must be a non-null datum of the indexed column's type.
pub unsafe fn prepare_datum(codec: &Codec, datum: pg_sys::Datum) -> Option<Vec<u32>> {
    // SAFETY: the caller promises a datum of the index's type, which the
    // codec's kind names (the operator class fixes the type).
    let prepared = unsafe {
        match codec.kind() {
            Kind::Vector => codec.prepare_dense(Vector::from_raw_datum(datum).as_slice()),
            Kind::HalfVec => {
                let v = HalfVec::from_raw_datum(datum);
                let values: Vec<f32> = v.as_slice().iter().map(|h| h.to_f32()).collect();
                codec.prepare_dense(&values)
            }
            Kind::Bit => {
                let v = VarBit::from_raw_datum(datum);
                codec.prepare_bits(v.len_bits(), v.bytes())
            }
            Kind::SparseVec => {
                let v = SparseVec::from_raw_datum(datum);
                codec.prepare_sparse(v.dim(), v.indices(), v.values())
            }
        }
    };
    match prepared {
        Ok(v) => v,
        Err(CodecError::Dimensions(expected, got)) => dimension_mismatch(codec.kind(), expected, got),
        Err(CodecError::TooManyNonZero(nnz)) => raise_detail(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("sparsevec cannot have more than {} non-zero elements for hnsw index", codec::MAX_SPARSE_NNZ),
            format!("the row has {nnz} non-zero elements"),
        ),
        Err(CodecError::Corrupt(e)) => raise(PgSqlErrorCode::ERRCODE_DATA_CORRUPTED, e),
    }
}

/// The code support function 1 of an operator class returns: element kind
/// in bits 8..16, metric below.
pub const fn support_code(kind: Kind, metric: u8) -> i32 {
    ((kind as i32) << 8) | metric as i32
}

macro_rules! support_functions {
    ($($(#[$doc:meta])* $name:ident => $kind:expr, $metric:expr;)*) => {$(
        $(#[$doc])*
        #[pg_extern(immutable, parallel_safe)]
        fn $name() -> i32 {
            support_code($kind, $metric)
        }
    )*};
}

support_functions! {
    /// Support function 1 of `vector_l2_ops`.
    hnsw_l2_support => Kind::Vector, Metric::L2 as u8;
    /// Support function 1 of `vector_ip_ops`.
    hnsw_ip_support => Kind::Vector, Metric::InnerProduct as u8;
    /// Support function 1 of `vector_cosine_ops`.
    hnsw_cosine_support => Kind::Vector, Metric::Cosine as u8;
    /// Support function 1 of `vector_l1_ops`.
    hnsw_l1_support => Kind::Vector, Metric::L1 as u8;
    /// Support function 1 of `halfvec_l2_ops`.
    hnsw_halfvec_l2_support => Kind::HalfVec, Metric::L2 as u8;
    /// Support function 1 of `halfvec_ip_ops`.
    hnsw_halfvec_ip_support => Kind::HalfVec, Metric::InnerProduct as u8;
    /// Support function 1 of `halfvec_cosine_ops`.
    hnsw_halfvec_cosine_support => Kind::HalfVec, Metric::Cosine as u8;
    /// Support function 1 of `halfvec_l1_ops`.
    hnsw_halfvec_l1_support => Kind::HalfVec, Metric::L1 as u8;
    /// Support function 1 of `sparsevec_l2_ops`.
    hnsw_sparsevec_l2_support => Kind::SparseVec, Metric::L2 as u8;
    /// Support function 1 of `sparsevec_ip_ops`.
    hnsw_sparsevec_ip_support => Kind::SparseVec, Metric::InnerProduct as u8;
    /// Support function 1 of `sparsevec_cosine_ops`.
    hnsw_sparsevec_cosine_support => Kind::SparseVec, Metric::Cosine as u8;
    /// Support function 1 of `sparsevec_l1_ops`.
    hnsw_sparsevec_l1_support => Kind::SparseVec, Metric::L1 as u8;
    /// Support function 1 of `bit_hamming_ops`.
    hnsw_bit_hamming_support => Kind::Bit, codec::HAMMING_CODE;
    /// Support function 1 of `bit_jaccard_ops`.
    hnsw_bit_jaccard_support => Kind::Bit, codec::JACCARD_CODE;
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
    am.amcanmulticol = true;
    am.amoptionalkey = true;
    am.amsearcharray = true;
    am.amsearchnulls = false;
    am.amstorage = false;
    am.amclusterable = false;
    am.ampredlocks = false;
    am.amcanparallel = false;
    am.amcaninclude = false;
    // VACUUM sizes its batches from maintenance_work_mem: with this set,
    // parallel VACUUM gives each worker its share, not all of it.
    am.amusemaintenanceworkmem = true;
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
