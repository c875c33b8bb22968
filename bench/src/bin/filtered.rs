//! Filtered search on the real dataset: `WHERE category = $family ORDER BY
//! embedding <=> $q LIMIT 10`, where the category is the Debian package-name
//! family (`lib*`, `python3-*`, `r-cran-*`, `fonts-*`, `postgresql*`: 41% down
//! to 0.16% of the rows). Exact filtered ground truth is computed here by brute
//! force; per filter and setting the bench reports recall@10, mean rows
//! returned, QPS and the plan PostgreSQL chose. Besides the families: a
//! multi-tenant case (`tenant_id = $2`, 1,000 tenants) and an array-tag case
//! (`tags && $2`, 200 tags, two per row). The last settings (pg_hnsw only)
//! replace the single-column index by one with filter columns,
//! `(embedding vector_cosine_ops, category, tenant_id, tags)`.
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
    /// The filter value is a parameter (`category = $2`) under
    /// `plan_cache_mode = force_generic_plan`, as prepared statements run
    /// after their fifth execution: the planner cannot see its selectivity.
    generic: bool,
    /// pg_hnsw's multi-column index `(embedding vector_cosine_ops, category,
    /// tenant_id, tags)` replaces the single-column one: the filter is an
    /// index condition evaluated inside the graph search.
    filter_columns: bool,
}

const fn setting(name: &'static str, sql: &'static str, generic: bool) -> Setting {
    Setting { name, sql, attribute_index: false, generic, filter_columns: false }
}

const SETTINGS: [Setting; 11] = [
    setting("iterative off, ef 40", "SET hnsw.iterative_scan = off", false),
    setting("relaxed_order, ef 40", "SET hnsw.iterative_scan = relaxed_order", false),
    setting("strict_order, ef 40", "SET hnsw.iterative_scan = strict_order", false),
    setting("relaxed_order, forced index", "SET hnsw.iterative_scan = relaxed_order; SET enable_seqscan = off", false),
    Setting {
        attribute_index: true,
        ..setting("relaxed_order + btree(column)", "SET hnsw.iterative_scan = relaxed_order", false)
    },
    setting("generic plan, relaxed_order", "SET hnsw.iterative_scan = relaxed_order", true),
    setting("generic plan, strict_order", "SET hnsw.iterative_scan = strict_order", true),
    setting(
        "generic plan, relaxed_order, exact_fallback off",
        "SET hnsw.iterative_scan = relaxed_order; SET hnsw.exact_fallback = off",
        true,
    ),
    // The index with filter columns: last, as it replaces the other.
    Setting {
        filter_columns: true,
        ..setting("filter columns in index, iterative off", "SET hnsw.iterative_scan = off", false)
    },
    Setting {
        filter_columns: true,
        ..setting("filter columns in index, generic plan", "SET hnsw.iterative_scan = off", true)
    },
    Setting {
        filter_columns: true,
        ..setting("filter columns in index, generic plan, strict_order", "SET hnsw.iterative_scan = strict_order", true)
    },
];

/// Tenants of the multi-tenant case: row `id` belongs to tenant
/// `id * 7919 % 1000` (0.1% of the rows each).
const TENANTS: i64 = 1000;
/// Tags of the array case: row `id` carries tags `id * 31 % 200` and
/// `(id * 17 + 3) % 200` (about 1% of the rows each).
const TAGS: i64 = 200;

fn tenant_of(id: usize) -> i32 {
    (id as i64 * 7919 % TENANTS) as i32
}

fn tags_of(id: usize) -> [i32; 2] {
    [(id as i64 * 31 % TAGS) as i32, ((id as i64 * 17 + 3) % TAGS) as i32]
}

/// A filter value.
#[derive(Clone)]
enum Param {
    Text(String),
    Int(i32),
    IntArray(Vec<i32>),
}

impl Param {
    fn sql_literal(&self) -> String {
        match self {
            Param::Text(t) => format!("'{t}'"),
            Param::Int(i) => i.to_string(),
            Param::IntArray(a) => {
                format!("'{{{}}}'::int4[]", a.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(","))
            }
        }
    }

    fn sql_type(&self) -> &'static str {
        match self {
            Param::Text(_) => "text",
            Param::Int(_) => "int4",
            Param::IntArray(_) => "int4[]",
        }
    }

    fn to_sql(&self) -> Box<dyn postgres::types::ToSql + Sync> {
        match self {
            Param::Text(t) => Box::new(t.clone()),
            Param::Int(i) => Box::new(*i),
            Param::IntArray(a) => Box::new(a.clone()),
        }
    }
}

