//! Distances, norms, arithmetic and comparison of `halfvec`, as pgvector
//! defines them.
//!
//! Distances widen the binary16 elements to `f32` (exactly) and accumulate in
//! `f32` like pgvector's `halfvec` functions, through the kernels of
//! [`crate::distance`]; no sum of 16,000 binary16 products can overflow
//! `f32`. Arithmetic computes each element in `f32` and rounds it to binary16
//! (what C's `_Float16` arithmetic does): a result past ±65504 is an overflow
//! error, a non-zero product that rounds to zero an underflow error.

use half::f16;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::cmp::Ordering;

use super::{check_dim, check_same_dims, HalfVec};
use crate::distance;
use crate::error::raise;
use crate::vector::aggregates::overflow;
use crate::vector::bit::VarBit;
use crate::vector::ops::subvector_range;

/// Euclidean distance, operator `<->`.
#[pg_extern(immutable, strict, parallel_safe, name = "l2_distance")]
fn halfvec_l2_distance(a: HalfVec, b: HalfVec) -> f64 {
    (halfvec_l2_squared_distance(a, b)).sqrt()
}

/// Squared Euclidean distance (the `hnsw` graph's form of `<->`).
#[pg_extern(immutable, strict, parallel_safe)]
fn halfvec_l2_squared_distance(a: HalfVec, b: HalfVec) -> f64 {
    check_same_dims(&a, &b);
    distance::l2_squared_distance_half(&a.to_f32_vec(), b.as_bits(), 1.0) as f64
}

/// Inner product `Σ a_i b_i`.
#[pg_extern(immutable, strict, parallel_safe, name = "inner_product")]
fn halfvec_inner_product(a: HalfVec, b: HalfVec) -> f64 {
    check_same_dims(&a, &b);
    distance::inner_product_half(&a.to_f32_vec(), b.as_bits(), 1.0) as f64
}

/// Negative inner product, operator `<#>`.
#[pg_extern(immutable, strict, parallel_safe)]
fn halfvec_negative_inner_product(a: HalfVec, b: HalfVec) -> f64 {
    -halfvec_inner_product(a, b)
}

/// Cosine distance `1 − cos θ`, operator `<=>`: `NaN` when either vector is
/// zero, as in pgvector.
#[pg_extern(immutable, strict, parallel_safe, name = "cosine_distance")]
fn halfvec_cosine_distance(a: HalfVec, b: HalfVec) -> f64 {
    check_same_dims(&a, &b);
    distance::cosine_distance(&a.to_f32_vec(), &b.to_f32_vec())
}

/// Manhattan distance, operator `<+>`.
#[pg_extern(immutable, strict, parallel_safe, name = "l1_distance")]
fn halfvec_l1_distance(a: HalfVec, b: HalfVec) -> f64 {
    check_same_dims(&a, &b);
    distance::l1_distance_half(&a.to_f32_vec(), b.as_bits(), 1.0) as f64
}

/// Number of dimensions.
#[pg_extern(immutable, strict, parallel_safe, name = "vector_dims")]
fn halfvec_vector_dims(a: HalfVec) -> i32 {
    a.dim() as i32
}

/// Euclidean norm, accumulated in double precision.
#[pg_extern(immutable, strict, parallel_safe, name = "l2_norm")]
fn halfvec_l2_norm(a: HalfVec) -> f64 {
    norm(&a)
}

/// `‖a‖₂` accumulated in `f64`.
fn norm(a: &HalfVec) -> f64 {
    a.as_slice().iter().fold(0.0f64, |s, h| s + h.to_f64() * h.to_f64()).sqrt()
}

/// The vector scaled to unit Euclidean length, each element rounded to
/// binary16; a zero vector is returned unchanged.
#[pg_extern(immutable, strict, parallel_safe, name = "l2_normalize")]
fn halfvec_l2_normalize(a: HalfVec) -> HalfVec {
    let norm = norm(&a);
    let mut out = HalfVec::zeroed(a.dim());
    if norm > 0.0 {
        for (o, x) in out.as_mut_slice().iter_mut().zip(a.as_slice()) {
            *o = f16::from_f32((x.to_f64() / norm) as f32);
            if o.is_infinite() {
                overflow();
            }
        }
    }
    out
}

/// One bit per dimension, set where the element is positive (`bit(dim)`).
#[pg_extern(immutable, strict, parallel_safe, name = "binary_quantize")]
fn halfvec_binary_quantize(a: HalfVec) -> VarBit {
    crate::vector::bit::quantize(a.as_slice().iter().map(|h| h.to_f32()))
}

