//! `hnsw_recall(...)` and `hnsw_suggest_ef_search(...)` on a real cluster:
//! their recall figures against the benchmark's own measurement (the same
//! file, `bench/src/measure.rs`) on the real dataset, the self-excluding
//! sample, filters, privileges, bad arguments and cancellation.

use pg_hnsw_cluster_tests::{copy_vectors, cosine, exact_knn, sqlstate, Client, Cluster, Dataset, NoTls};
use pgvector::Vector;
use std::sync::{Arc, Mutex};

#[allow(dead_code)]
#[path = "../../bench/src/measure.rs"]
mod measure;

/// The first 10,000 rows of the dataset in `packages (id int, embedding
/// vector(384))` with the demo's index (cosine, m 16, ef_construction 64).
fn load_packages(c: &mut Client, data: &Dataset) {
    c.batch_execute("CREATE TABLE packages (id int PRIMARY KEY, embedding vector(384))").unwrap();
    copy_vectors(c, "packages", 0, &data.base);
    c.batch_execute(
        "CREATE INDEX packages_embedding_idx ON packages USING hnsw (embedding vector_cosine_ops) \
         WITH (m = 16, ef_construction = 64); ANALYZE packages;",
    )
    .unwrap();
}

/// `(ef_search, recall)` rows of an `hnsw_recall` call.
fn recall_rows(c: &mut Client, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> Vec<(i32, f64)> {
    c.query(sql, params)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| (r.get::<_, i32>("ef_search"), r.get::<_, f64>("recall")))
        .collect()
}

