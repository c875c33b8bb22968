//! The `sparsevec` SQL type: a sparse vector of `float4` values, laid out and
//! exchanged exactly as pgvector's `sparsevec`.
//!
//! Datum layout (native endian, read in place): `varlena header (4 bytes) |
//! int32 dim | int32 nnz | int32 unused (0) | int32 indices[nnz] | float4
//! values[nnz]`, so `16 + 8·nnz` bytes. Indices are 0-based (the text form is
//! 1-based) and strictly increasing, values are finite and non-zero; `dim` is
//! in `1..=1,000,000,000` and `nnz` in `0..=min(dim, 16000)`.

pub mod casts;
pub mod ops;

use pgrx::datum::Internal;
use pgrx::prelude::*;
use pgrx::{pg_sys, PgSqlErrorCode};
use std::ffi::{CStr, CString};
use std::ptr::NonNull;

use super::glue::{alloc_varlena, detoast, varlena_glue};
use super::{check_element_of, check_expected_dim, format_element, raise_parse_error, text, typmod_in};
use crate::error::raise;

/// Most dimensions a `sparsevec` may have (pgvector's `SPARSEVEC_MAX_DIM`).
pub const SPARSEVEC_MAX_DIM: usize = 1_000_000_000;

/// Most non-zero elements a `sparsevec` may have (`SPARSEVEC_MAX_NNZ`).
pub const SPARSEVEC_MAX_NNZ: usize = 16_000;

/// Bytes before the indices: varlena header, dim, nnz, unused.
pub const SPARSEVEC_HEADER_SIZE: usize = 16;

/// A detoasted `sparsevec` value in Postgres memory. It owns nothing: the
/// memory belongs to the memory context it lives in.
pub struct SparseVec {
    ptr: NonNull<u8>,
    dim: usize,
    nnz: usize,
}

/// Raises the data-corruption error (XX001) for a malformed datum.
fn corrupt(detail: String) -> ! {
    crate::error::raise_detail(PgSqlErrorCode::ERRCODE_DATA_CORRUPTED, "invalid sparsevec datum", detail)
}

impl SparseVec {
    /// Wraps a possibly toasted `sparsevec` datum: detoasts it and validates
    /// the header (`dim`, `nnz` in range, size exactly `16 + 8·nnz`,
    /// alignment) and the indices (each in `0..dim`, strictly increasing),
    /// raising `ERROR` (XX001) otherwise. Values are read in place afterwards
    /// and not checked (a damaged value gives a wrong distance, nothing worse).
    ///
    /// # Safety
    /// `datum` must be a non-null varlena datum from Postgres.
    pub unsafe fn from_raw_datum(datum: pg_sys::Datum) -> SparseVec {
        // SAFETY: forwarded from the caller's contract.
        let (p, total) = unsafe { detoast(datum) };
        let ptr = NonNull::new(p).unwrap_or_else(|| corrupt("null pointer".into()));
        if total < SPARSEVEC_HEADER_SIZE {
            corrupt(format!("datum of {total} bytes is shorter than the sparsevec header"));
        }
        if (p as usize) % std::mem::align_of::<i32>() != 0 {
            corrupt("misaligned datum".into());
        }
        // SAFETY: at least SPARSEVEC_HEADER_SIZE bytes are readable (checked above).
        let header = unsafe { std::slice::from_raw_parts(p, SPARSEVEC_HEADER_SIZE) };
        let int = |k: usize| i32::from_ne_bytes([header[k], header[k + 1], header[k + 2], header[k + 3]]);
        let (dim, nnz) = (int(4), int(8));
        if dim < 1 || dim as usize > SPARSEVEC_MAX_DIM {
            corrupt(format!("dimension count {dim} out of range"));
        }
        if nnz < 0 || nnz as usize > SPARSEVEC_MAX_NNZ || nnz > dim {
            corrupt(format!("{nnz} non-zero elements out of range for {dim} dimensions"));
        }
        let (dim, nnz) = (dim as usize, nnz as usize);
        if total != SPARSEVEC_HEADER_SIZE + 8 * nnz {
            corrupt(format!("{nnz} elements do not fit a datum of {total} bytes"));
        }
        let v = SparseVec { ptr, dim, nnz };
        if let Some(k) = first_bad_index(v.indices(), dim) {
            corrupt(format!("index {} at position {k} is out of order or out of range", v.indices()[k]));
        }
        v
    }

