//! `avg(vector)` and `sum(vector)`.
//!
//! `avg` keeps a `double precision[]` state `[n, s_1, …, s_d]` (pgvector's
//! layout) so partial states from parallel workers combine by addition.

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use super::{check_element, check_expected_dim, Vector};
use crate::error::raise;

/// State transition: adds `v` to the running count and sums.
#[pg_extern(immutable, strict, parallel_safe)]
fn vector_accum(state: Vec<f64>, v: Vector) -> Vec<f64> {
    let mut state = state;
    if state.len() <= 1 {
        state = vec![0.0; v.dim() + 1];
    } else {
        check_expected_dim((state.len() - 1) as i32, v.dim());
    }
    state[0] += 1.0;
    for (s, &x) in state[1..].iter_mut().zip(v.as_slice()) {
        *s += x as f64;
    }
    state
}

/// Combines two partial `avg` states.
#[pg_extern(immutable, strict, parallel_safe)]
fn vector_combine(a: Vec<f64>, b: Vec<f64>) -> Vec<f64> {
    if a.len() <= 1 {
        return b;
    }
    if b.len() <= 1 {
        return a;
    }
    check_expected_dim((a.len() - 1) as i32, b.len() - 1);
    a.iter().zip(&b).map(|(x, y)| x + y).collect()
}

/// Final function: the mean vector, or NULL when no rows were aggregated.
#[pg_extern(immutable, strict, parallel_safe)]
fn vector_avg(state: Vec<f64>) -> Option<Vector> {
    if state.len() <= 1 || state[0] == 0.0 {
        return None;
    }
    let n = state[0];
    let mut out = Vector::zeroed(state.len() - 1);
    for (o, s) in out.as_mut_slice().iter_mut().zip(&state[1..]) {
        *o = (s / n) as f32;
        if !o.is_finite() {
            raise(PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, "value out of range: overflow");
        }
        check_element(*o);
    }
    Some(out)
}
