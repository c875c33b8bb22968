//! The semantic-search demo: Debian package descriptions, embedded with
//! all-MiniLM-L6-v2, searched with `ORDER BY embedding <=> $1 LIMIT 5`.
//!
//! Usage: `demo [--ask "QUESTION"]... [--port N] [--connect CONNSTR] [--dataset DIR] [--fresh]`
//! - without `--connect`: starts a throwaway cluster under `target/demo`
//!   (as `postgres`, on port 54329 by default) and leaves it running;
//! - with `--connect`: uses your server, where `pg_hnsw` must be installed.
//!
//! Without `--ask`: loads the packages, builds the index (progress bars),
//! embeds the dataset's ten sample questions from their text with
//! all-MiniLM-L6-v2 (checking each against the stored embedding), answers
//! them with and without the index, measures recall@10 and QPS, then, when
//! standard input is a terminal, asks for questions of your own.
//!
//! With `--ask`: answers the given questions, reusing the table and index a
//! previous run left (rebuilding them if missing, or with `--fresh`).

use pg_hnsw_bench::embed::{cosine_distance, read_sample_questions, Embedder};
use pg_hnsw_bench::{build_index_with_progress, fail, load_packages, query_run, read_labels, relation_size};
use pg_hnsw_cluster_tests::{dataset_dir, pg_bindir, pg_major, read_fvecs, read_ivecs, Client, Cluster, NoTls};
use pgvector::Vector;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

struct Args {
    port: u16,
    connect: Option<String>,
    dataset: PathBuf,
    ask: Vec<String>,
    fresh: bool,
}

const USAGE: &str = "usage: demo [--ask \"QUESTION\"]... [--port N] [--connect CONNSTR] [--dataset DIR] [--fresh]";

fn parse_args() -> Args {
    // One default port per version, so a PostgreSQL 15 demo left running does
    // not stand in the way of a PostgreSQL 18 one.
    let port = if pg_major() == 15 { 54329 } else { 54300 + pg_major() as u16 };
    let mut args = Args { port, connect: None, dataset: dataset_dir(), ask: Vec::new(), fresh: false };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| fail(&format!("{a} needs a value"), "see --help"));
        match a.as_str() {
            "--port" => {
                args.port = value().parse().unwrap_or_else(|_| fail("--port takes a number", "e.g. --port 54330"))
            }
            "--connect" => args.connect = Some(value()),
            "--dataset" => args.dataset = PathBuf::from(value()),
            "--ask" => {
                let q = value();
                if q.trim().is_empty() {
                    fail("--ask needs a question", "e.g. --ask \"record my terminal session as a video\"");
                }
                args.ask.push(q)
            }
            "--fresh" => args.fresh = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => fail(&format!("unknown argument {other}"), USAGE),
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
            &format!("the pg_hnsw extension is not installed into PostgreSQL {}", pg_major()),
            "run scripts/demo.sh (it installs it), or cargo pgrx install --release --pg-config PG_CONFIG",
        );
    }
}

/// The demo's table and index, already complete in the database?
fn packages_ready(client: &mut Client, rows: usize) -> bool {
    let sql = "SELECT (SELECT count(*) FROM packages), \
               (SELECT count(*) FROM pg_index WHERE indexrelid = 'packages_embedding_idx'::regclass AND indisvalid)";
    match client.query_one(sql, &[]) {
        Ok(r) => r.get::<_, i64>(0) == rows as i64 && r.get::<_, i64>(1) == 1,
        Err(_) => false,
    }
}

/// Connects to the cluster a previous demo run left under `base`, starting it
/// again if it was stopped. `None` if there is none or it does not answer.
fn reuse_cluster(base: &Path, port: u16) -> Option<(String, Client)> {
    let data = base.join("data");
    if !data.join("PG_VERSION").exists() {
        return None;
    }
    let conn = format!("host={} port={port} user=postgres dbname=postgres", base.join("sock").display());
    if let Ok(c) = Client::connect(&conn, NoTls) {
        return Some((conn, c));
    }
    if data.join("postmaster.pid").exists() {
        return None;
    }
    let cluster = std::panic::catch_unwind(|| Cluster::start_existing(data.clone(), base.join("sock"), port)).ok()?;
    cluster.leave_running();
    Client::connect(&conn, NoTls).ok().map(|c| (conn, c))
}

/// Prints the top five packages for `v`, nearest first, with distances.
fn answer(client: &mut Client, stmt: &postgres::Statement, question: &str, v: &[f32]) {
    let t = Instant::now();
    let rows = client.query(stmt, &[&Vector::from(v.to_vec())]).unwrap();
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    println!("Q: {question}   [{ms:.2} ms]");
    for (i, r) in rows.iter().enumerate() {
        let desc: Option<String> = r.get(1);
        println!("  {}. {:<30} {:.4}  {}", i + 1, r.get::<_, String>(0), r.get::<_, f64>(2), desc.unwrap_or_default());
    }
    println!();
}

