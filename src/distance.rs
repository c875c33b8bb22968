//! Distance kernels over `f32` slices, with no Postgres dependency.
//!
//! Every kernel takes two slices of equal length `n` (the caller checks the
//! dimensions) and accumulates in `f32`, as pgvector does, so SQL results
//! match pgvector's to the last printed digit on ordinary inputs.
//!
//! Index pages store vectors in half precision ([`HalfVector`]): the
//! `*_half` kernels compare an `f32` query with such a stored vector, and
//! [`lower_bound`] turns their result into a value never above the exact
//! distance, for the executor's ORDER BY recheck.
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

/// The term a kernel sums, for values `x` of `a` and `y` of `b`.
#[derive(Clone, Copy)]
enum Term {
    L2,
    Dot,
    L1,
}

impl Term {
    #[inline(always)]
    fn apply(self, x: f32, y: f32) -> f32 {
        match self {
            Term::L2 => (x - y) * (x - y),
            Term::Dot => x * y,
            Term::L1 => (x - y).abs(),
        }
    }
}

/// Portable kernel ([`lanes_portable`]).
#[inline(always)]
fn f32_portable(term: Term, a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    lanes_portable(n, |i| term.apply(a[i], b[i]))
}

/// [`f32_portable`] in AVX2 registers: the 16 lanes are two 8-lane
/// accumulators, with the same operations per lane (subtract, multiply, add;
/// no fused multiply-add), so the result is bit for bit the portable one.
/// (Left to itself the compiler turns the portable loop into 2-lane SSE.)
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn f32_avx2(term: Term, a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let chunks = n / LANES;
    let sign = _mm256_set1_ps(-0.0);
    let mut acc = [_mm256_setzero_ps(); 2];
    for c in 0..chunks {
        for (half, s) in acc.iter_mut().enumerate() {
            let i = c * LANES + 8 * half;
            // SAFETY: i + 8 <= chunks * LANES <= n, the length of both
            // slices; unaligned loads.
            let (x, y) = unsafe { (_mm256_loadu_ps(a.as_ptr().add(i)), _mm256_loadu_ps(b.as_ptr().add(i))) };
            let t = match term {
                Term::L2 => {
                    let d = _mm256_sub_ps(x, y);
                    _mm256_mul_ps(d, d)
                }
                Term::Dot => _mm256_mul_ps(x, y),
                Term::L1 => _mm256_andnot_ps(sign, _mm256_sub_ps(x, y)),
            };
            *s = _mm256_add_ps(*s, t);
        }
    }
    let mut lanes = [0.0f32; LANES];
    // SAFETY: `lanes` holds 16 f32s, two unaligned 8-lane stores.
    unsafe {
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc[0]);
        _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc[1]);
    }
    let mut tail = 0.0f32;
    for i in chunks * LANES..n {
        tail += term.apply(a[i], b[i]);
    }
    reduce(lanes) + tail
}

#[inline(always)]
fn f32_kernel(term: Term, a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: `has_avx2` checked at run time that this CPU supports AVX2.
        return unsafe { f32_avx2(term, a, b) };
    }
    f32_portable(term, a, b)
}

/// Whether the running CPU has AVX2 and FMA (cached by the std macro).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Squared Euclidean distance `Σ (a_i − b_i)²`.
#[inline]
pub fn l2_squared_distance(a: &[f32], b: &[f32]) -> f32 {
    f32_kernel(Term::L2, a, b)
}

/// Inner product `Σ a_i · b_i`.
#[inline]
pub fn inner_product(a: &[f32], b: &[f32]) -> f32 {
    f32_kernel(Term::Dot, a, b)
}

/// Manhattan distance `Σ |a_i − b_i|`.
#[inline]
pub fn l1_distance(a: &[f32], b: &[f32]) -> f32 {
    f32_kernel(Term::L1, a, b)
}

/// The value of IEEE 754 half-precision bits `h` (finite codes only: the
/// encoder never writes infinities or NaNs, and a damaged code just reads
/// as some finite number).
///
/// Written without branches or `f32` subnormals (which cost microcode
/// assists on x86), so the kernels' loops vectorise: normal codes rebias
/// the exponent; subnormal codes are placed on top of `2^-14` and that is
/// subtracted again.
#[inline(always)]
pub fn half_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let shifted = (h & 0x7FFF) << 13;
    let normal = f32::from_bits(shifted + (112 << 23));
    let subnormal = f32::from_bits(shifted + (113 << 23)) - f32::from_bits(113 << 23);
    let magnitude = if h & 0x7C00 == 0 { subnormal } else { normal };
    f32::from_bits(magnitude.to_bits() | ((h & 0x8000) << 16))
}

/// Sums `term(i)` for `i` in `0..n` the way every portable kernel does:
/// [`LANES`] partial sums (lane `i` takes elements `i`, `i + LANES`, ...),
/// pairwise reduction, then the tail in order.
#[inline(always)]
fn lanes_portable(n: usize, term: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = n / LANES;
    for c in 0..chunks {
        for (i, a) in acc.iter_mut().enumerate() {
            *a += term(c * LANES + i);
        }
    }
    let mut tail = 0.0f32;
    for i in chunks * LANES..n {
        tail += term(i);
    }
    reduce(acc) + tail
}

/// Portable half-precision kernel: same lanes and summation order as the
/// `f32` kernels, decoding each code with [`half_to_f32`].
#[inline(always)]
fn half_portable(term: Term, q: &[f32], codes: &[u16], scale: f32) -> f32 {
    let n = q.len().min(codes.len());
    let (q, codes) = (&q[..n], &codes[..n]);
    lanes_portable(n, |i| term.apply(q[i], half_to_f32(codes[i]) * scale))
}

/// The lane loop of the F16C kernels: two 8-lane accumulators (16 lanes,
/// as [`lanes_portable`]) over the operand pairs `load(i)` (elements
/// `i..i + 8`) with fused multiply-adds, the same pairwise reduction, then
/// the tail `tail(i)` in order.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `load(i)` must be valid for
/// every `i + 8 <= n`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn lanes_f16c(
    term: Term,
    n: usize,
    load: impl Fn(usize) -> (std::arch::x86_64::__m256, std::arch::x86_64::__m256),
    tail: impl Fn(usize) -> f32,
) -> f32 {
    use std::arch::x86_64::*;
    let chunks = n / LANES;
    let sign = _mm256_set1_ps(-0.0);
    let mut acc = [_mm256_setzero_ps(); 2];
    for c in 0..chunks {
        for (half, a) in acc.iter_mut().enumerate() {
            let (x, y) = load(c * LANES + 8 * half);
            *a = match term {
                Term::L2 => {
                    let d = _mm256_sub_ps(x, y);
                    _mm256_fmadd_ps(d, d, *a)
                }
                Term::Dot => _mm256_fmadd_ps(x, y, *a),
                Term::L1 => _mm256_add_ps(*a, _mm256_andnot_ps(sign, _mm256_sub_ps(x, y))),
            };
        }
    }
    let mut lanes = [0.0f32; LANES];
    // SAFETY: `lanes` holds 16 f32s, two unaligned 8-lane stores.
    unsafe {
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc[0]);
        _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc[1]);
    }
    let mut rest = 0.0f32;
    for i in chunks * LANES..n {
        rest += tail(i);
    }
    reduce(lanes) + rest
}

