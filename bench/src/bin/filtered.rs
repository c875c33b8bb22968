//! Filtered search on the real dataset: `WHERE category = $family ORDER BY
//! embedding <=> $q LIMIT 10`, where the category is the Debian package-name
//! family (`lib*`, `python3-*`, `r-cran-*`, `fonts-*`, `postgresql*`: 41% down
//! to 0.16% of the rows). Exact filtered ground truth is computed here by brute
//! force; per family and setting the bench reports recall@10, mean rows
//! returned, QPS and the plan PostgreSQL chose.
//!
//! `cargo run --release --manifest-path bench/Cargo.toml --bin filtered --
//! [--connect CONNSTR] [--queries 200] [--dataset DIR] [--extension NAME]
//! [--out FILE]`: `--extension vector` drives pgvector (when installed) with
//! the same queries, leaving out the settings it does not have. With `--connect`,
//! uses (and completes) the `packages` table the demo leaves behind;
//! otherwise starts its own cluster and loads the dataset. Results also go to
//! `bench/results/filtered.md`.

use pg_hnsw_bench::{build_index_with_progress, fail, load_packages, read_labels};
use pg_hnsw_cluster_tests::{read_fvecs, Client, Cluster, NoTls};
use pgvector::Vector;
use std::path::PathBuf;
use std::time::Instant;

/// The name families, their SQL test, in decreasing share of the rows.
const FAMILIES: [(&str, &str); 5] = [
    ("lib", "name LIKE 'lib%'"),
    ("python3", "name LIKE 'python3-%'"),
    ("r-cran", "name LIKE 'r-cran-%'"),
    ("fonts", "name LIKE 'fonts-%'"),
    ("postgresql", "name LIKE 'postgresql%'"),
];

struct Setting {
    name: &'static str,
    sql: &'static str,
    attribute_index: bool,
    /// The family is a parameter (`category = $2`) under
    /// `plan_cache_mode = force_generic_plan`, as prepared statements run
    /// after their fifth execution: the planner cannot see its selectivity.
    generic: bool,
}

const SETTINGS: [Setting; 8] = [
    Setting {
        name: "iterative off, ef 40",
        sql: "SET hnsw.iterative_scan = off",
        attribute_index: false,
        generic: false,
    },
    Setting {
        name: "relaxed_order, ef 40",
        sql: "SET hnsw.iterative_scan = relaxed_order",
        attribute_index: false,
        generic: false,
    },
    Setting {
        name: "strict_order, ef 40",
        sql: "SET hnsw.iterative_scan = strict_order",
        attribute_index: false,
        generic: false,
    },
    Setting {
        name: "relaxed_order, forced index",
        sql: "SET hnsw.iterative_scan = relaxed_order; SET enable_seqscan = off",
        attribute_index: false,
        generic: false,
    },
    Setting {
        name: "relaxed_order + btree(category)",
        sql: "SET hnsw.iterative_scan = relaxed_order",
        attribute_index: true,
        generic: false,
    },
    Setting {
        name: "generic plan, relaxed_order",
        sql: "SET hnsw.iterative_scan = relaxed_order",
        attribute_index: false,
        generic: true,
    },
    Setting {
        name: "generic plan, strict_order",
        sql: "SET hnsw.iterative_scan = strict_order",
        attribute_index: false,
        generic: true,
    },
    Setting {
        name: "generic plan, relaxed_order, exact_fallback off",
        sql: "SET hnsw.iterative_scan = relaxed_order; SET hnsw.exact_fallback = off",
        attribute_index: false,
        generic: true,
    },
];

fn category_of(name: &str) -> &'static str {
    for (family, _) in FAMILIES {
        let prefix = match family {
            "python3" => "python3-",
            "r-cran" => "r-cran-",
            "fonts" => "fonts-",
            other => other,
        };
        if name.starts_with(prefix) {
            return family;
        }
    }
    "other"
}

