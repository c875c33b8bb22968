//! The `halfvec` SQL type: a vector of IEEE 754 binary16 ("half precision")
//! elements, laid out and exchanged exactly as pgvector's `halfvec`.
//!
//! Datum layout (native endian, read in place): `varlena header (4 bytes) |
//! int16 dim | int16 unused (0) | binary16[dim]`, so `8 + 2·dim` bytes, with
//! `dim` in `1..=16000`. Values are finite (input, casts and arithmetic reject
//! NaN, infinities and overflow past ±65504).

pub mod casts;
pub mod ops;

use half::f16;
use pgrx::datum::Internal;
use pgrx::prelude::*;
use pgrx::{pg_sys, PgSqlErrorCode};
use std::ffi::{CStr, CString};
use std::ptr::NonNull;

use super::glue::{alloc_varlena, detoast, varlena_glue};
use super::{check_dim_of, check_element_of, check_expected_dim, format_element, raise_parse_error, text, typmod_in};
use crate::error::raise;

/// Most dimensions a `halfvec` may have (pgvector's `HALFVEC_MAX_DIM`).
pub const HALFVEC_MAX_DIM: usize = 16_000;

/// Bytes before the first element: varlena header, dim, unused.
pub const HALFVEC_HEADER_SIZE: usize = 8;

/// A detoasted `halfvec` value in Postgres memory (an argument, or a result
/// palloc'd in the current memory context). It owns nothing: the memory
/// belongs to the memory context it lives in.
pub struct HalfVec {
    ptr: NonNull<u8>,
    dim: usize,
}

/// Raises the data-corruption error (XX001) for a datum whose header is wrong.
fn corrupt(detail: String) -> ! {
    crate::error::raise_detail(PgSqlErrorCode::ERRCODE_DATA_CORRUPTED, "invalid halfvec datum", detail)
}

impl HalfVec {
    /// Wraps a possibly toasted `halfvec` datum: detoasts it and validates the
    /// header (dimension count in `1..=16000`, size exactly `8 + 2·dim`,
    /// alignment), raising `ERROR` (XX001) otherwise. The elements are read
    /// in place afterwards.
    ///
    /// # Safety
    /// `datum` must be a non-null varlena datum from Postgres.
    pub unsafe fn from_raw_datum(datum: pg_sys::Datum) -> HalfVec {
        // SAFETY: forwarded from the caller's contract.
        let (p, total) = unsafe { detoast(datum) };
        let ptr = NonNull::new(p).unwrap_or_else(|| corrupt("null pointer".into()));
        if total < HALFVEC_HEADER_SIZE {
            corrupt(format!("datum of {total} bytes is shorter than the halfvec header"));
        }
        // SAFETY: at least HALFVEC_HEADER_SIZE bytes are readable (checked above).
        let header = unsafe { std::slice::from_raw_parts(p, HALFVEC_HEADER_SIZE) };
        let dim = i16::from_ne_bytes([header[4], header[5]]);
        if dim < 1 || dim as usize > HALFVEC_MAX_DIM {
            corrupt(format!("dimension count {dim} out of range"));
        }
        let dim = dim as usize;
        if total != HALFVEC_HEADER_SIZE + 2 * dim {
            corrupt(format!("{dim} dimensions do not fit a datum of {total} bytes"));
        }
        if (p as usize) % std::mem::align_of::<u16>() != 0 {
            corrupt("misaligned datum".into());
        }
        HalfVec { ptr, dim }
    }

    /// Allocates a `halfvec` of `dim` zero elements in the current memory
    /// context. `dim` must be in `1..=16000` (callers check it first).
    pub fn zeroed(dim: usize) -> HalfVec {
        assert!((1..=HALFVEC_MAX_DIM).contains(&dim));
        let ptr = alloc_varlena(HALFVEC_HEADER_SIZE + 2 * dim);
        // SAFETY: the allocation is 8 + 2·dim bytes; bytes 4..6 hold dim.
        unsafe { std::ptr::copy_nonoverlapping((dim as i16).to_ne_bytes().as_ptr(), ptr.as_ptr().add(4), 2) };
        HalfVec { ptr, dim }
    }

