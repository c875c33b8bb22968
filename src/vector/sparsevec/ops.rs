//! Distances, norms and comparison of `sparsevec`, as pgvector defines them.
//!
//! Distances are sums in `f32` over the union of the two index lists in
//! index order ([`crate::distance`]'s sparse kernels), like pgvector's, so
//! they can overflow to `Infinity` (and the cosine distance become `NaN`)
//! where pgvector's do.

use pgrx::prelude::*;
use std::cmp::Ordering;

use super::{check_same_dims, SparseVec};
use crate::distance;
use crate::vector::aggregates::overflow;

/// Squared Euclidean distance in `f32` (the `hnsw` graph's form of `<->`).
#[pg_extern(immutable, strict, parallel_safe)]
fn sparsevec_l2_squared_distance(a: SparseVec, b: SparseVec) -> f64 {
    check_same_dims(&a, &b);
    distance::sparse_l2_squared_distance(a.indices(), a.values(), b.indices(), b.values()) as f64
}

/// Euclidean distance, operator `<->`.
#[pg_extern(immutable, strict, parallel_safe, name = "l2_distance")]
fn sparsevec_l2_distance(a: SparseVec, b: SparseVec) -> f64 {
    sparsevec_l2_squared_distance(a, b).sqrt()
}

/// Inner product `Σ a_k b_k` over the indices both store.
#[pg_extern(immutable, strict, parallel_safe, name = "inner_product")]
fn sparsevec_inner_product(a: SparseVec, b: SparseVec) -> f64 {
    check_same_dims(&a, &b);
    distance::sparse_inner_product(a.indices(), a.values(), b.indices(), b.values()) as f64
}

/// Negative inner product, operator `<#>`.
#[pg_extern(immutable, strict, parallel_safe)]
fn sparsevec_negative_inner_product(a: SparseVec, b: SparseVec) -> f64 {
    -sparsevec_inner_product(a, b)
}

/// `Σ x²` of the stored values, in `f32` in storage order.
fn squared_norm_f32(values: &[f32]) -> f32 {
    values.iter().fold(0.0f32, |s, &x| s + x * x)
}

/// Cosine distance `1 − cos θ`, operator `<=>`: `NaN` when either vector is
/// zero (or a sum overflowed `f32`), as in pgvector; clamped to `[0, 2]`.
#[pg_extern(immutable, strict, parallel_safe, name = "cosine_distance")]
fn sparsevec_cosine_distance(a: SparseVec, b: SparseVec) -> f64 {
    check_same_dims(&a, &b);
    let dot = distance::sparse_inner_product(a.indices(), a.values(), b.indices(), b.values()) as f64;
    let (na, nb) = (squared_norm_f32(a.values()) as f64, squared_norm_f32(b.values()) as f64);
    let similarity = dot / (na * nb).sqrt();
    if similarity.is_nan() {
        return f64::NAN;
    }
    1.0 - similarity.clamp(-1.0, 1.0)
}

/// Manhattan distance, operator `<+>`.
#[pg_extern(immutable, strict, parallel_safe, name = "l1_distance")]
fn sparsevec_l1_distance(a: SparseVec, b: SparseVec) -> f64 {
    check_same_dims(&a, &b);
    distance::sparse_l1_distance(a.indices(), a.values(), b.indices(), b.values()) as f64
}

/// Number of dimensions (not in pgvector, which has `vector_dims` for
/// `vector` and `halfvec` only; harmless as an extra overload).
#[pg_extern(immutable, strict, parallel_safe, name = "vector_dims")]
fn sparsevec_vector_dims(a: SparseVec) -> i32 {
    a.dim() as i32
}

/// `‖a‖₂` accumulated in `f64` (`+0` for no values: a fold from `0.0`, since
/// Rust's `sum` of nothing is `-0.0`).
fn norm(values: &[f32]) -> f64 {
    values.iter().fold(0.0f64, |s, &x| s + x as f64 * x as f64).sqrt()
}

/// Euclidean norm, accumulated in double precision.
#[pg_extern(immutable, strict, parallel_safe, name = "l2_norm")]
fn sparsevec_l2_norm(a: SparseVec) -> f64 {
    norm(a.values())
}

/// The vector scaled to unit Euclidean length; a zero vector is returned
/// unchanged, and values that become zero in `real` are dropped.
#[pg_extern(immutable, strict, parallel_safe, name = "l2_normalize")]
fn sparsevec_l2_normalize(a: SparseVec) -> SparseVec {
    let n = norm(a.values());
    if n <= 0.0 {
        return SparseVec::from_parts(a.dim(), a.indices(), a.values());
    }
    let (mut indices, mut values) = (Vec::with_capacity(a.nnz()), Vec::with_capacity(a.nnz()));
    for (&i, &x) in a.indices().iter().zip(a.values()) {
        let y = (x as f64 / n) as f32;
        if y.is_infinite() {
            overflow();
        }
        if y != 0.0 {
            indices.push(i);
            values.push(y);
        }
    }
    SparseVec::from_parts(a.dim(), &indices, &values)
}

