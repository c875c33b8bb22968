//! Query latency while VACUUM runs. Figures, not a test: run it on an idle
//! machine and say how idle it was.
//!
//! `vacuum_latency [--rows 60000] [--clients 4] [--ef 40] [--idle-secs 15] [--dataset DIR] [--out FILE]`
//!
//! Starts its own cluster (`log_lock_waits = on`, `deadlock_timeout =
//! 100ms`, so every lock wait longer than 100 ms is logged), loads the first
//! `--rows` vectors of the real dataset, builds the index (cosine, m = 16,
//! ef_construction = 64), then runs `--clients` clients that query
//! continuously (top-10, `hnsw.ef_search = --ef`, random dataset queries)
//! through three phases: idle; `DELETE` of 30% of the rows; `VACUUM`.
//! A monitor session samples `pg_locks` every 5 ms for ungranted locks on
//! the index (their `waitstart` gives each wait's length to within the
//! sampling interval). Prints, per phase, the number of queries and their
//! p50 / p99 / max latency, VACUUM's duration, the longest lock wait seen on
//! the index, and the lock waits over 100 ms that the server logged.

use pg_hnsw_bench::copy_binary;
use pg_hnsw_cluster_tests::{dataset_dir, read_fvecs, Client, Cluster, NoTls};
use pgvector::Vector;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Opts {
    rows: usize,
    clients: usize,
    ef: i32,
    idle_secs: u64,
    dataset: PathBuf,
    out: Option<PathBuf>,
}