/// The half-precision kernel with the CPU's half→single conversion
/// (`vcvtph2ps`, F16C) and fused multiply-adds ([`lanes_f16c`]).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn half_f16c(term: Term, q: &[f32], codes: &[u16], scale: f32) -> f32 {
    use std::arch::x86_64::*;
    let n = q.len().min(codes.len());
    let scale8 = _mm256_set1_ps(scale);
    let load = |i: usize| {
        // SAFETY: i + 8 <= n, the length of both slices; unaligned loads.
        let (x, h) =
            unsafe { (_mm256_loadu_ps(q.as_ptr().add(i)), _mm_loadu_si128(codes.as_ptr().add(i) as *const __m128i)) };
        (x, _mm256_mul_ps(_mm256_cvtph_ps(h), scale8))
    };
    // SAFETY: the CPU supports the features (caller's contract); `load` is
    // valid for every i + 8 <= n.
    unsafe { lanes_f16c(term, n, load, |i| term.apply(q[i], half_to_f32(codes[i]) * scale)) }
}

/// Whether the running CPU can run [`half_f16c`] (cached by the std macro).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn has_f16c() -> bool {
    has_avx2() && std::arch::is_x86_feature_detected!("f16c")
}

#[inline(always)]
fn half_kernel(term: Term, q: &[f32], codes: &[u16], scale: f32) -> f32 {
    debug_assert_eq!(q.len(), codes.len());
    #[cfg(target_arch = "x86_64")]
    if has_f16c() {
        // SAFETY: `has_f16c` checked at run time that this CPU supports
        // AVX2, FMA and F16C.
        return unsafe { half_f16c(term, q, codes, scale) };
    }
    half_portable(term, q, codes, scale)
}

/// Portable kernel between two half-precision vectors `a · sa` and
/// `b · sb`: the lanes and summation order of [`lanes_portable`].
#[inline(always)]
fn half_pair_portable(term: Term, a: &[u16], sa: f32, b: &[u16], sb: f32) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    lanes_portable(n, |i| term.apply(half_to_f32(a[i]) * sa, half_to_f32(b[i]) * sb))
}

/// [`half_pair_portable`] with F16C conversions and fused multiply-adds
/// ([`lanes_f16c`]).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn half_pair_f16c(term: Term, a: &[u16], sa: f32, b: &[u16], sb: f32) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (sa8, sb8) = (_mm256_set1_ps(sa), _mm256_set1_ps(sb));
    let load = |i: usize| {
        // SAFETY: i + 8 <= n, the length of both slices; unaligned loads.
        let (ha, hb) = unsafe {
            (_mm_loadu_si128(a.as_ptr().add(i) as *const __m128i), _mm_loadu_si128(b.as_ptr().add(i) as *const __m128i))
        };
        (_mm256_mul_ps(_mm256_cvtph_ps(ha), sa8), _mm256_mul_ps(_mm256_cvtph_ps(hb), sb8))
    };
    // SAFETY: the CPU supports the features (caller's contract); `load` is
    // valid for every i + 8 <= n.
    unsafe { lanes_f16c(term, n, load, |i| term.apply(half_to_f32(a[i]) * sa, half_to_f32(b[i]) * sb)) }
}

#[inline(always)]
fn half_pair_kernel(term: Term, a: &[u16], sa: f32, b: &[u16], sb: f32) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if has_f16c() {
        // SAFETY: `has_f16c` checked at run time that this CPU supports
        // AVX2, FMA and F16C.
        return unsafe { half_pair_f16c(term, a, sa, b, sb) };
    }
    half_pair_portable(term, a, sa, b, sb)
}

/// Squared Euclidean distance between `q` and the half-precision vector
/// `codes · scale` (same length).
#[inline]
pub fn l2_squared_distance_half(q: &[f32], codes: &[u16], scale: f32) -> f32 {
    half_kernel(Term::L2, q, codes, scale)
}

/// Inner product of `q` and the half-precision vector `codes · scale`.
#[inline]
pub fn inner_product_half(q: &[f32], codes: &[u16], scale: f32) -> f32 {
    half_kernel(Term::Dot, q, codes, scale)
}

/// Manhattan distance between `q` and the half-precision vector
/// `codes · scale`.
#[inline]
pub fn l1_distance_half(q: &[f32], codes: &[u16], scale: f32) -> f32 {
    half_kernel(Term::L1, q, codes, scale)
}

/// A vector as index pages store it: IEEE half-precision codes times a
/// power-of-two `scale`, with the exact size of the rounding error, so a
/// distance computed from it can be turned into a bound on the exact one.
///
/// Half precision halves the bytes a search reads per visited element (the
/// scan is bound by memory traffic, not arithmetic); the rounding error is at
/// most `2^-11` of each component, far below the distance gaps an
/// approximate search can resolve.
#[derive(Clone, Debug, PartialEq)]
pub struct HalfVector {
    /// Power of two with every `|x_i| / scale < 2` (so nothing overflows the
    /// half range), clamped to `2^-100 ..= 2^127`.
    pub scale: f32,
    /// `half(x_i / scale)` bits, one per dimension.
    pub codes: Vec<u16>,
    /// `‖x − codes·scale‖₂`, rounded up: bounds the error of L2, inner
    /// product and cosine distances.
    pub err_l2: f32,
    /// `‖x − codes·scale‖₁`, rounded up: bounds the error of L1 distances.
    pub err_l1: f32,
    /// `‖x‖₂`, rounded up (scales the floating-point slack of inner products).
    pub norm: f32,
}

/// Rounds a non-negative `f64` up to an `f32` that is not smaller.
fn f32_at_least(v: f64) -> f32 {
    let r = v as f32;
    if (r as f64) < v {
        f32::from_bits(r.to_bits() + 1)
    } else {
        r
    }
}

impl HalfVector {
    /// Encodes `x` (finite values, as the `vector` type guarantees), rounding
    /// each component to the nearest half-precision value.
    pub fn encode(x: &[f32]) -> HalfVector {
        let max = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let exponent = if max > 0.0 && max.is_finite() { max.log2().floor() as i32 } else { 0 };
        // `log2` may round up for values just below a power of two.
        let exponent = if max > 0.0 && max / 2f32.powi(exponent) < 1.0 { exponent - 1 } else { exponent };
        let scale = 2f32.powi(exponent.clamp(-100, 127));
        let codes: Vec<u16> = x.iter().map(|&v| half::f16::from_f32(v / scale).to_bits()).collect();
        let (err_l2, err_l1, norm) = rounding_error(x, codes.iter().map(|&c| half_to_f32(c) * scale));
        HalfVector { scale, codes, err_l2, err_l1, norm }
    }

