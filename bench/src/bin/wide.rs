//! Wide vectors: a 3,072-dimension `vector` column indexed directly (pages
//! hold half precision, ORDER BY rechecked exactly) against pgvector's way,
//! an expression index on `(embedding::halfvec(3072))`. Seeded clustered
//! synthetic data; recall@10 against brute force, index size, build time and
//! QPS, one client.
//!
//! `cargo run --release --manifest-path bench/Cargo.toml --bin wide --
//! [--n 10000] [--queries 100] [--connect CONNSTR]`. Results also go to
//! `bench/results/wide.md`.

use pg_hnsw_cluster_tests::{Client, Cluster, NoTls};
use pgvector::Vector;
use rand::{Rng, SeedableRng};
use std::time::Instant;

const DIMS: usize = 3072;

fn clustered(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let centres: Vec<Vec<f32>> = (0..50).map(|_| (0..DIMS).map(|_| rng.gen_range(-1.0f32..1.0)).collect()).collect();
    (0..n)
        .map(|_| {
            let c = &centres[rng.gen_range(0..centres.len())];
            c.iter().map(|x| x + rng.gen_range(-0.6f32..0.6)).collect()
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut d, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        d += *x as f64 * *y as f64;
        na += *x as f64 * *x as f64;
        nb += *y as f64 * *y as f64;
    }
    1.0 - d / (na * nb).sqrt()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let n: usize = arg("--n").and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let nq: usize = arg("--queries").and_then(|v| v.parse().ok()).unwrap_or(100);
    let data = clustered(n + nq, 3072);
    let (base, queries) = data.split_at(n);

    let (_cluster, conn) = match arg("--connect") {
        Some(c) => (None, c),
        None => {
            let cluster = Cluster::start("bench_wide", &["shared_buffers = 1GB", "maintenance_work_mem = 2GB"]);
            let conn = cluster.conn_string();
            (Some(cluster), conn)
        }
    };
    let mut c = Client::connect(&conn, NoTls).expect("connect");
    c.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS pg_hnsw;
         DROP TABLE IF EXISTS wide; CREATE TABLE wide (id int, embedding vector(3072));",
    )
    .unwrap();
    let insert = c.prepare("INSERT INTO wide VALUES ($1, $2)").unwrap();
    let mut tx = c.transaction().unwrap();
    for (i, v) in base.iter().enumerate() {
        tx.execute(&insert, &[&(i as i32), &Vector::from(v.clone())]).unwrap();
    }
    tx.commit().unwrap();
    c.batch_execute("VACUUM ANALYZE wide").unwrap();

    let truth: Vec<Vec<i32>> = queries
        .iter()
        .map(|q| {
            let mut d: Vec<(f64, i32)> = base.iter().enumerate().map(|(i, b)| (cosine(q, b), i as i32)).collect();
            d.sort_by(|a, b| a.0.total_cmp(&b.0));
            d.into_iter().take(10).map(|x| x.1).collect()
        })
        .collect();

    let mut table = format!(
        "{n} × {DIMS} clustered, cosine, m 16, ef_construction 64\n\n| index | build s | size MB | ef_search | recall@10 | QPS |\n|---|---|---|---|---|---|\n"
    );
    let variants = [
        (
            "vector(3072), vector_cosine_ops",
            "CREATE INDEX wide_idx ON wide USING hnsw (embedding vector_cosine_ops)",
            "embedding <=> $1",
        ),
        (
            "(embedding::halfvec(3072)), halfvec_cosine_ops",
            "CREATE INDEX wide_idx ON wide USING hnsw ((embedding::halfvec(3072)) halfvec_cosine_ops)",
            "embedding::halfvec(3072) <=> $1::vector::halfvec(3072)",
        ),
    ];
    for (name, create, order) in variants {
        c.batch_execute("DROP INDEX IF EXISTS wide_idx").unwrap();
        let t = Instant::now();
        c.batch_execute(create).unwrap();
        let build = t.elapsed().as_secs_f64();
        let size: i64 = c.query_one("SELECT pg_relation_size('wide_idx')", &[]).unwrap().get(0);
        let sql = format!("SELECT id FROM wide ORDER BY {order} LIMIT 10");
        let stmt = c.prepare(&sql).unwrap();
        for ef in [40, 100] {
            c.batch_execute(&format!("SET hnsw.ef_search = {ef}")).unwrap();
            let run = |c: &mut Client, q: &[f32]| -> Vec<i32> {
                c.query(&stmt, &[&Vector::from(q.to_vec())]).unwrap().iter().map(|r| r.get(0)).collect()
            };
            run(&mut c, &queries[0]);
            let t = Instant::now();
            let mut hits = 0;
            for (q, tr) in queries.iter().zip(&truth) {
                hits += run(&mut c, q).iter().filter(|id| tr.contains(id)).count();
            }
            let qps = queries.len() as f64 / t.elapsed().as_secs_f64();
            let line = format!(
                "| {name} | {build:.1} | {:.1} | {ef} | {:.3} | {qps:.0} |\n",
                size as f64 / 1e6,
                hits as f64 / (10 * queries.len()) as f64
            );
            eprint!("{line}");
            table.push_str(&line);
        }
    }
    let out = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("wide.md"), &table).unwrap();
    println!("{table}");
}
