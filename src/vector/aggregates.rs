//! `avg(vector)` and `sum(vector)`, and the state logic shared with
//! `avg(halfvec)`.
//!
//! `avg` keeps a `double precision[]` state `[n, s_1, …, s_d]` (pgvector's
//! layout; `{0}` before the first row) so partial states from parallel
//! workers combine by addition. States are checked before use (see
//! [`super::arrays::state_values`]): a malformed one is an `ERROR`, never a
//! panic.

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use super::arrays::state_values;
use super::{check_dim, check_element, check_expected_dim, Vector};
use crate::error::raise;

/// Raises PostgreSQL's float overflow error (SQLSTATE 22003).
pub fn overflow() -> ! {
    raise(PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, "value out of range: overflow")
}

/// Adds one row's values `x` to the checked state `state` (`[n, sums…]`):
/// the first row fixes the dimensions, later rows must match them; a sum
/// that overflows `double precision` is an error.
pub fn accumulate(state: &[f64], x: &[f32]) -> Vec<f64> {
    let dim = state.len() - 1;
    let mut out = Vec::with_capacity(x.len() + 1);
    out.push(state[0] + 1.0);
    if dim == 0 {
        out.extend(x.iter().map(|&v| v as f64));
    } else {
        check_expected_dim(dim as i32, x.len());
        for (&s, &v) in state[1..].iter().zip(x) {
            let sum = s + v as f64;
            if sum.is_infinite() {
                overflow();
            }
            out.push(sum);
        }
    }
    out
}

/// Combines two checked partial states (either may still be empty, `[n]`).
pub fn combine_states(a: &[f64], b: &[f64]) -> Vec<f64> {
    let (da, db) = (a.len() - 1, b.len() - 1);
    let mut out = vec![a[0] + b[0]];
    match (da, db) {
        (0, 0) => {}
        (0, _) => {
            check_dim(db);
            out.extend_from_slice(&b[1..]);
        }
        (_, 0) => {
            check_dim(da);
            out.extend_from_slice(&a[1..]);
        }
        _ => {
            check_dim(da);
            check_expected_dim(da as i32, db);
            for (x, y) in a[1..].iter().zip(&b[1..]) {
                let sum = x + y;
                if sum.is_infinite() {
                    overflow();
                }
                out.push(sum);
            }
        }
    }
    out
}

/// State transition: adds `v` to the running count and sums.
#[pg_extern(immutable, strict, parallel_safe)]
fn vector_accum(state: Array<f64>, v: Vector) -> Vec<f64> {
    accumulate(&state_values(state, "vector_accum"), v.as_slice())
}

/// Combines two partial `avg` states (also `avg(halfvec)`'s combine function).
#[pg_extern(immutable, strict, parallel_safe)]
fn vector_combine(a: Array<f64>, b: Array<f64>) -> Vec<f64> {
    let a = state_values(a, "vector_combine");
    let b = state_values(b, "vector_combine");
    combine_states(&a, &b)
}

/// The means `s_i / n` of a checked state, or `None` when no row was
/// aggregated (`n = 0`); `check` validates the dimension count first.
pub fn means(state: &[f64], check: impl FnOnce(usize)) -> Option<Vec<f32>> {
    let n = state[0];
    if n == 0.0 {
        return None;
    }
    check(state.len() - 1);
    Some(state[1..].iter().map(|s| (s / n) as f32).collect())
}

/// Final function: the mean vector, or NULL when no rows were aggregated.
#[pg_extern(immutable, strict, parallel_safe)]
fn vector_avg(state: Array<f64>) -> Option<Vector> {
    let values = means(&state_values(state, "vector_avg"), check_dim)?;
    for &x in &values {
        check_element(x);
    }
    Some(Vector::from_slice(&values))
}