    /// The stored vector as `f32` (`codes · scale`).
    pub fn decode(codes: &[u16], scale: f32, out: &mut Vec<f32>) {
        out.clear();
        out.extend(codes.iter().map(|&c| half_to_f32(c) * scale));
    }
}

/// `(‖x − y‖₂, ‖x − y‖₁, ‖x‖₂)` for a vector `x` and its stored form `y`
/// (each component as the kernels compute it), summed in `f64` and rounded
/// up to `f32`: the error bounds of [`HalfVector`] and [`Int8Vector`].
fn rounding_error(x: &[f32], y: impl Iterator<Item = f32>) -> (f32, f32, f32) {
    let (mut l2, mut l1, mut norm) = (0.0f64, 0.0f64, 0.0f64);
    for (&v, y) in x.iter().zip(y) {
        let e = v as f64 - y as f64;
        l2 += e * e;
        l1 += e.abs();
        norm += v as f64 * v as f64;
    }
    // The sums carry their own rounding: a relative 1e-9 covers it.
    let up = 1.0 + 1e-9;
    (f32_at_least(l2.sqrt() * up), f32_at_least(l1 * up), f32_at_least(norm.sqrt() * up))
}

/// Portable 8-bit kernel: the lanes and summation order of
/// [`lanes_portable`], each code widened to `f32` and multiplied by the
/// scale (one rounding, as in [`Int8Vector::encode`]'s error sums).
#[inline(always)]
fn int8_portable(term: Term, q: &[f32], codes: &[i8], scale: f32) -> f32 {
    let n = q.len().min(codes.len());
    let (q, codes) = (&q[..n], &codes[..n]);
    lanes_portable(n, |i| term.apply(q[i], codes[i] as f32 * scale))
}

/// [`int8_portable`] in AVX2 registers: eight codes sign-extended to
/// 32-bit integers (`vpmovsxbd`), converted and scaled, then the lane loop
/// of [`lanes_f16c`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C (the lane loop is shared with
/// the half-precision kernels).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn int8_avx2(term: Term, q: &[f32], codes: &[i8], scale: f32) -> f32 {
    use std::arch::x86_64::*;
    let n = q.len().min(codes.len());
    let scale8 = _mm256_set1_ps(scale);
    let load = |i: usize| {
        // SAFETY: i + 8 <= n, the length of both slices; unaligned loads of
        // 8 floats and of 8 bytes.
        let (x, c) =
            unsafe { (_mm256_loadu_ps(q.as_ptr().add(i)), _mm_loadl_epi64(codes.as_ptr().add(i) as *const __m128i)) };
        (x, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c)), scale8))
    };
    // SAFETY: the CPU supports the features (caller's contract); `load` is
    // valid for every i + 8 <= n.
    unsafe { lanes_f16c(term, n, load, |i| term.apply(q[i], codes[i] as f32 * scale)) }
}

#[inline(always)]
fn int8_kernel(term: Term, q: &[f32], codes: &[i8], scale: f32) -> f32 {
    debug_assert_eq!(q.len(), codes.len());
    #[cfg(target_arch = "x86_64")]
    if has_f16c() {
        // SAFETY: `has_f16c` checked at run time that this CPU supports
        // AVX2, FMA and F16C.
        return unsafe { int8_avx2(term, q, codes, scale) };
    }
    int8_portable(term, q, codes, scale)
}

/// A vector as an index with `quantization = 'int8'` stores it: signed
/// 8-bit codes in `-127..=127` times one `f32` scale (`max |x_i| / 127`),
/// with the exact size of the rounding error, like [`HalfVector`].
///
/// A quarter of `f32`'s bytes and half of [`HalfVector`]'s, at a coarser
/// rounding (up to `scale / 2` per component): a search on it visits
/// elements in nearly the same order, and the executor's recheck (with
/// [`lower_bound`] from these error bounds) restores the exact order.
#[derive(Clone, Debug, PartialEq)]
pub struct Int8Vector {
    /// `max |x_i| / 127` (1 for a zero vector).
    pub scale: f32,
    /// `round(x_i / scale)`, one per dimension.
    pub codes: Vec<i8>,
    /// `‖x − codes·scale‖₂` (each product rounded to `f32`, as the kernels
    /// compute it), rounded up.
    pub err_l2: f32,
    /// `‖x − codes·scale‖₁`, rounded up.
    pub err_l1: f32,
    /// `‖x‖₂`, rounded up.
    pub norm: f32,
}

impl Int8Vector {
    /// Encodes `x` (finite values), rounding each component to the nearest
    /// multiple of the scale.
    pub fn encode(x: &[f32]) -> Int8Vector {
        let max = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let mut scale = if max > 0.0 && max.is_finite() { (max / 127.0).max(f32::MIN_POSITIVE) } else { 1.0 };
        // Near f32::MAX, 127 · fl(max / 127) can round up to infinity.
        while (127.0 * scale).is_infinite() {
            scale = f32::from_bits(scale.to_bits() - 1);
        }
        let codes: Vec<i8> = x.iter().map(|&v| (v / scale).round().clamp(-127.0, 127.0) as i8).collect();
        let (err_l2, err_l1, norm) = rounding_error(x, codes.iter().map(|&c| c as f32 * scale));
        Int8Vector { scale, codes, err_l2, err_l1, norm }
    }
}

/// An error bound `a + b` (two bounds of successive roundings, by the
/// triangle inequality), rounded up to `f32`.
pub fn add_bounds(a: f32, b: f32) -> f32 {
    f32_at_least((a as f64 + b as f64) * (1.0 + 1e-9))
}

/// Relative slack for the rounding of `f32` sums. The kernels' summation
/// order is fixed (16 lanes, then a pairwise reduction), so a sum of `n`
/// terms is within `(n/16 + 5) · 2^-24` of exact relative to the sum of the
/// terms' magnitudes: at most `1.5e-5` for 4,000 dimensions. A distance
/// involves up to three such sums, and both the index's value and the
/// executor's exact one carry them, so `5e-5` covers every case.
const SUM_SLACK: f64 = 5e-5;

/// Largest and smallest vector norms for which the SQL cosine distance,
/// computed in `f32` as pgvector does, is accurate: beyond them `‖x‖²`
/// overflows `f32` (pgvector then returns 1 or `NaN`) or falls into its
/// subnormal range.
const COSINE_SAFE_NORMS: (f64, f64) = (1e-18, 1e18);

/// Whether the SQL cosine distance of a vector of norm `n` is computed
/// reliably in `f32` (see [`lower_bound`]).
pub fn cosine_norm_is_safe(n: f64) -> bool {
    (COSINE_SAFE_NORMS.0..=COSINE_SAFE_NORMS.1).contains(&n)
}

