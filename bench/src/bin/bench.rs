//! The pg_hnsw benchmark. Figures, not tests: run it on an idle machine.
//!
//! `bench sweep [--dataset DIR] [--out DIR] [--no-hnswlib] [--ef 10,20,...]
//!              [--ef-construction 64,200] [--build-threads 1]`
//!   On the real dataset (61,666 × 384, cosine, m=16), for each
//!   ef_construction (and number of build threads): build time, index size,
//!   QPS / p50 / p99 / recall@10 for ef_search 10..320 (one client, one
//!   prepared statement, recall against the dataset's exact ground truth);
//!   single-row INSERT throughput into the indexed table (first
//!   configuration); the same sweeps for hnswlib (PyPI) in process; and the
//!   recall@10 vs QPS plot of every curve, `<out>/recall_qps.png`.
//!
//! `bench synthetic [--n 10000,100000] [--dims 128] [--queries 100] [--seed 42] [--out DIR]`
//!   Clustered synthetic vectors generated from a seed (L2), brute-force
//!   ground truth on a sample of queries: how build time, size and QPS grow
//!   with N.
//!
//! `bench queries --connect CONNSTR [--ef 20,40,80] [--load] [--rebuild] [--with 'quantization = int8']`
//!   Against a running server that already has the demo's `packages` table
//!   (e.g. the cluster `scripts/demo.sh` leaves running; `--load` creates
//!   and loads it first): optionally rebuild the index (timed, serial; `--with`
//!   adds index options after `m = 16, ef_construction = 64`), then the
//!   query sweep at the given ef_search values. Works the same against
//!   pgvector (its type is also `vector`), for comparisons in one run.
//!
//! `bench plot [--out DIR]`
//!   Draws `<out>/recall_qps.png` again from `<out>/sweep.json`.
//!
//! `bench plot-csv --csv FILE [--title TEXT]`
//!   Draws the recall@10 vs QPS curves of a CSV with the header
//!   `label,reference,ef_search,recall,qps` (one row per point; `reference`
//!   true for the system compared against, e.g. pgvector) into FILE with
//!   the extension `.png`: for runs measured outside this binary, such as
//!   `bench/sql/synthetic_knn.sql`.
//!
//! Results go to `<out>/<mode>.json` and `<out>/<mode>.md` (default
//! `bench/results`).

use pg_hnsw_bench::plot::{recall_qps_png, Curve};
use pg_hnsw_bench::synthetic_data;
use pg_hnsw_bench::{
    bar, build_index_with_progress, copy_binary, fail, load_packages, query_run, read_labels, relation_size, run_json,
    QueryRun,
};
use pg_hnsw_cluster_tests::{dataset_dir, exact_knn, l2, read_fvecs, read_ivecs, Cluster};
use std::path::{Path, PathBuf};
use std::time::Instant;

const EF_SWEEP: [i32; 6] = [10, 20, 40, 80, 160, 320];

struct Opts {
    mode: String,
    dataset: PathBuf,
    out: PathBuf,
    hnswlib: bool,
    sizes: Vec<usize>,
    dims: usize,
    queries: usize,
    seed: u64,
    connect: Option<String>,
    efs: Vec<i32>,
    rebuild: bool,
    load: bool,
    with: String,
    ef_constructions: Vec<i32>,
    build_threads: Vec<i32>,
    csv: Option<PathBuf>,
    title: String,
}

