//! Index build figures: `CREATE INDEX ... USING hnsw` with 1 and 2 threads
//! on the real dataset (time, peak memory, index size, recall@10 at
//! ef_search 40) beside hnswlib's build, or a large synthetic build.
//!
//! ```text
//! build_bench [real] [--threads 1,2] [--dataset DIR] [--no-hnswlib] [--python PATH] [--out DIR]
//! build_bench synthetic [--n 1000000] [--dims 128] [--threads 2] [--seed 42] [--queries 100] [--out DIR]
//! ```
//!
//! Each mode starts its own cluster (`target/build-bench-cluster`,
//! shared_buffers 2 GB) with the installed extension (`cargo pgrx install
//! --release` first), builds each index from a fresh connection with
//! `maintenance_work_mem` large enough (2 GB; more for big synthetic sets)
//! and `max_parallel_maintenance_workers = threads - 1`, and reports:
//! - build time (wall clock);
//! - the backend's peak resident memory (`VmHWM` from `/proc`: the graph,
//!   plus the shared buffers the backend touched), and the graph memory the
//!   build itself counted against `maintenance_work_mem` (its DEBUG1 line);
//! - index size, recall@10 against exact ground truth, QPS (one client);
//! - the load average before and after, since the figures depend on it.
//!
//! hnswlib (PyPI) is run in process by `bench/hnswlib_build.py` with the
//! same M / ef_construction, with 1 and 2 threads. Results go to
//! `<out>/build-<mode>.{json,md}` (default `bench/results`).

use pg_hnsw_bench::{copy_binary, ground_truth, synthetic_data};
use pg_hnsw_cluster_tests::{dataset_dir, read_fvecs, read_ivecs, Client, Cluster};
use pgvector::Vector;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

struct Opts {
    mode: String,
    dataset: PathBuf,
    out: PathBuf,
    threads: Vec<usize>,
    hnswlib: bool,
    python: Option<String>,
    n: usize,
    dims: usize,
    seed: u64,
    queries: usize,
}

fn fail(what: &str) -> ! {
    eprintln!("error: {what}");
    std::process::exit(1)
}

fn parse() -> Opts {
    let mut o = Opts {
        mode: "real".into(),
        dataset: dataset_dir(),
        out: Path::new(env!("CARGO_MANIFEST_DIR")).join("results"),
        threads: vec![1, 2],
        hnswlib: true,
        python: None,
        n: 1_000_000,
        dims: 128,
        seed: 42,
        queries: 100,
    };
    let mut args = std::env::args().skip(1).peekable();
    if let Some(m) = args.peek() {
        if !m.starts_with("--") {
            o.mode = args.next().unwrap();
        }
    }
    let mut synthetic_threads = false;
    while let Some(a) = args.next() {
        let mut v = || args.next().unwrap_or_else(|| fail(&format!("{a} needs a value")));
        match a.as_str() {
            "--dataset" => o.dataset = PathBuf::from(v()),
            "--out" => o.out = PathBuf::from(v()),
            "--threads" => {
                o.threads = v().split(',').map(|x| x.trim().parse().expect("--threads 1,2")).collect();
                synthetic_threads = true;
            }
            "--no-hnswlib" => o.hnswlib = false,
            "--python" => o.python = Some(v()),
            "--n" => o.n = v().replace('_', "").parse().expect("--n 1000000"),
            "--dims" => o.dims = v().parse().expect("--dims 128"),
            "--seed" => o.seed = v().parse().expect("--seed 42"),
            "--queries" => o.queries = v().parse().expect("--queries 100"),
            other => fail(&format!("unknown argument {other}; see the top of bench/src/bin/build_bench.rs")),
        }
    }
    if o.mode == "synthetic" && !synthetic_threads {
        o.threads = vec![2];
    }
    o
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// `VmHWM` (peak resident set) of process `pid` in kB.
fn vm_hwm_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn start_cluster(extra: &[&str]) -> Cluster {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/build-bench-cluster");
    let mut conf = vec!["shared_buffers = 2GB", "max_worker_processes = 16", "max_parallel_workers = 16"];
    conf.extend_from_slice(extra);
    Cluster::start_in(&base, pg_hnsw_cluster_tests::free_port(), &conf)
}

/// A connection whose NOTICE/DEBUG messages are collected.
fn connect(cluster: &Cluster) -> (Client, Arc<Mutex<Vec<String>>>) {
    let messages = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&messages);
    let mut config: postgres::Config = cluster.conn_string().parse().unwrap();
    config.notice_callback(move |n| sink.lock().unwrap().push(n.message().to_string()));
    let mut c = config.connect(postgres::NoTls).unwrap_or_else(|e| fail(&format!("connect: {e}")));
    c.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_hnsw")
        .unwrap_or_else(|e| fail(&format!("CREATE EXTENSION pg_hnsw: {e} (run cargo pgrx install --release first)")));
    (c, messages)
}