/// Largest product of norms for which the SQL inner product cannot overflow
/// `f32` (every partial sum is at most `‖q‖ ‖x‖`).
const INNER_PRODUCT_SAFE: f64 = 1e37;

/// The norms of a query that [`lower_bound`] needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QueryNorms {
    /// `‖q‖₂` of the query as searched (1 for cosine, whose queries are
    /// normalised).
    pub searched: f64,
    /// `‖q‖₂` of the query as given.
    pub original: f64,
}

/// A value never above the SQL distance (`<->`, `<#>`, `<=>`, `<+>`, as
/// PostgreSQL orders `float8`, `NaN` last) between the query and the element
/// whose stored [`HalfVector`] gave `approx`, the graph distance
/// ([`Metric::distance_half`]) to it.
///
/// `err_l2`, `err_l1`, `norm` are the element's stored fields (`norm` is
/// `‖x‖₂` of the vector as given, also for cosine). The bound is the triangle
/// inequality with the stored rounding error (`|‖q−x‖ − ‖q−y‖| ≤ ‖x−y‖`,
/// `|q·x − q·y| ≤ ‖q‖ ‖x−y‖`, and the same in L1), less a slack for `f32`
/// summation (relative, and a tiny absolute term for subnormal sums). Where
/// the SQL operator's own `f32` arithmetic breaks down (an inner product
/// that can overflow to `±∞`, a cosine of norms outside
/// [`COSINE_SAFE_NORMS`], which pgvector reports as 1 or `NaN`) the bound is
/// `−∞`, always valid. Never `NaN`.
pub fn lower_bound(metric: Metric, approx: f32, query: QueryNorms, err_l2: f32, err_l1: f32, norm: f32) -> f64 {
    let (approx, err_l2, err_l1, norm) = (approx as f64, err_l2 as f64, err_l1 as f64, norm as f64);
    let qn = query.searched;
    let bound = match metric {
        // Both f32 sums (the index's and the SQL one) may be off by subnormal
        // rounding (absolute, at most 4000 · 2 · 2^-150 ≈ 5.6e-42 each):
        // taken off before the root.
        Metric::L2 => (approx - 2e-41).max(0.0).sqrt() * (1.0 - SUM_SLACK) - err_l2 * (1.0 + SUM_SLACK),
        Metric::L1 => approx * (1.0 - SUM_SLACK) - err_l1 * (1.0 + SUM_SLACK),
        Metric::InnerProduct if query.original * norm >= INNER_PRODUCT_SAFE => f64::NEG_INFINITY,
        Metric::InnerProduct => approx - qn * err_l2 * (1.0 + SUM_SLACK) - SUM_SLACK * qn * (norm + err_l2),
        Metric::Cosine => {
            if !cosine_norm_is_safe(query.original) || !cosine_norm_is_safe(norm) {
                f64::NEG_INFINITY
            } else {
                // approx = −q̂·ŷ for unit q̂ and the normalised stored vector.
                1.0 + approx - qn * err_l2 * (1.0 + SUM_SLACK) - SUM_SLACK * (1.0 + err_l2)
            }
        }
    };
    if bound.is_finite() {
        // Absolute slack for sums whose terms fall in `f32`'s subnormal
        // range, where rounding is absolute (2^-150 per operation).
        bound - 1e-40
    } else {
        f64::NEG_INFINITY
    }
}

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

/// `(a·b, ‖a‖², ‖b‖²)` in one pass over both vectors, each sum with the
/// lanes and summation order of the other kernels.
#[inline]
fn cosine_sums(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: `has_avx2` checked at run time that this CPU supports AVX2.
        return unsafe { cosine_sums_avx2(a, b) };
    }
    cosine_sums_portable(a, b)
}

#[inline(always)]
fn cosine_sums_portable(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let (mut dot, mut na, mut nb) = ([0.0f32; LANES], [0.0f32; LANES], [0.0f32; LANES]);
    let chunks = n / LANES;
    for c in 0..chunks {
        for i in 0..LANES {
            let (x, y) = (a[c * LANES + i], b[c * LANES + i]);
            dot[i] += x * y;
            na[i] += x * x;
            nb[i] += y * y;
        }
    }
    let (mut tdot, mut tna, mut tnb) = (0.0f32, 0.0f32, 0.0f32);
    for i in chunks * LANES..n {
        tdot += a[i] * b[i];
        tna += a[i] * a[i];
        tnb += b[i] * b[i];
    }
    (reduce(dot) + tdot, reduce(na) + tna, reduce(nb) + tnb)
}

/// [`cosine_sums_portable`] in AVX2 registers, bit for bit (see
/// [`f32_avx2`]).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn cosine_sums_avx2(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let chunks = n / LANES;
    let mut acc = [[_mm256_setzero_ps(); 2]; 3];
    for c in 0..chunks {
        for half in 0..2 {
            let i = c * LANES + 8 * half;
            // SAFETY: i + 8 <= chunks * LANES <= n, the length of both
            // slices; unaligned loads.
            let (x, y) = unsafe { (_mm256_loadu_ps(a.as_ptr().add(i)), _mm256_loadu_ps(b.as_ptr().add(i))) };
            acc[0][half] = _mm256_add_ps(acc[0][half], _mm256_mul_ps(x, y));
            acc[1][half] = _mm256_add_ps(acc[1][half], _mm256_mul_ps(x, x));
            acc[2][half] = _mm256_add_ps(acc[2][half], _mm256_mul_ps(y, y));
        }
    }
    let mut lanes = [[0.0f32; LANES]; 3];
    for (out, v) in lanes.iter_mut().zip(acc.iter()) {
        // SAFETY: each `out` holds 16 f32s, two unaligned 8-lane stores.
        unsafe {
            _mm256_storeu_ps(out.as_mut_ptr(), v[0]);
            _mm256_storeu_ps(out.as_mut_ptr().add(8), v[1]);
        }
    }
    let (mut tdot, mut tna, mut tnb) = (0.0f32, 0.0f32, 0.0f32);
    for i in chunks * LANES..n {
        tdot += a[i] * b[i];
        tna += a[i] * a[i];
        tnb += b[i] * b[i];
    }
    (reduce(lanes[0]) + tdot, reduce(lanes[1]) + tna, reduce(lanes[2]) + tnb)
}

/// Euclidean distance as the SQL operator `<->` returns it: the `f32` sum of
/// squares, as pgvector computes it (`Infinity` when it overflows), then the
/// square root in `f64`.
pub fn l2_distance(a: &[f32], b: &[f32]) -> f64 {
    (l2_squared_distance(a, b) as f64).sqrt()
}

/// Negative inner product as the SQL operator `<#>` returns it (`f32`
/// accumulation, as pgvector: `±Infinity` when it overflows).
pub fn negative_inner_product(a: &[f32], b: &[f32]) -> f64 {
    -(inner_product(a, b) as f64)
}

