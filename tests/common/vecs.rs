//! Readers for the dataset's TEXMEX files, shared by `tests/` and `pgrx-tests/` (included by path, so the
//! pure tests need no dependency on the cluster-test crate).

use std::path::Path;

/// Reads a TEXMEX `.fvecs` file (each record: i32 dim, then dim f32), at
/// most `limit` records. Panics with the path when the file cannot be read.
pub fn read_fvecs(path: &Path, limit: usize) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= bytes.len() && out.len() < limit {
        let d = i32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 4;
        out.push(bytes[at..at + 4 * d].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect());
        at += 4 * d;
    }
    out
}

/// Reads a TEXMEX `.ivecs` file (same layout, i32 values), at most `limit` records.
pub fn read_ivecs(path: &Path, limit: usize) -> Vec<Vec<u32>> {
    read_fvecs(path, limit).into_iter().map(|r| r.into_iter().map(f32::to_bits).collect()).collect()
}