/// Prints the server's version and the plan of the questions' query (the
/// hnsw index scan), so a run shows which server answered and how.
fn print_server_and_plan(client: &mut Client) {
    let version: String = client.query_one("SHOW server_version", &[]).unwrap().get(0);
    let probe = "EXPLAIN (COSTS OFF) SELECT name, description, embedding <=> (SELECT embedding FROM packages LIMIT 1) \
                 AS distance FROM packages ORDER BY 3 LIMIT 5";
    let plan: Vec<String> = client.query(probe, &[]).unwrap().iter().map(|r| r.get::<_, String>(0)).collect();
    let scan = plan
        .iter()
        .find(|l| l.contains("Index Scan"))
        .or_else(|| plan.iter().find(|l| l.contains(" Scan ")))
        .map(|l| l.trim().trim_start_matches("->  ").to_string());
    println!("Server: PostgreSQL {version}; plan: {}\n", scan.unwrap_or_else(|| "no scan node".into()));
}

/// Reads questions from the terminal until an empty line or end of input.
fn prompt_loop(client: &mut Client, stmt: &postgres::Statement, embedder: &Embedder) {
    use std::io::BufRead;
    println!("Ask your own questions (an empty line or Ctrl-D ends):");
    let stdin = std::io::stdin();
    loop {
        print!("question> ");
        std::io::stdout().flush().ok();
        let mut line = String::new();
        if stdin.lock().read_line(&mut line).unwrap_or(0) == 0 {
            println!();
            break;
        }
        let q = line.trim();
        if q.is_empty() {
            break;
        }
        match embedder.embed(q) {
            Ok(v) => answer(client, stmt, q, &v),
            Err(e) => eprintln!("error: {e}"),
        }
    }
}

const ASK_SQL: &str =
    "SELECT name, description, embedding <=> $1 AS distance FROM packages ORDER BY embedding <=> $1 LIMIT 5";