fn parse() -> Opts {
    let mut o = Opts { rows: 60_000, clients: 4, ef: 40, idle_secs: 15, dataset: dataset_dir(), out: None };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--rows" => o.rows = v.parse().expect("--rows 60000"),
            "--clients" => o.clients = v.parse().expect("--clients 4"),
            "--ef" => o.ef = v.parse().expect("--ef 40"),
            "--idle-secs" => o.idle_secs = v.parse().expect("--idle-secs 15"),
            "--dataset" => o.dataset = PathBuf::from(v),
            "--out" => o.out = Some(PathBuf::from(v)),
            other => panic!("unknown argument {other} (see the top of vacuum_latency.rs)"),
        }
    }
    o
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let o = parse();
    let base = read_fvecs(&o.dataset.join("base.fvecs"), o.rows);
    let queries = Arc::new(read_fvecs(&o.dataset.join("queries.fvecs"), 1000));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/vacuum-latency-cluster");
    let cluster = Cluster::start_in(
        &dir,
        pg_hnsw_cluster_tests::free_port(),
        &[
            "shared_buffers = 1GB",
            "max_parallel_maintenance_workers = 0",
            "autovacuum = off",
            "log_lock_waits = on",
            "deadlock_timeout = 100ms",
        ],
    );
    let log_path = cluster.data.join("../server.log");
    let mut c = cluster.connect_with_extension();
    c.batch_execute("CREATE TABLE items (id int PRIMARY KEY, embedding vector(384))").unwrap();
    copy_binary(&mut c, "items", &base);
    let t = Instant::now();
    for sql in [
        "VACUUM ANALYZE items",
        "CREATE INDEX items_idx ON items USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)",
        "ANALYZE items",
        "CHECKPOINT",
    ] {
        c.batch_execute(sql).unwrap();
    }
    eprintln!("{} rows loaded, index built in {:.1} s", base.len(), t.elapsed().as_secs_f64());
    let log_start = std::fs::read_to_string(&log_path).map(|s| s.len()).unwrap_or(0);

    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let conn = cluster.conn_string();
    // (start offset s, latency ms) per query.
    let samples = Arc::new(Mutex::new(Vec::<(f64, f64)>::new()));
    let clients: Vec<_> = (0..o.clients)
        .map(|i| {
            let (stop, conn, samples, queries, ef) =
                (stop.clone(), conn.clone(), samples.clone(), queries.clone(), o.ef);
            std::thread::spawn(move || {
                let mut c = Client::connect(&format!("{conn} application_name=latency_client"), NoTls).unwrap();
                c.batch_execute(&format!("SET enable_seqscan = off; SET hnsw.ef_search = {ef}")).unwrap();
                let stmt = c.prepare("SELECT id FROM items ORDER BY embedding <=> $1 LIMIT 10").unwrap();
                let mut rng = rand::rngs::SmallRng::seed_from_u64(i as u64);
                let mut mine = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let q = Vector::from(queries[rng.gen_range(0..queries.len())].clone());
                    let t0 = Instant::now();
                    let rows = c.query(&stmt, &[&q]).unwrap();
                    let ms = t0.elapsed().as_secs_f64() * 1e3;
                    assert!(!rows.is_empty());
                    mine.push(((t0 - start).as_secs_f64(), ms));
                }
                samples.lock().unwrap().extend(mine);
            })
        })
        .collect();
    // Lock monitor: ungranted locks on the index, longest wait seen.
    let waits = Arc::new(Mutex::new(Vec::<(f64, String, f64)>::new()));
    let monitor = {
        let (stop, conn, waits) = (stop.clone(), conn.clone(), waits.clone());
        std::thread::spawn(move || {
            let mut c = Client::connect(&conn, NoTls).unwrap();
            let stmt = c
                .prepare(
                    "SELECT a.application_name, l.mode, \
                     extract(epoch from clock_timestamp() - l.waitstart)::float8 * 1000 \
                     FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
                     WHERE NOT l.granted AND l.relation = 'items_idx'::regclass AND l.waitstart IS NOT NULL",
                )
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                for r in c.query(&stmt, &[]).unwrap() {
                    let who: String = r.get(0);
                    let mode: String = r.get(1);
                    waits.lock().unwrap().push((start.elapsed().as_secs_f64(), format!("{who} {mode}"), r.get(2)));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let load_idle = loadavg();
    std::thread::sleep(Duration::from_secs(o.idle_secs));
    let idle_end = start.elapsed().as_secs_f64();
    let mut admin = Client::connect(&format!("{conn} application_name=latency_vacuum"), NoTls).unwrap();
    let t = Instant::now();
    admin.batch_execute("DELETE FROM items WHERE id % 10 < 3").unwrap();
    let delete_s = t.elapsed().as_secs_f64();
    let vacuum_start = start.elapsed().as_secs_f64();
    let t = Instant::now();
    admin.batch_execute("VACUUM items").unwrap();
    let vacuum_s = t.elapsed().as_secs_f64();
    let vacuum_end = start.elapsed().as_secs_f64();
    let load_vacuum = loadavg();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    monitor.join().unwrap();

    let samples = samples.lock().unwrap().clone();
    let phase = |from: f64, to: f64| {
        let mut v: Vec<f64> = samples.iter().filter(|s| s.0 >= from && s.0 < to).map(|s| s.1).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let idle = phase(1.0, idle_end);
    let deleting = phase(idle_end, vacuum_start);
    let vacuuming = phase(vacuum_start, vacuum_end);
    let row = |name: &str, v: &[f64]| {
        format!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} |\n",
            v.len(),
            percentile(v, 0.5),
            percentile(v, 0.99),
            v.last().copied().unwrap_or(f64::NAN)
        )
    };
    let waits = waits.lock().unwrap().clone();
    let longest = waits.iter().max_by(|a, b| a.2.total_cmp(&b.2));
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let logged: Vec<&str> =
        log[log_start.min(log.len())..].lines().filter(|l| l.contains("still waiting for")).collect();
    let mut md = format!(
        "{} rows, {} clients, top-10 at ef_search {}; load average idle {load_idle}, during VACUUM {load_vacuum}\n\n\
         | phase | queries | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|\n",
        base.len(),
        o.clients,
        o.ef
    );
    md += &row("idle", &idle);
    md += &row("DELETE 30%", &deleting);
    md += &row("VACUUM", &vacuuming);
    md += &format!(
        "\nDELETE {delete_s:.2} s, VACUUM {vacuum_s:.2} s; p99 during VACUUM / idle p99 = {:.2}\n",
        percentile(&vacuuming, 0.99) / percentile(&idle, 0.99)
    );
    md += &format!(
        "lock waits on the index sampled: {}; longest {}\nlock waits over 100 ms logged by the server: {}\n",
        waits.len(),
        longest.map_or("none".to_string(), |w| format!("{:.1} ms ({}) at {:.1} s", w.2, w.1, w.0)),
        logged.len()
    );
    for l in logged.iter().take(10) {
        md += &format!("    {l}\n");
    }
    println!("{md}");
    if let Some(out) = o.out {
        std::fs::write(out, md).unwrap();
    }
}