/// Cosine distance `1 − a·b / √(‖a‖² ‖b‖²)` as the SQL operator `<=>`
/// returns it: the three sums in `f32`, the division in `f64`, the
/// similarity clamped to `[−1, 1]`, as pgvector computes it. `NaN` when
/// either vector has zero norm; where `‖a‖²` overflows `f32`, 1 or `NaN`,
/// as pgvector.
pub fn cosine_distance(a: &[f32], b: &[f32]) -> f64 {
    let (dot, na, nb) = cosine_sums(a, b);
    let similarity = dot as f64 / (na as f64 * nb as f64).sqrt();
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

    /// [`Metric::distance`] between `query` and a stored half-precision
    /// vector (`codes · scale`, see [`HalfVector`]).
    #[inline]
    pub fn distance_half(self, query: &[f32], codes: &[u16], scale: f32) -> f32 {
        match self {
            Metric::L2 => l2_squared_distance_half(query, codes, scale),
            Metric::InnerProduct | Metric::Cosine => -inner_product_half(query, codes, scale),
            Metric::L1 => l1_distance_half(query, codes, scale),
        }
    }

    /// [`Metric::distance`] between `query` and a stored 8-bit vector
    /// (`codes · scale`, see [`Int8Vector`]).
    #[inline]
    pub fn distance_int8(self, query: &[f32], codes: &[i8], scale: f32) -> f32 {
        match self {
            Metric::L2 => int8_kernel(Term::L2, query, codes, scale),
            Metric::InnerProduct | Metric::Cosine => -int8_kernel(Term::Dot, query, codes, scale),
            Metric::L1 => int8_kernel(Term::L1, query, codes, scale),
        }
    }

    /// The graph distance between two half-precision vectors `a · sa` and
    /// `b · sb` of the same length (the build compares stored elements in
    /// this form: half the memory traffic of `f32`).
    pub fn distance_half_pair(self, a: &[u16], sa: f32, b: &[u16], sb: f32) -> f32 {
        match self {
            Metric::L2 => half_pair_kernel(Term::L2, a, sa, b, sb),
            Metric::InnerProduct | Metric::Cosine => -half_pair_kernel(Term::Dot, a, sa, b, sb),
            Metric::L1 => half_pair_kernel(Term::L1, a, sa, b, sb),
        }
    }
}

// ---------------------------------------------------------------------------
// Sparse vectors (`sparsevec`) and bit strings (`bit`).
//
// Kept apart from the dense kernels above. SQL functions of `sparsevec` and
// `bit` and the index codecs of those types call these.
// ---------------------------------------------------------------------------

