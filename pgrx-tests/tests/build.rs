//! `CREATE INDEX ... USING hnsw` on a real cluster: threads, cancellation,
//! `maintenance_work_mem` and graph quality.

use pg_hnsw_cluster_tests::{
    assert_index_checks, copy_vectors, exact_knn, l2, neg_ip, recall_at, Client, Cluster, Dataset,
};
use pgvector::Vector;
use rand::{Rng, SeedableRng};
use std::sync::{Arc, Mutex};

/// A connection whose notices and DEBUG messages are collected.
fn connect_collecting(cluster: &Cluster) -> (Client, Arc<Mutex<Vec<String>>>) {
    let messages = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&messages);
    let mut config: postgres::Config = cluster.conn_string().parse().unwrap();
    config.notice_callback(move |n| sink.lock().unwrap().push(format!("{}: {}", n.severity(), n.message())));
    let mut c = config.connect(postgres::NoTls).unwrap();
    c.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_hnsw").unwrap();
    (c, messages)
}

fn take(messages: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    std::mem::take(&mut *messages.lock().unwrap())
}

/// Private anonymous memory of backend `pid` in kB (`RssAnon`).
fn rss_anon_kb(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Mean recall@k of the index over `queries` against brute force.
fn recall(
    c: &mut Client,
    table: &str,
    op: &str,
    base: &[Vec<f32>],
    queries: &[Vec<f32>],
    k: usize,
    distance: fn(&[f32], &[f32]) -> f32,
) -> f64 {
    let stmt = c.prepare(&format!("SELECT id FROM {table} ORDER BY embedding {op} $1 LIMIT {k}")).unwrap();
    let mut total = 0.0;
    for q in queries {
        let found: Vec<i64> = c.query(&stmt, &[&Vector::from(q.clone())]).unwrap().iter().map(|r| r.get(0)).collect();
        total += recall_at(k, &found, &exact_knn(base, q, k, distance));
    }
    total / queries.len() as f64
}

/// Settings for a build with `threads` threads (the leader included).
fn thread_settings(threads: usize) -> String {
    format!("SET max_parallel_maintenance_workers = {}; SET min_parallel_table_scan_size = 0;", threads - 1)
}

/// A cancel (`statement_timeout`) in any phase of a build, with one thread
/// and with two, leaves the backend healthy with its memory freed, and a
/// build in the same session afterwards gives a working index.
#[test]
fn cancelled_build_leaves_the_backend_healthy() {
    let cluster = Cluster::start("build_cancel", &["max_worker_processes = 8"]);
    let (mut c, messages) = connect_collecting(&cluster);
    let data = Dataset::load(20_000, 20);
    c.batch_execute("CREATE TABLE items (id bigint, embedding vector(384))").unwrap();
    copy_vectors(&mut c, "items", 0, &data.base);
    c.batch_execute("VACUUM ANALYZE items").unwrap();
    c.batch_execute("SET client_min_messages = debug1").unwrap();
    let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    for threads in [1, 2] {
        c.batch_execute(&thread_settings(threads)).unwrap();
        let mut cancelled = 0;
        let mut rss_after_cancel = Vec::new();
        // Timeouts that land in the heap scan, the linking and the page
        // writes, then a few repeats to see whether memory accumulates.
        for timeout_ms in [5, 50, 200, 600, 1500, 3000, 200, 600, 200, 600] {
            take(&messages);
            c.batch_execute(&format!("SET statement_timeout = {timeout_ms}")).unwrap();
            match c.batch_execute("CREATE INDEX items_idx ON items USING hnsw (embedding vector_cosine_ops)") {
                Err(e) => {
                    let db = e.as_db_error().expect("a server error");
                    assert_eq!(db.code().code(), "57014", "{threads} threads: {}", db.message());
                    cancelled += 1;
                    c.batch_execute("RESET statement_timeout; SELECT 1").unwrap();
                    if let Some(kb) = rss_anon_kb(pid) {
                        rss_after_cancel.push(kb);
                    }
                }
                Ok(()) => {
                    c.batch_execute("RESET statement_timeout; DROP INDEX items_idx").unwrap();
                }
            }
            let workers = take(&messages).iter().any(|m| m.contains("using 1 parallel workers"));
            assert_eq!(workers, threads == 2, "{threads} threads: DEBUG1 line about workers");
        }
        eprintln!(
            "{threads} threads: {cancelled} builds cancelled; RssAnon after each cancel (kB): {rss_after_cancel:?}"
        );
        assert!(cancelled >= 3, "{threads} threads: only {cancelled} builds were cancelled");
        // The graph of a cancelled build is freed: memory after the later
        // cancels stays within about one graph (20,000 × 1.7 kB = 34 MB) of
        // the peak after the first few, instead of growing by a graph each.
        if rss_after_cancel.len() >= 4 {
            let early = *rss_after_cancel[..2].iter().max().unwrap();
            let late = *rss_after_cancel.last().unwrap();
            assert!(late < early + 40_000, "{threads} threads: memory grows after cancels: {rss_after_cancel:?}");
        }
        // The same session builds a working index.
        c.batch_execute("CREATE INDEX items_idx ON items USING hnsw (embedding vector_cosine_ops)").unwrap();
        let cos = |a: &[f32], b: &[f32]| pg_hnsw_cluster_tests::cosine(a, b);
        let r = recall(&mut c, "items", "<=>", &data.base, &data.queries, 10, cos);
        eprintln!("{threads} threads: recall@10 after the cancelled builds = {r:.3}");
        assert!(r >= 0.95, "{threads} threads: recall@10 {r}");
        assert_index_checks(&mut c, "items_idx");
        c.batch_execute("DROP INDEX items_idx").unwrap();
    }
}

/// Seeded uniform vectors in the unit cube.
fn cube(n: usize, dims: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| (0..dims).map(|_| rng.gen::<f32>()).collect()).collect()
}

