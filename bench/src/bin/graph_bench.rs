//! The HNSW graph code alone (`src/hnsw/graph.rs`, no PostgreSQL), on the
//! real dataset: in-memory build time, and recall@10 / QPS per ef_search,
//! single thread. Compare with `bench sweep` (the same graph in buffer pages)
//! and hnswlib (the algorithm's ceiling).
//!
//! `cargo run --release --manifest-path bench/Cargo.toml --bin graph_bench`

use pg_hnsw_bench::distance::Metric;
use pg_hnsw_bench::hnsw::graph::{random_level, MemoryGraph, Params};
use pg_hnsw_cluster_tests::{dataset_dir, read_fvecs, read_ivecs};
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn main() {
    let dir = dataset_dir();
    let base = read_fvecs(&dir.join("base.fvecs"), usize::MAX);
    let queries = read_fvecs(&dir.join("queries.fvecs"), usize::MAX);
    let truth = read_ivecs(&dir.join("groundtruth.ivecs"), usize::MAX);
    let params = Params { m: 16, ef_construction: 64 };
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let mut g = MemoryGraph::new(Metric::Cosine, params, 16);
    let t = Instant::now();
    for (i, v) in base.iter().enumerate() {
        g.insert(v, i as u64, random_level(rng.gen::<f64>(), params.level_multiplier(), 16));
    }
    let build = t.elapsed().as_secs_f64();
    println!("graph.rs in memory: {} x {} cosine, m=16, ef_construction=64", base.len(), base[0].len());
    println!("build {build:.1} s (one thread), {} of {} elements reachable", g.reachable(), g.len());
    println!("| ef_search | recall@10 | QPS |\n|---|---|---|");
    for ef in [10, 20, 40, 80, 160, 320] {
        let t = Instant::now();
        let mut hits = 0;
        for (q, tr) in queries.iter().zip(&truth) {
            let found = g.search(q, ef);
            let tr: Vec<u64> = tr.iter().take(10).map(|&x| x as u64).collect();
            hits += found.iter().take(10).filter(|c| tr.contains(&g.heap_tids(c.node)[0])).count();
        }
        let qps = queries.len() as f64 / t.elapsed().as_secs_f64();
        println!("| {ef} | {:.4} | {qps:.0} |", hits as f64 / (10 * queries.len()) as f64);
    }
}