/// Runs `term(a_value, b_value)` over the union of two sparse index lists in
/// increasing index order (a missing entry counts as `0.0`) and sums in `f32`
/// in that order, as pgvector's sparse loops do, so results match it bit for
/// bit. `both` is the term where both vectors have an entry, `one` the term
/// where only one of them has (given that value).
#[inline(always)]
fn sparse_merge(
    ai: &[i32],
    av: &[f32],
    bi: &[i32],
    bv: &[f32],
    both: impl Fn(f32, f32) -> f32,
    one: impl Fn(f32) -> f32,
) -> f32 {
    let (na, nb) = (ai.len().min(av.len()), bi.len().min(bv.len()));
    let (mut i, mut j, mut sum) = (0usize, 0usize, 0.0f32);
    while i < na && j < nb {
        match ai[i].cmp(&bi[j]) {
            std::cmp::Ordering::Less => {
                sum += one(av[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                sum += one(bv[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                sum += both(av[i], bv[j]);
                i += 1;
                j += 1;
            }
        }
    }
    for &x in &av[i..na] {
        sum += one(x);
    }
    for &y in &bv[j..nb] {
        sum += one(y);
    }
    sum
}

/// Inner product `Σ a_k b_k` of two sparse vectors given as (indices, values)
/// pairs: indices 0-based and strictly increasing, values finite, one value
/// per index (extra entries of the longer slice are ignored). Only indices
/// present in both contribute; the sum is in `f32` in index order
/// (pgvector's `sparsevec` inner product), so it can overflow to `±∞`.
pub fn sparse_inner_product(ai: &[i32], av: &[f32], bi: &[i32], bv: &[f32]) -> f32 {
    let (na, nb) = (ai.len().min(av.len()), bi.len().min(bv.len()));
    let (mut i, mut j, mut sum) = (0usize, 0usize, 0.0f32);
    while i < na && j < nb {
        let (x, y) = (ai[i], bi[j]);
        if x == y {
            sum += av[i] * bv[j];
        }
        i += (x <= y) as usize;
        j += (y <= x) as usize;
    }
    sum
}

/// Squared Euclidean distance `Σ (a_k − b_k)²` of two sparse vectors (same
/// conventions as [`sparse_inner_product`]; an index present in one vector
/// only adds its value squared).
pub fn sparse_l2_squared_distance(ai: &[i32], av: &[f32], bi: &[i32], bv: &[f32]) -> f32 {
    sparse_merge(ai, av, bi, bv, |x, y| (x - y) * (x - y), |x| x * x)
}

/// Manhattan distance `Σ |a_k − b_k|` of two sparse vectors (same conventions
/// as [`sparse_inner_product`]).
pub fn sparse_l1_distance(ai: &[i32], av: &[f32], bi: &[i32], bv: &[f32]) -> f32 {
    sparse_merge(ai, av, bi, bv, |x, y| (x - y).abs(), |x| x.abs())
}

/// Population counts over two equal-length byte strings, eight bytes at a
/// time: `f(a_word, b_word)` summed over words, then over the tail bytes.
#[inline(always)]
fn popcount_pairs(a: &[u8], b: &[u8], f: impl Fn(u64, u64) -> u64) -> u64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut total = 0u64;
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        // chunks_exact(8) yields 8-byte slices, so the conversions succeed.
        let x = u64::from_ne_bytes(x.try_into().unwrap_or([0; 8]));
        let y = u64::from_ne_bytes(y.try_into().unwrap_or([0; 8]));
        total += f(x, y);
    }
    for (&x, &y) in ca.remainder().iter().zip(cb.remainder()) {
        total += f(x as u64, y as u64);
    }
    total
}

/// Hamming distance of two equal-length bit strings given as bytes (most
/// significant bit first, trailing pad bits zero, as PostgreSQL stores `bit`
/// and `varbit`): the number of positions where they differ. Bytes past the
/// shorter string are ignored.
pub fn hamming_distance(a: &[u8], b: &[u8]) -> u64 {
    popcount_pairs(a, b, |x, y| (x ^ y).count_ones() as u64)
}

/// Jaccard distance `1 − |a ∧ b| / |a ∨ b|` of two equal-length bit strings
/// (layout as for [`hamming_distance`]), as pgvector computes it: `1` when the
/// strings share no set bit, which includes two all-zero strings.
pub fn jaccard_distance(a: &[u8], b: &[u8]) -> f64 {
    let common = popcount_pairs(a, b, |x, y| (x & y).count_ones() as u64);
    if common == 0 {
        return 1.0;
    }
    let union = popcount_pairs(a, b, |x, y| (x | y).count_ones() as u64);
    1.0 - common as f64 / union as f64
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

    /// The AVX2 kernels are the portable ones, bit for bit (so results do
    /// not depend on the CPU).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx2_kernels_equal_the_portable_ones_bit_for_bit() {
        if !has_avx2() {
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        for n in [0usize, 1, 5, 15, 16, 17, 33, 100, 384, 1000, 2000] {
            for _ in 0..20 {
                let a: Vec<f32> = (0..n).map(|_| rng.gen_range(-3.0..3.0)).collect();
                let b: Vec<f32> = (0..n).map(|_| rng.gen_range(-3.0..3.0)).collect();
                for term in [Term::L2, Term::Dot, Term::L1] {
                    // SAFETY: has_avx2 checked above.
                    let fast = unsafe { f32_avx2(term, &a, &b) };
                    assert_eq!(fast.to_bits(), f32_portable(term, &a, &b).to_bits(), "n={n}");
                }
                // SAFETY: has_avx2 checked above.
                let (x, y, z) = unsafe { cosine_sums_avx2(&a, &b) };
                let (p, q, r) = cosine_sums_portable(&a, &b);
                assert_eq!((x.to_bits(), y.to_bits(), z.to_bits()), (p.to_bits(), q.to_bits(), r.to_bits()));
            }
        }
    }

    /// The 8-bit kernels: the AVX2 path (fused multiply-adds) and the
    /// portable one (run on no CPU of ours otherwise) agree within the sum
    /// slack, and a lower bound from the portable value stays below the
    /// exact distance too.
    #[test]
    fn int8_kernels_agree_and_portable_bounds_hold() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        for n in [1usize, 7, 16, 17, 384, 2000] {
            for _ in 0..30 {
                let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-3.0..3.0)).collect();
                let q: Vec<f32> = (0..n).map(|_| rng.gen_range(-3.0..3.0)).collect();
                let h = Int8Vector::encode(&x);
                for (term, metric) in
                    [(Term::L2, Metric::L2), (Term::Dot, Metric::InnerProduct), (Term::L1, Metric::L1)]
                {
                    let portable = int8_portable(term, &q, &h.codes, h.scale);
                    let fast = int8_kernel(term, &q, &h.codes, h.scale);
                    let magnitude: f32 =
                        q.iter().zip(&h.codes).map(|(a, &c)| term.apply(*a, c as f32 * h.scale).abs()).sum();
                    assert!((portable - fast).abs() <= 1e-5 * magnitude + 1e-30, "n={n}: {portable} vs {fast}");
                    let approx = match metric {
                        Metric::InnerProduct => -portable,
                        _ => portable,
                    };
                    let query = QueryNorms { searched: norm(&q), original: norm(&q) };
                    let bound = lower_bound(metric, approx, query, h.err_l2, h.err_l1, h.norm);
                    let exact = match metric {
                        Metric::L2 => l2_distance(&q, &x),
                        Metric::InnerProduct => negative_inner_product(&q, &x),
                        _ => l1_distance(&q, &x) as f64,
                    };
                    assert!(bound <= exact, "{metric:?} n={n}: bound {bound} above {exact}");
                }
            }
        }
        // The largest finite magnitude: the scale is stepped down so that
        // 127 · scale stays finite.
        let h = Int8Vector::encode(&[f32::MAX, -1.0, 0.0]);
        assert!((127.0 * h.scale).is_finite() && h.err_l2.is_finite(), "{h:?}");
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
    fn half_decoding_matches_ieee_for_every_finite_code() {
        for h in 0..=u16::MAX {
            let reference = half::f16::from_bits(h);
            if reference.is_finite() {
                assert_eq!(half_to_f32(h).to_bits(), reference.to_f32().to_bits(), "code {h:#06x}");
            }
        }
    }

    #[test]
    fn half_pair_kernels_match_the_decoded_vectors() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for n in [1usize, 15, 16, 17, 384, 1000] {
            let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-2.0..2.0)).collect();
            let y: Vec<f32> = (0..n).map(|_| rng.gen_range(-300.0..300.0)).collect();
            let (hx, hy) = (HalfVector::encode(&x), HalfVector::encode(&y));
            let (mut dx, mut dy) = (Vec::new(), Vec::new());
            HalfVector::decode(&hx.codes, hx.scale, &mut dx);
            HalfVector::decode(&hy.codes, hy.scale, &mut dy);
            for m in [Metric::L2, Metric::InnerProduct, Metric::Cosine, Metric::L1] {
                let pair = m.distance_half_pair(&hx.codes, hx.scale, &hy.codes, hy.scale) as f64;
                assert!(close(pair, m.distance(&dx, &dy) as f64), "{m:?} n={n}");
            }
            for term in [Term::L2, Term::Dot, Term::L1] {
                let portable = half_pair_portable(term, &hx.codes, hx.scale, &hy.codes, hy.scale) as f64;
                #[cfg(target_arch = "x86_64")]
                if has_f16c() {
                    // SAFETY: checked just above.
                    let f16c = unsafe { half_pair_f16c(term, &hx.codes, hx.scale, &hy.codes, hy.scale) } as f64;
                    assert!(close(portable, f16c), "n={n}: {portable} vs {f16c}");
                }
            }
        }
    }

    #[test]
    fn half_kernels_match_the_decoded_vector() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for n in [1usize, 15, 16, 17, 384, 1000] {
            let q: Vec<f32> = (0..n).map(|_| rng.gen_range(-2.0..2.0)).collect();
            let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-300.0..300.0)).collect();
            let h = HalfVector::encode(&x);
            let mut y = Vec::new();
            HalfVector::decode(&h.codes, h.scale, &mut y);
            let max = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(h.scale <= max && max < 2.0 * h.scale, "scale {} for largest |x_i| {max}", h.scale);
            for m in [Metric::L2, Metric::InnerProduct, Metric::L1] {
                assert!(close(m.distance_half(&q, &h.codes, h.scale) as f64, m.distance(&q, &y) as f64), "{m:?} n={n}");
            }
            for term in [Term::L2, Term::Dot, Term::L1] {
                let portable = half_portable(term, &q, &h.codes, h.scale) as f64;
                #[cfg(target_arch = "x86_64")]
                if has_f16c() {
                    // SAFETY: checked just above.
                    let f16c = unsafe { half_f16c(term, &q, &h.codes, h.scale) } as f64;
                    assert!(close(portable, f16c), "n={n}: {portable} vs {f16c}");
                }
                let reference = match term {
                    Term::L2 => l2_squared_distance(&q, &y),
                    Term::Dot => inner_product(&q, &y),
                    Term::L1 => l1_distance(&q, &y),
                } as f64;
                assert!(close(portable, reference), "n={n}");
            }
        }
    }

    #[test]
    fn half_encoding_scales_and_records_its_error() {
        let x = [1e-30f32, -3e-30, 2.5e-31];
        let h = HalfVector::encode(&x);
        let mut y = Vec::new();
        HalfVector::decode(&h.codes, h.scale, &mut y);
        assert!(h.scale <= 3e-30 && 3e-30 < 2.0 * h.scale);
        let e: f64 = x.iter().zip(&y).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum::<f64>().sqrt();
        assert!(e <= h.err_l2 as f64 && h.err_l2 as f64 <= e * 1.001 + 1e-45);
        assert!((e / 3e-30) < 1e-3, "relative error of a half is about 2^-11");
        let big = HalfVector::encode(&[3e38, -1.0, 0.0]);
        assert!(big.scale.is_finite() && big.err_l2.is_finite());
        HalfVector::decode(&big.codes, big.scale, &mut y);
        assert!((y[0] - 3e38).abs() <= 3e38 / 1024.0 && y[2] == 0.0);
        assert_eq!(HalfVector::encode(&[0.0, 0.0]).codes, vec![0, 0]);
    }

    /// The scan's promise to the executor: the bound never exceeds the exact
    /// SQL distance, computed as the SQL operators compute it, and it is
    /// close (within a few rounding errors).
    #[test]
    fn lower_bound_never_exceeds_the_exact_distance() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut checked = 0;
        for &(n, magnitude) in
            &[(3usize, 1.0f32), (384, 0.1), (384, 1000.0), (2000, 1.0), (17, 1e-20), (5, 1e30), (4, 1e-38)]
        {
            for round in 0..200 {
                let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-magnitude..magnitude)).collect();
                // Queries far away, near, and equal to the element.
                let q: Vec<f32> = match round % 3 {
                    0 => (0..n).map(|_| rng.gen_range(-magnitude..magnitude)).collect(),
                    1 => x.iter().map(|&v| v + rng.gen_range(-1e-3..1e-3) * magnitude).collect(),
                    _ => x.clone(),
                };
                for metric in [Metric::L2, Metric::InnerProduct, Metric::Cosine, Metric::L1] {
                    let (mut xs, mut qs) = (x.clone(), q.clone());
                    if metric.normalizes() && !(normalize_in_place(&mut xs) && normalize_in_place(&mut qs)) {
                        continue;
                    }
                    // Half precision, then 8-bit codes (coarser: looser bounds).
                    for int8 in [false, true] {
                        let (approx, err_l2, err_l1) = if int8 {
                            let h = Int8Vector::encode(&xs);
                            (metric.distance_int8(&qs, &h.codes, h.scale), h.err_l2, h.err_l1)
                        } else {
                            let h = HalfVector::encode(&xs);
                            (metric.distance_half(&qs, &h.codes, h.scale), h.err_l2, h.err_l1)
                        };
                        let query = QueryNorms { searched: norm(&qs), original: norm(&q) };
                        let bound = lower_bound(metric, approx, query, err_l2, err_l1, norm(&x) as f32);
                        let exact = match metric {
                            Metric::L2 => l2_distance(&q, &x),
                            Metric::InnerProduct => negative_inner_product(&q, &x),
                            Metric::Cosine => cosine_distance(&q, &x),
                            Metric::L1 => l1_distance(&q, &x) as f64,
                        };
                        // PostgreSQL orders NaN after every number.
                        assert!(
                            bound <= exact || exact.is_nan(),
                            "{metric:?} n={n} round={round}: bound {bound} > exact {exact}"
                        );
                        let scale = match metric {
                            Metric::L2 => exact.abs() + norm(&x),
                            Metric::L1 => exact.abs() + x.iter().map(|v| v.abs() as f64).sum::<f64>(),
                            Metric::InnerProduct => norm(&q) * norm(&x),
                            Metric::Cosine => 1.0,
                        };
                        // Sums past f32's range give up on the bound (−∞ is valid).
                        let overflows = bound == f64::NEG_INFINITY && !(1e-17..=1e18).contains(&magnitude);
                        let tolerance = if int8 { 5e-2 } else { 2e-3 };
                        assert!(
                            overflows || exact - bound <= tolerance * scale + 1e-20,
                            "{metric:?} n={n} int8={int8}: bound {bound} too loose for {exact}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 9000);
        let unit = QueryNorms { searched: 1.0, original: 1.0 };
        assert_eq!(lower_bound(Metric::L2, f32::INFINITY, unit, f32::INFINITY, 0.0, 1.0), f64::NEG_INFINITY);
    }

    /// The SQL operators answer as pgvector's `f32` arithmetic does at the
    /// edges (`Infinity`, 1, `NaN`), and the index's bounds stay below them.
    #[test]
    fn sql_distances_match_pgvector_at_the_edges() {
        let big = [1e30f32, -1e30, 1.0];
        let q = [0.1f32, 0.2, 0.3];
        assert_eq!(l2_distance(&big, &q), f64::INFINITY, "the f32 sum of squares overflows");
        assert_eq!(negative_inner_product(&big, &[1e30, -1e30, 0.0]), f64::NEG_INFINITY);
        // ‖big‖² overflows f32: pgvector's similarity is a·b / ∞ = 0.
        assert_eq!(cosine_distance(&q, &big), 1.0);
        assert!(cosine_distance(&big, &big).is_nan(), "∞ / ∞");
        assert!(cosine_distance(&[0.0, 0.0], &[1.0, 1.0]).is_nan(), "zero vector");
        assert_eq!(l2_distance(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        // The bounds for such elements are −∞.
        let h = HalfVector::encode(&big);
        let query = QueryNorms { searched: norm(&big), original: norm(&big) };
        let ip = lower_bound(Metric::InnerProduct, f32::MIN, query, h.err_l2, h.err_l1, h.norm);
        assert_eq!(ip, f64::NEG_INFINITY, "‖q‖ ‖x‖ = 2e60: the SQL inner product may overflow");
        let small = QueryNorms { searched: norm(&q), original: norm(&q) };
        let ip = lower_bound(Metric::InnerProduct, -1e29, small, h.err_l2, h.err_l1, h.norm);
        assert!(ip.is_finite() && ip <= negative_inner_product(&q, &big), "‖q‖ ‖x‖ = 5e29 cannot overflow");
        let unit = QueryNorms { searched: 1.0, original: norm(&q) };
        assert_eq!(lower_bound(Metric::Cosine, -0.1, unit, 0.0, 0.0, norm(&big) as f32), f64::NEG_INFINITY);
        assert!(lower_bound(Metric::Cosine, -0.1, unit, 0.0, 0.0, 1.0) > 0.89);
    }

    #[test]
    fn metric_codes_round_trip() {
        for m in [Metric::L2, Metric::InnerProduct, Metric::Cosine, Metric::L1] {
            assert_eq!(Metric::from_code(m as u8), Some(m));
        }
        assert_eq!(Metric::from_code(0), None);
    }
}

#[cfg(test)]
mod sparse_bit_tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A random sparse vector of `dim` dimensions with about `density` of
    /// them set, as (indices, values), and its dense form.
    fn random_sparse(rng: &mut rand::rngs::StdRng, dim: usize, density: f64) -> (Vec<i32>, Vec<f32>, Vec<f32>) {
        let mut dense = vec![0.0f32; dim];
        let (mut idx, mut val) = (Vec::new(), Vec::new());
        for (k, d) in dense.iter_mut().enumerate() {
            if rng.gen_bool(density) {
                let v = rng.gen_range(-4.0f32..4.0);
                if v != 0.0 {
                    *d = v;
                    idx.push(k as i32);
                    val.push(v);
                }
            }
        }
        (idx, val, dense)
    }

    /// Σ over the dense forms in index order, in f32 (the order the sparse
    /// kernels promise), skipping positions where both are zero.
    fn dense_in_order(a: &[f32], b: &[f32], term: impl Fn(f32, f32) -> f32) -> f32 {
        let mut s = 0.0f32;
        for (&x, &y) in a.iter().zip(b) {
            if x != 0.0 || y != 0.0 {
                s += term(x, y);
            }
        }
        s
    }

    #[test]
    fn sparse_kernels_equal_the_dense_sums_in_index_order() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        for &(dim, density) in &[(1usize, 1.0), (5, 0.5), (100, 0.05), (1000, 0.02), (3000, 0.3), (64, 0.0)] {
            for _ in 0..20 {
                let (ai, av, ad) = random_sparse(&mut rng, dim, density);
                let (bi, bv, bd) = random_sparse(&mut rng, dim, density);
                let ip = dense_in_order(&ad, &bd, |x, y| x * y);
                assert_eq!(sparse_inner_product(&ai, &av, &bi, &bv).to_bits(), ip.to_bits(), "dim {dim}");
                let l2 = dense_in_order(&ad, &bd, |x, y| (x - y) * (x - y));
                assert_eq!(sparse_l2_squared_distance(&ai, &av, &bi, &bv).to_bits(), l2.to_bits());
                let l1 = dense_in_order(&ad, &bd, |x, y| (x - y).abs());
                assert_eq!(sparse_l1_distance(&ai, &av, &bi, &bv).to_bits(), l1.to_bits());
                // Symmetric, and agree with the dense kernels up to summation order.
                assert_eq!(
                    sparse_l2_squared_distance(&bi, &bv, &ai, &av),
                    sparse_l2_squared_distance(&ai, &av, &bi, &bv)
                );
                let dense_l2 = l2_squared_distance(&ad, &bd) as f64;
                assert!((dense_l2 - l2 as f64).abs() <= 1e-4 * (1.0 + dense_l2));
            }
        }
    }

    #[test]
    fn sparse_kernels_on_hand_computed_cases() {
        // a = (1, 0, 3, 0, 5), b = (0, 4, 6, 8, 0)
        let (ai, av) = ([0, 2, 4], [1.0f32, 3.0, 5.0]);
        let (bi, bv) = ([1, 2, 3], [4.0f32, 6.0, 8.0]);
        assert_eq!(sparse_inner_product(&ai, &av, &bi, &bv), 18.0);
        assert_eq!(sparse_l2_squared_distance(&ai, &av, &bi, &bv), 1.0 + 16.0 + 9.0 + 64.0 + 25.0);
        assert_eq!(sparse_l1_distance(&ai, &av, &bi, &bv), 1.0 + 4.0 + 3.0 + 8.0 + 5.0);
        // Empty vectors.
        assert_eq!(sparse_inner_product(&[], &[], &bi, &bv), 0.0);
        assert_eq!(sparse_l2_squared_distance(&[], &[], &[], &[]), 0.0);
        assert_eq!(sparse_l1_distance(&ai, &av, &[], &[]), 9.0);
        // Disjoint supports: no common index.
        assert_eq!(sparse_inner_product(&[0, 2], &[1.0, 3.0], &[1, 3], &[2.0, 4.0]), 0.0);
        // f32 overflow is kept, as in pgvector.
        assert_eq!(sparse_inner_product(&[0], &[3e38], &[0], &[3e38]), f32::INFINITY);
        assert_eq!(sparse_l1_distance(&[0], &[3e38], &[0], &[-3e38]), f32::INFINITY);
        // Indices at the extremes of the i32 range.
        assert_eq!(sparse_inner_product(&[0, i32::MAX], &[2.0, 3.0], &[i32::MAX], &[5.0]), 15.0);
    }

    /// Reference: bit by bit.
    fn bits(a: &[u8]) -> Vec<bool> {
        a.iter().flat_map(|&byte| (0..8).map(move |k| byte & (0x80 >> k) != 0)).collect()
    }

    #[test]
    fn bit_kernels_match_a_bitwise_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for n in [0usize, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 200, 8000] {
            for density in [0.0, 0.1, 0.5, 1.0] {
                let a: Vec<u8> =
                    (0..n).map(|_| (0..8).fold(0u8, |b, k| b | ((rng.gen_bool(density) as u8) << k))).collect();
                let b: Vec<u8> =
                    (0..n).map(|_| (0..8).fold(0u8, |b, k| b | ((rng.gen_bool(density) as u8) << k))).collect();
                let (xa, xb) = (bits(&a), bits(&b));
                let differ = xa.iter().zip(&xb).filter(|(x, y)| x != y).count() as u64;
                assert_eq!(hamming_distance(&a, &b), differ, "n={n}");
                let both = xa.iter().zip(&xb).filter(|(&x, &y)| x && y).count();
                let either = xa.iter().zip(&xb).filter(|(&x, &y)| x || y).count();
                let expected = if both == 0 { 1.0 } else { 1.0 - both as f64 / either as f64 };
                assert_eq!(jaccard_distance(&a, &b), expected, "n={n}");
                assert_eq!(hamming_distance(&a, &a), 0);
            }
        }
    }

    #[test]
    fn bit_kernels_on_hand_computed_cases() {
        assert_eq!(hamming_distance(&[0b1110_0000], &[0b1000_0000]), 2);
        assert_eq!(hamming_distance(&[], &[]), 0);
        assert_eq!(jaccard_distance(&[0b1111_0000], &[0b1100_0000]), 0.5);
        assert_eq!(jaccard_distance(&[0b1111_0000], &[0b1000_0000]), 0.75);
        assert_eq!(jaccard_distance(&[0], &[0]), 1.0, "two all-zero strings");
        assert_eq!(jaccard_distance(&[], &[]), 1.0);
        assert_eq!(jaccard_distance(&[0xFF; 40], &[0xFF; 40]), 0.0);
        // 20 alternating bits against their complement: all 20 differ.
        let a = [0b1010_1010, 0b1010_1010, 0b1010_0000];
        let b = [0b0101_0101, 0b0101_0101, 0b0101_0000];
        assert_eq!(hamming_distance(&a, &b), 20);
        assert_eq!(jaccard_distance(&a, &b), 1.0);
    }
}