fn parse() -> Opts {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut o = Opts {
        mode: String::new(),
        dataset: dataset_dir(),
        out: repo.join("bench/results"),
        hnswlib: true,
        sizes: vec![10_000, 100_000],
        dims: 128,
        queries: 100,
        seed: 42,
        connect: None,
        efs: EF_SWEEP.to_vec(),
        rebuild: false,
        load: false,
        with: String::new(),
        ef_constructions: vec![64, 200],
        build_threads: vec![1],
        csv: None,
        title: "recall@10 vs QPS".into(),
    };
    let mut it = std::env::args().skip(1);
    o.mode =
        it.next().unwrap_or_else(|| fail("no mode given", "bench sweep | bench synthetic --n 10000,100000 --dims 128"));
    while let Some(a) = it.next() {
        let mut v = || {
            it.next().unwrap_or_else(|| fail(&format!("{a} needs a value"), "see the top of bench/src/bin/bench.rs"))
        };
        match a.as_str() {
            "--dataset" => o.dataset = PathBuf::from(v()),
            "--out" => o.out = PathBuf::from(v()),
            "--no-hnswlib" => o.hnswlib = false,
            "--n" => {
                o.sizes = v().split(',').map(|x| x.trim().replace('_', "").parse().expect("--n 10000,100000")).collect()
            }
            "--dims" => o.dims = v().parse().expect("--dims 128"),
            "--queries" => o.queries = v().parse().expect("--queries 100"),
            "--seed" => o.seed = v().parse().expect("--seed 42"),
            "--connect" => o.connect = Some(v()),
            "--ef" => o.efs = v().split(',').map(|x| x.trim().parse().expect("--ef 20,40,80")).collect(),
            "--rebuild" => o.rebuild = true,
            "--csv" => o.csv = Some(PathBuf::from(v())),
            "--title" => o.title = v(),
            "--load" => o.load = true,
            "--with" => o.with = format!(", {}", v()),
            "--ef-construction" => {
                o.ef_constructions =
                    v().split(',').map(|x| x.trim().parse().expect("--ef-construction 64,200")).collect()
            }
            "--build-threads" => {
                o.build_threads = v().split(',').map(|x| x.trim().parse().expect("--build-threads 1,2")).collect()
            }
            other => fail(&format!("unknown argument {other}"), "see the top of bench/src/bin/bench.rs"),
        }
    }
    o
}

fn start_cluster() -> Cluster {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-cluster");
    let port = pg_hnsw_cluster_tests::free_port();
    Cluster::start_in(&base, port, &["shared_buffers = 2GB", "max_parallel_maintenance_workers = 0"])
}

fn run_table(runs: &[QueryRun]) -> String {
    let mut s = String::from("| ef_search | recall@10 | QPS | p50 ms | p99 ms |\n|---|---|---|---|---|\n");
    for r in runs {
        s += &format!(
            "| {} | {:.4} | {:.0} | {:.3} | {:.3} |\n",
            r.ef_search, r.recall_at_10, r.qps, r.p50_ms, r.p99_ms
        );
    }
    s
}

fn write_results(out: &Path, name: &str, json: &serde_json::Value, md: &str) {
    std::fs::create_dir_all(out).unwrap();
    std::fs::write(out.join(format!("{name}.json")), serde_json::to_string_pretty(json).unwrap()).unwrap();
    std::fs::write(out.join(format!("{name}.md")), md).unwrap();
    println!("\n{md}\nwritten to {}/{name}.{{json,md}}", out.display());
}

/// One index configuration of the sweep (one curve of the plot).
#[derive(Clone, Copy, Debug)]
struct Config {
    m: i32,
    ef_construction: i32,
    /// Processes building the index (1 = serial). Parallel builds set
    /// `max_parallel_maintenance_workers = build_threads - 1`; the hook for
    /// when the extension builds in parallel (today its builds are serial).
    build_threads: i32,
}

impl Config {
    fn label(&self) -> String {
        let threads =
            if self.build_threads > 1 { format!(", {} build threads", self.build_threads) } else { String::new() };
        format!("m={} ef_construction={}{threads}", self.m, self.ef_construction)
    }
}

