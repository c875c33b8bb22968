//! The semantic-search demo: Debian package descriptions, embedded with
//! all-MiniLM-L6-v2, searched with `ORDER BY embedding <=> $1 LIMIT 5`.
//!
//! Usage: `demo [--port N] [--connect CONNSTR] [--dataset DIR]`
//! - without `--connect`: starts a throwaway cluster under `target/demo`
//!   (as `postgres`, on port 54329 by default) and leaves it running;
//! - with `--connect`: uses your server, where `pg_hnsw` must be installed.

use pg_hnsw_bench::{build_index_with_progress, fail, load_packages, query_run, read_labels, relation_size};
use pg_hnsw_cluster_tests::{dataset_dir, pg_bindir, read_fvecs, read_ivecs, Client, Cluster, NoTls};
use pgvector::Vector;
use std::path::{Path, PathBuf};
use std::time::Instant;

struct Args {
    port: u16,
    connect: Option<String>,
    dataset: PathBuf,
}

fn parse_args() -> Args {
    let mut args = Args { port: 54329, connect: None, dataset: dataset_dir() };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| fail(&format!("{a} needs a value"), "see --help"));
        match a.as_str() {
            "--port" => {
                args.port = value().parse().unwrap_or_else(|_| fail("--port takes a number", "e.g. --port 54330"))
            }
            "--connect" => args.connect = Some(value()),
            "--dataset" => args.dataset = PathBuf::from(value()),
            "-h" | "--help" => {
                println!("usage: demo [--port N] [--connect CONNSTR] [--dataset DIR]");
                std::process::exit(0);
            }
            other => {
                fail(&format!("unknown argument {other}"), "usage: demo [--port N] [--connect CONNSTR] [--dataset DIR]")
            }
        }
    }
    args
}

fn check_dataset(dir: &Path) {
    for f in [
        "base.fvecs",
        "base_labels.tsv",
        "queries.fvecs",
        "groundtruth.ivecs",
        "sample_queries.fvecs",
        "sample_queries.tsv",
    ] {
        if !dir.join(f).exists() {
            fail(
                &format!("dataset file {} is missing", dir.join(f).display()),
                "put debian-minilm-384 in ../shared/datasets beside the repository, or pass --dataset DIR",
            );
        }
    }
}

fn check_extension_installed() {
    let out = std::process::Command::new(pg_bindir().join("pg_config")).arg("--sharedir").output();
    let share = out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    if !Path::new(&share).join("extension/pg_hnsw.control").exists() {
        fail(
            "the pg_hnsw extension is not installed into PostgreSQL 15",
            "run scripts/demo.sh (it installs it), or cargo pgrx install --release",
        );
    }
}

