//! Distance kernels over `f32` slices, with no Postgres dependency.
//!
//! Every kernel takes two slices of equal length `n` (the caller checks the
//! dimensions) and accumulates in `f32`, as pgvector does, so SQL results
//! match pgvector's to the last printed digit on ordinary inputs.
//!
//! The loops keep [`LANES`] independent partial sums so the compiler can
//! vectorise them without reassociating floating-point additions itself. On
//! x86-64 the same code is also compiled with AVX2+FMA enabled and chosen at
//! run time when the CPU has those features.

/// Number of independent accumulators per kernel (two AVX2 registers).
const LANES: usize = 16;

#[inline(always)]
fn reduce(acc: [f32; LANES]) -> f32 {
    // Pairwise sum, so the result does not depend on a long serial chain.
    let mut width = LANES / 2;
    let mut acc = acc;
    while width > 0 {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
        width /= 2;
    }
    acc[0]
}

macro_rules! kernel {
    ($(#[$doc:meta])* $name:ident, |$x:ident, $y:ident| $term:expr) => {
        $(#[$doc])*
        #[inline]
        pub fn $name(a: &[f32], b: &[f32]) -> f32 {
            debug_assert_eq!(a.len(), b.len());
            #[inline(always)]
            fn portable(a: &[f32], b: &[f32]) -> f32 {
                let n = a.len().min(b.len());
                let (a, b) = (&a[..n], &b[..n]);
                let mut acc = [0.0f32; LANES];
                let chunks = n / LANES;
                for c in 0..chunks {
                    let xa = &a[c * LANES..c * LANES + LANES];
                    let xb = &b[c * LANES..c * LANES + LANES];
                    for i in 0..LANES {
                        let ($x, $y) = (xa[i], xb[i]);
                        acc[i] += $term;
                    }
                }
                let mut tail = 0.0f32;
                for i in chunks * LANES..n {
                    let ($x, $y) = (a[i], b[i]);
                    tail += $term;
                }
                reduce(acc) + tail
            }

            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2(a: &[f32], b: &[f32]) -> f32 {
                    portable(a, b)
                }
                if has_avx2() {
                    // SAFETY: `has_avx2` checked at run time that this CPU
                    // supports the AVX2 and FMA instructions `avx2` uses.
                    return unsafe { avx2(a, b) };
                }
            }
            portable(a, b)
        }
    };
}

/// Whether the running CPU has AVX2 and FMA (cached by the std macro).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

kernel!(
    /// Squared Euclidean distance `Σ (a_i − b_i)²`.
    l2_squared_distance, |x, y| (x - y) * (x - y)
);
kernel!(
    /// Inner product `Σ a_i · b_i`.
    inner_product, |x, y| x * y
);
kernel!(
    /// Manhattan distance `Σ |a_i − b_i|`.
    l1_distance, |x, y| (x - y).abs()
);

/// Hints the CPU to start loading `data` into its cache, every 64-byte line
/// of it (a hint only: never faults, never reads).
#[inline(always)]
pub fn prefetch<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let start = data.as_ptr() as *const i8;
        for line in (0..std::mem::size_of_val(data)).step_by(64) {
            // SAFETY: a prefetch is only a hint and does not dereference; the
            // address lies inside `data` anyway.
            unsafe { std::arch::x86_64::_mm_prefetch(start.add(line), std::arch::x86_64::_MM_HINT_T0) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// Squared norm `Σ a_i²` of one vector.
#[inline]
pub fn squared_norm(a: &[f32]) -> f32 {
    inner_product(a, a)
}

/// Euclidean norm in `f64`, as pgvector's `vector_norm` (accumulated in f64).
pub fn norm(a: &[f32]) -> f64 {
    a.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

/// Cosine distance `1 − a·b / (‖a‖ ‖b‖)`, clamped to `[0, 2]`.
///
/// Returns `NaN` when either vector has zero norm, as pgvector does.
pub fn cosine_distance(a: &[f32], b: &[f32]) -> f64 {
    let dot = inner_product(a, b) as f64;
    let na = squared_norm(a) as f64;
    let nb = squared_norm(b) as f64;
    let similarity = dot / (na * nb).sqrt();
    if similarity.is_nan() {
        return f64::NAN;
    }
    1.0 - similarity.clamp(-1.0, 1.0)
}

/// Scales `a` in place to unit Euclidean norm; returns `false` (and leaves `a`
/// unchanged) when its norm is zero.
pub fn normalize_in_place(a: &mut [f32]) -> bool {
    let n = norm(a);
    if n == 0.0 || !n.is_finite() {
        return false;
    }
    for x in a.iter_mut() {
        *x = (*x as f64 / n) as f32;
    }
    true
}

/// The distance an index orders by, chosen by the operator class.
///
/// Inside the graph each metric uses a cheaper monotone form of its SQL
/// operator: squared L2 for `<->`, negative inner product for `<#>` and for
/// `<=>` (whose vectors are normalised to unit length on the way in), and L1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum Metric {
    /// `vector_l2_ops`, operator `<->`.
    L2 = 1,
    /// `vector_ip_ops`, operator `<#>`.
    InnerProduct = 2,
    /// `vector_cosine_ops`, operator `<=>`.
    Cosine = 3,
    /// `vector_l1_ops`, operator `<+>`.
    L1 = 4,
}

impl Metric {
    /// Decodes the number stored in the index meta page.
    pub fn from_code(code: u8) -> Option<Metric> {
        match code {
            1 => Some(Metric::L2),
            2 => Some(Metric::InnerProduct),
            3 => Some(Metric::Cosine),
            4 => Some(Metric::L1),
            _ => None,
        }
    }

    /// Whether vectors are normalised before they enter the graph.
    pub fn normalizes(self) -> bool {
        self == Metric::Cosine
    }

    /// The graph's internal distance between `a` and `b` (smaller is nearer).
    #[inline]
    pub fn distance(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::L2 => l2_squared_distance(a, b),
            Metric::InnerProduct | Metric::Cosine => -inner_product(a, b),
            Metric::L1 => l1_distance(a, b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn naive(a: &[f32], b: &[f32], f: impl Fn(f64, f64) -> f64) -> f64 {
        a.iter().zip(b).map(|(&x, &y)| f(x as f64, y as f64)).sum()
    }

    fn close(x: f64, y: f64) -> bool {
        (x - y).abs() <= 1e-4 * (1.0 + x.abs().max(y.abs()))
    }

    #[test]
    fn kernels_match_f64_reference_for_many_lengths() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for n in [1usize, 2, 3, 7, 15, 16, 17, 31, 64, 100, 384, 1000] {
            let a: Vec<f32> = (0..n).map(|_| rng.gen_range(-2.0..2.0)).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.gen_range(-2.0..2.0)).collect();
            assert!(close(l2_squared_distance(&a, &b) as f64, naive(&a, &b, |x, y| (x - y) * (x - y))));
            assert!(close(inner_product(&a, &b) as f64, naive(&a, &b, |x, y| x * y)));
            assert!(close(l1_distance(&a, &b) as f64, naive(&a, &b, |x, y| (x - y).abs())));
            let cos = 1.0
                - naive(&a, &b, |x, y| x * y)
                    / (naive(&a, &a, |x, y| x * y).sqrt() * naive(&b, &b, |x, y| x * y).sqrt());
            assert!(close(cosine_distance(&a, &b), cos), "n={n}");
        }
    }

    #[test]
    fn pgvector_reference_values() {
        let a = [1.0, 2.0, 3.0];
        let b = [4.0, 5.0, 6.0];
        assert_eq!((l2_squared_distance(&a, &b) as f64).sqrt(), 27f64.sqrt());
        assert_eq!(inner_product(&a, &b), 32.0);
        assert_eq!(l1_distance(&a, &b), 9.0);
        assert!((cosine_distance(&a, &b) - 0.025368153802923787).abs() < 1e-7);
    }

    #[test]
    fn zero_vector_cosine_is_nan_and_normalize_refuses() {
        assert!(cosine_distance(&[0.0, 0.0], &[1.0, 2.0]).is_nan());
        let mut z = [0.0f32, 0.0];
        assert!(!normalize_in_place(&mut z));
        let mut v = [3.0f32, 4.0];
        assert!(normalize_in_place(&mut v));
        assert!((norm(&v) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn metric_codes_round_trip() {
        for m in [Metric::L2, Metric::InnerProduct, Metric::Cosine, Metric::L1] {
            assert_eq!(Metric::from_code(m as u8), Some(m));
        }
        assert_eq!(Metric::from_code(0), None);
    }
}
