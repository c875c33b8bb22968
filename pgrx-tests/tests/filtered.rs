//! Filtered search: iterative index scans (`hnsw.iterative_scan`), their
//! budget and order, filtered recall, and the planner's choices for filtered
//! queries (as pgvector's planner tests expect them).

use pg_hnsw_cluster_tests::{explain, sqlstate, Client, Cluster};
use rand::{Rng, SeedableRng};

fn ids(c: &mut Client, sql: &str) -> Vec<i32> {
    c.query(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}")).iter().map(|r| r.get(0)).collect()
}

fn literal(v: &[f32]) -> String {
    format!("'[{}]'", v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(","))
}

/// `n` seeded random vectors of `dims` elements in [0, 1).
fn random_rows(seed: u64, n: usize, dims: usize) -> Vec<Vec<f32>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| (0..dims).map(|_| rng.gen::<f32>()).collect()).collect()
}

/// Loads `rows` into `table` with COPY, one line per row from `line(i,
/// vector literal)`.
fn copy_rows(c: &mut Client, table: &str, rows: &[Vec<f32>], line: impl Fn(usize, &str) -> String) {
    use std::io::Write;
    let mut w = c.copy_in(&format!("COPY {table} FROM STDIN")).unwrap();
    for (i, v) in rows.iter().enumerate() {
        let text: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
        writeln!(w, "{}", line(i, &format!("[{}]", text.join(",")))).unwrap();
    }
    w.finish().unwrap();
}

/// 100,000 random 3-d rows; a filter matching 1 row in 10,000.
#[test]
fn iterative_scan_finds_rare_rows_within_its_budget() {
    let cluster = Cluster::start("filtered_iterative", &[]);
    let mut c = cluster.connect_with_extension();
    c.batch_execute(
        "SELECT setseed(0.5);
         CREATE TABLE tst (i int4 PRIMARY KEY, v vector(3));
         INSERT INTO tst SELECT i, ARRAY[random(), random(), random()] FROM generate_series(1, 100000) i;
         CREATE INDEX ON tst USING hnsw (v vector_l2_ops);
         ANALYZE tst;",
    )
    .unwrap();
    let count = |c: &mut Client, mode: &str, max: i32, fallback: bool, query_row: i32| -> i64 {
        c.batch_execute(&format!(
            "SET enable_seqscan = off; SET hnsw.iterative_scan = {mode}; SET hnsw.max_scan_tuples = {max};
             SET hnsw.exact_fallback = {fallback};"
        ))
        .unwrap();
        c.query_one(
            &format!(
                "SELECT count(*) FROM (SELECT v FROM tst WHERE i % 10000 = 0
                 ORDER BY v <-> (SELECT v FROM tst WHERE i = {query_row}) LIMIT 11) t"
            ),
            &[],
        )
        .unwrap()
        .get(0)
    };
    // Without iterative scan, one beam of 40 finds at most a few.
    let off = count(&mut c, "off", 20_000, true, 1);
    assert!(off <= 2, "iterative scan off returned {off} of the 10 rare rows");
    // With a budget covering the whole index, all 10 rows are found.
    assert_eq!(count(&mut c, "relaxed_order", 100_000, false, 1), 10);
    assert_eq!(count(&mut c, "strict_order", 100_000, false, 2), 10);
    // Without the exact fallback, rows found grow with the budget: about
    // max_scan_tuples / 10,000.
    for max in [30_000, 50_000, 70_000] {
        let found: i64 = (1..=10).map(|q| count(&mut c, "relaxed_order", max, false, q)).sum();
        let mean = found as f64 / 10.0;
        let expected = max as f64 / 10_000.0;
        assert!((mean - expected).abs() < 2.0, "max_scan_tuples {max}: {mean} rows found, expected ~{expected}");
    }
    // With it (the default), every matching row comes out whatever the
    // budget: the scan finishes with an exact pass over the index.
    for max in [1, 1_000, 30_000] {
        for mode in ["relaxed_order", "strict_order"] {
            for q in 1..=3 {
                assert_eq!(count(&mut c, mode, max, true, q), 10, "{mode}, max_scan_tuples {max}, query row {q}");
            }
        }
    }
}