    /// Copies `values` (1..=16000 of them) into a new `halfvec`.
    pub fn from_slice(values: &[f16]) -> HalfVec {
        let mut v = HalfVec::zeroed(values.len());
        v.as_mut_slice().copy_from_slice(values);
        v
    }

    /// Number of dimensions.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The elements, read in place.
    pub fn as_slice(&self) -> &[f16] {
        // SAFETY: the constructor checked that `dim` 2-byte elements follow
        // the 8-byte header inside the datum and that it is 2-aligned; `f16`
        // is a transparent `u16`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(HALFVEC_HEADER_SIZE) as *const f16, self.dim) }
    }

    /// The elements' IEEE bit patterns, read in place (what the `*_half`
    /// kernels of [`crate::distance`] take).
    pub fn as_bits(&self) -> &[u16] {
        // SAFETY: as in `as_slice`; `f16` and `u16` have the same layout.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(HALFVEC_HEADER_SIZE) as *const u16, self.dim) }
    }

    /// The elements, mutable (only for values this backend just allocated).
    pub fn as_mut_slice(&mut self) -> &mut [f16] {
        // SAFETY: as in `as_slice`; `&mut self` gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(HALFVEC_HEADER_SIZE) as *mut f16, self.dim) }
    }

    /// The elements widened to `f32` (exact).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        self.as_slice().iter().map(|h| h.to_f32()).collect()
    }

    /// The datum pointing at this value.
    pub fn into_raw_datum(self) -> pg_sys::Datum {
        pg_sys::Datum::from(self.ptr.as_ptr())
    }
}

varlena_glue!(HalfVec, "halfvec", ThisExtension, pgrx::wrappers::rust_regtypein::<HalfVec>());

extension_sql!(
    r#"
CREATE TYPE halfvec;

CREATE FUNCTION halfvec_in(cstring, oid, integer) RETURNS halfvec
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE C AS 'MODULE_PATHNAME', 'halfvec_in_wrapper';
CREATE FUNCTION halfvec_out(halfvec) RETURNS cstring
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE C AS 'MODULE_PATHNAME', 'halfvec_out_wrapper';
CREATE FUNCTION halfvec_typmod_in(cstring[]) RETURNS integer
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE C AS 'MODULE_PATHNAME', 'halfvec_typmod_in_wrapper';
CREATE FUNCTION halfvec_recv(internal, oid, integer) RETURNS halfvec
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE C AS 'MODULE_PATHNAME', 'halfvec_recv_wrapper';
CREATE FUNCTION halfvec_send(halfvec) RETURNS bytea
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE C AS 'MODULE_PATHNAME', 'halfvec_send_wrapper';

CREATE TYPE halfvec (
    INPUT     = halfvec_in,
    OUTPUT    = halfvec_out,
    TYPMOD_IN = halfvec_typmod_in,
    RECEIVE   = halfvec_recv,
    SEND      = halfvec_send,
    STORAGE   = external
);
"#,
    name = "halfvec_type",
    requires = ["vector_type"],
    creates = [Type(HalfVec)],
);

/// Checks a `halfvec` dimension count (`1..=16000`, pgvector's errors).
pub fn check_dim(dim: usize) {
    check_dim_of("halfvec", dim, HALFVEC_MAX_DIM);
}

/// Raises `different halfvec dimensions A and B` unless the lengths match.
pub fn check_same_dims(a: &HalfVec, b: &HalfVec) {
    super::check_same_dims_of("halfvec", a.dim(), b.dim());
}

/// Rounds `x` to the nearest binary16 as pgvector's `Float4ToHalf`: a
/// finite value beyond ±65504 (after rounding) is SQLSTATE 22003 `"x" is
/// out of range for type halfvec`; then NaN and infinities are rejected
/// (22000) as elements of a `halfvec`.
pub fn to_half(x: f32) -> f16 {
    let h = f16::from_f32(x);
    if h.is_infinite() && x.is_finite() {
        let mut s = String::new();
        format_element(x, &mut s);
        raise(PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, format!("\"{s}\" is out of range for type halfvec"));
    }
    check_element_of("halfvec", h.to_f32());
    h
}

