//! Shared pieces of the demo and the benchmark: loading the dataset into a
//! table with a progress bar, building the index while showing
//! `pg_stat_progress_create_index`, measuring recall@10 / QPS / latency
//! ([`measure`]), the recall/QPS plot ([`plot`]) and embedding free-text
//! questions ([`embed`]).

// The extension's pure modules, compiled here without pgrx, so the graph
// algorithm can be benchmarked on its own (`bench/src/bin/graph_bench.rs`).
#[path = "../../src/distance.rs"]
pub mod distance;
#[path = "../../src/hnsw/graph/mod.rs"]
#[doc(hidden)]
pub mod hnsw_graph;
/// The extension's `hnsw` module, reduced to its pure graph code.
pub mod hnsw {
    pub use super::hnsw_graph as graph;
}

use indicatif::{ProgressBar, ProgressStyle};
use pg_hnsw_cluster_tests::{vector_literal, Client, NoTls};
use rand::{Rng, SeedableRng};
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

/// A progress bar on stderr: message, bar, done/total, elapsed time, ETA.
pub fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>20} [{bar:40}] {pos}/{len} ({elapsed}, eta {eta})")
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
                // "building index: loading tuples" -> "loading tuples"
                let sub = phase.rsplit(": ").next().unwrap_or(&phase);
                pb.set_message(sub.chars().take(20).collect::<String>());
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

pub mod embed;
pub mod measure;
pub mod plot;
pub use measure::{query_run as query_run_with, QueryRun};

/// [`measure::query_run`] with a progress bar (`ef_search N`, queries done).
pub fn query_run(
    client: &mut Client,
    table: &str,
    op: &str,
    queries: &[Vec<f32>],
    ground_truth: &[Vec<u32>],
    ef_search: i32,
) -> QueryRun {
    let pb = bar(queries.len() as u64, &format!("ef_search {ef_search}"));
    let r = measure::query_run(client, table, op, queries, ground_truth, ef_search, &mut |done| {
        pb.set_position(done as u64)
    });
    pb.finish_and_clear();
    r
}

/// A [`QueryRun`] as JSON.
pub fn run_json(r: &QueryRun) -> serde_json::Value {
    serde_json::json!({
        "ef_search": r.ef_search, "qps": r.qps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
        "recall_at_10": r.recall_at_10,
    })
}

/// `pg_relation_size` of a relation, in bytes.
pub fn relation_size(client: &mut Client, name: &str) -> i64 {
    client.query_one("SELECT pg_relation_size($1::text::regclass)", &[&name]).unwrap().get(0)
}

/// COPY BINARY of rows `(id int, embedding vector)` into `table`, ids
/// `0..data.len()`, in pgvector's binary format for `vector` (int16
/// dimensions, int16 unused, big-endian float4 values), sent in ~1 MB
/// chunks.
pub fn copy_binary(client: &mut Client, table: &str, data: &[Vec<f32>]) {
    let mut w = client.copy_in(&format!("COPY {table} (id, embedding) FROM STDIN (FORMAT binary)")).unwrap();
    let mut buf = Vec::with_capacity(1 << 20);
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes());
    for (i, v) in data.iter().enumerate() {
        buf.extend_from_slice(&2i16.to_be_bytes());
        buf.extend_from_slice(&4i32.to_be_bytes());
        buf.extend_from_slice(&(i as i32).to_be_bytes());
        buf.extend_from_slice(&(4 + 4 * v.len() as i32).to_be_bytes());
        buf.extend_from_slice(&(v.len() as i16).to_be_bytes());
        buf.extend_from_slice(&0i16.to_be_bytes());
        for x in v {
            buf.extend_from_slice(&x.to_be_bytes());
        }
        if buf.len() > (1 << 20) {
            w.write_all(&buf).unwrap();
            buf.clear();
        }
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    w.write_all(&buf).unwrap();
    w.finish().unwrap();
}

/// Clustered vectors from a seed: 100 centres uniform in [-1, 1]^dims,
/// points at a centre plus a bell-shaped offset (sum of three uniforms) of
/// scale 0.25 per dimension (`bench synthetic`, `build_bench synthetic`,
/// `graph_bench --synthetic`).
/// Returns `(data, queries)`: `n` and `nq` vectors of `dims` values.
pub fn synthetic_data(n: usize, nq: usize, dims: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let centres: Vec<Vec<f32>> = (0..100).map(|_| (0..dims).map(|_| rng.gen_range(-1.0f32..1.0)).collect()).collect();
    let point = |rng: &mut rand::rngs::SmallRng| {
        let c = &centres[rng.gen_range(0..centres.len())];
        c.iter()
            .map(|x| x + (rng.gen::<f32>() + rng.gen::<f32>() + rng.gen::<f32>() - 1.5) * 0.25)
            .collect::<Vec<f32>>()
    };
    let data = (0..n).map(|_| point(&mut rng)).collect();
    let queries = (0..nq).map(|_| point(&mut rng)).collect();
    (data, queries)
}

/// Exact 10 nearest (squared L2) of each query, on two threads: one list of
/// row numbers (0-based, nearest first) per query.
pub fn ground_truth(data: &[Vec<f32>], queries: &[Vec<f32>]) -> Vec<Vec<u32>> {
    let knn = |q: &Vec<f32>| {
        let mut best: Vec<(f32, u32)> = Vec::with_capacity(11);
        for (i, v) in data.iter().enumerate() {
            let d: f32 = q.iter().zip(v).map(|(a, b)| (a - b) * (a - b)).sum();
            if best.len() < 10 || d < best[best.len() - 1].0 {
                let at = best.partition_point(|x| x.0 <= d);
                best.insert(at, (d, i as u32));
                best.truncate(10);
            }
        }
        best.into_iter().map(|x| x.1).collect::<Vec<u32>>()
    };
    std::thread::scope(|s| {
        let (a, b) = queries.split_at(queries.len() / 2);
        let h = s.spawn(move || b.iter().map(knn).collect::<Vec<_>>());
        let mut out: Vec<Vec<u32>> = a.iter().map(knn).collect();
        out.extend(h.join().unwrap());
        out
    })
}