/// The exact pass returns every element once, in exact order, even when it
/// needs several passes to stay within its memory: `work_mem` 64 kB keeps
/// at most 1,000 elements a pass, and the query below wants 3,000 rows
/// after a walk budget of one element.
#[test]
fn exact_fallback_passes_are_complete_and_ordered() {
    let cluster = Cluster::start("filtered_exact_pass", &[]);
    let mut c = cluster.connect_with_extension();
    let rows = random_rows(5, 20_000, 4);
    c.batch_execute("CREATE TABLE t (id int4, v vector(4), h halfvec(4))").unwrap();
    copy_rows(&mut c, "t", &rows, |i, v| format!("{i}\t{v}\t{v}"));
    c.batch_execute(
        "CREATE INDEX ON t USING hnsw (v vector_l2_ops); CREATE INDEX ON t USING hnsw (h halfvec_l2_ops); ANALYZE t;
         SET enable_seqscan = off; SET work_mem = '64kB'; SET hnsw.max_scan_tuples = 1;",
    )
    .unwrap();
    let q: Vec<f32> = vec![0.3, 0.6, 0.2, 0.9];
    let l2 = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| ((x - y) * (x - y)) as f64).sum::<f64>();
    let mut exact: Vec<(f64, i32)> =
        rows.iter().enumerate().filter(|(i, _)| i % 2 == 0).map(|(i, v)| (l2(&q, v), i as i32)).collect();
    exact.sort_by(|a, b| a.0.total_cmp(&b.0));
    let truth: std::collections::HashSet<i32> = exact.iter().take(3000).map(|e| e.1).collect();
    for (column, cast) in [("v", "vector"), ("h", "halfvec")] {
        for mode in ["relaxed_order", "strict_order"] {
            c.batch_execute(&format!("SET hnsw.iterative_scan = {mode}")).unwrap();
            let sql = format!(
                "SELECT id, ({column} <-> {q}::{cast})::float8 FROM t WHERE id % 2 = 0 ORDER BY {column} <-> {q}::{cast} LIMIT 3000",
                q = literal(&q)
            );
            assert!(explain(&mut c, &sql).contains("Index Scan"), "{}", explain(&mut c, &sql));
            let got = c.query(&sql, &[]).unwrap();
            let found: Vec<i32> = got.iter().map(|r| r.get(0)).collect();
            let unique: std::collections::HashSet<i32> = found.iter().copied().collect();
            assert_eq!(found.len(), 3000, "{column} {mode}");
            assert_eq!(unique.len(), 3000, "{column} {mode}: a row came twice");
            let overlap = unique.intersection(&truth).count();
            assert!(overlap >= 2985, "{column} {mode}: {overlap} of the exact 3,000");
            if mode == "strict_order" {
                let d: Vec<f64> = got.iter().map(|r| r.get(1)).collect();
                assert!(d.windows(2).all(|w| w[0] <= w[1]), "{column}: strict order broken");
            }
        }
    }
}

/// Our own check of the behaviour pgvector's iterative-scan recall test
/// asks for: 50,000 random 3-d rows, a filter keeping 1 row in 50 or in
/// 500, `LIMIT 20` at `ef_search` 40, for L2 and cosine, in both orders:
/// recall@20 (against an exact scan, ties at the 20th distance included)
/// at least 0.99. Under cosine the half-precision pages place such close
/// 3-d directions only to within their error bound, which is what
/// `strict_order`'s hold-back handles.
#[test]
fn iterative_scan_recall_on_3d_data() {
    let cluster = Cluster::start("filtered_recall_3d", &[]);
    let mut c = cluster.connect_with_extension();
    c.batch_execute(
        "SELECT setseed(0.3);
         CREATE TABLE tst (i int4, v vector(3));
         INSERT INTO tst SELECT i, ARRAY[random(), random(), random()] FROM generate_series(1, 50000) i;",
    )
    .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(44);
    let queries: Vec<Vec<f32>> = (0..20).map(|_| (0..3).map(|_| rng.gen::<f32>()).collect()).collect();
    for (opclass, op) in [("vector_l2_ops", "<->"), ("vector_cosine_ops", "<=>")] {
        c.batch_execute(&format!(
            "DROP INDEX IF EXISTS idx; SET maintenance_work_mem = '128MB'; CREATE INDEX idx ON tst USING hnsw (v {opclass});"
        ))
        .unwrap();
        for modulus in [50, 500] {
            let truth: Vec<std::collections::HashSet<i32>> = queries
                .iter()
                .map(|q| {
                    c.batch_execute("SET enable_indexscan = off").unwrap();
                    let t = ids(
                        &mut c,
                        &format!(
                            "WITH top AS (SELECT v {op} {q} AS d FROM tst WHERE i % {modulus} = 0 ORDER BY d LIMIT 20)
                             SELECT i FROM tst WHERE (v {op} {q}) <= (SELECT max(d) FROM top)",
                            q = literal(q)
                        ),
                    );
                    c.batch_execute("RESET enable_indexscan").unwrap();
                    t.into_iter().collect()
                })
                .collect();
            for mode in ["strict_order", "relaxed_order"] {
                c.batch_execute(&format!(
                    "SET enable_seqscan = off; SET hnsw.ef_search = 40; SET hnsw.iterative_scan = {mode}"
                ))
                .unwrap();
                let mut hits = 0;
                for (q, t) in queries.iter().zip(&truth) {
                    let sql =
                        format!("SELECT i FROM tst WHERE i % {modulus} = 0 ORDER BY v {op} {} LIMIT 20", literal(q));
                    hits += ids(&mut c, &sql).iter().filter(|i| t.contains(i)).count();
                }
                let recall = hits as f64 / (20 * queries.len()) as f64;
                eprintln!("{opclass} 1/{modulus} {mode}: recall@20 {recall:.4}");
                assert!(recall >= 0.99, "{opclass} 1/{modulus} {mode}: recall@20 {recall}");
                c.batch_execute("RESET enable_seqscan; RESET hnsw.iterative_scan").unwrap();
            }
        }
    }
}

