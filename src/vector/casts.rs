//! Casts between `vector` and `integer[]`, `real[]`, `double precision[]`,
//! `numeric[]`, as pgvector declares them (array to vector AS ASSIGNMENT,
//! vector to real[] IMPLICIT).

use pgrx::prelude::*;
use pgrx::{AnyNumeric, PgSqlErrorCode};

use super::{check_dim, check_element, check_expected_dim, Vector};
use crate::error::raise;

/// Builds a vector from array elements, enforcing pgvector's rules: no NULL
/// elements, finite values, `1..=16000` elements, and the target typmod.
fn from_elements(items: impl Iterator<Item = Option<f64>>, typmod: i32) -> Vector {
    let mut values = Vec::new();
    for item in items {
        let Some(x) = item else {
            raise(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, "array must not contain nulls");
        };
        let f = x as f32;
        if x.is_finite() && !f.is_finite() {
            raise(
                PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
                format!("\"{x}\" is out of range for type vector"),
            );
        }
        check_element(f);
        values.push(f);
    }
    check_dim(values.len());
    check_expected_dim(typmod, values.len());
    Vector::from_slice(&values)
}

/// `integer[]` to `vector`.
#[pg_extern(immutable, strict, parallel_safe, name = "array_to_vector")]
fn array_to_vector_int4(a: Array<i32>, typmod: i32, _explicit: bool) -> Vector {
    from_elements(a.iter().map(|x| x.map(f64::from)), typmod)
}

/// `real[]` to `vector`.
#[pg_extern(immutable, strict, parallel_safe, name = "array_to_vector")]
fn array_to_vector_float4(a: Array<f32>, typmod: i32, _explicit: bool) -> Vector {
    from_elements(a.iter().map(|x| x.map(f64::from)), typmod)
}

/// `double precision[]` to `vector`.
#[pg_extern(immutable, strict, parallel_safe, name = "array_to_vector")]
fn array_to_vector_float8(a: Array<f64>, typmod: i32, _explicit: bool) -> Vector {
    from_elements(a.iter(), typmod)
}

/// `numeric[]` to `vector`.
#[pg_extern(immutable, strict, parallel_safe, name = "array_to_vector")]
fn array_to_vector_numeric(a: Array<AnyNumeric>, typmod: i32, _explicit: bool) -> Vector {
    from_elements(a.iter().map(|x| x.map(|n| n.to_string().parse::<f64>().unwrap_or(f64::NAN))), typmod)
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
