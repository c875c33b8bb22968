//! Casts of `halfvec` (to and from `vector`, to `real[]`, from `integer[]`,
//! `real[]`, `double precision[]`, `numeric[]`) and its `avg` aggregate
//! functions. Cast contexts are pgvector's, declared in `sql/halfvec.sql`.

use pgrx::prelude::*;
use pgrx::AnyNumeric;

use super::{check_dim, to_half, HalfVec};
use crate::vector::aggregates::{accumulate, means};
use crate::vector::arrays::{array_to_f32, state_values};
use crate::vector::{check_expected_dim, Vector};

/// Builds a `halfvec` from a cast's source array: one dimension, no NULLs,
/// `1..=16000` elements, the typmod, then each element rounded to binary16
/// (out of range past ±65504; NaN and infinities rejected).
fn from_array<T>(a: Array<'_, T>, typmod: i32) -> HalfVec {
    let values = array_to_f32(a, |n| {
        check_dim(n);
        check_expected_dim(typmod, n);
    });
    let halves: Vec<_> = values.into_iter().map(to_half).collect();
    HalfVec::from_slice(&halves)
}

/// `integer[]` to `halfvec`.
#[pg_extern(immutable, strict, parallel_safe, name = "array_to_halfvec")]
fn array_to_halfvec_int4(a: Array<i32>, typmod: i32, _explicit: bool) -> HalfVec {
    from_array(a, typmod)
}

/// `real[]` to `halfvec`.
#[pg_extern(immutable, strict, parallel_safe, name = "array_to_halfvec")]
fn array_to_halfvec_float4(a: Array<f32>, typmod: i32, _explicit: bool) -> HalfVec {
    from_array(a, typmod)
}

/// `double precision[]` to `halfvec`.
#[pg_extern(immutable, strict, parallel_safe, name = "array_to_halfvec")]
fn array_to_halfvec_float8(a: Array<f64>, typmod: i32, _explicit: bool) -> HalfVec {
    from_array(a, typmod)
}

/// `numeric[]` to `halfvec`.
#[pg_extern(immutable, strict, parallel_safe, name = "array_to_halfvec")]
fn array_to_halfvec_numeric(a: Array<AnyNumeric>, typmod: i32, _explicit: bool) -> HalfVec {
    from_array(a, typmod)
}

/// `halfvec` to `real[]` (exact).
#[pg_extern(immutable, strict, parallel_safe)]
fn halfvec_to_float4(v: HalfVec, _typmod: i32, _explicit: bool) -> Vec<f32> {
    v.to_f32_vec()
}

/// `halfvec` to `vector` (exact).
#[pg_extern(immutable, strict, parallel_safe)]
fn halfvec_to_vector(v: HalfVec, typmod: i32, _explicit: bool) -> Vector {
    crate::vector::check_dim(v.dim());
    check_expected_dim(typmod, v.dim());
    Vector::from_slice(&v.to_f32_vec())
}

/// `vector` to `halfvec`: each element rounded to the nearest binary16, an
/// element past ±65504 is out of range (22003).
#[pg_extern(immutable, strict, parallel_safe)]
fn vector_to_halfvec(v: Vector, typmod: i32, _explicit: bool) -> HalfVec {
    check_dim(v.dim());
    check_expected_dim(typmod, v.dim());
    let halves: Vec<_> = v.as_slice().iter().map(|&x| to_half(x)).collect();
    HalfVec::from_slice(&halves)
}

/// `avg(halfvec)` state transition (state as `avg(vector)`'s).
#[pg_extern(immutable, strict, parallel_safe)]
fn halfvec_accum(state: Array<f64>, v: HalfVec) -> Vec<f64> {
    accumulate(&state_values(state, "halfvec_accum"), &v.to_f32_vec())
}

/// `avg(halfvec)` combine function: the same as `vector_combine` (pgvector
/// uses one C function for both, so its errors name `vector_combine`).
#[pg_extern(immutable, strict, parallel_safe)]
fn halfvec_combine(a: Array<f64>, b: Array<f64>) -> Vec<f64> {
    let a = state_values(a, "vector_combine");
    let b = state_values(b, "vector_combine");
    crate::vector::aggregates::combine_states(&a, &b)
}

/// `avg(halfvec)` final function: the means rounded to binary16, or NULL
/// when no rows were aggregated.
#[pg_extern(immutable, strict, parallel_safe)]
fn halfvec_avg(state: Array<f64>) -> Option<HalfVec> {
    let values = means(&state_values(state, "halfvec_avg"), check_dim)?;
    let halves: Vec<_> = values.into_iter().map(to_half).collect();
    Some(HalfVec::from_slice(&halves))
}