/// Prepared statements after their fifth run use a generic plan, where the
/// filter value is a parameter the planner cannot see: the hnsw path is
/// chosen even for a rare value. With an iterative scan every such query
/// still returns its `LIMIT` rows (the exact fallback), at any selectivity:
/// here the only 10 rows of a category of 40,000 rows, which a walk of
/// `max_scan_tuples` 20,000 cannot all reach.
#[test]
fn generic_plans_return_every_row() {
    let cluster = Cluster::start("filtered_generic", &[]);
    let mut c = cluster.connect_with_extension();
    c.batch_execute(
        "SELECT setseed(0.7);
         CREATE TABLE items (id int4, category int4, embedding vector(8));
         INSERT INTO items SELECT i, CASE WHEN i % 4000 = 0 THEN 1 ELSE 2 + i % 7 END,
             ARRAY[random(), random(), random(), random(), random(), random(), random(), random()]
           FROM generate_series(1, 40000) i;
         CREATE INDEX ON items USING hnsw (embedding vector_cosine_ops);
         ANALYZE items;
         SET plan_cache_mode = force_generic_plan;",
    )
    .unwrap();
    let stmt = c.prepare("SELECT id FROM items WHERE category = $1 ORDER BY embedding <=> $2 LIMIT 10").unwrap();
    c.batch_execute(
        "PREPARE s(int4, vector) AS SELECT id FROM items WHERE category = $1 ORDER BY embedding <=> $2 LIMIT 10",
    )
    .unwrap();
    let plan = explain(&mut c, "EXECUTE s(1, '[1,1,1,1,1,1,1,1]')");
    assert!(plan.contains("Index Scan"), "the generic plan uses the hnsw index:\n{plan}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for (mode, fallback) in [("relaxed_order", true), ("strict_order", true), ("relaxed_order", false)] {
        c.batch_execute(&format!("SET hnsw.iterative_scan = {mode}; SET hnsw.exact_fallback = {fallback}")).unwrap();
        let mut short = 0;
        for _ in 0..10 {
            let q: Vec<f32> = (0..8).map(|_| rng.gen::<f32>()).collect();
            let rows = c.query(&stmt, &[&1i32, &pgvector::Vector::from(q.clone())]).unwrap();
            let found: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
            if fallback {
                let mut sorted = found.clone();
                sorted.sort();
                assert_eq!(sorted, (1..=10).map(|k| k * 4000).collect::<Vec<i32>>(), "{mode}: the category's rows");
            } else if found.len() < 10 {
                short += 1;
            }
        }
        if !fallback {
            assert!(short > 0, "without the exact fallback the 20,000-element budget misses rows");
        }
    }
}