/// One filter: its name, its condition on `$2`, each query's filter value,
/// the rows each value keeps (ids), and the share of rows it keeps on average.
struct Case {
    name: String,
    condition: &'static str,
    params: Vec<Param>,
    rows: Vec<Vec<usize>>,
    share: f64,
}

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
/// (`param`: the value of `$2`, for a generic plan, which `EXPLAIN EXECUTE`
/// of a named prepared statement shows; an unnamed one is planned for its
/// values).
fn plan_summary(c: &mut Client, sql: &str, q: &Vector, param: Option<&Param>) -> String {
    let rows = match param {
        Some(p) => {
            let literal: Vec<String> = q.as_slice().iter().map(|x| x.to_string()).collect();
            c.batch_execute(&format!("PREPARE plan_of(vector, {}) AS {sql}", p.sql_type())).unwrap();
            let rows = c
                .query(&format!("EXPLAIN EXECUTE plan_of('[{}]', {})", literal.join(","), p.sql_literal()), &[])
                .unwrap();
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
        if t.starts_with("Index Cond:") {
            nodes.push("Index Cond".to_string());
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
        "ALTER TABLE packages ADD COLUMN IF NOT EXISTS category text,
             ADD COLUMN IF NOT EXISTS tenant_id int4, ADD COLUMN IF NOT EXISTS tags int4[];
         DROP INDEX IF EXISTS packages_category_idx, packages_tenant_id_idx, packages_tags_idx, packages_filter_idx;",
    )
    .unwrap();
    let case: Vec<String> = FAMILIES.iter().map(|(f, test)| format!("WHEN {test} THEN '{f}'")).collect();
    c.batch_execute(&format!(
        "UPDATE packages SET category = CASE {} ELSE 'other' END,
             tenant_id = (id::int8 * 7919 % {TENANTS})::int4,
             tags = ARRAY[(id::int8 * 31 % {TAGS})::int4, ((id::int8 * 17 + 3) % {TAGS})::int4]
         WHERE category IS NULL OR tenant_id IS NULL OR tags IS NULL",
        case.join(" ")
    ))
    .unwrap();
    c.batch_execute("VACUUM ANALYZE packages").unwrap();
    let single_index = |c: &mut Client| {
        let indexed: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
                 WHERE i.indrelid = 'packages'::regclass AND a.amname = 'hnsw' AND i.indpred IS NULL AND i.indnatts = 1",
                &[],
            )
            .unwrap()
            .get(0);
        if indexed == 0 {
            let took = build_index_with_progress(
                c,
                &conn,
                "CREATE INDEX ON packages USING hnsw (embedding vector_cosine_ops)",
                base.len() as u64,
            );
            eprintln!("single-column index built in {:.1} s", took.as_secs_f64());
        }
    };
    single_index(&mut c);

    // The filters: the five name families (one value each), then the
    // multi-tenant and the array-tag cases (a value per query).
    let mut cases: Vec<Case> = FAMILIES
        .iter()
        .map(|(f, _)| {
            let rows: Vec<usize> = (0..base.len()).filter(|&i| category_of(&labels[i].0) == *f).collect();
            Case {
                name: f.to_string(),
                condition: "category = $2",
                params: vec![Param::Text(f.to_string()); queries.len()],
                share: rows.len() as f64 / base.len() as f64,
                rows: vec![rows; queries.len()],
            }
        })
        .collect();
    let tenants: Vec<i32> = (0..queries.len()).map(|q| (q as i64 * 37 % TENANTS) as i32).collect();
    let tenant_rows: Vec<Vec<usize>> =
        tenants.iter().map(|&t| (0..base.len()).filter(|&i| tenant_of(i) == t).collect()).collect();
    cases.push(Case {
        name: format!("tenant (1 of {TENANTS})"),
        condition: "tenant_id = $2",
        params: tenants.iter().map(|&t| Param::Int(t)).collect(),
        share: tenant_rows.iter().map(Vec::len).sum::<usize>() as f64 / (queries.len() * base.len()) as f64,
        rows: tenant_rows,
    });
    let tags: Vec<i32> = (0..queries.len()).map(|q| (q as i64 * 13 % TAGS) as i32).collect();
    let tag_rows: Vec<Vec<usize>> =
        tags.iter().map(|&t| (0..base.len()).filter(|&i| tags_of(i).contains(&t)).collect()).collect();
    cases.push(Case {
        name: format!("tags && (1 of {TAGS})"),
        condition: "tags && $2",
        params: tags.iter().map(|&t| Param::IntArray(vec![t])).collect(),
        share: tag_rows.iter().map(Vec::len).sum::<usize>() as f64 / (queries.len() * base.len()) as f64,
        rows: tag_rows,
    });

    // Exact filtered ground truth (cosine on unit vectors: largest dot).
    let truth: Vec<Vec<Vec<i32>>> = cases
        .iter()
        .map(|case| {
            queries
                .iter()
                .zip(&case.rows)
                .map(|(q, rows)| {
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
        "| filter | share | setting | plan | recall@10 | rows returned | QPS |\n|---|---|---|---|---|---|---|\n",
    );
    let vectors: Vec<Vector> = queries.iter().map(|q| Vector::from(q.clone())).collect();
    let mut filter_index_built = false;
    for setting in &SETTINGS {
        if extension != "pg_hnsw" && (setting.sql.contains("exact_fallback") || setting.filter_columns) {
            continue;
        }
        c.batch_execute("RESET ALL; SET hnsw.ef_search = 40").unwrap();
        c.batch_execute(setting.sql).unwrap();
        if setting.attribute_index {
            c.batch_execute(
                "CREATE INDEX IF NOT EXISTS packages_category_idx ON packages (category);
                 CREATE INDEX IF NOT EXISTS packages_tenant_id_idx ON packages (tenant_id);
                 CREATE INDEX IF NOT EXISTS packages_tags_idx ON packages USING gin (tags); ANALYZE packages",
            )
            .unwrap();
        } else {
            c.batch_execute("DROP INDEX IF EXISTS packages_category_idx, packages_tenant_id_idx, packages_tags_idx")
                .unwrap();
        }
        if setting.filter_columns && !filter_index_built {
            c.batch_execute(
                "DO $$ DECLARE r record; BEGIN
                   FOR r IN SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                            JOIN pg_am a ON a.oid = c.relam
                            WHERE i.indrelid = 'packages'::regclass AND a.amname = 'hnsw'
                   LOOP EXECUTE format('DROP INDEX %I', r.relname); END LOOP; END $$",
            )
            .unwrap();
            let took = build_index_with_progress(
                &mut c,
                &conn,
                "CREATE INDEX packages_filter_idx ON packages
                     USING hnsw (embedding vector_cosine_ops, category, tenant_id, tags)",
                base.len() as u64,
            );
            let size: String =
                c.query_one("SELECT pg_size_pretty(pg_relation_size('packages_filter_idx'))", &[]).unwrap().get(0);
            eprintln!("index with filter columns built in {:.1} s, {size}", took.as_secs_f64());
            table.push_str(&format!(
                "| | | index with filter columns: built in {:.1} s, {size} | | | | |\n",
                took.as_secs_f64()
            ));
            filter_index_built = true;
        }
        for (ci, case) in cases.iter().enumerate() {
            if setting.generic {
                c.batch_execute("SET plan_cache_mode = force_generic_plan").unwrap();
            }
            let filter_sql = |p: &Param| {
                if setting.generic {
                    case.condition.to_string()
                } else {
                    case.condition.replace("$2", &p.sql_literal())
                }
            };
            let sql_of = |p: &Param| {
                format!("SELECT id FROM packages WHERE {} ORDER BY embedding <=> $1 LIMIT 10", filter_sql(p))
            };
            // A generic plan: one statement for every value. A custom plan:
            // one statement per distinct value, each planned for its value.
            let mut statements: std::collections::HashMap<String, postgres::Statement> = Default::default();
            for p in &case.params {
                let sql = sql_of(p);
                if !statements.contains_key(&sql) {
                    let stmt = c.prepare(&sql).unwrap();
                    statements.insert(sql, stmt);
                }
            }
            let plan =
                plan_summary(&mut c, &sql_of(&case.params[0]), &vectors[0], setting.generic.then_some(&case.params[0]));
            let run = |c: &mut Client, q: &Vector, p: &Param| {
                let stmt = &statements[&sql_of(p)];
                if setting.generic {
                    let value = p.to_sql();
                    c.query(stmt, &[q, value.as_ref()]).unwrap()
                } else {
                    c.query(stmt, &[q]).unwrap()
                }
            };
            for (q, p) in vectors.iter().zip(&case.params).take(5) {
                run(&mut c, q, p);
            }
            let (mut hits, mut returned, mut expected) = (0usize, 0usize, 0usize);
            let start = Instant::now();
            for ((q, p), t) in vectors.iter().zip(&case.params).zip(&truth[ci]) {
                let rows = run(&mut c, q, p);
                returned += rows.len();
                expected += t.len();
                hits += rows.iter().filter(|r| t.contains(&r.get::<_, i32>(0))).count();
            }
            let secs = start.elapsed().as_secs_f64();
            let line = format!(
                "| {} | {:.2}% | {} | {plan} | {:.3} | {:.1} | {:.0} |\n",
                case.name,
                case.share * 100.0,
                setting.name,
                hits as f64 / expected.max(1) as f64,
                returned as f64 / vectors.len() as f64,
                vectors.len() as f64 / secs
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
