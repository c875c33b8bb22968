//! Distances over PostgreSQL's own `bit` / `bit varying` type, as pgvector
//! defines them: Hamming (`<~>`, `hamming_distance`) and Jaccard (`<%>`,
//! `jaccard_distance`), and `binary_quantize` of a `vector` into a `bit`.
//!
//! A `bit(n)` / `varbit` datum is `varlena header (4 bytes) | int32 bit_len |
//! bytes[ceil(bit_len / 8)]`, bits most significant first, the pad bits of
//! the last byte zero (PostgreSQL's `VarBit`, `utils/varbit.h`).

use pgrx::prelude::*;
use pgrx::{pg_sys, PgSqlErrorCode};
use std::ptr::NonNull;

use super::glue::{alloc_varlena, detoast, varlena_glue};
use super::Vector;
use crate::distance;
use crate::error::raise;

/// Bytes before the bit data: varlena header and bit length.
pub const VARBIT_HEADER_SIZE: usize = 8;

/// A detoasted `bit` / `varbit` value in Postgres memory. It owns nothing:
/// the memory belongs to the memory context it lives in.
pub struct VarBit {
    ptr: NonNull<u8>,
    len_bits: usize,
}

/// Raises the data-corruption error (XX001) for a malformed datum.
fn corrupt(detail: String) -> ! {
    crate::error::raise_detail(PgSqlErrorCode::ERRCODE_DATA_CORRUPTED, "invalid bit string datum", detail)
}

impl VarBit {
    /// Wraps a possibly toasted `bit`/`varbit` datum: detoasts it and checks
    /// that the bit length is not negative and that its bytes fit the datum,
    /// raising `ERROR` (XX001) otherwise.
    ///
    /// # Safety
    /// `datum` must be a non-null varlena datum from Postgres.
    pub unsafe fn from_raw_datum(datum: pg_sys::Datum) -> VarBit {
        // SAFETY: forwarded from the caller's contract.
        let (p, total) = unsafe { detoast(datum) };
        let ptr = NonNull::new(p).unwrap_or_else(|| corrupt("null pointer".into()));
        if total < VARBIT_HEADER_SIZE {
            corrupt(format!("datum of {total} bytes is shorter than the bit string header"));
        }
        // SAFETY: at least VARBIT_HEADER_SIZE bytes are readable (checked above).
        let header = unsafe { std::slice::from_raw_parts(p, VARBIT_HEADER_SIZE) };
        let len = i32::from_ne_bytes([header[4], header[5], header[6], header[7]]);
        if len < 0 || (len as usize).div_ceil(8) > total - VARBIT_HEADER_SIZE {
            corrupt(format!("{len} bits do not fit a datum of {total} bytes"));
        }
        VarBit { ptr, len_bits: len as usize }
    }

    /// Allocates an all-zero bit string of `len_bits` bits (at most 2^31 − 1
    /// minus the header, far above what callers make) in the current memory
    /// context.
    pub fn zeroed(len_bits: usize) -> VarBit {
        assert!(len_bits <= i32::MAX as usize - 64);
        let ptr = alloc_varlena(VARBIT_HEADER_SIZE + len_bits.div_ceil(8));
        // SAFETY: the allocation holds the 8-byte header; bytes 4..8 hold the length.
        unsafe { std::ptr::copy_nonoverlapping((len_bits as i32).to_ne_bytes().as_ptr(), ptr.as_ptr().add(4), 4) };
        VarBit { ptr, len_bits }
    }

    /// Number of bits.
    pub fn len_bits(&self) -> usize {
        self.len_bits
    }

    /// The `ceil(len_bits / 8)` data bytes, most significant bit first.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the constructor checked that these bytes lie inside the datum.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(VARBIT_HEADER_SIZE), self.len_bits.div_ceil(8)) }
    }

    /// The data bytes, mutable (only for values this backend just allocated;
    /// keep the pad bits zero).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; `&mut self` gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(VARBIT_HEADER_SIZE), self.len_bits.div_ceil(8)) }
    }

    /// Sets bit `k` (0 = the first, most significant bit of the first byte).
    pub fn set(&mut self, k: usize) {
        assert!(k < self.len_bits);
        self.bytes_mut()[k / 8] |= 0x80 >> (k % 8);
    }

    /// The datum pointing at this value.
    pub fn into_raw_datum(self) -> pg_sys::Datum {
        pg_sys::Datum::from(self.ptr.as_ptr())
    }
}

varlena_glue!(VarBit, "bit", External, pg_sys::BITOID);

/// Raises pgvector's error for bit strings of different lengths (22000).
fn check_same_len(a: &VarBit, b: &VarBit) {
    if a.len_bits() != b.len_bits() {
        raise(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("different bit lengths {} and {}", a.len_bits(), b.len_bits()),
        );
    }
}

/// Hamming distance (number of differing bits), operator `<~>`.
#[pg_extern(immutable, strict, parallel_safe)]
fn hamming_distance(a: VarBit, b: VarBit) -> f64 {
    check_same_len(&a, &b);
    distance::hamming_distance(a.bytes(), b.bytes()) as f64
}

/// Jaccard distance `1 − |a ∧ b| / |a ∨ b|` (`1` when no bit is set in
/// both), operator `<%>`.
#[pg_extern(immutable, strict, parallel_safe)]
fn jaccard_distance(a: VarBit, b: VarBit) -> f64 {
    check_same_len(&a, &b);
    distance::jaccard_distance(a.bytes(), b.bytes())
}

/// Bit `k` of a `bit(n)` is set where element `k` of `x` is positive.
pub fn quantize(x: impl ExactSizeIterator<Item = f32>) -> VarBit {
    let mut out = VarBit::zeroed(x.len());
    for (k, v) in x.enumerate() {
        if v > 0.0 {
            out.set(k);
        }
    }
    out
}

/// One bit per dimension, set where the element is positive (`bit(dim)`).
#[pg_extern(immutable, strict, parallel_safe)]
fn binary_quantize(a: Vector) -> VarBit {
    quantize(a.as_slice().iter().copied())
}