/// Exact filtered top-10 by brute force against the index's answers, at
/// selectivities 1/50 and 1/500, and strict order.
#[test]
fn filtered_recall_and_order() {
    let cluster = Cluster::start("filtered_recall", &[]);
    let mut c = cluster.connect_with_extension();
    let mut rng = rand::rngs::StdRng::seed_from_u64(18);
    let rows = random_rows(17, 50_000, 8);
    c.batch_execute("CREATE TABLE t (id int4, c50 int4, c500 int4, v vector(8))").unwrap();
    copy_rows(&mut c, "t", &rows, |i, v| format!("{i}\t{}\t{}\t{v}", i % 50, i % 500));
    c.batch_execute("CREATE INDEX t_idx ON t USING hnsw (v vector_l2_ops); ANALYZE t;").unwrap();
    c.batch_execute("SET enable_seqscan = off; SET hnsw.ef_search = 40").unwrap();
    let l2 = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| ((x - y) * (x - y)) as f64).sum::<f64>();
    for (column, modulus) in [("c50", 50), ("c500", 500)] {
        for mode in ["relaxed_order", "strict_order"] {
            c.batch_execute(&format!("SET hnsw.iterative_scan = {mode}")).unwrap();
            let mut hits = 0;
            let queries = 20;
            for qi in 0..queries {
                let q: Vec<f32> = (0..8).map(|_| rng.gen::<f32>()).collect();
                let category = qi % modulus;
                let sql =
                    format!("SELECT id FROM t WHERE {column} = {category} ORDER BY v <-> {} LIMIT 10", literal(&q));
                let plan = explain(&mut c, &sql);
                assert!(plan.contains("Index Scan using t_idx"), "{plan}");
                let found = ids(&mut c, &sql);
                let mut exact: Vec<(f64, i32)> = rows
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % modulus == category)
                    .map(|(i, v)| (l2(&q, v), i as i32))
                    .collect();
                exact.sort_by(|a, b| a.0.total_cmp(&b.0));
                let truth: Vec<i32> = exact.iter().take(10).map(|e| e.1).collect();
                assert_eq!(found.len(), 10, "{mode} {column}: {} rows", found.len());
                hits += found.iter().filter(|f| truth.contains(f)).count();
                if mode == "strict_order" {
                    let d: Vec<f64> = c
                        .query(
                            &format!(
                                "SELECT v <-> {q} FROM t WHERE {column} = {category} ORDER BY v <-> {q} LIMIT 10",
                                q = literal(&q)
                            ),
                            &[],
                        )
                        .unwrap()
                        .iter()
                        .map(|r| r.get(0))
                        .collect();
                    assert!(d.windows(2).all(|w| w[0] <= w[1]), "strict order: {d:?}");
                }
            }
            let recall = hits as f64 / (10 * queries) as f64;
            eprintln!("{mode} {column}: filtered recall@10 = {recall:.4}");
            assert!(recall >= 0.99, "{mode} {column}: filtered recall@10 {recall}");
        }
    }
}