    /// Allocates a `sparsevec` of `dim` dimensions with room for `nnz`
    /// elements (indices and values zero, to be filled by the caller through
    /// [`SparseVec::parts_mut`]). `dim` in `1..=1e9` and `nnz` in
    /// `0..=min(dim, 16000)` (callers check them first).
    pub fn zeroed(dim: usize, nnz: usize) -> SparseVec {
        assert!((1..=SPARSEVEC_MAX_DIM).contains(&dim) && nnz <= SPARSEVEC_MAX_NNZ.min(dim));
        let ptr = alloc_varlena(SPARSEVEC_HEADER_SIZE + 8 * nnz);
        // SAFETY: the allocation holds the 16-byte header; dim and nnz go to
        // bytes 4..8 and 8..12 (unused stays 0).
        unsafe {
            std::ptr::copy_nonoverlapping((dim as i32).to_ne_bytes().as_ptr(), ptr.as_ptr().add(4), 4);
            std::ptr::copy_nonoverlapping((nnz as i32).to_ne_bytes().as_ptr(), ptr.as_ptr().add(8), 4);
        }
        SparseVec { ptr, dim, nnz }
    }

    /// Copies (indices, values) into a new `sparsevec` of `dim` dimensions.
    /// The caller guarantees the type's invariants (indices strictly
    /// increasing in `0..dim`, values finite and non-zero, counts in range).
    pub fn from_parts(dim: usize, indices: &[i32], values: &[f32]) -> SparseVec {
        assert_eq!(indices.len(), values.len());
        let mut v = SparseVec::zeroed(dim, indices.len());
        let (i, x) = v.parts_mut();
        i.copy_from_slice(indices);
        x.copy_from_slice(values);
        v
    }

    /// Number of dimensions.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of stored (non-zero) elements.
    pub fn nnz(&self) -> usize {
        self.nnz
    }

    /// The 0-based indices of the stored elements, strictly increasing.
    pub fn indices(&self) -> &[i32] {
        // SAFETY: the constructor checked that `nnz` int32s follow the
        // 16-byte header inside the 4-aligned datum.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(SPARSEVEC_HEADER_SIZE) as *const i32, self.nnz) }
    }

    /// The stored values, one per index.
    pub fn values(&self) -> &[f32] {
        // SAFETY: `nnz` float4s follow the indices (size checked in the
        // constructor), 4-aligned.
        unsafe {
            std::slice::from_raw_parts(
                self.ptr.as_ptr().add(SPARSEVEC_HEADER_SIZE + 4 * self.nnz) as *const f32,
                self.nnz,
            )
        }
    }

    /// Indices and values, mutable (only for values this backend just allocated).
    pub fn parts_mut(&mut self) -> (&mut [i32], &mut [f32]) {
        // SAFETY: as in `indices`/`values`; the two ranges do not overlap and
        // `&mut self` gives exclusive access.
        unsafe {
            let base = self.ptr.as_ptr().add(SPARSEVEC_HEADER_SIZE);
            (
                std::slice::from_raw_parts_mut(base as *mut i32, self.nnz),
                std::slice::from_raw_parts_mut(base.add(4 * self.nnz) as *mut f32, self.nnz),
            )
        }
    }

    /// The dense form (`dim` values, zeros where nothing is stored). Callers
    /// first check that `dim` fits the dense type (at most 16,000).
    pub fn to_dense(&self) -> Vec<f32> {
        assert!(self.dim <= SPARSEVEC_MAX_NNZ, "dense form of {} dimensions", self.dim);
        let mut out = vec![0.0f32; self.dim];
        for (&i, &x) in self.indices().iter().zip(self.values()) {
            out[i as usize] = x;
        }
        out
    }

    /// The datum pointing at this value.
    pub fn into_raw_datum(self) -> pg_sys::Datum {
        pg_sys::Datum::from(self.ptr.as_ptr())
    }
}

/// Position of the first index that is negative, not below `dim`, or not
/// above its predecessor; `None` when the list is valid.
pub fn first_bad_index(indices: &[i32], dim: usize) -> Option<usize> {
    let mut previous = -1i64;
    for (k, &i) in indices.iter().enumerate() {
        if (i as i64) <= previous || i as i64 >= dim as i64 {
            return Some(k);
        }
        previous = i as i64;
    }
    None
}

varlena_glue!(SparseVec, "sparsevec", ThisExtension, pgrx::wrappers::rust_regtypein::<SparseVec>());