/// Makes sure hnswlib and numpy import, installing them from PyPI if needed.
fn have_hnswlib() -> bool {
    let ok = || {
        std::process::Command::new("python3")
            .args(["-c", "import hnswlib, numpy"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ok() {
        return true;
    }
    println!("installing hnswlib and numpy from PyPI ...");
    let installed = std::process::Command::new("python3")
        .args(["-m", "pip", "install", "-q", "hnswlib", "numpy"])
        .status()
        .is_ok_and(|s| s.success());
    if !installed || !ok() {
        eprintln!("warning: could not install hnswlib; skipping its sweep");
        return false;
    }
    true
}

/// hnswlib's sweep (in process, one thread) for one configuration.
fn hnswlib_sweep(dataset: &Path, out: &Path, cfg: Config) -> Option<serde_json::Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hnswlib_sweep.py");
    println!("hnswlib {} (in process, one thread) ...", cfg.label());
    let path = out.join(format!("hnswlib-m{}-efc{}.json", cfg.m, cfg.ef_construction));
    std::fs::create_dir_all(out).unwrap();
    let status = std::process::Command::new("python3")
        .arg(script)
        .arg("--dataset")
        .arg(dataset)
        .arg("--out")
        .arg(&path)
        .args(["--m", &cfg.m.to_string(), "--ef-construction", &cfg.ef_construction.to_string()])
        .status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("warning: hnswlib sweep failed");
        return None;
    }
    serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()
}

fn runs_of_json(h: &serde_json::Value) -> Vec<QueryRun> {
    h["runs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| QueryRun {
                    ef_search: r["ef_search"].as_i64().unwrap_or(0) as i32,
                    qps: r["qps"].as_f64().unwrap_or(0.0),
                    p50_ms: r["p50_ms"].as_f64().unwrap_or(0.0),
                    p99_ms: r["p99_ms"].as_f64().unwrap_or(0.0),
                    recall_at_10: r["recall_at_10"].as_f64().unwrap_or(0.0),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn curve(label: String, runs: &[QueryRun], reference: bool) -> Curve {
    Curve { label, points: runs.iter().map(|r| (r.recall_at_10, r.qps, r.ef_search)).collect(), reference }
}

fn sweep(o: &Opts) {
    let dir = &o.dataset;
    let base = read_fvecs(&dir.join("base.fvecs"), usize::MAX);
    let queries = read_fvecs(&dir.join("queries.fvecs"), usize::MAX);
    let truth = read_ivecs(&dir.join("groundtruth.ivecs"), usize::MAX);
    let labels = read_labels(&dir.join("base_labels.tsv"));
    let configs: Vec<Config> = o
        .ef_constructions
        .iter()
        .flat_map(|&efc| o.build_threads.iter().map(move |&t| Config { m: 16, ef_construction: efc, build_threads: t }))
        .collect();
    let cluster = start_cluster();
    let mut c = cluster.connect_with_extension();
    let load = load_packages(&mut c, &base, &labels);
    println!("load {:.1} s", load.as_secs_f64());

    let mut md = format!(
        "## pg_hnsw on debian-minilm-384 ({} × 384, cosine, one client, 1,000 queries)\n\nload {:.1} s\n",
        base.len(),
        load.as_secs_f64()
    );
    let mut results = Vec::new();
    let mut curves = Vec::new();
    let mut insert_rate = None;
    for cfg in &configs {
        c.batch_execute(&format!(
            "DROP INDEX IF EXISTS packages_embedding_idx; SET maintenance_work_mem = '2GB'; \
             SET max_parallel_maintenance_workers = {}",
            cfg.build_threads - 1
        ))
        .unwrap();
        println!("pg_hnsw {}:", cfg.label());
        let build = build_index_with_progress(
            &mut c,
            &cluster.conn_string(),
            &format!(
                "CREATE INDEX packages_embedding_idx ON packages USING hnsw (embedding vector_cosine_ops) \
                 WITH (m = {}, ef_construction = {})",
                cfg.m, cfg.ef_construction
            ),
            base.len() as u64,
        );
        let size = relation_size(&mut c, "packages_embedding_idx");
        println!("  build {:.1} s, index {:.1} MB", build.as_secs_f64(), size as f64 / 1e6);
        let runs: Vec<QueryRun> = o
            .efs
            .iter()
            .map(|&ef| {
                let r = query_run(&mut c, "packages", "<=>", &queries, &truth, ef);
                println!(
                    "  ef_search {:>3}: recall@10 {:.4}, {:.0} QPS, p50 {:.3} ms, p99 {:.3} ms",
                    ef, r.recall_at_10, r.qps, r.p50_ms, r.p99_ms
                );
                r
            })
            .collect();

        // Single-row INSERTs into the indexed table (autocommit, one
        // statement each), measured on the first configuration, then undone.
        if insert_rate.is_none() {
            let stmt = c.prepare("INSERT INTO packages (id, name, embedding) VALUES ($1, 'query', $2)").unwrap();
            let pb = bar(queries.len() as u64, "single-row INSERTs");
            let t = Instant::now();
            for (i, q) in queries.iter().enumerate() {
                c.execute(&stmt, &[&(1_000_000 + i as i32), &pgvector::Vector::from(q.clone())]).unwrap();
                pb.inc(1);
            }
            let rate = queries.len() as f64 / t.elapsed().as_secs_f64();
            pb.finish_and_clear();
            println!("  single-row INSERTs: {rate:.0} rows/s");
            c.batch_execute("DELETE FROM packages WHERE id >= 1000000").unwrap();
            c.batch_execute("VACUUM packages").unwrap();
            insert_rate = Some(rate);
        }
        md += &format!(
            "\n### pg_hnsw {}\n\nbuild {:.1} s ({}), index {:.1} MB\n\n{}",
            cfg.label(),
            build.as_secs_f64(),
            if cfg.build_threads > 1 { "parallel" } else { "serial" },
            size as f64 / 1e6,
            run_table(&runs)
        );
        results.push(serde_json::json!({
            "m": cfg.m, "ef_construction": cfg.ef_construction, "build_threads": cfg.build_threads,
            "build_s": build.as_secs_f64(), "index_bytes": size,
            "runs": runs.iter().map(run_json).collect::<Vec<_>>(),
        }));
        curves.push(curve(format!("pg_hnsw {}", cfg.label()), &runs, false));
    }
    if let Some(rate) = insert_rate {
        md += &format!("\nsingle-row INSERTs (first configuration, autocommit): {rate:.0} rows/s\n");
    }

    let mut hnswlib = Vec::new();
    if o.hnswlib && have_hnswlib() {
        // hnswlib builds with one thread only; one curve per ef_construction.
        let mut seen = Vec::new();
        for cfg in configs.iter().filter(|c| c.build_threads == 1) {
            if seen.contains(&cfg.ef_construction) {
                continue;
            }
            seen.push(cfg.ef_construction);
            if let Some(h) = hnswlib_sweep(dir, &o.out, *cfg) {
                let hruns = runs_of_json(&h);
                md += &format!(
                    "\n### hnswlib (PyPI) {}, in process, one thread\n\nbuild {:.1} s, index {:.1} MB\n\n{}",
                    cfg.label(),
                    h["build_s"].as_f64().unwrap_or(0.0),
                    h["index_bytes"].as_f64().unwrap_or(0.0) / 1e6,
                    run_table(&hruns)
                );
                curves.push(curve(format!("hnswlib {}", cfg.label()), &hruns, true));
                hnswlib.push(serde_json::json!({"m": cfg.m, "ef_construction": cfg.ef_construction, "result": h}));
            }
        }
    }
    let png = o.out.join("recall_qps.png");
    std::fs::create_dir_all(&o.out).unwrap();
    match recall_qps_png(&png, PLOT_TITLE, &curves) {
        Ok(()) => {
            println!("plot written to {}", png.display());
            md += "\n![recall@10 vs QPS](recall_qps.png)\n";
        }
        Err(e) => eprintln!("warning: no plot: {e}"),
    }
    let json = serde_json::json!({
        "dataset": "debian-minilm-384", "rows": base.len(), "load_s": load.as_secs_f64(),
        "insert_rows_per_s": insert_rate, "configs": results, "hnswlib": hnswlib,
    });
    write_results(&o.out, "sweep", &json, &md);
}

const PLOT_TITLE: &str = "debian-minilm-384 (61,666 × 384, cosine): recall@10 vs QPS, one client";

/// Draws `<out>/recall_qps.png` again from `<out>/sweep.json` (a previous
/// `sweep`'s figures), e.g. after a change to the picture's style.
fn replot(o: &Opts) {
    let path = o.out.join("sweep.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", path.display()), "run `bench/run.sh sweep` first"));
    let j: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display()), "rerun the sweep"));
    let mut curves = Vec::new();
    let label = |c: &serde_json::Value| {
        Config {
            m: c["m"].as_i64().unwrap_or(16) as i32,
            ef_construction: c["ef_construction"].as_i64().unwrap_or(64) as i32,
            build_threads: c["build_threads"].as_i64().unwrap_or(1) as i32,
        }
        .label()
    };
    for c in j["configs"].as_array().into_iter().flatten() {
        curves.push(curve(format!("pg_hnsw {}", label(c)), &runs_of_json(c), false));
    }
    for h in j["hnswlib"].as_array().into_iter().flatten() {
        curves.push(curve(format!("hnswlib {}", label(h)), &runs_of_json(&h["result"]), true));
    }
    let png = o.out.join("recall_qps.png");
    recall_qps_png(&png, PLOT_TITLE, &curves).unwrap_or_else(|e| fail(&e, "check sweep.json"));
    println!("plot written to {}", png.display());
}