/// Recall@10 and QPS of `ORDER BY embedding <op> q LIMIT 10` at `ef`.
fn query_sweep(
    c: &mut Client,
    table: &str,
    op: &str,
    queries: &[Vec<f32>],
    truth: &[Vec<u32>],
    ef: usize,
) -> (f64, f64) {
    c.batch_execute(&format!("SET hnsw.ef_search = {ef}")).unwrap();
    let stmt = c.prepare(&format!("SELECT id FROM {table} ORDER BY embedding {op} $1 LIMIT 10")).unwrap();
    let params: Vec<Vector> = queries.iter().map(|q| Vector::from(q.clone())).collect();
    for p in params.iter().take(20) {
        c.query(&stmt, &[p]).unwrap();
    }
    let start = Instant::now();
    let mut hits = 0;
    for (p, t) in params.iter().zip(truth) {
        let rows = c.query(&stmt, &[p]).unwrap();
        hits += rows.iter().filter(|r| t.iter().take(10).any(|&x| x as i32 == r.get::<_, i32>(0))).count();
    }
    (hits as f64 / (10 * queries.len()) as f64, queries.len() as f64 / start.elapsed().as_secs_f64())
}

/// One timed build and what it cost.
#[derive(serde::Serialize)]
struct Build {
    threads: usize,
    build_s: f64,
    vm_hwm_mb: f64,
    graph_mb: Option<f64>,
    workers_line: Option<String>,
    index_mb: f64,
    recall: Vec<(usize, f64, f64)>,
    load_before: String,
    load_after: String,
}

fn build_once(
    cluster: &Cluster,
    table: &str,
    opclass: &str,
    op: &str,
    threads: usize,
    mwm: &str,
    queries: &[Vec<f32>],
    truth: &[Vec<u32>],
    efs: &[usize],
) -> Build {
    let (mut c, messages) = connect(cluster);
    c.batch_execute(&format!("DROP INDEX IF EXISTS {table}_idx")).unwrap();
    let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    c.batch_execute(&format!(
        "SET maintenance_work_mem = '{mwm}'; SET max_parallel_maintenance_workers = {}; SET client_min_messages = debug1",
        threads - 1
    ))
    .unwrap();
    messages.lock().unwrap().clear();
    let load_before = load_average();
    println!("building {table} with {threads} thread(s) (load {load_before}) ...");
    let t = Instant::now();
    c.batch_execute(&format!("CREATE INDEX {table}_idx ON {table} USING hnsw (embedding {opclass})"))
        .unwrap_or_else(|e| fail(&format!("CREATE INDEX: {e}")));
    let build_s = t.elapsed().as_secs_f64();
    let load_after = load_average();
    let vm_hwm_mb = vm_hwm_kb(pid) as f64 / 1024.0;
    c.batch_execute("RESET client_min_messages").unwrap();
    let got = messages.lock().unwrap().clone();
    let graph_mb = got
        .iter()
        .find(|m| m.starts_with("hnsw graph:"))
        .and_then(|m| m.split(" MB").next()?.rsplit(' ').next()?.parse().ok());
    let workers_line = got.iter().find(|m| m.contains("parallel workers")).cloned();
    if got.iter().any(|m| m.contains("no longer fits")) {
        eprintln!("warning: the graph did not fit into maintenance_work_mem ({mwm})");
    }
    let index_mb: i64 =
        c.query_one("SELECT pg_relation_size($1::text::regclass)", &[&format!("{table}_idx")]).unwrap().get(0);
    let recall = efs
        .iter()
        .map(|&ef| {
            let (r, qps) = query_sweep(&mut c, table, op, queries, truth, ef);
            (ef, r, qps)
        })
        .collect();
    Build {
        threads,
        build_s,
        vm_hwm_mb,
        graph_mb,
        workers_line,
        index_mb: index_mb as f64 / 1e6,
        recall,
        load_before,
        load_after,
    }
}