/// Total order used by btree, the same as comparing the dense forms as
/// `vector`s: element by element over the common dimensions (a missing
/// entry is `0`), then the one with fewer dimensions first.
pub fn compare(a: &SparseVec, b: &SparseVec) -> Ordering {
    compare_parts((a.dim(), a.indices(), a.values()), (b.dim(), b.indices(), b.values()))
}

/// [`compare`] on (dim, indices, values) triples.
pub fn compare_parts(a: (usize, &[i32], &[f32]), b: (usize, &[i32], &[f32])) -> Ordering {
    let ((da, ai, av), (db, bi, bv)) = (a, b);
    let common = da.min(db) as i64;
    let (mut i, mut j) = (0usize, 0usize);
    loop {
        // The next index stored by either vector, and the two values there.
        let next_a = ai.get(i).map(|&k| k as i64).unwrap_or(i64::MAX);
        let next_b = bi.get(j).map(|&k| k as i64).unwrap_or(i64::MAX);
        let k = next_a.min(next_b);
        if k >= common {
            break;
        }
        let x = if next_a == k { av[i] } else { 0.0 };
        let y = if next_b == k { bv[j] } else { 0.0 };
        match x.partial_cmp(&y) {
            Some(Ordering::Equal) | None => {}
            Some(o) => return o,
        }
        i += (next_a == k) as usize;
        j += (next_b == k) as usize;
    }
    da.cmp(&db)
}

/// btree support function 1.
#[pg_extern(immutable, strict, parallel_safe)]
fn sparsevec_cmp(a: SparseVec, b: SparseVec) -> i32 {
    compare(&a, &b) as i32
}

macro_rules! comparison {
    ($name:ident, $doc:literal, |$o:ident| $test:expr) => {
        #[doc = $doc]
        #[pg_extern(immutable, strict, parallel_safe)]
        fn $name(a: SparseVec, b: SparseVec) -> bool {
            let $o = compare(&a, &b);
            $test
        }
    };
}

comparison!(sparsevec_lt, "Operator `<`.", |o| o == Ordering::Less);
comparison!(sparsevec_le, "Operator `<=`.", |o| o != Ordering::Greater);
comparison!(sparsevec_eq, "Operator `=`.", |o| o == Ordering::Equal);
comparison!(sparsevec_ne, "Operator `<>`.", |o| o != Ordering::Equal);
comparison!(sparsevec_ge, "Operator `>=`.", |o| o != Ordering::Less);
comparison!(sparsevec_gt, "Operator `>`.", |o| o == Ordering::Greater);

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: compare the dense forms like `vector`'s btree order.
    fn dense_order(a: (usize, &[i32], &[f32]), b: (usize, &[i32], &[f32])) -> Ordering {
        let dense = |(d, idx, val): (usize, &[i32], &[f32])| {
            let mut v = vec![0.0f32; d];
            for (&i, &x) in idx.iter().zip(val) {
                v[i as usize] = x;
            }
            v
        };
        crate::vector::ops::compare(&dense(a), &dense(b))
    }

    #[test]
    fn order_equals_the_dense_order() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let make = |rng: &mut rand::rngs::StdRng| {
            let d = rng.gen_range(1..6usize);
            let (mut idx, mut val) = (Vec::new(), Vec::new());
            for k in 0..d {
                if rng.gen_bool(0.5) {
                    idx.push(k as i32);
                    val.push([-1.0f32, 1.0, 2.0][rng.gen_range(0..3)]);
                }
            }
            (d, idx, val)
        };
        for _ in 0..5000 {
            let (a, b) = (make(&mut rng), make(&mut rng));
            let (a, b) = ((a.0, &a.1[..], &a.2[..]), (b.0, &b.1[..], &b.2[..]));
            assert_eq!(compare_parts(a, b), dense_order(a, b), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn order_of_pgvector_examples() {
        let full: (usize, &[i32], &[f32]) = (3, &[0, 1, 2], &[1.0, 2.0, 3.0]);
        let empty3: (usize, &[i32], &[f32]) = (3, &[], &[]);
        let two: (usize, &[i32], &[f32]) = (2, &[0, 1], &[1.0, 2.0]);
        assert_eq!(compare_parts(full, full), Ordering::Equal);
        assert_eq!(compare_parts(full, empty3), Ordering::Greater);
        assert_eq!(compare_parts(two, full), Ordering::Less);
        assert_eq!(compare_parts(full, two), Ordering::Greater);
        assert_eq!(compare_parts(two, (3, &[0, 1, 2], &[2.0, 3.0, 4.0])), Ordering::Less);
        assert_eq!(compare_parts((2, &[0, 1], &[2.0, 3.0]), full), Ordering::Greater);
    }
}