/// pgvector's planner expectations for filtered queries (10,000 rows of 3-d
/// vectors, 50 categories), and for unfiltered queries on small tables.
#[test]
fn planner_choices_for_filtered_queries() {
    let cluster = Cluster::start("filtered_planner", &[]);
    let mut c = cluster.connect_with_extension();
    c.batch_execute(
        "SELECT setseed(0.25);
         CREATE TABLE tst (i int4, v vector(3), c int4, t text);
         CREATE TABLE cat (i int4 PRIMARY KEY, t text, b boolean);
         INSERT INTO tst SELECT i, ARRAY[random(), random(), random()], i % 50, 'test ' || i FROM generate_series(1, 10000) i;
         INSERT INTO cat SELECT i, 'cat ' || i, i % 5 = 0 FROM generate_series(1, 50) i;
         CREATE INDEX idx ON tst USING hnsw (v vector_l2_ops);
         ANALYZE tst; ANALYZE cat;",
    )
    .unwrap();
    let q = "'[0.5,0.25,0.75]'";
    let cases = [
        (format!("SELECT i FROM tst WHERE c = 7 ORDER BY v <-> {q} LIMIT 20"), "Seq Scan"),
        (format!("SELECT i FROM tst WHERE c != 7 ORDER BY v <-> {q} LIMIT 20"), "Index Scan using idx"),
        (format!("SELECT i FROM tst WHERE c >= 1 ORDER BY v <-> {q} LIMIT 20"), "Index Scan using idx"),
        (format!("SELECT i FROM tst WHERE c < 1 ORDER BY v <-> {q} LIMIT 20"), "Seq Scan"),
        (format!("SELECT i FROM tst WHERE t LIKE '%test%' ORDER BY v <-> {q} LIMIT 20"), "Index Scan using idx"),
        (format!("SELECT i FROM tst WHERE t LIKE '%other%' ORDER BY v <-> {q} LIMIT 20"), "Seq Scan"),
        (format!("SELECT i FROM tst WHERE v <-> {q} < 1 ORDER BY v <-> {q} LIMIT 20"), "Index Scan using idx"),
        (format!("SELECT i FROM tst WHERE v <-> {q} < 1"), "Seq Scan"),
        (format!("SELECT i FROM tst WHERE v <-> {q} < 1 ORDER BY v <-> {q}"), "Seq Scan"),
        (
            format!("SELECT cat.t FROM cat JOIN tst ON cat.i = tst.c ORDER BY v <-> {q} LIMIT 20"),
            "Index Scan using idx",
        ),
        (
            format!("SELECT cat.t FROM cat JOIN tst ON cat.i = tst.c WHERE cat.b ORDER BY v <-> {q} LIMIT 20"),
            "Index Scan using idx",
        ),
    ];
    for (sql, expected) in &cases {
        let plan = explain(&mut c, sql);
        assert!(plan.contains(expected), "{sql}: expected {expected}\n{plan}");
    }
    // Without iterative scan, a filter keeping too few rows for one beam
    // makes the index path incomplete: even forcing index scans off the
    // table's sequential scan keeps the exact plan... unless seqscan is off.
    c.batch_execute("SET enable_seqscan = off").unwrap();
    let plan = explain(&mut c, &format!("SELECT i FROM tst WHERE c = 7 ORDER BY v <-> {q} LIMIT 20"));
    assert!(plan.contains("Index Scan using idx"), "enable_seqscan = off still forces the index:\n{plan}");
    c.batch_execute("RESET enable_seqscan").unwrap();
    // An attribute index wins for a selective equality.
    c.batch_execute("CREATE INDEX attribute_idx ON tst (c); ANALYZE tst;").unwrap();
    let plan = explain(&mut c, &format!("SELECT i FROM tst WHERE c = 7 ORDER BY v <-> {q} LIMIT 20"));
    assert!(plan.contains("attribute_idx"), "{plan}");
    // A partial hnsw index matching the filter is used.
    c.batch_execute("CREATE INDEX partial_idx ON tst USING hnsw (v vector_l2_ops) WHERE (c = 7)").unwrap();
    // Building a partial index records the table's whole row count, not the
    // rows its predicate admits.
    let reltuples: f32 = c.query_one("SELECT reltuples FROM pg_class WHERE relname = 'tst'", &[]).unwrap().get(0);
    assert_eq!(reltuples, 10_000.0);
    let plan = explain(&mut c, &format!("SELECT i FROM tst WHERE c = 7 ORDER BY v <-> {q} LIMIT 20"));
    assert!(plan.contains("Index Scan using partial_idx"), "{plan}");

    // Unfiltered queries use the index even on a small table of 384-dim rows.
    for dims in [384, 1536] {
        let array = vec!["random()"; dims].join(",");
        c.batch_execute(&format!(
            "DROP TABLE IF EXISTS small; CREATE TABLE small (i int4, v vector({dims}));
             INSERT INTO small SELECT i, ARRAY[{array}] FROM generate_series(1, 2000) i;
             CREATE INDEX small_idx ON small USING hnsw (v vector_l2_ops); ANALYZE small;"
        ))
        .unwrap();
        let q = format!("'[{}]'", vec!["0.5"; dims].join(","));
        let plan = explain(&mut c, &format!("SELECT i FROM small ORDER BY v <-> {q} LIMIT 10"));
        assert!(plan.contains("Index Scan using small_idx"), "{dims} dims:\n{plan}");
    }
}

