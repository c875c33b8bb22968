//! The benchmark's measurement of one `ef_search` setting: every query once
//! through one prepared `SELECT id FROM <table> ORDER BY embedding <op> $1
//! LIMIT 10`, timed from the client, and recall@10 against a given exact
//! ground truth.
//!
//! Kept free of the benchmark's other dependencies so that the cluster tests
//! (`pgrx-tests/tests/recall_fn.rs`) compile this same file and compare
//! `hnsw_recall` with it.

use pgvector::Vector;
use postgres::Client;
use std::time::Instant;

/// Figures of one sequential query run.
#[derive(Clone, Debug)]
pub struct QueryRun {
    /// `hnsw.ef_search`.
    pub ef_search: i32,
    /// Queries per second, one client.
    pub qps: f64,
    /// Median latency, ms (client side: round trip included).
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Mean recall@10 against the ground truth.
    pub recall_at_10: f64,
}

/// Fraction of the first 10 ids of `truth` found among `found` (at most 10).
pub fn hits_at_10(found: &[i32], truth: &[u32]) -> usize {
    let truth: Vec<i32> = truth.iter().take(10).map(|&x| x as i32).collect();
    found.iter().take(10).filter(|f| truth.contains(f)).count()
}

/// Runs every query through one prepared statement at `ef_search` and
/// measures QPS, latency and recall@10 against `ground_truth` (ids of the
/// table's `id` column, nearest first). `progress` is called with the number
/// of queries done.
pub fn query_run(
    client: &mut Client,
    table: &str,
    op: &str,
    queries: &[Vec<f32>],
    ground_truth: &[Vec<u32>],
    ef_search: i32,
    progress: &mut dyn FnMut(usize),
) -> QueryRun {
    client.batch_execute(&format!("SET hnsw.ef_search = {ef_search}")).unwrap();
    let stmt = client.prepare(&format!("SELECT id FROM {table} ORDER BY embedding {op} $1 LIMIT 10")).unwrap();
    let params: Vec<Vector> = queries.iter().map(|q| Vector::from(q.clone())).collect();
    for p in params.iter().take(20) {
        client.query(&stmt, &[p]).unwrap();
    }
    let mut latencies = Vec::with_capacity(queries.len());
    let mut hits = 0usize;
    let start = Instant::now();
    for (i, (p, truth)) in params.iter().zip(ground_truth).enumerate() {
        let t = Instant::now();
        let rows = client.query(&stmt, &[p]).unwrap();
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        let found: Vec<i32> = rows.iter().map(|r| r.get::<_, i32>(0)).collect();
        hits += hits_at_10(&found, truth);
        if i % 50 == 0 {
            progress(i);
        }
    }
    progress(queries.len());
    let total = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    QueryRun {
        ef_search,
        qps: queries.len() as f64 / total,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        recall_at_10: hits as f64 / (10 * queries.len()) as f64,
    }
}
