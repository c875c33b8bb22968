//! Shared pieces of the demo and the benchmark: loading the dataset into a
//! table with a progress bar, building the index while showing
//! `pg_stat_progress_create_index`, and measuring recall@10 / QPS / latency.

// The extension's pure modules, compiled here without pgrx, so the graph
// algorithm can be benchmarked on its own (`bench/src/bin/graph_bench.rs`).
#[path = "../../src/distance.rs"]
pub mod distance;
#[path = "../../src/hnsw/graph.rs"]
#[doc(hidden)]
pub mod hnsw_graph;
/// The extension's `hnsw` module, reduced to its pure graph code.
pub mod hnsw {
    pub use super::hnsw_graph as graph;
}

use indicatif::{ProgressBar, ProgressStyle};
use pg_hnsw_cluster_tests::{vector_literal, Client, NoTls};
use pgvector::Vector;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Reads `base_labels.tsv`: `(package, short description)` per base row.
pub fn read_labels(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", path.display()), "check the dataset folder"));
    text.lines()
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            let _row = f.next();
            (f.next().unwrap_or("").to_string(), f.next().unwrap_or("").to_string())
        })
        .collect()
}

/// Prints one clear error line with its fix and exits with status 1.
pub fn fail(what: &str, fix: &str) -> ! {
    eprintln!("error: {what} — fix: {fix}");
    std::process::exit(1)
}

fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>14} [{bar:40}] {pos}/{len} ({elapsed}, eta {eta})")
            .unwrap()
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

/// Creates `packages (id, name, description, embedding vector(384))` and
/// loads every row with COPY (text form), showing a progress bar. Returns
/// the load time.
pub fn load_packages(client: &mut Client, base: &[Vec<f32>], labels: &[(String, String)]) -> Duration {
    client
        .batch_execute(
            "DROP TABLE IF EXISTS packages;
             CREATE TABLE packages (id int PRIMARY KEY, name text NOT NULL, description text, embedding vector(384));",
        )
        .unwrap();
    let pb = bar(base.len() as u64, "loading rows");
    let start = Instant::now();
    let mut w = client.copy_in("COPY packages (id, name, description, embedding) FROM STDIN").unwrap();
    for (i, v) in base.iter().enumerate() {
        let (name, desc) = labels.get(i).cloned().unwrap_or_default();
        let esc = |s: &str| s.replace('\\', "\\\\").replace('\t', " ").replace('\n', " ");
        writeln!(w, "{i}\t{}\t{}\t{}", esc(&name), esc(&desc), vector_literal(v)).unwrap();
        if i % 1000 == 0 {
            pb.set_position(i as u64);
        }
    }
    w.finish().unwrap();
    pb.finish_with_message("loaded");
    client.batch_execute("VACUUM ANALYZE packages").unwrap();
    start.elapsed()
}

/// Runs `create_sql` on `client` while a second connection polls
/// `pg_stat_progress_create_index` to drive a progress bar. Returns the
/// build time.
pub fn build_index_with_progress(client: &mut Client, conn_string: &str, create_sql: &str, rows: u64) -> Duration {
    let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let conn = conn_string.to_string();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done2 = done.clone();
    let watcher = std::thread::spawn(move || {
        let mut monitor = pg_hnsw_cluster_tests::Client::connect(&conn, NoTls).unwrap();
        let pb = bar(rows, "building index");
        while !done2.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(Some(r)) = monitor
                .query_opt("SELECT phase, tuples_done FROM pg_stat_progress_create_index WHERE pid = $1", &[&pid])
            {
                let phase: String = r.get(0);
                let tuples: i64 = r.get(1);
                pb.set_position(tuples as u64);
                pb.set_message(phase.chars().take(14).collect::<String>());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        pb.set_position(rows);
        pb.finish_with_message("index built");
    });
    let start = Instant::now();
    client
        .batch_execute(create_sql)
        .unwrap_or_else(|e| fail(&format!("CREATE INDEX failed: {e}"), "see the server log"));
    let took = start.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    watcher.join().unwrap();
    took
}

/// Figures of one sequential query run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct QueryRun {
    /// `hnsw.ef_search`.
    pub ef_search: i32,
    /// Queries per second, one client.
    pub qps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Mean recall@10 against the dataset's exact ground truth.
    pub recall_at_10: f64,
}

/// Runs every query through one prepared statement at `ef_search` and
/// measures QPS, latency and recall@10 against `ground_truth` (base row ids).
pub fn query_run(
    client: &mut Client,
    table: &str,
    op: &str,
    queries: &[Vec<f32>],
    ground_truth: &[Vec<u32>],
    ef_search: i32,
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
    for (p, truth) in params.iter().zip(ground_truth) {
        let t = Instant::now();
        let rows = client.query(&stmt, &[p]).unwrap();
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        let truth: Vec<i32> = truth.iter().take(10).map(|&x| x as i32).collect();
        hits += rows.iter().filter(|r| truth.contains(&r.get::<_, i32>(0))).count();
    }
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

/// `pg_relation_size` of a relation, in bytes.
pub fn relation_size(client: &mut Client, name: &str) -> i64 {
    client.query_one("SELECT pg_relation_size($1::text::regclass)", &[&name]).unwrap().get(0)
}