/// The iterative-scan settings: defaults, bounds, bad values; NULL queries.
#[test]
fn iterative_scan_settings_and_null_queries() {
    let cluster = Cluster::start("filtered_gucs", &[]);
    let mut c = cluster.connect_with_extension();
    let show = |c: &mut Client, name: &str| -> String { c.query_one(&format!("SHOW {name}"), &[]).unwrap().get(0) };
    assert_eq!(show(&mut c, "hnsw.iterative_scan"), "off");
    assert_eq!(show(&mut c, "hnsw.max_scan_tuples"), "20000");
    assert_eq!(show(&mut c, "hnsw.scan_mem_multiplier"), "1");
    assert_eq!(show(&mut c, "hnsw.exact_fallback"), "on");
    for (sql, code) in [
        ("SET hnsw.iterative_scan = sideways", "22023"),
        ("SET hnsw.max_scan_tuples = 0", "22023"),
        ("SET hnsw.max_scan_tuples = 2147483648", "22023"),
        ("SET hnsw.scan_mem_multiplier = 0.5", "22023"),
        ("SET hnsw.scan_mem_multiplier = 1001", "22023"),
        ("SET hnsw.ef_search = 0", "22023"),
    ] {
        let err = sqlstate(&mut c, sql);
        assert!(err.starts_with(code), "{sql}: {err}");
    }
    c.batch_execute("SET hnsw.iterative_scan = strict_order; SET hnsw.max_scan_tuples = 2147483647;").unwrap();
    assert_eq!(show(&mut c, "hnsw.iterative_scan"), "strict_order");

    // A NULL query returns indexed rows, as pgvector does.
    c.batch_execute(
        "RESET ALL;
         CREATE TABLE n (id int, v vector(2));
         INSERT INTO n SELECT i, ARRAY[i, i * 2] FROM generate_series(1, 100) i;
         CREATE INDEX ON n USING hnsw (v vector_l2_ops);
         SET enable_seqscan = off;",
    )
    .unwrap();
    let rows = ids(&mut c, "SELECT id FROM n ORDER BY v <-> NULL LIMIT 5");
    assert_eq!(rows.len(), 5, "NULL query: {rows:?}");
    // (A scalar subquery keeps the NULL key at run time.)
    let null_query = "SELECT id FROM n ORDER BY v <-> (SELECT NULL::vector)";
    assert!(explain(&mut c, null_query).contains("Index Scan"), "{}", explain(&mut c, null_query));
    assert_eq!(ids(&mut c, null_query).len(), 40, "one beam of ef_search rows");
    c.batch_execute("SET hnsw.iterative_scan = relaxed_order").unwrap();
    assert_eq!(ids(&mut c, null_query).len(), 100, "iterative: all rows");

    // A zero query under cosine has no direction: the rows come back (as in
    // pgvector) in graph order with a NaN distance, for vector and halfvec.
    c.batch_execute(
        "RESET hnsw.iterative_scan;
         CREATE TABLE z (id int, v vector(3), h halfvec(3));
         INSERT INTO z VALUES (1, '[0,0,0]', '[0,0,0]'), (2, '[1,2,3]', '[1,2,3]'), (3, '[1,1,1]', '[1,1,1]'),
                              (4, NULL, NULL), (5, '[1,2,4]', '[1,2,4]');
         CREATE INDEX ON z USING hnsw (v vector_cosine_ops);
         CREATE INDEX ON z USING hnsw (h halfvec_cosine_ops);",
    )
    .unwrap();
    for (col, zero) in [("v", "'[0,0,0]'::vector"), ("h", "'[0,0,0]'::halfvec")] {
        let sql = format!("SELECT id FROM z ORDER BY {col} <=> {zero}");
        assert!(explain(&mut c, &sql).contains("Index Scan"), "{}", explain(&mut c, &sql));
        let mut rows = ids(&mut c, &sql);
        rows.sort();
        assert_eq!(rows, vec![2, 3, 5], "{col}: rows for a zero cosine query");
        let nan: f64 =
            c.query_one(&format!("SELECT ({col} <=> {zero})::float8 FROM z WHERE id = 2"), &[]).unwrap().get(0);
        assert!(nan.is_nan(), "{col}: distance to the zero vector is NaN");
    }

    // idx_scan counts index scans.
    c.batch_execute("SELECT pg_stat_force_next_flush()").unwrap();
    let before: i64 = c.query_one("SELECT idx_scan FROM pg_stat_user_indexes WHERE relname = 'n'", &[]).unwrap().get(0);
    for _ in 0..3 {
        ids(&mut c, "SELECT id FROM n ORDER BY v <-> '[1,1]' LIMIT 1");
    }
    c.batch_execute("SELECT pg_stat_force_next_flush()").unwrap();
    let after: i64 = c.query_one("SELECT idx_scan FROM pg_stat_user_indexes WHERE relname = 'n'", &[]).unwrap().get(0);
    assert_eq!(after - before, 3, "idx_scan counts each index scan");
}
