//! The HNSW graph code alone (`src/hnsw/graph/`, no PostgreSQL) beside
//! hnswlib, in one run on the real dataset: in-memory build time (wall and
//! CPU), recall@10 and QPS per ef_search on one thread, and our QPS at
//! hnswlib's recall levels (interpolated on our recall/QPS curve).
//!
//! `cargo run --release --manifest-path bench/Cargo.toml --bin graph_bench -- [--threads N] [--no-hnswlib] [--python PATH] [--synthetic N [--dims D] [--queries Q]] [--keep-pruned] [--keep-ties] [--no-relink] [--no-spare-links] [--spare-in-build] [--half] [--seed S] [--seeds N] [--efs 10,20,40] [--prefetch-lines L]`
//!
//! `--synthetic N` replaces the real dataset (cosine) by `N` seeded
//! clustered vectors of `D` dimensions (default 128) under L2, with `Q`
//! queries (default 500) and their exact top 10 (the generator of
//! `build_bench synthetic`); hnswlib gets the same data through a TEXMEX
//! directory under `target/`. `--keep-pruned` fills every list with pruned
//! candidates (Malkov's keepPrunedConnections, as pgvector does) to compare
//! that variant of the heuristic; `--keep-ties` keeps candidates tied with a
//! kept neighbor (the paper's `<`, as hnswlib); `--no-relink` leaves elements
//! dropped from a pruned list unrelinked (as hnswlib); `--no-spare-links`
//! leaves free layer-0 slots empty instead of holding spare links, and
//! `--spare-in-build` lets the build's searches walk spare links too. `--half` holds rows
//! (and queries) in half precision, as `CREATE INDEX` holds a `vector`.
//! `--seed S` seeds the level draws (default 7); `--seeds N` builds and
//! queries N times with seeds S, S+1, ... (hnswlib with 100, 101, ...), in
//! turn with hnswlib, and compares the means per ef_search: one seed's
//! recall differs from another's by up to 0.005 at ef_search 40 on the real
//! dataset, enough to move the QPS-at-equal-recall ratio by 0.1 or more.
//!
//! `--efs LIST` sets the ef_search values of both sweeps: more points make
//! the interpolated QPS at hnswlib's recall closer to a measured one.
//!
//! `--threads N` builds with N threads ([`ParallelInsert`]: this thread
//! loads and links, N − 1 more link), as `CREATE INDEX` does; hnswlib builds
//! with as many. Queries always run on one thread. hnswlib runs through
//! `bench/hnswlib_build.py` (PyPI `hnswlib` and `numpy`, looked up in
//! `target/venv` first). On a busy machine the CPU-time figures are the
//! steadier ones.

use pg_hnsw_bench::distance::{HalfVector, Metric};
use pg_hnsw_bench::hnsw::graph::{
    random_level, Heuristic, MemoryGraph, ParallelInsert, Params, Scratch, Space, Tuning, HEURISTIC,
};
use pg_hnsw_bench::{ground_truth, synthetic_data};
use pg_hnsw_cluster_tests::{dataset_dir, read_fvecs, read_ivecs};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::Instant;

const EFS: [usize; 6] = [10, 20, 40, 80, 160, 320];

/// CPU seconds this process has used (user + system, all threads).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn normalized(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    v.iter().map(|&x| (x as f64 / n) as f32).collect()
}

/// Our QPS at recall `r`, interpolated linearly on the `(recall, qps)` curve.
fn qps_at(curve: &[(f64, f64)], r: f64) -> Option<f64> {
    curve.windows(2).find(|w| w[0].0 <= r && r <= w[1].0).map(|w| {
        let t = if w[1].0 > w[0].0 { (r - w[0].0) / (w[1].0 - w[0].0) } else { 0.0 };
        w[0].1 + t * (w[1].1 - w[0].1)
    })
}

