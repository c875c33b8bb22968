//! Distance functions, vector arithmetic and comparison for `vector`.
//!
//! All are `IMMUTABLE STRICT PARALLEL SAFE`. Operator and operator-class
//! declarations live in `sql/operators.sql`, emitted after these functions.

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::cmp::Ordering;

use super::{check_dim, check_element, check_same_dims, Vector};
use crate::distance;
use crate::error::raise;

/// Euclidean distance, operator `<->`.
#[pg_extern(immutable, strict, parallel_safe)]
fn l2_distance(a: Vector, b: Vector) -> f64 {
    check_same_dims(&a, &b);
    distance::l2_distance(a.as_slice(), b.as_slice())
}

/// Squared Euclidean distance (what the index uses internally for `<->`).
#[pg_extern(immutable, strict, parallel_safe)]
fn vector_l2_squared_distance(a: Vector, b: Vector) -> f64 {
    check_same_dims(&a, &b);
    distance::l2_squared_distance(a.as_slice(), b.as_slice()) as f64
}

/// Inner product `Σ a_i b_i`.
#[pg_extern(immutable, strict, parallel_safe)]
fn inner_product(a: Vector, b: Vector) -> f64 {
    check_same_dims(&a, &b);
    distance::inner_product(a.as_slice(), b.as_slice()) as f64
}

/// Negative inner product, operator `<#>` (smaller is more similar).
#[pg_extern(immutable, strict, parallel_safe)]
fn vector_negative_inner_product(a: Vector, b: Vector) -> f64 {
    check_same_dims(&a, &b);
    distance::negative_inner_product(a.as_slice(), b.as_slice())
}

/// Cosine distance `1 − cos θ`, operator `<=>`; `NaN` if either vector is zero
/// (as pgvector).
#[pg_extern(immutable, strict, parallel_safe)]
fn cosine_distance(a: Vector, b: Vector) -> f64 {
    check_same_dims(&a, &b);
    distance::cosine_distance(a.as_slice(), b.as_slice())
}

/// Manhattan distance, operator `<+>`.
#[pg_extern(immutable, strict, parallel_safe)]
fn l1_distance(a: Vector, b: Vector) -> f64 {
    check_same_dims(&a, &b);
    distance::l1_distance(a.as_slice(), b.as_slice()) as f64
}

/// Number of dimensions.
#[pg_extern(immutable, strict, parallel_safe)]
fn vector_dims(a: Vector) -> i32 {
    a.dim() as i32
}

/// Euclidean norm, computed in double precision.
#[pg_extern(immutable, strict, parallel_safe)]
fn vector_norm(a: Vector) -> f64 {
    distance::norm(a.as_slice())
}

/// The vector scaled to unit length; a zero vector is returned unchanged.
#[pg_extern(immutable, strict, parallel_safe)]
fn l2_normalize(a: Vector) -> Vector {
    let mut out = Vector::from_slice(a.as_slice());
    distance::normalize_in_place(out.as_mut_slice());
    out
}

/// The 0-based range of elements `start .. start+count-1` (1-based `start`,
/// clipped to `1..=dim`) that `subvector` returns, or `None` when it would
/// be empty (`count < 1`, or `start` past the end): pgvector's rule, in
/// `i64` so no argument can overflow.
pub fn subvector_range(dim: usize, start: i32, count: i32) -> Option<std::ops::Range<usize>> {
    let (start, count) = (start as i64, count as i64);
    let first = start.max(1);
    let end = (start + count).min(dim as i64 + 1);
    if count < 1 || end <= first {
        return None;
    }
    Some((first - 1) as usize..(end - 1) as usize)
}

/// Elements `start .. start+count-1` (1-based, clipped to the vector, as
/// pgvector's `subvector`).
#[pg_extern(immutable, strict, parallel_safe)]
fn subvector(a: Vector, start: i32, count: i32) -> Vector {
    let range = subvector_range(a.dim(), start, count)
        .unwrap_or_else(|| raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, "vector must have at least 1 dimension"));
    Vector::from_slice(&a.as_slice()[range])
}

fn elementwise(a: &Vector, b: &Vector, f: impl Fn(f32, f32) -> f32) -> Vector {
    check_same_dims(a, b);
    let mut out = Vector::zeroed(a.dim());
    for ((o, &x), &y) in out.as_mut_slice().iter_mut().zip(a.as_slice()).zip(b.as_slice()) {
        *o = f(x, y);
        if !o.is_finite() {
            raise(PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, "value out of range: overflow");
        }
    }
    out
}

/// Element-wise sum, operator `+`.
#[pg_extern(immutable, strict, parallel_safe)]
fn vector_add(a: Vector, b: Vector) -> Vector {
    elementwise(&a, &b, |x, y| x + y)
}

/// Element-wise difference, operator `-`.
#[pg_extern(immutable, strict, parallel_safe)]
fn vector_sub(a: Vector, b: Vector) -> Vector {
    elementwise(&a, &b, |x, y| x - y)
}

/// Element-wise product, operator `*`.
#[pg_extern(immutable, strict, parallel_safe)]
fn vector_mul(a: Vector, b: Vector) -> Vector {
    let out = elementwise(&a, &b, |x, y| x * y);
    for (&o, (&x, &y)) in out.as_slice().iter().zip(a.as_slice().iter().zip(b.as_slice())) {
        if o == 0.0 && x != 0.0 && y != 0.0 {
            raise(PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, "value out of range: underflow");
        }
    }
    out
}

/// Concatenation, operator `||`.
#[pg_extern(immutable, strict, parallel_safe)]
fn vector_concat(a: Vector, b: Vector) -> Vector {
    check_dim(a.dim() + b.dim());
    let mut out = Vector::zeroed(a.dim() + b.dim());
    out.as_mut_slice()[..a.dim()].copy_from_slice(a.as_slice());
    out.as_mut_slice()[a.dim()..].copy_from_slice(b.as_slice());
    for &x in out.as_slice() {
        check_element(x);
    }
    out
}

/// Total order used by btree: element by element, then the shorter first.
pub fn compare(a: &[f32], b: &[f32]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        match x.partial_cmp(y) {
            Some(Ordering::Equal) | None => continue,
            Some(o) => return o,
        }
    }
    a.len().cmp(&b.len())
}

/// btree support function 1.
#[pg_extern(immutable, strict, parallel_safe)]
fn vector_cmp(a: Vector, b: Vector) -> i32 {
    compare(a.as_slice(), b.as_slice()) as i32
}

macro_rules! comparison {
    ($name:ident, $doc:literal, |$o:ident| $test:expr) => {
        #[doc = $doc]
        #[pg_extern(immutable, strict, parallel_safe)]
        fn $name(a: Vector, b: Vector) -> bool {
            let $o = compare(a.as_slice(), b.as_slice());
            $test
        }
    };
}

comparison!(vector_lt, "Operator `<`.", |o| o == Ordering::Less);
comparison!(vector_le, "Operator `<=`.", |o| o != Ordering::Greater);
comparison!(vector_eq, "Operator `=`.", |o| o == Ordering::Equal);
comparison!(vector_ne, "Operator `<>`.", |o| o != Ordering::Equal);
comparison!(vector_ge, "Operator `>=`.", |o| o != Ordering::Less);
comparison!(vector_gt, "Operator `>`.", |o| o == Ordering::Greater);