extension_sql!(
    r#"
CREATE TYPE sparsevec;

CREATE FUNCTION sparsevec_in(cstring, oid, integer) RETURNS sparsevec
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE C AS 'MODULE_PATHNAME', 'sparsevec_in_wrapper';
CREATE FUNCTION sparsevec_out(sparsevec) RETURNS cstring
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE C AS 'MODULE_PATHNAME', 'sparsevec_out_wrapper';
CREATE FUNCTION sparsevec_typmod_in(cstring[]) RETURNS integer
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE C AS 'MODULE_PATHNAME', 'sparsevec_typmod_in_wrapper';
CREATE FUNCTION sparsevec_recv(internal, oid, integer) RETURNS sparsevec
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE C AS 'MODULE_PATHNAME', 'sparsevec_recv_wrapper';
CREATE FUNCTION sparsevec_send(sparsevec) RETURNS bytea
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE C AS 'MODULE_PATHNAME', 'sparsevec_send_wrapper';

CREATE TYPE sparsevec (
    INPUT     = sparsevec_in,
    OUTPUT    = sparsevec_out,
    TYPMOD_IN = sparsevec_typmod_in,
    RECEIVE   = sparsevec_recv,
    SEND      = sparsevec_send,
    STORAGE   = external
);
"#,
    name = "sparsevec_type",
    requires = ["halfvec_type"],
    creates = [Type(SparseVec)],
);

/// Checks a `sparsevec` dimension count (`1..=1,000,000,000`): below is
/// SQLSTATE 22000, above 54000, with pgvector's wording.
pub fn check_dim(dim: i64) {
    if dim < 1 {
        raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, "sparsevec must have at least 1 dimension");
    }
    super::check_dim_of("sparsevec", dim as usize, SPARSEVEC_MAX_DIM);
}

/// Checks a count of stored elements against `0..=min(16000, dim)`
/// (pgvector's `CheckNnz`).
pub fn check_nnz(nnz: i64, dim: i64) {
    if nnz < 0 {
        raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, "sparsevec cannot have negative number of elements");
    }
    if nnz > SPARSEVEC_MAX_NNZ as i64 {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("sparsevec cannot have more than {SPARSEVEC_MAX_NNZ} non-zero elements"),
        );
    }
    if nnz > dim {
        raise(PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED, "sparsevec cannot have more elements than dimensions");
    }
}

/// Raises `different sparsevec dimensions A and B` unless they match.
pub fn check_same_dims(a: &SparseVec, b: &SparseVec) {
    super::check_same_dims_of("sparsevec", a.dim(), b.dim());
}

/// Builds a `sparsevec` of `dim` dimensions from dense `values`, keeping the
/// non-zero ones (each must be finite: rejected as a `sparsevec` element).
/// `dim` was checked by the caller; the element count is checked here.
pub fn from_dense(dim: usize, values: impl Iterator<Item = f32>) -> SparseVec {
    let (mut indices, mut kept) = (Vec::new(), Vec::new());
    for (k, x) in values.enumerate() {
        if x != 0.0 {
            indices.push(k as i32);
            kept.push(x);
        }
    }
    check_nnz(kept.len() as i64, dim as i64);
    for &x in &kept {
        check_element_of("sparsevec", x);
    }
    SparseVec::from_parts(dim, &indices, &kept)
}

/// Text input: `'{1:1.5,3:2}/5'` (1-based indices in any order, zeros
/// dropped), with `sparsevec(n)` enforced when `typmod` is set.
#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn sparsevec_in(input: &CStr, _oid: pg_sys::Oid, typmod: i32) -> SparseVec {
    let s = input.to_string_lossy();
    let parsed = text::parse_sparsevec(&s, SPARSEVEC_MAX_DIM, SPARSEVEC_MAX_NNZ, typmod)
        .unwrap_or_else(|e| raise_parse_error("sparsevec", &s, SPARSEVEC_MAX_DIM, e));
    SparseVec::from_parts(parsed.dim, &parsed.indices, &parsed.values)
}

/// The text form `{i:v,...}/dim` with 1-based indices and each value as
/// the shortest decimal that reads back as the same `real`.
pub fn format(dim: usize, indices: &[i32], values: &[f32]) -> String {
    let mut s = String::with_capacity(8 + indices.len() * 16);
    s.push('{');
    for (k, (&i, &x)) in indices.iter().zip(values).enumerate() {
        if k > 0 {
            s.push(',');
        }
        s.push_str(&(i as i64 + 1).to_string());
        s.push(':');
        format_element(x, &mut s);
    }
    s.push_str("}/");
    s.push_str(&dim.to_string());
    s
}

/// Text output (see [`format`]).
#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn sparsevec_out(v: SparseVec) -> CString {
    CString::new(format(v.dim(), v.indices(), v.values())).expect("formatted numbers contain no NUL")
}

/// Type modifier input: `sparsevec(n)` with `n` in `1..=1,000,000,000`.
#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn sparsevec_typmod_in(list: Array<&CStr>) -> i32 {
    typmod_in(list, "sparsevec", SPARSEVEC_MAX_DIM)
}