/// A graph that outgrows `maintenance_work_mem` is written out and the
/// build goes on with on-disk inserts, with pgvector's NOTICE, and the
/// index is as good (1 and 2 threads).
#[test]
fn build_beyond_maintenance_work_mem_continues_on_disk() {
    let cluster = Cluster::start("build_spill", &[]);
    let (mut c, messages) = connect_collecting(&cluster);
    let base = cube(10_000, 3, 1);
    let queries = cube(50, 3, 2);
    c.batch_execute("CREATE TABLE pts (id bigint, embedding vector(3))").unwrap();
    copy_vectors(&mut c, "pts", 0, &base);
    c.batch_execute("VACUUM ANALYZE pts").unwrap();
    for threads in [1, 2] {
        take(&messages);
        c.batch_execute(&format!(
            "{} SET maintenance_work_mem = '1MB'; SET client_min_messages = debug1;
             CREATE INDEX pts_idx ON pts USING hnsw (embedding vector_l2_ops);
             RESET maintenance_work_mem; RESET client_min_messages;",
            thread_settings(threads)
        ))
        .unwrap();
        let got = take(&messages);
        let notice = got.iter().find(|m| m.contains("hnsw graph no longer fits into maintenance_work_mem after"));
        eprintln!("{threads} threads: {notice:?}");
        let notice = notice.unwrap_or_else(|| panic!("{threads} threads: no spill NOTICE in {got:?}"));
        assert!(notice.starts_with("NOTICE"), "{notice}");
        let after: u64 = notice.rsplit("after ").next().unwrap().trim_end_matches(" tuples").parse().unwrap();
        assert!(after > 0 && after < 10_000, "spilled after {after} of 10,000 rows");
        let r = recall(&mut c, "pts", "<->", &base, &queries, 10, l2);
        eprintln!("{threads} threads: recall@10 after spilling = {r:.4}");
        assert!(r >= 0.99, "{threads} threads: recall@10 {r}");
        assert_index_checks(&mut c, "pts_idx");
        let rows: i64 = c
            .query_one(
                "SELECT count(*) FROM (SELECT id FROM pts ORDER BY embedding <-> '[0.5,0.5,0.5]' LIMIT 40) s",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(rows, 40);
        c.batch_execute("DROP INDEX pts_idx").unwrap();
    }
}

/// Inner product on skewed data (`random() * random()` per dimension, so a
/// few long vectors dominate every query): recall@20 ≥ 0.97 over 20 random
/// queries, serial and parallel, as pgvector reaches.
#[test]
fn inner_product_recall_on_skewed_data() {
    let cluster = Cluster::start("build_ip", &[]);
    let mut c = cluster.connect_with_extension();
    c.batch_execute(
        "SELECT setseed(0.25);
         CREATE TABLE skew (id bigint, embedding vector(3));
         INSERT INTO skew SELECT i, ARRAY[random() * random(), random() * random(), random() * random()]
           FROM generate_series(1, 10000) i;",
    )
    .unwrap();
    c.batch_execute("VACUUM ANALYZE skew").unwrap();
    let rows = c.query("SELECT id, embedding FROM skew", &[]).unwrap();
    let mut base = vec![Vec::new(); rows.len() + 1];
    for r in rows {
        let id: i64 = r.get(0);
        base[id as usize] = r.get::<_, Vector>(1).to_vec();
    }
    base[0] = vec![f32::NAN; 3]; // ids start at 1; never the nearest
    let queries = cube(20, 3, 3);
    for threads in [1, 2] {
        c.batch_execute(&format!(
            "{} CREATE INDEX skew_idx ON skew USING hnsw (embedding vector_ip_ops);",
            thread_settings(threads)
        ))
        .unwrap();
        let ip = |a: &[f32], b: &[f32]| if b[0].is_nan() { f32::INFINITY } else { neg_ip(a, b) };
        let r = recall(&mut c, "skew", "<#>", &base, &queries, 20, ip);
        eprintln!("{threads} threads: inner product recall@20 = {r:.4}");
        assert!(r >= 0.97, "{threads} threads: inner product recall@20 {r}");
        c.batch_execute("DROP INDEX skew_idx").unwrap();
    }
}