/// EXPLAIN of `sql` with `$1` bound to `q`.
fn explain_with(c: &mut Client, sql: &str, q: &[f32]) -> String {
    c.query(&format!("EXPLAIN {sql}"), &[&Vector::from(q.to_vec())])
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

fn vectors(v: &[Vec<f32>]) -> Vec<Vector> {
    v.iter().map(|x| Vector::from(x.clone())).collect()
}

#[test]
fn recall_agrees_with_the_benchmark_on_real_data() {
    let cluster = Cluster::start("recall_fn_real", &[]);
    let mut c = cluster.connect_with_extension();
    let data = Dataset::load(10_000, 100);
    load_packages(&mut c, &data);
    let truth: Vec<Vec<u32>> = data
        .queries
        .iter()
        .map(|q| exact_knn(&data.base, q, 10, cosine).into_iter().map(|i| i as u32).collect())
        .collect();
    let efs = [10, 20, 40, 80];
    let bench: Vec<f64> = efs
        .iter()
        .map(|&ef| measure::query_run(&mut c, "packages", "<=>", &data.queries, &truth, ef, &mut |_| {}).recall_at_10)
        .collect();
    c.batch_execute("RESET hnsw.ef_search").unwrap();
    eprintln!("bench recall@10 at ef_search {efs:?}: {bench:?}");
    assert!(bench[0] < bench[3], "recall grows with ef_search: {bench:?}");

    // Queries as an array.
    let qs = vectors(&data.queries);
    let rows = recall_rows(
        &mut c,
        "SELECT * FROM hnsw_recall('packages_embedding_idx', ef_search => ARRAY[10, 20, 40, 80], queries => $1::vector[])",
        &[&qs],
    );
    // Queries from a table.
    c.batch_execute("CREATE TABLE questions (id int, embedding vector(384))").unwrap();
    copy_vectors(&mut c, "questions", 0, &data.queries);
    let from_table = recall_rows(
        &mut c,
        "SELECT * FROM hnsw_recall('packages_embedding_idx', ef_search => ARRAY[10, 20, 40, 80], \
         query_table => 'questions', sample_size => 1000)",
        &[],
    );
    eprintln!("hnsw_recall (array): {rows:?}\nhnsw_recall (table): {from_table:?}");
    assert_eq!(rows.len(), efs.len());
    for (i, &ef) in efs.iter().enumerate() {
        assert_eq!(rows[i].0, ef);
        assert!(
            (rows[i].1 - bench[i]).abs() <= 0.01,
            "ef_search {ef}: hnsw_recall {} vs bench {}",
            rows[i].1,
            bench[i]
        );
        assert!((from_table[i].1 - bench[i]).abs() <= 0.01, "ef_search {ef}: query_table {}", from_table[i].1);
    }

    // The other columns: 100 queries, latency and work grow with ef_search.
    let r = c
        .query(
            "SELECT ef_search, k, queries, recall, mean_ms, p99_ms, mean_visited \
             FROM hnsw_recall('packages_embedding_idx', queries => $1::vector[]) ORDER BY ef_search",
            &[&qs],
        )
        .unwrap();
    let efs_default: Vec<i32> = r.iter().map(|r| r.get(0)).collect();
    assert_eq!(efs_default, vec![10, 20, 40, 80, 160, 320]);
    for row in &r {
        assert_eq!((row.get::<_, i32>(1), row.get::<_, i32>(2)), (10, 100));
        let (mean, p99): (f64, f64) = (row.get(4), row.get(5));
        assert!(mean > 0.0 && p99 >= mean * 0.5, "{mean} {p99}");
    }
    let visited: Vec<f64> = r.iter().map(|r| r.get(6)).collect();
    assert!(visited.windows(2).all(|w| w[0] < w[1]), "visited grows with ef_search: {visited:?}");
    assert!(visited[0] > 10.0 && visited[5] < 10_000.0, "{visited:?}");

    // The suggestion is the smallest ef_search reaching the target on these
    // queries, as the benchmark measures them.
    let target = (bench[1] + bench[2]) / 2.0;
    let ef: i32 = c
        .query_one(
            "SELECT hnsw_suggest_ef_search('packages_embedding_idx', target_recall => $1, queries => $2::vector[])",
            &[&target, &qs],
        )
        .unwrap()
        .get(0);
    let at = |c: &mut Client, ef: i32| measure::query_run(c, "packages", "<=>", &data.queries, &truth, ef, &mut |_| {});
    assert!(ef > 20 && ef <= 40, "suggested {ef} for target {target}");
    assert!(at(&mut c, ef).recall_at_10 >= target - 0.01, "ef {ef} reaches {target}");
    assert!(at(&mut c, ef - 1).recall_at_10 < target + 0.01, "ef {} does not", ef - 1);
    c.batch_execute("RESET hnsw.ef_search").unwrap();

    // Filtered recall: the filter applies to both lists.
    let even: Vec<usize> = (0..data.base.len()).filter(|i| i % 2 == 0).collect();
    let even_base: Vec<Vec<f32>> = even.iter().map(|&i| data.base[i].clone()).collect();
    // (The planner would rather scan the table for this filter: force the index.)
    c.batch_execute("SET hnsw.ef_search = 40; SET enable_seqscan = off").unwrap();
    let filtered_sql = "SELECT id FROM packages WHERE id % 2 = 0 ORDER BY embedding <=> $1 LIMIT 10";
    let plan = explain_with(&mut c, filtered_sql, &data.queries[0]);
    assert!(plan.contains("Index Scan using packages_embedding_idx"), "{plan}");
    let stmt = c.prepare(filtered_sql).unwrap();
    let mut hits = 0;
    for q in &data.queries {
        let t: Vec<i32> = exact_knn(&even_base, q, 10, cosine).into_iter().map(|i| even[i] as i32).collect();
        let found: Vec<i32> = c.query(&stmt, &[&Vector::from(q.clone())]).unwrap().iter().map(|r| r.get(0)).collect();
        hits += found.iter().filter(|f| t.contains(f)).count();
    }
    c.batch_execute("RESET hnsw.ef_search; RESET enable_seqscan").unwrap();
    let client_filtered = hits as f64 / 1000.0;
    let filtered = recall_rows(
        &mut c,
        "SELECT * FROM hnsw_recall('packages_embedding_idx', ef_search => ARRAY[40], queries => $1::vector[], \
         filter => 'id % 2 = 0')",
        &[&qs],
    );
    eprintln!("filtered recall@10 at ef_search 40: hnsw_recall {:?}, client {client_filtered}", filtered);
    assert!((filtered[0].1 - client_filtered).abs() <= 0.01);
}

/// The default queries are the indexed rows' own vectors, each left out of
/// its own result lists: on a table small enough to sample every row, the
/// figures match a client-side computation of the same thing.
#[test]
fn sampled_rows_exclude_themselves() {
    let cluster = Cluster::start("recall_fn_sample", &[]);
    let mut c = cluster.connect_with_extension();
    let data = Dataset::load(1_500, 0);
    load_packages(&mut c, &data);
    let n = data.base.len();
    let mut expected = Vec::new();
    for ef in [10, 40] {
        // (A table this small is cheaper to scan: force the index.)
        c.batch_execute(&format!("SET hnsw.ef_search = {ef}; SET enable_seqscan = off")).unwrap();
        let sql = "SELECT id FROM packages ORDER BY embedding <=> $1 LIMIT 11";
        let plan = explain_with(&mut c, sql, &data.base[0]);
        assert!(plan.contains("Index Scan using packages_embedding_idx"), "{plan}");
        let stmt = c.prepare(sql).unwrap();
        let mut hits = 0;
        for (i, v) in data.base.iter().enumerate() {
            let truth: Vec<i32> = exact_knn(&data.base, v, 11, cosine)
                .into_iter()
                .filter(|&j| j != i)
                .take(10)
                .map(|j| j as i32)
                .collect();
            let found: Vec<i32> = c
                .query(&stmt, &[&Vector::from(v.clone())])
                .unwrap()
                .iter()
                .map(|r| r.get::<_, i32>(0))
                .filter(|&j| j != i as i32)
                .take(10)
                .collect();
            hits += found.iter().filter(|f| truth.contains(f)).count();
        }
        expected.push(hits as f64 / (10 * n) as f64);
    }
    c.batch_execute("RESET hnsw.ef_search; RESET enable_seqscan").unwrap();
    let got = recall_rows(
        &mut c,
        &format!("SELECT * FROM hnsw_recall('packages_embedding_idx', ef_search => ARRAY[10, 40], sample_size => {n})"),
        &[],
    );
    eprintln!("all rows sampled: hnsw_recall {got:?}, client {expected:?}");
    for (g, e) in got.iter().zip(&expected) {
        assert!((g.1 - e).abs() <= 0.01, "{g:?} vs {e}");
    }
    // At ef_search = k the row's own element takes one of the 10 results.
    assert!(got[0].1 <= 0.9 + 1e-9, "{got:?}");

    // The same seed gives the same sample; another seed another one.
    let one = |c: &mut Client, seed: i64| -> Vec<f64> {
        c.query(
            "SELECT mean_visited FROM hnsw_recall('packages_embedding_idx', ef_search => ARRAY[40], sample_size => 50, seed => $1)",
            &[&seed],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    assert_eq!(one(&mut c, 7), one(&mut c, 7));
    assert_ne!(one(&mut c, 7), one(&mut c, 8));

    // Any operator class, partial and expression indexes.
    c.batch_execute(
        "CREATE INDEX l2_idx ON packages USING hnsw (embedding vector_l2_ops);
         CREATE INDEX part_idx ON packages USING hnsw (embedding vector_ip_ops) WHERE id < 700;
         CREATE INDEX expr_idx ON packages USING hnsw ((l2_normalize(embedding)::vector(384)) vector_l1_ops);",
    )
    .unwrap();
    for idx in ["l2_idx", "part_idx", "expr_idx"] {
        let r = recall_rows(
            &mut c,
            &format!("SELECT * FROM hnsw_recall('{idx}', ef_search => ARRAY[80], sample_size => 50)"),
            &[],
        );
        eprintln!("{idx}: {r:?}");
        assert!(r[0].1 > 0.8 && r[0].1 <= 1.0, "{idx}: {r:?}");
    }

    // Settings are restored afterwards.
    c.batch_execute("SET hnsw.ef_search = 77").unwrap();
    recall_rows(&mut c, "SELECT * FROM hnsw_recall('packages_embedding_idx', sample_size => 5)", &[]);
    let show = |c: &mut Client, g: &str| c.query_one(&format!("SHOW {g}"), &[]).unwrap().get::<_, String>(0);
    assert_eq!(show(&mut c, "hnsw.ef_search"), "77");
    assert_eq!(show(&mut c, "enable_seqscan"), "on");
    assert_eq!(show(&mut c, "enable_indexscan"), "on");
}

#[test]
fn privileges_bad_arguments_and_cancellation() {
    let cluster = Cluster::start("recall_fn_checks", &[]);
    let mut c = cluster.connect_with_extension();
    let data = Dataset::load(10_000, 3);
    load_packages(&mut c, &data);

    // Privileges: EXECUTE is revoked from PUBLIC; with it granted, the caller
    // must still own the index.
    c.batch_execute(
        "CREATE ROLE alice LOGIN; GRANT SELECT ON packages TO alice; GRANT CREATE ON SCHEMA public TO alice;",
    )
    .unwrap();
    let connect_as = |user: &str| {
        Client::connect(&format!("{} user={user}", cluster.conn_string().replace("user=postgres", "")), NoTls).unwrap()
    };
    let mut alice = connect_as("alice");
    let e = sqlstate(&mut alice, "SELECT * FROM hnsw_recall('packages_embedding_idx')");
    assert!(e.starts_with("42501 permission denied for function hnsw_recall"), "{e}");
    let e = sqlstate(&mut alice, "SELECT hnsw_suggest_ef_search('packages_embedding_idx')");
    assert!(e.starts_with("42501 permission denied for function hnsw_suggest_ef_search"), "{e}");
    c.batch_execute("GRANT EXECUTE ON FUNCTION hnsw_recall, hnsw_suggest_ef_search TO alice").unwrap();
    let e = sqlstate(&mut alice, "SELECT * FROM hnsw_recall('packages_embedding_idx')");
    assert!(e.starts_with("42501 permission denied to run hnsw_recall on index"), "{e}");
    let e = sqlstate(&mut alice, "SELECT hnsw_suggest_ef_search('packages_embedding_idx')");
    assert!(e.starts_with("42501 permission denied to run hnsw_suggest_ef_search"), "{e}");
    // Her own table and index: allowed.
    alice
        .batch_execute(
            "CREATE TABLE mine AS SELECT * FROM packages WHERE id < 500;
             CREATE INDEX mine_idx ON mine USING hnsw (embedding vector_cosine_ops);",
        )
        .unwrap();
    let r = recall_rows(
        &mut alice,
        "SELECT * FROM hnsw_recall('mine_idx', ef_search => ARRAY[40], sample_size => 20)",
        &[],
    );
    assert!(r[0].1 > 0.5, "{r:?}");
    // A member of the owner role passes too.
    c.batch_execute("CREATE ROLE bob LOGIN; GRANT alice TO bob; GRANT EXECUTE ON FUNCTION hnsw_recall TO bob").unwrap();
    let mut bob = connect_as("bob");
    recall_rows(&mut bob, "SELECT * FROM hnsw_recall('mine_idx', ef_search => ARRAY[40], sample_size => 20)", &[]);

    // Bad arguments: clean errors with their SQLSTATE, never XX000.
    c.batch_execute(
        "CREATE INDEX packages_btree ON packages (id);
         CREATE TABLE empty (id int, embedding vector(384));
         CREATE INDEX empty_idx ON empty USING hnsw (embedding vector_cosine_ops);
         CREATE TABLE nulls (id int, embedding vector(3));
         INSERT INTO nulls VALUES (1, NULL), (2, NULL);
         CREATE INDEX nulls_idx ON nulls USING hnsw (embedding vector_l2_ops);",
    )
    .unwrap();
    let f = "SELECT * FROM hnsw_recall";
    let cases: Vec<(String, &str)> = vec![
        (format!("{f}('packages')"), "42809 \"packages\" is not an hnsw index"),
        (format!("{f}('packages_btree')"), "42809 \"packages_btree\" is not an hnsw index"),
        (format!("{f}(NULL)"), "22004 index must not be NULL"),
        (format!("{f}('packages_embedding_idx', k => 0)"), "22023 k must be between 1 and 1000, not 0"),
        (format!("{f}('packages_embedding_idx', k => 1001)"), "22023 k must be between 1 and 1000"),
        (format!("{f}('packages_embedding_idx', k => NULL)"), "22004 k must not be NULL"),
        (format!("{f}('packages_embedding_idx', ef_search => '{{}}')"), "22023 ef_search must not be empty"),
        (
            format!("{f}('packages_embedding_idx', ef_search => ARRAY[0])"),
            "22023 ef_search values must be between 1 and 1000",
        ),
        (
            format!("{f}('packages_embedding_idx', ef_search => ARRAY[NULL::int])"),
            "22023 ef_search must not contain NULL",
        ),
        (format!("{f}('packages_embedding_idx', sample_size => 0)"), "22023 sample_size must be between"),
        (format!("{f}('packages_embedding_idx', max_rows => 0)"), "22023 max_rows must be positive"),
        (format!("{f}('packages_embedding_idx', filter => ' ')"), "22023 filter must not be empty"),
        (format!("{f}('packages_embedding_idx', max_rows => 1000)"), "54000 hnsw_recall would read about"),
        (
            format!("{f}('packages_embedding_idx', filter => 'id < 0')"),
            "55000 no row of \"packages\" qualifies under the filter",
        ),
        (
            format!("{f}('packages_embedding_idx', filter => 'no_such_column = 1')"),
            "42703 column \"no_such_column\" does not exist",
        ),
        (format!("{f}('empty_idx')"), "55000 index \"empty_idx\" has no indexed rows to sample queries from"),
        (format!("{f}('nulls_idx')"), "55000 index \"nulls_idx\" has no indexed rows"),
        (
            format!("{f}('packages_embedding_idx', queries => ARRAY[NULL::vector])"),
            "22004 queries must not contain NULL",
        ),
        (
            format!("{f}('packages_embedding_idx', queries => ARRAY['[1,2,3]'::vector])"),
            "22000 different vector dimensions",
        ),
        (format!("{f}('packages_embedding_idx', queries => '{{}}'::vector[])"), "55000 queries is empty"),
        (
            format!("{f}('packages_embedding_idx', queries => ARRAY[array_fill(0, ARRAY[384])::vector])"),
            "22000 query 1 has no defined distance",
        ),
        (
            format!("{f}('packages_embedding_idx', queries => ARRAY['[1]'::vector], query_table => 'packages')"),
            "22023 give either queries or query_table",
        ),
        (format!("{f}('packages_embedding_idx', query_column => 'embedding')"), "22023 query_column needs query_table"),
        (
            format!("{f}('packages_embedding_idx', query_table => 'packages', query_column => 'nope')"),
            "42703 column \"nope\" does not exist",
        ),
        (
            "SELECT hnsw_suggest_ef_search('packages_embedding_idx', target_recall => 1.5)".into(),
            "22023 target_recall must be in (0, 1]",
        ),
        (
            "SELECT hnsw_suggest_ef_search('packages', target_recall => 0.9)".into(),
            "42809 \"packages\" is not an hnsw index",
        ),
    ];
    for (sql, want) in &cases {
        let got = sqlstate(&mut c, sql);
        assert!(got.starts_with(want), "{sql}\n  got:  {got}\n  want: {want}");
    }

    // No ef_search reaches an impossible target: NULL and a NOTICE with a hint.
    let notices = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = notices.clone();
    let mut config: postgres::Config = cluster.conn_string().parse().unwrap();
    config.notice_callback(move |n| {
        sink.lock().unwrap().push(format!("{} | {}", n.message(), n.hint().unwrap_or("")));
    });
    let mut n = config.connect(NoTls).unwrap();
    let ef: Option<i32> = n
        .query_one(
            "SELECT hnsw_suggest_ef_search('packages_embedding_idx', target_recall => 1.0, ef_search => ARRAY[1, 2], sample_size => 20)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(ef, None);
    let notices = notices.lock().unwrap().clone();
    assert!(
        notices
            .iter()
            .any(|m| m.contains("no ef_search up to 2 reaches recall@10 = 1")
                && m.contains("larger m or ef_construction")),
        "{notices:?}"
    );

    // Cancellation: a statement_timeout stops a long run, the session goes
    // on, and the settings it changed are back.
    c.batch_execute("SET statement_timeout = '300ms'").unwrap();
    let t = std::time::Instant::now();
    let e = sqlstate(
        &mut c,
        "SELECT * FROM hnsw_recall('packages_embedding_idx', sample_size => 5000, max_rows => 1000000000)",
    );
    assert!(e.starts_with("57014 canceling statement due to statement timeout"), "{e}");
    assert!(t.elapsed().as_secs_f64() < 10.0, "cancelled promptly: {:?}", t.elapsed());
    c.batch_execute("RESET statement_timeout").unwrap();
    let on: String = c.query_one("SHOW enable_indexscan", &[]).unwrap().get(0);
    assert_eq!(on, "on");
    let one: i32 = c.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);
}
