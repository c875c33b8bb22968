//! The pure graph code (`src/hnsw/graph.rs`, no PostgreSQL) on the real
//! dataset: recall@10 against brute force for each metric, and every element
//! reachable. Compiled from the sources directly, so it needs no server.

#[path = "../src/distance.rs"]
#[allow(dead_code)]
mod distance;
#[path = "../src/hnsw/graph.rs"]
#[allow(dead_code)]
mod hnsw_graph;
#[allow(unused_imports)]
mod hnsw {
    pub(crate) use super::hnsw_graph as graph;
}

use distance::Metric;
use hnsw_graph::{random_level, MemoryGraph, Params};
use rand::{Rng, SeedableRng};
use std::path::Path;

#[path = "common/vecs.rs"]
#[allow(dead_code)]
mod vecs;
use vecs::read_fvecs;

#[test]
fn real_data_recall_and_reachability_for_each_metric() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/debian-minilm-384");
    let base = read_fvecs(&dir.join("base.fvecs"), 5_000);
    let queries = read_fvecs(&dir.join("queries.fvecs"), 50);
    let params = Params { m: 16, ef_construction: 64 };
    for metric in [Metric::Cosine, Metric::L2, Metric::InnerProduct, Metric::L1] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut g = MemoryGraph::new(metric, params, 16);
        for (i, v) in base.iter().enumerate() {
            g.insert(v, i as u64, random_level(rng.gen::<f64>(), params.level_multiplier(), 16));
        }
        assert_eq!(g.reachable(), g.len(), "{metric:?}: every element reachable");
        let mut hits = 0;
        for q in &queries {
            let mut exact: Vec<(f32, usize)> =
                base.iter().enumerate().map(|(i, b)| (metric.distance(q, b), i)).collect();
            exact.sort_by(|a, b| a.0.total_cmp(&b.0));
            let truth: Vec<u64> = exact.iter().take(10).map(|e| e.1 as u64).collect();
            hits += g.search(q, 40).iter().take(10).filter(|c| truth.contains(&g.heap_tids(c.node)[0])).count();
        }
        let recall = hits as f64 / (10 * queries.len()) as f64;
        eprintln!("{metric:?}: recall@10 at ef 40 = {recall:.3}");
        assert!(recall >= 0.95, "{metric:?}: recall@10 {recall}");
    }
}