/// Binary input in pgvector's wire format: int32 dim, int32 nnz, int32
/// unused (0), int32 indices\[nnz\] (0-based, strictly increasing, below
/// dim), float4 values\[nnz\] (finite, non-zero), all big-endian; every rule
/// is checked with pgvector's error.
#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn sparsevec_recv(buf: Internal, _oid: pg_sys::Oid, typmod: i32) -> SparseVec {
    // SAFETY: Postgres passes a StringInfo as the `internal` argument of a
    // receive function; pq_getmsg* check bounds and raise on short input.
    unsafe {
        let buf = buf.unwrap().expect("recv buffer").cast_mut_ptr::<pg_sys::StringInfoData>();
        let dim = pg_sys::pq_getmsgint(buf, 4) as i32;
        let nnz = pg_sys::pq_getmsgint(buf, 4) as i32;
        let unused = pg_sys::pq_getmsgint(buf, 4) as i32;
        check_dim(dim as i64);
        check_nnz(nnz as i64, dim as i64);
        check_expected_dim(typmod, dim as usize);
        if unused != 0 {
            raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, format!("expected unused to be 0, not {unused}"));
        }
        let mut v = SparseVec::zeroed(dim as usize, nnz as usize);
        let (indices, values) = v.parts_mut();
        for k in 0..indices.len() {
            indices[k] = pg_sys::pq_getmsgint(buf, 4) as i32;
            check_index(indices, k, dim as usize);
        }
        for x in values.iter_mut() {
            *x = pg_sys::pq_getmsgfloat4(buf);
            check_element_of("sparsevec", *x);
            if *x == 0.0 {
                raise(
                    PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
                    "binary representation of sparsevec cannot contain zero values",
                );
            }
        }
        v
    }
}

/// Checks index `k` of `indices` against `0..dim` and its predecessor, with
/// pgvector's errors (SQLSTATE 22000).
fn check_index(indices: &[i32], k: usize, dim: usize) {
    let i = indices[k];
    if i < 0 || i as i64 >= dim as i64 {
        raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, "sparsevec index out of bounds");
    }
    if k > 0 && i < indices[k - 1] {
        raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, "sparsevec indices must be in ascending order");
    }
    if k > 0 && i == indices[k - 1] {
        raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, "sparsevec indices must not contain duplicates");
    }
}

/// Binary output in pgvector's wire format (see [`sparsevec_recv`]).
#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn sparsevec_send(v: SparseVec) -> Vec<u8> {
    encode_wire(v.dim(), v.indices(), v.values())
}

/// pgvector's binary form of a `sparsevec` (see [`sparsevec_recv`]).
pub fn encode_wire(dim: usize, indices: &[i32], values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + 8 * indices.len());
    out.extend_from_slice(&(dim as i32).to_be_bytes());
    out.extend_from_slice(&(indices.len() as i32).to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    for &i in indices {
        out.extend_from_slice(&i.to_be_bytes());
    }
    for &x in values {
        out.extend_from_slice(&x.to_be_bytes());
    }
    out
}

/// Typmod coercion `sparsevec -> sparsevec(n)`, used for assignment and casts.
#[pg_extern(immutable, strict, parallel_safe, name = "sparsevec")]
fn sparsevec_typmod_cast(v: SparseVec, typmod: i32, _explicit: bool) -> SparseVec {
    check_expected_dim(typmod, v.dim());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_pgvectors_byte_for_byte() {
        let bytes = encode_wire(5, &[1, 3], &[1.5, -2.0]);
        let expected: Vec<u8> = [
            &5i32.to_be_bytes()[..],
            &2i32.to_be_bytes(),
            &[0, 0, 0, 0],
            &[0, 0, 0, 1],
            &[0, 0, 0, 3],
            &[0x3F, 0xC0, 0, 0],
            &[0xC0, 0, 0, 0],
        ]
        .concat();
        assert_eq!(bytes, expected);
        assert_eq!(encode_wire(1_000_000_000, &[], &[]), [&[0x3B, 0x9A, 0xCA, 0x00][..], &[0; 8]].concat());
    }

    #[test]
    fn index_validation_finds_the_first_bad_index() {
        assert_eq!(first_bad_index(&[0, 1, 5], 6), None);
        assert_eq!(first_bad_index(&[], 1), None);
        assert_eq!(first_bad_index(&[0, 0], 6), Some(1));
        assert_eq!(first_bad_index(&[3, 1], 6), Some(1));
        assert_eq!(first_bad_index(&[-1], 6), Some(0));
        assert_eq!(first_bad_index(&[0, 6], 6), Some(1));
    }
}