fn main() {
    let args = parse_args();
    check_dataset(&args.dataset);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap();

    let (cluster, conn_string) = match &args.connect {
        Some(conn) => (None, conn.clone()),
        None => {
            check_extension_installed();
            let base = repo.join("target/demo");
            let previous_here = base.join("data/postmaster.pid").exists();
            if !previous_here && std::net::TcpListener::bind(("127.0.0.1", args.port)).is_err() {
                fail(
                    &format!("port {} is busy", args.port),
                    "pass --port N with a free port, or stop what listens there",
                );
            }
            println!("Starting a throwaway PostgreSQL 15 cluster in {} on port {} ...", base.display(), args.port);
            let cluster = Cluster::start_in(&base, args.port, &[]);
            let conn = cluster.conn_string();
            (Some(cluster), conn)
        }
    };
    let mut client = Client::connect(&conn_string, NoTls).unwrap_or_else(|e| {
        fail(&format!("cannot connect: {e}"), "check the connection string / that the server runs")
    });
    if let Err(e) = client.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_hnsw") {
        fail(
            &format!("CREATE EXTENSION pg_hnsw failed: {e}"),
            "install pg_hnsw on that server (cargo pgrx install --release)",
        );
    }

    let dir = &args.dataset;
    let base = read_fvecs(&dir.join("base.fvecs"), usize::MAX);
    let labels = read_labels(&dir.join("base_labels.tsv"));
    println!("Loading {} Debian packages (384-dim MiniLM embeddings) ...", base.len());
    let load = load_packages(&mut client, &base, &labels);
    println!("  loaded in {:.1} s", load.as_secs_f64());

    client.batch_execute("SET maintenance_work_mem = '1GB'; SET max_parallel_maintenance_workers = 0").unwrap();
    let build = build_index_with_progress(
        &mut client,
        &conn_string,
        "CREATE INDEX packages_embedding_idx ON packages USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)",
        base.len() as u64,
    );
    let size = relation_size(&mut client, "packages_embedding_idx");
    println!("  index built in {:.1} s, {:.1} MB\n", build.as_secs_f64(), size as f64 / 1e6);

    // The sample questions, as real SQL.
    let samples = read_fvecs(&dir.join("sample_queries.fvecs"), usize::MAX);
    let questions: Vec<String> = std::fs::read_to_string(dir.join("sample_queries.tsv"))
        .unwrap()
        .lines()
        .map(|l| l.split_once('\t').map(|(_, q)| q.to_string()).unwrap_or_default())
        .collect();
    let sql = "SELECT name, embedding <=> $1 AS distance FROM packages ORDER BY embedding <=> $1 LIMIT 5";
    let stmt = client.prepare(sql).unwrap();
    println!("Sample questions: {sql}");
    println!("(left: the hnsw index, hnsw.ef_search = 40; right: exact search with the index off)\n");
    client.batch_execute("SET hnsw.ef_search = 40").unwrap();
    for (q, question) in samples.iter().zip(&questions) {
        let v = Vector::from(q.clone());
        let t = Instant::now();
        let approx = client.query(&stmt, &[&v]).unwrap();
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let mut tx = client.transaction().unwrap();
        tx.batch_execute("SET LOCAL enable_indexscan = off").unwrap();
        let t = Instant::now();
        let exact = tx.query(sql, &[&v]).unwrap();
        let exact_ms = t.elapsed().as_secs_f64() * 1000.0;
        tx.commit().unwrap();
        println!("Q: {question}   [index {ms:.2} ms, exact {exact_ms:.1} ms]");
        for i in 0..5 {
            let cell = |rows: &Vec<postgres::Row>| {
                rows.get(i)
                    .map(|r| format!("{:<32} {:.4}", r.get::<_, String>(0), r.get::<_, f64>(1)))
                    .unwrap_or_default()
            };
            println!("  {}. {:<40} | {}", i + 1, cell(&approx), cell(&exact));
        }
        println!();
    }

    // Recall and QPS over the 1,000 dataset queries.
    let queries = read_fvecs(&dir.join("queries.fvecs"), usize::MAX);
    let truth = read_ivecs(&dir.join("groundtruth.ivecs"), usize::MAX);
    println!("Recall@10 and QPS over {} queries (one client, prepared statement):", queries.len());
    println!("  ef_search | recall@10 |    QPS | p50 ms | p99 ms");
    for ef in [20, 40, 100] {
        let r = query_run(&mut client, "packages", "<=>", &queries, &truth, ef);
        println!("  {:>9} | {:>9.4} | {:>6.0} | {:>6.3} | {:>6.3}", ef, r.recall_at_10, r.qps, r.p50_ms, r.p99_ms);
    }

    match cluster {
        Some(cluster) => {
            println!("\nThe cluster is still running. Connect with:");
            println!("  psql -h {} -p {} -U postgres", cluster.socket_dir.display(), cluster.port);
            println!("  e.g. SELECT name FROM packages ORDER BY embedding <=> (SELECT embedding FROM packages WHERE name = 'nginx') LIMIT 5;");
            println!("Stop it with:");
            println!("  sudo -u postgres {}/pg_ctl -D {} stop", pg_bindir().display(), cluster.data.display());
            cluster.leave_running();
        }
        None => println!("\nDone: table `packages` and index `packages_embedding_idx` are in your database."),
    }
}