/// Draws the curves of `--csv` (`label,reference,ef_search,recall,qps`
/// rows, points in file order) beside it as a PNG.
fn plot_csv(o: &Opts) {
    let path = o.csv.clone().unwrap_or_else(|| fail("plot-csv needs --csv FILE", "bench plot-csv --csv runs.csv"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", path.display()), "check the path"));
    let mut curves: Vec<Curve> = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1).filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let bad = || fail(&format!("{}:{}: {line}", path.display(), n + 1), "label,reference,ef_search,recall,qps");
        let [label, reference, ef, recall, qps] = f[..] else { bad() };
        let point = (
            recall.parse().unwrap_or_else(|_| bad()),
            qps.parse().unwrap_or_else(|_| bad()),
            ef.parse().unwrap_or_else(|_| bad()),
        );
        match curves.iter_mut().find(|c| c.label == label) {
            Some(c) => c.points.push(point),
            None => curves.push(Curve { label: label.into(), points: vec![point], reference: reference == "true" }),
        }
    }
    let png = path.with_extension("png");
    recall_qps_png(&png, &o.title, &curves).unwrap_or_else(|e| fail(&e, "check the CSV"));
    println!("plot written to {}", png.display());
}

fn synthetic(o: &Opts) {
    let cluster = start_cluster();
    let mut c = cluster.connect_with_extension();
    let mut md = format!(
        "## pg_hnsw on synthetic clustered data ({} dims, L2, m=16, ef_construction=64, seed {}, {} queries)\n\n\
         | N | load | build (serial) | index size | ef_search | recall@10 | QPS | p50 ms | p99 ms |\n|---|---|---|---|---|---|---|---|---|\n",
        o.dims, o.seed, o.queries
    );
    let mut results = Vec::new();
    for &n in &o.sizes {
        println!("N = {n}: generating and computing exact ground truth ...");
        let (data, queries) = synthetic_data(n, o.queries, o.dims, o.seed);
        let truth: Vec<Vec<u32>> = std::thread::scope(|s| {
            let half = queries.len() / 2;
            let (a, b) = queries.split_at(half);
            let data = &data;
            let job = |qs: &[Vec<f32>]| {
                qs.iter()
                    .map(|q| exact_knn(data, q, 10, l2).into_iter().map(|x| x as u32).collect())
                    .collect::<Vec<Vec<u32>>>()
            };
            let h = s.spawn(move || job(b));
            let mut first = job(a);
            first.extend(h.join().unwrap());
            first
        });
        c.batch_execute(&format!(
            "DROP TABLE IF EXISTS synth; CREATE TABLE synth (id int, embedding vector({}))",
            o.dims
        ))
        .unwrap();
        let t = Instant::now();
        copy_binary(&mut c, "synth", &data);
        c.batch_execute("VACUUM ANALYZE synth").unwrap();
        let load = t.elapsed().as_secs_f64();
        let mem_mb = (n * (o.dims * 4 + 400)) / (1 << 20) + 256;
        c.batch_execute(&format!("SET maintenance_work_mem = '{mem_mb}MB'")).unwrap();
        let build = build_index_with_progress(
            &mut c,
            &cluster.conn_string(),
            "CREATE INDEX synth_idx ON synth USING hnsw (embedding vector_l2_ops)",
            n as u64,
        )
        .as_secs_f64();
        let size = relation_size(&mut c, "synth_idx");
        for ef in [10, 40, 160] {
            let r = query_run(&mut c, "synth", "<->", &queries, &truth, ef);
            println!("  N {n} ef {ef}: recall@10 {:.4}, {:.0} QPS", r.recall_at_10, r.qps);
            md += &format!(
                "| {n} | {load:.1} s | {build:.1} s | {:.1} MB | {} | {:.4} | {:.0} | {:.3} | {:.3} |\n",
                size as f64 / 1e6,
                r.ef_search,
                r.recall_at_10,
                r.qps,
                r.p50_ms,
                r.p99_ms
            );
            results.push(serde_json::json!({"n": n, "dims": o.dims, "load_s": load, "build_s": build, "index_bytes": size, "run": run_json(&r)}));
        }
    }
    write_results(&o.out, &format!("synthetic-{}d", o.dims), &serde_json::json!(results), &md);
}