fn python(o: &Opts) -> String {
    if let Some(p) = &o.python {
        return p.clone();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/venv/bin/python");
    if venv.exists() {
        return venv.display().to_string();
    }
    "python3".to_string()
}

/// hnswlib's build on the real dataset with `threads` threads (JSON from
/// `bench/hnswlib_build.py`), or `None` if hnswlib is not available.
fn hnswlib(o: &Opts, threads: usize) -> Option<serde_json::Value> {
    let py = python(o);
    let have =
        std::process::Command::new(&py).args(["-c", "import hnswlib, numpy"]).status().is_ok_and(|s| s.success());
    if !have {
        eprintln!(
            "hnswlib is not installed for {py}: python3 -m venv target/venv && target/venv/bin/pip install hnswlib numpy"
        );
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hnswlib_build.py");
    println!("hnswlib build with {threads} thread(s) (load {}) ...", load_average());
    let out = std::process::Command::new(&py)
        .arg(script)
        .arg("--dataset")
        .arg(&o.dataset)
        .args(["--threads", &threads.to_string(), "--efs", "40"])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

fn write_results(o: &Opts, name: &str, json: &serde_json::Value, md: &str) {
    std::fs::create_dir_all(&o.out).unwrap();
    std::fs::write(o.out.join(format!("{name}.json")), serde_json::to_string_pretty(json).unwrap()).unwrap();
    std::fs::write(o.out.join(format!("{name}.md")), md).unwrap();
    println!("\n{md}\nwritten to {}", o.out.join(format!("{name}.{{json,md}}")).display());
}

fn real(o: &Opts) {
    let base = read_fvecs(&o.dataset.join("base.fvecs"), usize::MAX);
    let queries = read_fvecs(&o.dataset.join("queries.fvecs"), usize::MAX);
    let truth = read_ivecs(&o.dataset.join("groundtruth.ivecs"), usize::MAX);
    let cluster = start_cluster(&[]);
    {
        let (mut c, _) = connect(&cluster);
        c.batch_execute(&format!("CREATE TABLE packages (id int, embedding vector({}))", base[0].len())).unwrap();
        copy_binary(&mut c, "packages", &base);
        c.batch_execute("VACUUM ANALYZE packages").unwrap();
    }
    let mut builds = Vec::new();
    for &threads in &o.threads {
        builds.push(build_once(
            &cluster,
            "packages",
            "vector_cosine_ops",
            "<=>",
            threads,
            "2GB",
            &queries,
            &truth,
            &[40],
        ));
    }
    let libs: Vec<serde_json::Value> =
        if o.hnswlib { o.threads.iter().filter_map(|&t| hnswlib(o, t)).collect() } else { Vec::new() };
    let mut md = format!(
        "## Index build, {} × {} cosine (m 16, ef_construction 64)\n\n\
         | build | threads | time | peak RSS (VmHWM) | graph in memory | index size | recall@10, ef_search 40 | QPS | load before / after |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        base.len(),
        base[0].len()
    );
    for b in &builds {
        let (_, r, qps) = b.recall[0];
        md += &format!(
            "| pg_hnsw | {} | {:.1} s | {:.0} MB | {} | {:.1} MB | {r:.4} | {qps:.0} | {} / {} |\n",
            b.threads,
            b.build_s,
            b.vm_hwm_mb,
            b.graph_mb.map_or("?".into(), |m| format!("{m:.0} MB")),
            b.index_mb,
            b.load_before,
            b.load_after
        );
    }
    for l in &libs {
        let run = &l["runs"][0];
        md += &format!(
            "| hnswlib | {} | {:.1} s (CPU {:.1} s) | | | | {:.4} | {:.0} | |\n",
            l["threads"],
            l["build_s"].as_f64().unwrap_or(0.0),
            l["build_cpu_s"].as_f64().unwrap_or(0.0),
            run["recall_at_10"].as_f64().unwrap_or(0.0),
            run["qps"].as_f64().unwrap_or(0.0)
        );
    }
    if builds.len() >= 2 {
        md += &format!(
            "\nSpeed-up of {} threads over 1: {:.2}×.\n",
            builds[1].threads,
            builds[0].build_s / builds[1].build_s
        );
    }
    for b in &builds {
        if let Some(w) = &b.workers_line {
            md += &format!("\n{} threads: DEBUG1 `{w}`", b.threads);
        }
    }
    md += "\n";
    write_results(o, "build-real", &serde_json::json!({"pg_hnsw": builds, "hnswlib": libs}), &md);
}

fn synthetic(o: &Opts) {
    println!(
        "generating {} × {} (seed {}) and the exact ground truth of {} queries ...",
        o.n, o.dims, o.seed, o.queries
    );
    let (data, queries) = synthetic_data(o.n, o.queries, o.dims, o.seed);
    let truth = ground_truth(&data, &queries);
    let cluster = start_cluster(&[]);
    {
        let (mut c, _) = connect(&cluster);
        c.batch_execute(&format!("CREATE TABLE synth (id int, embedding vector({}))", o.dims)).unwrap();
        copy_binary(&mut c, "synth", &data);
        c.batch_execute("VACUUM ANALYZE synth").unwrap();
    }
    // Room for the graph with margin: records, upper layers, layout.
    let mwm = format!("{}MB", (o.n * (o.dims * 4 + 400)) / (1 << 20) + 256);
    let mut builds = Vec::new();
    for &threads in &o.threads {
        builds.push(build_once(
            &cluster,
            "synth",
            "vector_l2_ops",
            "<->",
            threads,
            &mwm,
            &queries,
            &truth,
            &[10, 20, 40, 100],
        ));
    }
    let mut md = format!(
        "## Synthetic build, {} × {} clustered (seed {}), L2, m 16, ef_construction 64, maintenance_work_mem {mwm}\n\n\
         | threads | time | peak RSS (VmHWM) | graph in memory | index size | recall@10 at ef_search 10 / 20 / 40 / 100 | QPS at 40 / 100 | load before / after |\n\
         |---|---|---|---|---|---|---|---|\n",
        o.n, o.dims, o.seed
    );
    for b in &builds {
        let r: Vec<String> = b.recall.iter().map(|x| format!("{:.3}", x.1)).collect();
        md += &format!(
            "| {} | {:.1} s | {:.0} MB | {} | {:.1} MB | {} | {:.0} / {:.0} | {} / {} |\n",
            b.threads,
            b.build_s,
            b.vm_hwm_mb,
            b.graph_mb.map_or("?".into(), |m| format!("{m:.0} MB")),
            b.index_mb,
            r.join(" / "),
            b.recall[2].2,
            b.recall[3].2,
            b.load_before,
            b.load_after
        );
    }
    write_results(o, &format!("build-synthetic-{}", o.n), &serde_json::json!(builds), &md);
}

fn main() {
    let o = parse();
    match o.mode.as_str() {
        "real" => real(&o),
        "synthetic" => synthetic(&o),
        other => fail(&format!("unknown mode {other}: build_bench [real|synthetic]")),
    }
}