/// Writes `base.fvecs`, `queries.fvecs` and `groundtruth.ivecs` (TEXMEX:
/// each row is its length as a little-endian `i32`, then its values) into
/// `dir`, for `hnswlib_build.py`.
fn write_texmex(dir: &Path, base: &[Vec<f32>], queries: &[Vec<f32>], truth: &[Vec<u32>]) {
    std::fs::create_dir_all(dir).expect("create the synthetic dataset directory");
    let rows = |rows: &mut dyn Iterator<Item = Vec<[u8; 4]>>| {
        let mut out = Vec::new();
        for row in rows {
            out.extend_from_slice(&(row.len() as i32).to_le_bytes());
            row.iter().for_each(|x| out.extend_from_slice(x));
        }
        out
    };
    let floats = |v: &[Vec<f32>]| rows(&mut v.iter().map(|r| r.iter().map(|x| x.to_le_bytes()).collect()));
    let ints = rows(&mut truth.iter().map(|r| r.iter().map(|x| (*x as i32).to_le_bytes()).collect()));
    for (name, bytes) in [("base.fvecs", floats(base)), ("queries.fvecs", floats(queries)), ("groundtruth.ivecs", ints)]
    {
        std::fs::write(dir.join(name), bytes).expect("write the synthetic dataset");
    }
}

/// One graph_bench configuration, run by [`Run::measure`] on rows in
/// some [`Space`].
struct Run<'a> {
    params: Params,
    tuning: Tuning,
    threads: usize,
    levels: &'a [usize],
    truth: &'a [Vec<u32>],
    efs: &'a [usize],
}

impl Run<'_> {
    /// Builds the graph over `base` (with `threads` threads, as `CREATE
    /// INDEX` does), prints its build time, size and the recall@10 / QPS /
    /// distances per query of `queries` per ef_search, and returns
    /// `(build s, build CPU s, [(recall, QPS)])`.
    fn measure<S: Space + Send + Sync>(
        &self,
        space: S,
        base: &[Vec<S::Scalar>],
        queries: &[Vec<S::Scalar>],
    ) -> (f64, f64, Vec<(f64, f64)>) {
        let (t, c) = (Instant::now(), cpu_seconds());
        let (threads, levels, truth) = (self.threads, self.levels, self.truth);
        let mut graph = MemoryGraph::with_vector_len(space, self.params, 16, Some(base[0].len()));
        graph.set_tuning(self.tuning);
        let insert = ParallelInsert::new(graph);
        std::thread::scope(|s| {
            for _ in 1..threads {
                s.spawn(|| insert.work());
            }
            let mut sc = Scratch::default();
            for (i, v) in base.iter().enumerate() {
                insert.load(v, i as u64, levels[i]).expect("memory");
                if threads == 1 {
                    insert.link_one(&mut sc).expect("memory");
                }
            }
            insert.close();
            while insert.link_one(&mut sc).expect("memory") {}
        });
        let mut g = insert.into_graph().expect("memory");
        g.repair_reachability(&mut Scratch::default()).expect("memory");
        let (build, build_cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
        println!(
            "build {build:.1} s (CPU {build_cpu:.1} s) with {threads} thread(s), {} of {} elements reachable, {:.0} MB",
            g.reachable(),
            g.len(),
            g.memory_bytes() as f64 / 1e6
        );
        let degree0 = (0..g.len() as u32).map(|id| g.neighbor_ids(id, 0).len()).sum::<usize>() as f64 / g.len() as f64;
        println!("mean layer-0 neighbors {degree0:.2}");
        println!("| ef_search | recall@10 | QPS | QPS (CPU time) | distances per query |\n|---|---|---|---|---|");
        let mut curve = Vec::new();
        for &ef in self.efs {
            for q in queries.iter().take(50) {
                g.search(q, ef);
            }
            let (mut qps, mut qps_cpu, mut recall) = (0.0f64, 0.0f64, 0.0);
            let before = g.search_distances();
            for _ in 0..5 {
                let (t, c) = (Instant::now(), cpu_seconds());
                let mut hits = 0;
                for (q, tr) in queries.iter().zip(truth) {
                    let found = g.search(q, ef.max(10));
                    hits +=
                        found.iter().take(10).filter(|c| tr[..10].contains(&(g.heap_tids(c.node)[0] as u32))).count();
                }
                qps = qps.max(queries.len() as f64 / t.elapsed().as_secs_f64());
                qps_cpu = qps_cpu.max(queries.len() as f64 / (cpu_seconds() - c).max(0.01));
                recall = hits as f64 / (10 * queries.len()) as f64;
            }
            let per_query = (g.search_distances() - before) as f64 / (5 * queries.len()) as f64;
            println!("| {ef} | {recall:.4} | {qps:.0} | {qps_cpu:.0} | {per_query:.0} |");
            curve.push((recall, qps));
        }
        (build, build_cpu, curve)
    }
}

/// Rows as `CREATE INDEX` holds a `vector`: a power-of-two scale (the
/// first two 16-bit words) and half-precision codes ([`HalfVector`]).
struct HalfRows(Metric);