/// The query sweep against an existing `packages` table (see the top).
fn queries(o: &Opts) {
    let conn = o.connect.clone().unwrap_or_else(|| {
        fail("queries needs --connect CONNSTR", "e.g. --connect 'host=/path/to/sock port=54329 user=postgres'")
    });
    let mut c = pg_hnsw_cluster_tests::Client::connect(&conn, pg_hnsw_cluster_tests::NoTls)
        .unwrap_or_else(|e| fail(&format!("cannot connect: {e}"), "check --connect"));
    let queries = read_fvecs(&o.dataset.join("queries.fvecs"), usize::MAX);
    let truth = read_ivecs(&o.dataset.join("groundtruth.ivecs"), usize::MAX);
    if o.load {
        let base = read_fvecs(&o.dataset.join("base.fvecs"), usize::MAX);
        let labels = read_labels(&o.dataset.join("base_labels.tsv"));
        let took = load_packages(&mut c, &base, &labels);
        println!("loaded {} rows in {:.1} s", base.len(), took.as_secs_f64());
    }
    if o.rebuild {
        c.batch_execute(
            "DROP INDEX IF EXISTS packages_embedding_idx; \
             SET maintenance_work_mem = '2GB'; SET max_parallel_maintenance_workers = 0",
        )
        .unwrap();
        let t = Instant::now();
        c.batch_execute(&format!(
            "CREATE INDEX packages_embedding_idx ON packages USING hnsw (embedding vector_cosine_ops) \
             WITH (m = 16, ef_construction = 64{})",
            o.with
        ))
        .unwrap();
        let size = relation_size(&mut c, "packages_embedding_idx");
        println!("build {:.1} s, index {:.1} MB", t.elapsed().as_secs_f64(), size as f64 / 1e6);
    }
    let runs: Vec<QueryRun> =
        o.efs.iter().map(|&ef| query_run(&mut c, "packages", "<=>", &queries, &truth, ef)).collect();
    println!("{}", run_table(&runs));
}

fn main() {
    let o = parse();
    match o.mode.as_str() {
        "sweep" => sweep(&o),
        "synthetic" => synthetic(&o),
        "queries" => queries(&o),
        "plot" => replot(&o),
        "plot-csv" => plot_csv(&o),
        other => fail(&format!("unknown mode {other}"), "bench sweep | bench synthetic --n 10000,100000 --dims 128"),
    }
}
