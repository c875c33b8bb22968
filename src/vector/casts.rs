//! Casts between `vector` and `integer[]`, `real[]`, `double precision[]`,
//! `numeric[]`, as pgvector declares them (array to vector AS ASSIGNMENT,
//! vector to real[] IMPLICIT).

use pgrx::prelude::*;
use pgrx::AnyNumeric;

use super::arrays::array_to_f32;
use super::{check_dim, check_element, check_expected_dim, Vector};

/// Builds a vector from a cast's source array, with pgvector's checks in its
/// order: one dimension, no NULLs, `1..=16000` elements, the target typmod,
/// then finite elements (a `double precision` beyond `real`'s range becomes
/// infinite and is rejected as such).
fn from_array<T>(a: Array<'_, T>, typmod: i32) -> Vector {
    let values = array_to_f32(a, |n| {
        check_dim(n);
        check_expected_dim(typmod, n);
    });
    for &x in &values {
        check_element(x);
    }
    Vector::from_slice(&values)
}

/// `integer[]` to `vector`.
#[pg_extern(immutable, strict, parallel_safe, name = "array_to_vector")]
fn array_to_vector_int4(a: Array<i32>, typmod: i32, _explicit: bool) -> Vector {
    from_array(a, typmod)
}

/// `real[]` to `vector`.
#[pg_extern(immutable, strict, parallel_safe, name = "array_to_vector")]
fn array_to_vector_float4(a: Array<f32>, typmod: i32, _explicit: bool) -> Vector {
    from_array(a, typmod)
}

/// `double precision[]` to `vector`.
#[pg_extern(immutable, strict, parallel_safe, name = "array_to_vector")]
fn array_to_vector_float8(a: Array<f64>, typmod: i32, _explicit: bool) -> Vector {
    from_array(a, typmod)
}

/// `numeric[]` to `vector`.
#[pg_extern(immutable, strict, parallel_safe, name = "array_to_vector")]
fn array_to_vector_numeric(a: Array<AnyNumeric>, typmod: i32, _explicit: bool) -> Vector {
    from_array(a, typmod)
}

/// `vector` to `real[]`.
#[pg_extern(immutable, strict, parallel_safe)]
fn vector_to_float4(v: Vector, _typmod: i32, _explicit: bool) -> Vec<f32> {
    v.as_slice().to_vec()
}

/// `vector` to `double precision[]`.
#[pg_extern(immutable, strict, parallel_safe)]
fn vector_to_float8(v: Vector, _typmod: i32, _explicit: bool) -> Vec<f64> {
    v.as_slice().iter().map(|&x| x as f64).collect()
}
