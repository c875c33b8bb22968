//! The pure graph code (`src/hnsw/graph/`, no PostgreSQL) on the real
//! dataset: recall@10 against brute force for each metric, every element
//! reachable, serial and threaded builds. Compiled from the sources
//! directly, so it needs no server.

#[path = "../src/distance.rs"]
#[allow(dead_code)]
mod distance;
#[path = "../src/hnsw/graph/mod.rs"]
#[allow(dead_code)]
mod hnsw_graph;
#[allow(unused_imports)]
mod hnsw {
    pub(crate) use super::hnsw_graph as graph;
}

use distance::Metric;
use hnsw_graph::{random_level, MemoryGraph, ParallelInsert, Params, Scratch};
use rand::{Rng, SeedableRng};
use std::path::Path;

#[path = "common/vecs.rs"]
#[allow(dead_code)]
mod vecs;
use vecs::read_fvecs;

fn dataset() -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/debian-minilm-384");
    (read_fvecs(&dir.join("base.fvecs"), 5_000), read_fvecs(&dir.join("queries.fvecs"), 50))
}

/// Mean recall@10 at ef_search 40 against brute force.
fn recall(g: &mut MemoryGraph, base: &[Vec<f32>], queries: &[Vec<f32>], metric: Metric) -> f64 {
    let mut hits = 0;
    for q in queries {
        let mut exact: Vec<(f32, usize)> = base.iter().enumerate().map(|(i, b)| (metric.distance(q, b), i)).collect();
        exact.sort_by(|a, b| a.0.total_cmp(&b.0));
        let truth: Vec<u64> = exact.iter().take(10).map(|e| e.1 as u64).collect();
        hits += g.search(q, 40).iter().take(10).filter(|c| truth.contains(&g.heap_tids(c.node)[0])).count();
    }
    hits as f64 / (10 * queries.len()) as f64
}

#[test]
fn real_data_recall_and_reachability_for_each_metric() {
    let (base, queries) = dataset();
    let params = Params { m: 16, ef_construction: 64 };
    for metric in [Metric::Cosine, Metric::L2, Metric::InnerProduct, Metric::L1] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut g = MemoryGraph::new(metric, params, 16);
        for (i, v) in base.iter().enumerate() {
            g.insert(v, i as u64, random_level(rng.gen::<f64>(), params.level_multiplier(), 16));
        }
        assert_eq!(g.reachable(), g.len(), "{metric:?}: every element reachable");
        let r = recall(&mut g, &base, &queries, metric);
        eprintln!("{metric:?}: recall@10 at ef 40 = {r:.3}");
        assert!(r >= 0.95, "{metric:?}: recall@10 {r}");
    }
}

/// Three threads build as good a graph as one, with every element reachable
/// after the repair pass a build ends with.
#[test]
fn real_data_threaded_build() {
    let (base, queries) = dataset();
    let params = Params { m: 16, ef_construction: 64 };
    for metric in [Metric::Cosine, Metric::InnerProduct] {
        let insert = ParallelInsert::new(MemoryGraph::with_vector_len(metric, params, 16, Some(base[0].len())));
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| insert.work());
            }
            let mut sc = Scratch::default();
            for (i, v) in base.iter().enumerate() {
                insert.load(v, i as u64, random_level(rng.gen::<f64>(), params.level_multiplier(), 16)).unwrap();
            }
            insert.close();
            while insert.link_one(&mut sc).unwrap() {}
        });
        assert_eq!(insert.failure(), None);
        let mut g = insert.into_graph().unwrap();
        assert_eq!(g.len(), base.len());
        g.repair_reachability(&mut Scratch::default()).unwrap();
        assert_eq!(g.reachable(), g.len(), "{metric:?}: every element reachable");
        let r = recall(&mut g, &base, &queries, metric);
        eprintln!("{metric:?}, 3 threads: recall@10 at ef 40 = {r:.3}");
        assert!(r >= 0.95, "{metric:?}, 3 threads: recall@10 {r}");
    }
}