fn main() {
    let args = parse_args();
    check_dataset(&args.dataset);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap();
    let t = Instant::now();
    let embedder =
        Embedder::load_default().unwrap_or_else(|e| fail(&e, "run scripts/setup.sh (it fetches the model once)"));
    let model_s = t.elapsed().as_secs_f64();
    let dir = &args.dataset;
    let base = read_fvecs(&dir.join("base.fvecs"), usize::MAX);
    // One cluster directory per version (a data directory only starts under
    // the major version that created it).
    let base_dir = repo.join(demo_dir_name());

    // --ask reuses the table and index a previous run left, when complete.
    if !args.ask.is_empty() && !args.fresh {
        let existing = match &args.connect {
            Some(conn) => Client::connect(conn, NoTls).ok(),
            None => reuse_cluster(&base_dir, args.port).map(|(_, c)| c),
        };
        if let Some(mut client) = existing {
            if packages_ready(&mut client, base.len()) {
                let stmt = client.prepare(ASK_SQL).unwrap();
                client.batch_execute("SET hnsw.ef_search = 40").unwrap();
                println!("(model loaded in {model_s:.1} s; table `packages` and its index from the previous run)");
                print_server_and_plan(&mut client);
                for q in &args.ask {
                    let v = embedder.embed(q).unwrap_or_else(|e| fail(&e, "check the model files"));
                    answer(&mut client, &stmt, q, &v);
                }
                return;
            }
        }
    }

    let (cluster, conn_string) = match &args.connect {
        Some(conn) => (None, conn.clone()),
        None => {
            check_extension_installed();
            let previous_here = base_dir.join("data/postmaster.pid").exists();
            if !previous_here && std::net::TcpListener::bind(("127.0.0.1", args.port)).is_err() {
                fail(
                    &format!("port {} is busy", args.port),
                    "pass --port N with a free port, or stop what listens there",
                );
            }
            println!(
                "Starting a throwaway PostgreSQL {} cluster in {} on port {} ...",
                pg_major(),
                base_dir.display(),
                args.port
            );
            let cluster = Cluster::start_in(&base_dir, args.port, &[]);
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

    let labels = read_labels(&dir.join("base_labels.tsv"));
    println!("Loading {} Debian packages (384-dim MiniLM embeddings) ...", base.len());
    let load = load_packages(&mut client, &base, &labels);
    println!("  loaded in {:.1} s", load.as_secs_f64());

    client.batch_execute("SET maintenance_work_mem = '1GB'; SET max_parallel_maintenance_workers = 0").unwrap();
    println!("Building the hnsw index (m = 16, ef_construction = 64) ...");
    let build = build_index_with_progress(
        &mut client,
        &conn_string,
        "CREATE INDEX packages_embedding_idx ON packages USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)",
        base.len() as u64,
    );
    let size = relation_size(&mut client, "packages_embedding_idx");
    println!("  index built in {:.1} s, {:.1} MB\n", build.as_secs_f64(), size as f64 / 1e6);
    client.batch_execute("SET hnsw.ef_search = 40").unwrap();
    let ask = client.prepare(ASK_SQL).unwrap();
    print_server_and_plan(&mut client);

    if !args.ask.is_empty() {
        for q in &args.ask {
            let v = embedder.embed(q).unwrap_or_else(|e| fail(&e, "check the model files"));
            answer(&mut client, &ask, q, &v);
        }
        finish(cluster);
        return;
    }

    // The sample questions, embedded here from their text and checked
    // against the embeddings stored with the dataset.
    let stored = read_fvecs(&dir.join("sample_queries.fvecs"), usize::MAX);
    let questions =
        read_sample_questions(&dir.join("sample_queries.tsv")).unwrap_or_else(|e| fail(&e, "check the dataset folder"));
    let t = Instant::now();
    let samples: Vec<Vec<f32>> =
        questions.iter().map(|q| embedder.embed(q).unwrap_or_else(|e| fail(&e, "check the model files"))).collect();
    let embed_ms = t.elapsed().as_secs_f64() * 1000.0 / questions.len().max(1) as f64;
    let worst = samples.iter().zip(&stored).map(|(a, b)| cosine_distance(a, b)).fold(0.0f64, f64::max);
    println!(
        "Embedded the {} sample questions with all-MiniLM-L6-v2 in process (model loaded in {model_s:.1} s, {embed_ms:.0} ms per question)",
        questions.len()
    );
    println!("  max cosine distance to the dataset's stored embeddings: {worst:.2e} (must be below 1e-4)");
    if samples.len() != stored.len() || worst >= 1e-4 {
        fail(
            &format!("the question embeddings differ from sample_queries.fvecs (max cosine distance {worst:.2e})"),
            "check the model files (scripts/setup.sh verifies their sha256)",
        );
    }

    let sql = "SELECT name, embedding <=> $1 AS distance FROM packages ORDER BY embedding <=> $1 LIMIT 5";
    let stmt = client.prepare(sql).unwrap();
    println!("\nSample questions: {sql}");
    println!("(left: the hnsw index, hnsw.ef_search = 40; right: exact search with the index off)\n");
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
    let mut lines = vec!["  ef_search | recall@10 |    QPS | p50 ms | p99 ms".to_string()];
    for ef in [20, 40, 100] {
        let r = query_run(&mut client, "packages", "<=>", &queries, &truth, ef);
        lines.push(format!(
            "  {:>9} | {:>9.4} | {:>6.0} | {:>6.3} | {:>6.3}",
            ef, r.recall_at_10, r.qps, r.p50_ms, r.p99_ms
        ));
    }
    println!("{}", lines.join("\n"));
    println!("\nTune from SQL: SELECT * FROM hnsw_recall('packages_embedding_idx');");

    if std::io::stdin().is_terminal() {
        println!();
        client.batch_execute("SET hnsw.ef_search = 40").unwrap();
        prompt_loop(&mut client, &ask, &embedder);
    }
    finish(cluster);
}

/// The throwaway cluster's directory under the repository: `target/demo` on
/// PostgreSQL 15, `target/demo-pgNN` on other versions.
fn demo_dir_name() -> String {
    match pg_major() {
        15 => "target/demo".to_string(),
        major => format!("target/demo-pg{major}"),
    }
}

/// Prints how to reach (and stop) the cluster, leaving it running.
fn finish(cluster: Option<Cluster>) {
    match cluster {
        Some(cluster) => {
            println!("\nThe cluster is still running. Connect with:");
            let psql = pg_bindir().join("psql");
            println!("  {} -h {} -p {} -U postgres", psql.display(), cluster.socket_dir.display(), cluster.port);
            println!("  e.g. SELECT name FROM packages ORDER BY embedding <=> (SELECT embedding FROM packages WHERE name = 'nginx') LIMIT 5;");
            let pg = if pg_major() == 15 { String::new() } else { format!("--pg {} ", pg_major()) };
            println!("Ask more questions (reuses this table and index): scripts/demo.sh {pg}--ask \"your question\"");
            println!("Stop it with:");
            println!("  sudo -u postgres {}/pg_ctl -D {} stop", pg_bindir().display(), cluster.data.display());
            cluster.leave_running();
        }
        None => println!("\nDone: table `packages` and index `packages_embedding_idx` are in your database."),
    }
}