/// Elements `start .. start+count-1` (1-based, clipped, as `subvector(vector)`).
#[pg_extern(immutable, strict, parallel_safe, name = "subvector")]
fn halfvec_subvector(a: HalfVec, start: i32, count: i32) -> HalfVec {
    let range = subvector_range(a.dim(), start, count)
        .unwrap_or_else(|| raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, "halfvec must have at least 1 dimension"));
    HalfVec::from_slice(&a.as_slice()[range])
}

/// Element-wise `f(x, y)` computed in `f32` and rounded to binary16; an
/// element past the binary16 range is an overflow error.
fn elementwise(a: &HalfVec, b: &HalfVec, f: impl Fn(f32, f32) -> f32) -> HalfVec {
    check_same_dims(a, b);
    let mut out = HalfVec::zeroed(a.dim());
    for ((o, x), y) in out.as_mut_slice().iter_mut().zip(a.as_slice()).zip(b.as_slice()) {
        *o = f16::from_f32(f(x.to_f32(), y.to_f32()));
        if o.is_infinite() {
            overflow();
        }
    }
    out
}

/// Element-wise sum, operator `+`.
#[pg_extern(immutable, strict, parallel_safe)]
fn halfvec_add(a: HalfVec, b: HalfVec) -> HalfVec {
    elementwise(&a, &b, |x, y| x + y)
}

/// Element-wise difference, operator `-`.
#[pg_extern(immutable, strict, parallel_safe)]
fn halfvec_sub(a: HalfVec, b: HalfVec) -> HalfVec {
    elementwise(&a, &b, |x, y| x - y)
}

/// Element-wise product, operator `*`; a product of two non-zero elements
/// that rounds to zero is an underflow error.
#[pg_extern(immutable, strict, parallel_safe)]
fn halfvec_mul(a: HalfVec, b: HalfVec) -> HalfVec {
    let out = elementwise(&a, &b, |x, y| x * y);
    for (o, (x, y)) in out.as_slice().iter().zip(a.as_slice().iter().zip(b.as_slice())) {
        if o.to_f32() == 0.0 && x.to_f32() != 0.0 && y.to_f32() != 0.0 {
            raise(PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, "value out of range: underflow");
        }
    }
    out
}

/// Concatenation, operator `||` (at most 16,000 dimensions in all).
#[pg_extern(immutable, strict, parallel_safe)]
fn halfvec_concat(a: HalfVec, b: HalfVec) -> HalfVec {
    check_dim(a.dim() + b.dim());
    let mut out = HalfVec::zeroed(a.dim() + b.dim());
    out.as_mut_slice()[..a.dim()].copy_from_slice(a.as_slice());
    out.as_mut_slice()[a.dim()..].copy_from_slice(b.as_slice());
    out
}

/// Total order used by btree: element by element (as `real`, so `-0 = 0`),
/// then the shorter first.
pub fn compare(a: &[f16], b: &[f16]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        match x.to_f32().partial_cmp(&y.to_f32()) {
            Some(Ordering::Equal) | None => continue,
            Some(o) => return o,
        }
    }
    a.len().cmp(&b.len())
}

/// btree support function 1.
#[pg_extern(immutable, strict, parallel_safe)]
fn halfvec_cmp(a: HalfVec, b: HalfVec) -> i32 {
    compare(a.as_slice(), b.as_slice()) as i32
}

macro_rules! comparison {
    ($name:ident, $doc:literal, |$o:ident| $test:expr) => {
        #[doc = $doc]
        #[pg_extern(immutable, strict, parallel_safe)]
        fn $name(a: HalfVec, b: HalfVec) -> bool {
            let $o = compare(a.as_slice(), b.as_slice());
            $test
        }
    };
}

comparison!(halfvec_lt, "Operator `<`.", |o| o == Ordering::Less);
comparison!(halfvec_le, "Operator `<=`.", |o| o != Ordering::Greater);
comparison!(halfvec_eq, "Operator `=`.", |o| o == Ordering::Equal);
comparison!(halfvec_ne, "Operator `<>`.", |o| o != Ordering::Equal);
comparison!(halfvec_ge, "Operator `>=`.", |o| o != Ordering::Less);
comparison!(halfvec_gt, "Operator `>`.", |o| o == Ordering::Greater);
