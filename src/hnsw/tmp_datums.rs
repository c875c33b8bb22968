//! TEMPORARY stand-ins for `crate::vector::{halfvec::HalfVec, bit::VarBit,
//! sparsevec::SparseVec}` until those types land; removed at merge.
#![allow(dead_code, missing_docs)]
use pgrx::pg_sys;

pub struct HalfVec(Vec<half::f16>);
impl HalfVec {
    pub unsafe fn from_raw_datum(_d: pg_sys::Datum) -> HalfVec {
        HalfVec(Vec::new())
    }
    pub fn dim(&self) -> usize {
        self.0.len()
    }
    pub fn as_slice(&self) -> &[half::f16] {
        &self.0
    }
}
pub struct VarBit(usize, Vec<u8>);
impl VarBit {
    pub unsafe fn from_raw_datum(_d: pg_sys::Datum) -> VarBit {
        VarBit(0, Vec::new())
    }
    pub fn len_bits(&self) -> usize {
        self.0
    }
    pub fn bytes(&self) -> &[u8] {
        &self.1
    }
}
pub struct SparseVec(usize, Vec<i32>, Vec<f32>);
impl SparseVec {
    pub unsafe fn from_raw_datum(_d: pg_sys::Datum) -> SparseVec {
        SparseVec(0, Vec::new(), Vec::new())
    }
    pub fn dim(&self) -> usize {
        self.0
    }
    pub fn nnz(&self) -> usize {
        self.1.len()
    }
    pub fn indices(&self) -> &[i32] {
        &self.1
    }
    pub fn values(&self) -> &[f32] {
        &self.2
    }
}

// Temporary kernels (the real ones land in distance.rs).
pub fn sparse_inner_product(ai: &[i32], av: &[f32], bi: &[i32], bv: &[f32]) -> f32 {
    merge(ai, av, bi, bv, |x, y| x * y, |_| 0.0)
}
pub fn sparse_l2_squared_distance(ai: &[i32], av: &[f32], bi: &[i32], bv: &[f32]) -> f32 {
    merge(ai, av, bi, bv, |x, y| (x - y) * (x - y), |x| x * x)
}
pub fn sparse_l1_distance(ai: &[i32], av: &[f32], bi: &[i32], bv: &[f32]) -> f32 {
    merge(ai, av, bi, bv, |x, y| (x - y).abs(), |x| x.abs())
}
fn merge(
    ai: &[i32],
    av: &[f32],
    bi: &[i32],
    bv: &[f32],
    both: impl Fn(f32, f32) -> f32,
    one: impl Fn(f32) -> f32,
) -> f32 {
    let (mut i, mut j, mut s) = (0, 0, 0.0f32);
    while i < ai.len().min(av.len()) && j < bi.len().min(bv.len()) {
        if ai[i] == bi[j] {
            s += both(av[i], bv[j]);
            i += 1;
            j += 1;
        } else if ai[i] < bi[j] {
            s += one(av[i]);
            i += 1;
        } else {
            s += one(bv[j]);
            j += 1;
        }
    }
    while i < ai.len().min(av.len()) {
        s += one(av[i]);
        i += 1;
    }
    while j < bi.len().min(bv.len()) {
        s += one(bv[j]);
        j += 1;
    }
    s
}
pub fn hamming_distance(a: &[u8], b: &[u8]) -> u64 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones() as u64).sum()
}
pub fn jaccard_distance(a: &[u8], b: &[u8]) -> f64 {
    let inter: u64 = a.iter().zip(b).map(|(x, y)| (x & y).count_ones() as u64).sum();
    let union: u64 = a.iter().zip(b).map(|(x, y)| (x | y).count_ones() as u64).sum();
    if union == 0 {
        0.0
    } else {
        1.0 - inter as f64 / union as f64
    }
}
