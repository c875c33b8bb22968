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
    let count = |c: &mut Client, mode: &str, max: i32, query_row: i32| -> i64 {
        c.batch_execute(&format!(
            "SET enable_seqscan = off; SET hnsw.iterative_scan = {mode}; SET hnsw.max_scan_tuples = {max};"
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
    let off = count(&mut c, "off", 20_000, 1);
    assert!(off <= 2, "iterative scan off returned {off} of the 10 rare rows");
    // With a budget covering the whole index, all 10 rows are found.
    assert_eq!(count(&mut c, "relaxed_order", 100_000, 1), 10);
    assert_eq!(count(&mut c, "strict_order", 100_000, 2), 10);
    // Rows found grow with the budget: about max_scan_tuples / 10,000.
    for max in [30_000, 50_000, 70_000] {
        let found: i64 = (1..=10).map(|q| count(&mut c, "relaxed_order", max, q)).sum();
        let mean = found as f64 / 10.0;
        let expected = max as f64 / 10_000.0;
        assert!((mean - expected).abs() < 2.0, "max_scan_tuples {max}: {mean} rows found, expected ~{expected}");
    }
}

/// Exact filtered top-10 by brute force against the index's answers, at
/// selectivities 1/50 and 1/500, and strict order.
#[test]
fn filtered_recall_and_order() {
    let cluster = Cluster::start("filtered_recall", &[]);
    let mut c = cluster.connect_with_extension();
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let n = 50_000;
    let rows: Vec<Vec<f32>> = (0..n).map(|_| (0..8).map(|_| rng.gen::<f32>()).collect()).collect();
    c.batch_execute("CREATE TABLE t (id int4, c50 int4, c500 int4, v vector(8))").unwrap();
    {
        use std::io::Write;
        let mut w = c.copy_in("COPY t FROM STDIN").unwrap();
        for (i, v) in rows.iter().enumerate() {
            let text: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
            writeln!(w, "{i}\t{}\t{}\t[{}]", i % 50, i % 500, text.join(",")).unwrap();
        }
        w.finish().unwrap();
    }
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
