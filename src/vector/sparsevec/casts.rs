//! Casts of `sparsevec`: to and from `vector` and `halfvec`, and from
//! `integer[]`, `real[]`, `double precision[]`, `numeric[]` (dense arrays,
//! zeros dropped). Cast contexts are pgvector's, declared in
//! `sql/sparsevec.sql`.

use pgrx::prelude::*;
use pgrx::AnyNumeric;

use super::{check_dim, from_dense, SparseVec};
use crate::vector::arrays::array_to_f32;
use crate::vector::halfvec::{self, to_half, HalfVec};
use crate::vector::{check_expected_dim, Vector};

/// Builds a `sparsevec` from a cast's source array: one dimension, no NULLs,
/// at least one element, the typmod, at most 16,000 non-zero elements, each
/// finite.
fn from_array<T>(a: Array<'_, T>, typmod: i32) -> SparseVec {
    let values = array_to_f32(a, |n| {
        check_dim(n as i64);
        check_expected_dim(typmod, n);
    });
    from_dense(values.len(), values.into_iter())
}

/// `integer[]` to `sparsevec`.
#[pg_extern(immutable, strict, parallel_safe, name = "array_to_sparsevec")]
fn array_to_sparsevec_int4(a: Array<i32>, typmod: i32, _explicit: bool) -> SparseVec {
    from_array(a, typmod)
}

/// `real[]` to `sparsevec`.
#[pg_extern(immutable, strict, parallel_safe, name = "array_to_sparsevec")]
fn array_to_sparsevec_float4(a: Array<f32>, typmod: i32, _explicit: bool) -> SparseVec {
    from_array(a, typmod)
}

/// `double precision[]` to `sparsevec`.
#[pg_extern(immutable, strict, parallel_safe, name = "array_to_sparsevec")]
fn array_to_sparsevec_float8(a: Array<f64>, typmod: i32, _explicit: bool) -> SparseVec {
    from_array(a, typmod)
}

/// `numeric[]` to `sparsevec`.
#[pg_extern(immutable, strict, parallel_safe, name = "array_to_sparsevec")]
fn array_to_sparsevec_numeric(a: Array<AnyNumeric>, typmod: i32, _explicit: bool) -> SparseVec {
    from_array(a, typmod)
}

/// `vector` to `sparsevec` (the non-zero elements).
#[pg_extern(immutable, strict, parallel_safe)]
fn vector_to_sparsevec(v: Vector, typmod: i32, _explicit: bool) -> SparseVec {
    check_dim(v.dim() as i64);
    check_expected_dim(typmod, v.dim());
    from_dense(v.dim(), v.as_slice().iter().copied())
}

/// `halfvec` to `sparsevec` (the non-zero elements, exact).
#[pg_extern(immutable, strict, parallel_safe)]
fn halfvec_to_sparsevec(v: HalfVec, typmod: i32, _explicit: bool) -> SparseVec {
    check_dim(v.dim() as i64);
    check_expected_dim(typmod, v.dim());
    from_dense(v.dim(), v.as_slice().iter().map(|h| h.to_f32()))
}

/// `sparsevec` to `vector`: at most 16,000 dimensions.
#[pg_extern(immutable, strict, parallel_safe)]
fn sparsevec_to_vector(v: SparseVec, typmod: i32, _explicit: bool) -> Vector {
    crate::vector::check_dim(v.dim());
    check_expected_dim(typmod, v.dim());
    Vector::from_slice(&v.to_dense())
}

/// `sparsevec` to `halfvec`: at most 16,000 dimensions, each value rounded
/// to binary16 (out of range past ±65504).
#[pg_extern(immutable, strict, parallel_safe)]
fn sparsevec_to_halfvec(v: SparseVec, typmod: i32, _explicit: bool) -> HalfVec {
    halfvec::check_dim(v.dim());
    check_expected_dim(typmod, v.dim());
    let mut out = HalfVec::zeroed(v.dim());
    let dense = out.as_mut_slice();
    for (&i, &x) in v.indices().iter().zip(v.values()) {
        dense[i as usize] = to_half(x);
    }
    out
}