/// The plan's scan nodes, e.g. "Index Scan using packages_embedding_idx"
/// (`family`: the value of `$2`, for a generic plan, which `EXPLAIN EXECUTE`
/// of a named prepared statement shows; an unnamed one is planned for its
/// values).
fn plan_summary(c: &mut Client, sql: &str, q: &Vector, family: Option<&str>) -> String {
    let rows = match family {
        Some(f) => {
            let literal: Vec<String> = q.as_slice().iter().map(|x| x.to_string()).collect();
            c.batch_execute(&format!("PREPARE plan_of(vector, text) AS {sql}")).unwrap();
            let rows = c.query(&format!("EXPLAIN EXECUTE plan_of('[{}]', '{f}')", literal.join(",")), &[]).unwrap();
            c.batch_execute("DEALLOCATE plan_of").unwrap();
            rows
        }
        None => c.query(&format!("EXPLAIN {sql}"), &[q]).unwrap(),
    };
    let mut nodes: Vec<String> = Vec::new();
    for r in rows {
        let line: String = r.get(0);
        let t = line.trim_start().trim_start_matches("->").trim();
        for kind in ["Index Scan using", "Seq Scan", "Bitmap Heap Scan", "Index Only Scan", "Bitmap Index Scan on"] {
            if t.starts_with(kind) {
                nodes.push(t.split("  ").next().unwrap_or(t).split(" (").next().unwrap_or(t).to_string());
            }
        }
    }
    nodes.join(" + ")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let nq: usize = arg("--queries").and_then(|v| v.parse().ok()).unwrap_or(200);
    let dataset = arg("--dataset").map(PathBuf::from).unwrap_or_else(pg_hnsw_cluster_tests::dataset_dir);
    let base = read_fvecs(&dataset.join("base.fvecs"), usize::MAX);
    let queries = read_fvecs(&dataset.join("queries.fvecs"), nq);
    let labels = read_labels(&dataset.join("base_labels.tsv"));

    let (_cluster, conn) = match arg("--connect") {
        Some(conn) => (None, conn),
        None => {
            let cluster =
                Cluster::start("bench_filtered", &["shared_buffers = 1GB", "max_parallel_workers_per_gather = 0"]);
            let conn = cluster.conn_string();
            (Some(cluster), conn)
        }
    };
    let mut c =
        Client::connect(&conn, NoTls).unwrap_or_else(|e| fail(&format!("cannot connect: {e}"), "check --connect"));
    let extension = arg("--extension").unwrap_or_else(|| "pg_hnsw".to_string());
    c.batch_execute(&format!("CREATE EXTENSION IF NOT EXISTS {extension}")).unwrap();
    let have: i64 =
        c.query_one("SELECT count(*) FROM pg_class WHERE relname = 'packages' AND relkind = 'r'", &[]).unwrap().get(0);
    if have == 0 {
        load_packages(&mut c, &base, &labels);
    }
    c.batch_execute(
        "ALTER TABLE packages ADD COLUMN IF NOT EXISTS category text;
         DROP INDEX IF EXISTS packages_category_idx;",
    )
    .unwrap();
    let case: Vec<String> = FAMILIES.iter().map(|(f, test)| format!("WHEN {test} THEN '{f}'")).collect();
    c.batch_execute(&format!(
        "UPDATE packages SET category = CASE {} ELSE 'other' END WHERE category IS NULL",
        case.join(" ")
    ))
    .unwrap();
    c.batch_execute("VACUUM ANALYZE packages").unwrap();
    let indexed: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
             WHERE i.indrelid = 'packages'::regclass AND a.amname = 'hnsw' AND i.indpred IS NULL",
            &[],
        )
        .unwrap()
        .get(0);
    if indexed == 0 {
        let took = build_index_with_progress(
            &mut c,
            &conn,
            "CREATE INDEX ON packages USING hnsw (embedding vector_cosine_ops)",
            base.len() as u64,
        );
        eprintln!("index built in {:.1} s", took.as_secs_f64());
    }

    // Exact filtered ground truth (cosine on unit vectors: largest dot).
    let family_rows: Vec<Vec<usize>> =
        FAMILIES.iter().map(|(f, _)| (0..base.len()).filter(|&i| category_of(&labels[i].0) == *f).collect()).collect();
    let truth: Vec<Vec<Vec<i32>>> = family_rows
        .iter()
        .map(|rows| {
            queries
                .iter()
                .map(|q| {
                    let mut d: Vec<(f64, i32)> = rows
                        .iter()
                        .map(|&i| {
                            let dot: f64 = q.iter().zip(&base[i]).map(|(a, b)| *a as f64 * *b as f64).sum();
                            (1.0 - dot, i as i32)
                        })
                        .collect();
                    d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                    d.into_iter().take(10).map(|x| x.1).collect()
                })
                .collect()
        })
        .collect();

    let mut table = String::from(
        "| family | share | setting | plan | recall@10 | rows returned | QPS |\n|---|---|---|---|---|---|---|\n",
    );
    let params: Vec<Vector> = queries.iter().map(|q| Vector::from(q.clone())).collect();
    for setting in &SETTINGS {
        if extension != "pg_hnsw" && setting.sql.contains("exact_fallback") {
            continue;
        }
        c.batch_execute("RESET ALL; SET hnsw.ef_search = 40").unwrap();
        c.batch_execute(setting.sql).unwrap();
        if setting.attribute_index {
            c.batch_execute(
                "CREATE INDEX IF NOT EXISTS packages_category_idx ON packages (category); ANALYZE packages",
            )
            .unwrap();
        } else {
            c.batch_execute("DROP INDEX IF EXISTS packages_category_idx").unwrap();
        }
        for (fi, (family, _)) in FAMILIES.iter().enumerate() {
            let share = family_rows[fi].len() as f64 / base.len() as f64;
            let family_param = family.to_string();
            let sql = if setting.generic {
                c.batch_execute("SET plan_cache_mode = force_generic_plan").unwrap();
                "SELECT id FROM packages WHERE category = $2 ORDER BY embedding <=> $1 LIMIT 10".to_string()
            } else {
                format!("SELECT id FROM packages WHERE category = '{family}' ORDER BY embedding <=> $1 LIMIT 10")
            };
            let stmt = c.prepare(&sql).unwrap();
            let run = |c: &mut Client, p: &Vector| {
                if setting.generic {
                    c.query(&stmt, &[p, &family_param]).unwrap()
                } else {
                    c.query(&stmt, &[p]).unwrap()
                }
            };
            let plan = plan_summary(&mut c, &sql, &params[0], setting.generic.then_some(family));
            for p in params.iter().take(5) {
                run(&mut c, p);
            }
            let (mut hits, mut returned) = (0usize, 0usize);
            let start = Instant::now();
            for (p, t) in params.iter().zip(&truth[fi]) {
                let rows = run(&mut c, p);
                returned += rows.len();
                hits += rows.iter().filter(|r| t.contains(&r.get::<_, i32>(0))).count();
            }
            let secs = start.elapsed().as_secs_f64();
            let line = format!(
                "| {family} | {:.2}% | {} | {plan} | {:.3} | {:.1} | {:.0} |\n",
                share * 100.0,
                setting.name,
                hits as f64 / (10 * params.len()) as f64,
                returned as f64 / params.len() as f64,
                params.len() as f64 / secs
            );
            eprint!("{line}");
            table.push_str(&line);
        }
    }
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::create_dir_all(&out).unwrap();
    let file = arg("--out").map(PathBuf::from).unwrap_or_else(|| out.join("filtered.md"));
    std::fs::write(file, &table).unwrap();
    println!("{table}");
}