impl HalfRows {
    fn encode(v: &[f32]) -> Vec<u16> {
        let h = HalfVector::encode(v);
        let scale = h.scale.to_bits();
        [scale as u16, (scale >> 16) as u16].into_iter().chain(h.codes).collect()
    }
}

impl Space for HalfRows {
    type Scalar = u16;

    fn distance(&self, a: &[u16], b: &[u16]) -> f32 {
        let scale = |w: &[u16]| f32::from_bits(w[0] as u32 | (w[1] as u32) << 16);
        self.0.distance_half_pair(&a[2..], scale(a), &b[2..], scale(b))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |k: &str| args.iter().position(|a| a == k).and_then(|i| args.get(i + 1).cloned());
    let threads: usize = value("--threads").map_or(1, |t| t.parse().expect("--threads N"));
    let synthetic: Option<usize> = value("--synthetic").map(|n| n.parse().expect("--synthetic N"));
    let (dir, metric, base, queries, truth) = match synthetic {
        None => {
            let dir = dataset_dir();
            let base: Vec<Vec<f32>> =
                read_fvecs(&dir.join("base.fvecs"), usize::MAX).iter().map(|v| normalized(v)).collect();
            let queries: Vec<Vec<f32>> =
                read_fvecs(&dir.join("queries.fvecs"), usize::MAX).iter().map(|v| normalized(v)).collect();
            let truth = read_ivecs(&dir.join("groundtruth.ivecs"), usize::MAX);
            (dir, Metric::Cosine, base, queries, truth)
        }
        Some(n) => {
            let dims: usize = value("--dims").map_or(128, |d| d.parse().expect("--dims D"));
            let nq: usize = value("--queries").map_or(500, |q| q.parse().expect("--queries Q"));
            let (base, queries) = synthetic_data(n, nq, dims, 42);
            let truth = ground_truth(&base, &queries);
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../target/graph-bench-synthetic-{n}x{dims}"));
            write_texmex(&dir, &base, &queries, &truth);
            (dir, Metric::L2, base, queries, truth)
        }
    };
    let efs_arg: Option<Vec<usize>> =
        value("--efs").map(|l| l.split(',').map(|e| e.trim().parse().expect("--efs 10,20,40")).collect());
    let efs: &[usize] = match &efs_arg {
        Some(list) => list,
        None if synthetic.is_some() => &[10, 20, 40, 100, 200],
        None => &EFS,
    };
    let params = Params { m: 16, ef_construction: 64 };
    let seed: u64 = value("--seed").map_or(7, |s| s.parse().expect("--seed S"));
    let seeds: u64 = value("--seeds").map_or(1, |s| s.parse().expect("--seeds N"));
    let mut tuning = Tuning::default();
    if let Some(lines) = value("--prefetch-lines") {
        tuning.prefetch_lines = lines.parse().expect("--prefetch-lines N");
    }
    if args.iter().any(|a| a == "--keep-pruned") {
        tuning.heuristic = Heuristic { keep_pruned: true, ..HEURISTIC };
    }
    if args.iter().any(|a| a == "--keep-ties") {
        tuning.heuristic.keep_ties = true;
    }
    if args.iter().any(|a| a == "--no-relink") {
        tuning.relink = false;
    }
    tuning.spare_links = !args.iter().any(|a| a == "--no-spare-links");
    tuning.spare_in_build = args.iter().any(|a| a == "--spare-in-build");
    println!(
        "graph.rs in memory: {} x {} {metric:?}, m=16, ef_construction=64, {:?}, spare links {} (in build {})",
        base.len(),
        base[0].len(),
        tuning.heuristic,
        tuning.spare_links,
        tuning.spare_in_build
    );
    let half = args.iter().any(|a| a == "--half");
    if half {
        println!("rows held in half precision, as CREATE INDEX holds a `vector` (queries too)");
    }
    let ours = |seed: u64| {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let levels: Vec<usize> =
            base.iter().map(|_| random_level(rng.gen::<f64>(), params.level_multiplier(), 16)).collect();
        let run = Run { params, tuning, threads, levels: &levels, truth: &truth, efs };
        if half {
            let half = |rows: &[Vec<f32>]| rows.iter().map(|v| HalfRows::encode(v)).collect::<Vec<_>>();
            run.measure(HalfRows(metric), &half(&base), &half(&queries))
        } else {
            run.measure(metric, &base, &queries)
        }
    };
    let with_hnswlib = !args.iter().any(|a| a == "--no-hnswlib");
    let python = value("--python").unwrap_or_else(|| {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/venv/bin/python");
        if venv.exists() {
            venv.display().to_string()
        } else {
            "python3".into()
        }
    });
    let hnswlib = |seed: u64| -> Option<serde_json::Value> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hnswlib_build.py");
        let space = if metric == Metric::L2 { "l2" } else { "cosine" };
        let efs: Vec<String> = efs.iter().map(|e| e.to_string()).collect();
        let out = std::process::Command::new(&python)
            .arg(script)
            .arg("--dataset")
            .arg(&dir)
            .args(["--threads", &threads.to_string(), "--efs", &efs.join(","), "--space", space])
            .args(["--seed", &seed.to_string()])
            .output();
        let lib = out.ok().and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok());
        if lib.is_none() {
            eprintln!(
                "hnswlib not available for {python} (python3 -m venv target/venv && target/venv/bin/pip install hnswlib numpy)"
            );
        }
        lib
    };
    // Ours and hnswlib's in turn, one level seed each per round (hnswlib's
    // seeds are 100, 101, ...), so drift in the machine's speed touches both.
    let (mut our_runs, mut lib_runs) = (Vec::new(), Vec::new());
    for i in 0..seeds {
        if seeds > 1 {
            println!("\n### seed {} (hnswlib {})", seed + i, 100 + i);
        }
        our_runs.push(ours(seed + i));
        if with_hnswlib {
            let Some(lib) = hnswlib(100 + i) else { return };
            lib_runs.push(lib);
        }
    }
    if !with_hnswlib {
        return;
    }
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let n = seeds as f64;
    // Means over the seeds, per ef_search: recall@10, QPS, QPS (CPU).
    let lib_curve: Vec<(f64, f64, f64)> = (0..efs.len())
        .map(|j| {
            let runs = lib_runs.iter().map(|l| &l["runs"][j]);
            runs.fold((0.0, 0.0, 0.0), |a, r| {
                (a.0 + f(r, "recall_at_10") / n, a.1 + f(r, "qps") / n, a.2 + f(r, "qps_cpu") / n)
            })
        })
        .collect();
    let curve: Vec<(f64, f64)> = (0..efs.len())
        .map(|j| our_runs.iter().fold((0.0, 0.0), |a, r| (a.0 + r.2[j].0 / n, a.1 + r.2[j].1 / n)))
        .collect();
    let mean = |v: &mut dyn Iterator<Item = f64>| v.sum::<f64>() / n;
    let (build, build_cpu) = (mean(&mut our_runs.iter().map(|r| r.0)), mean(&mut our_runs.iter().map(|r| r.1)));
    let (lib_build, lib_build_cpu) =
        (mean(&mut lib_runs.iter().map(|l| f(l, "build_s"))), mean(&mut lib_runs.iter().map(|l| f(l, "build_cpu_s"))));
    if seeds > 1 {
        println!(
            "\n### means over {seeds} level seeds\n| ef_search | graph.rs recall@10 | graph.rs QPS |\n|---|---|---|"
        );
        for (ef, (r, q)) in efs.iter().zip(&curve) {
            println!("| {ef} | {r:.4} | {q:.0} |");
        }
    }
    println!(
        "\nhnswlib: build {lib_build:.1} s (CPU {lib_build_cpu:.1} s) with {threads} thread(s), mean layer-0 neighbors {:.2}{}",
        mean(&mut lib_runs.iter().map(|l| f(l, "degree0"))),
        if seeds > 1 { format!(" (means over {seeds} seeds)") } else { String::new() }
    );
    println!("| ef_search | recall@10 | QPS | QPS (CPU time) | graph.rs QPS at this recall | ratio |\n|---|---|---|---|---|---|");
    for (ef, &(r, qps, qps_cpu)) in efs.iter().zip(&lib_curve) {
        let ours = qps_at(&curve, r);
        println!(
            "| {ef} | {r:.4} | {qps:.0} | {qps_cpu:.0} | {} | {} |",
            ours.map_or("-".into(), |q| format!("{q:.0}")),
            ours.map_or("-".into(), |q| format!("{:.2}", q / qps))
        );
    }
    println!(
        "\nbuild time ratio graph.rs / hnswlib: {:.2} (wall), {:.2} (CPU)",
        build / lib_build,
        build_cpu / lib_build_cpu
    );
}