/// Text input: `'[1,2,3]'`, each element rounded to binary16, with
/// `halfvec(n)` enforced when `typmod` is set.
#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn halfvec_in(input: &CStr, _oid: pg_sys::Oid, typmod: i32) -> HalfVec {
    let s = input.to_string_lossy();
    let values = text::parse_halfvec(&s).unwrap_or_else(|e| raise_parse_error("halfvec", &s, HALFVEC_MAX_DIM, e));
    check_expected_dim(typmod, values.len());
    HalfVec::from_slice(&values)
}

/// Text output: each element as the shortest decimal that reads back as the
/// same `real` (`[1.234375,0.60009766]`), as pgvector prints `halfvec`.
#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn halfvec_out(v: HalfVec) -> CString {
    let mut s = String::with_capacity(2 + v.dim() * 10);
    s.push('[');
    for (i, h) in v.as_slice().iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        format_element(h.to_f32(), &mut s);
    }
    s.push(']');
    CString::new(s).expect("formatted floats contain no NUL")
}

/// Type modifier input: `halfvec(n)` with `n` in `1..=16000`.
#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn halfvec_typmod_in(list: Array<&CStr>) -> i32 {
    typmod_in(list, "halfvec", HALFVEC_MAX_DIM)
}

/// Binary input in pgvector's wire format: uint16 dim, uint16 unused (0),
/// then `dim` big-endian binary16 values (finite).
#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn halfvec_recv(buf: Internal, _oid: pg_sys::Oid, typmod: i32) -> HalfVec {
    // SAFETY: Postgres passes a StringInfo as the `internal` argument of a
    // receive function; pq_getmsg* check bounds and raise on short input.
    unsafe {
        let buf = buf.unwrap().expect("recv buffer").cast_mut_ptr::<pg_sys::StringInfoData>();
        let dim = pg_sys::pq_getmsgint(buf, 2) as u16;
        let unused = pg_sys::pq_getmsgint(buf, 2) as u16;
        check_dim(dim as usize);
        check_expected_dim(typmod, dim as usize);
        if unused != 0 {
            raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, format!("expected unused to be 0, not {unused}"));
        }
        let mut v = HalfVec::zeroed(dim as usize);
        for x in v.as_mut_slice() {
            *x = f16::from_bits(pg_sys::pq_getmsgint(buf, 2) as u16);
            check_element_of("halfvec", x.to_f32());
        }
        v
    }
}

/// Binary output in pgvector's wire format (see [`halfvec_recv`]).
#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn halfvec_send(v: HalfVec) -> Vec<u8> {
    encode_wire(v.as_slice())
}

/// pgvector's binary form of a `halfvec` with elements `x`: int16 dim, int16
/// 0, then each element's binary16 bits, all big-endian.
pub fn encode_wire(x: &[f16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 2 * x.len());
    out.extend_from_slice(&(x.len() as u16).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    for h in x {
        out.extend_from_slice(&h.to_bits().to_be_bytes());
    }
    out
}

/// Typmod coercion `halfvec -> halfvec(n)`, used for assignment and casts.
#[pg_extern(immutable, strict, parallel_safe, name = "halfvec")]
fn halfvec_typmod_cast(v: HalfVec, typmod: i32, _explicit: bool) -> HalfVec {
    check_expected_dim(typmod, v.dim());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_pgvectors_byte_for_byte() {
        let x = [f16::from_f32(1.0), f16::from_f32(-2.5), f16::from_bits(0x0001), f16::MAX];
        assert_eq!(encode_wire(&x), vec![0x00, 0x04, 0x00, 0x00, 0x3C, 0x00, 0xC1, 0x00, 0x00, 0x01, 0x7B, 0xFF],);
    }
}
