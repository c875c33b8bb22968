//! The `hnsw` index over `halfvec`, `sparsevec` and `bit` (and wide
//! `vector`s): recall for every operator class after CREATE INDEX and after
//! row-by-row inserts, duplicates, VACUUM, expression indexes as in pgvector's
//! README, and the limits' errors.

use pg_hnsw_cluster_tests::{explain, sqlstate, Client, Cluster, Dataset};
use rand::{Rng, SeedableRng};

fn check_passes(c: &mut Client, index: &str) {
    for r in c.query(&format!("SELECT check_name, passed, detail FROM hnsw_index_check('{index}')"), &[]).unwrap() {
        let (name, passed, detail): (String, bool, String) = (r.get(0), r.get(1), r.get(2));
        assert!(passed, "{index}: check {name} failed: {detail}");
    }
}

/// [`check_passes`] for an index grown by row-by-row inserts: an insert
/// that prunes a full neighbor list keeps each dropped element linked
/// unless two of its own neighbors link back to it, which a small group of
/// elements linking only to each other also satisfies; so a few elements
/// (3 to 8 of 5,000 here; at most one in 250 allowed) may be left
/// unreachable until VACUUM relinks them. After VACUUM every check must
/// pass. (A VACUUM that deletes nothing walks the index only if it has
/// doubled since the last walk, so the clusters run without autovacuum: an
/// autovacuum walk in the middle of the inserts could leave the test's own
/// VACUUM nothing to do.)
fn check_passes_after_inserts(c: &mut Client, table: &str, index: &str) {
    let rows: i64 = c.query_one(&format!("SELECT count(*) FROM {table}"), &[]).unwrap().get(0);
    for r in c.query(&format!("SELECT check_name, passed, detail FROM hnsw_index_check('{index}')"), &[]).unwrap() {
        let (name, passed, detail): (String, bool, String) = (r.get(0), r.get(1), r.get(2));
        if name == "reachable from entry point" && !passed {
            let problems: i64 = detail.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(i64::MAX);
            eprintln!("{index}: before VACUUM, {detail}");
            assert!(problems * 250 <= rows, "{index}: check {name} failed: {detail}");
        } else {
            assert!(passed, "{index}: check {name} failed: {detail}");
        }
    }
    c.batch_execute(&format!("VACUUM {table}")).unwrap();
    check_passes(c, index);
}

/// Mean recall@10 of the index's answers (`ORDER BY col <op> q LIMIT 10`)
/// against the same query with the index disabled, counting a row as found
/// when its exact distance is within the 10th exact distance (ties in
/// Hamming distance are common).
fn recall(c: &mut Client, table: &str, col: &str, op: &str, queries: &[String]) -> f64 {
    let mut total = 0.0;
    for q in queries {
        c.batch_execute("SET enable_seqscan = on; SET enable_indexscan = off").unwrap();
        let exact: Vec<f64> = c
            .query(&format!("SELECT ({col} {op} {q})::float8 FROM {table} ORDER BY {col} {op} {q} LIMIT 10"), &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        c.batch_execute("SET enable_seqscan = off; SET enable_indexscan = on").unwrap();
        let sql = format!("SELECT ({col} {op} {q})::float8 FROM {table} ORDER BY {col} {op} {q} LIMIT 10");
        let found: Vec<f64> = c.query(&sql, &[]).unwrap().iter().map(|r| r.get(0)).collect();
        let tenth = exact.last().copied().unwrap_or(f64::INFINITY);
        let hits = found.iter().filter(|d| **d <= tenth + 1e-6 * (1.0 + tenth.abs())).count().min(exact.len());
        total += hits as f64 / exact.len().max(1) as f64;
    }
    c.batch_execute("RESET enable_seqscan; RESET enable_indexscan").unwrap();
    total / queries.len() as f64
}

fn text(v: &[f32]) -> String {
    format!("[{}]", v.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>().join(","))
}

/// Builds the same rows into `<name>_built` (CREATE INDEX) and
/// `<name>_grown` (row-by-row inserts into an indexed table) and checks
/// recall for each operator of the type.
fn recall_by_opclass(
    c: &mut Client,
    name: &str,
    coltype: &str,
    staging: &str,
    cases: &[(&str, &str)],
    queries: &[String],
) {
    for (opclass, op) in cases {
        c.batch_execute(&format!(
            "DROP TABLE IF EXISTS {name}_built, {name}_grown;
             CREATE TABLE {name}_built AS SELECT id, v::{coltype} AS v FROM {staging};
             CREATE INDEX {name}_built_idx ON {name}_built USING hnsw (v {opclass}); ANALYZE {name}_built;
             CREATE TABLE {name}_grown (id int, v {coltype});
             CREATE INDEX {name}_grown_idx ON {name}_grown USING hnsw (v {opclass});
             INSERT INTO {name}_grown SELECT id, v::{coltype} FROM {staging} ORDER BY id; ANALYZE {name}_grown;"
        ))
        .unwrap_or_else(|e| panic!("{opclass}: {e}"));
        let plan = explain(c, &format!("SELECT id FROM {name}_built ORDER BY v {op} {} LIMIT 10", queries[0]));
        assert!(plan.contains(&format!("Index Scan using {name}_built_idx")), "{opclass}:\n{plan}");
        for table in [format!("{name}_built"), format!("{name}_grown")] {
            let r = recall(c, &table, "v", op, queries);
            eprintln!("{opclass} {table}: recall@10 = {r:.4}");
            assert!(r >= 0.95, "{opclass} {table}: recall@10 {r}");
            if table.ends_with("_grown") {
                check_passes_after_inserts(c, &table, &format!("{table}_idx"));
            } else {
                check_passes(c, &format!("{table}_idx"));
            }
        }
        let size: i64 = c.query_one(&format!("SELECT pg_relation_size('{name}_built_idx')"), &[]).unwrap().get(0);
        eprintln!("{opclass}: index size {:.1} MB", size as f64 / 1e6);
    }
}

#[test]
fn halfvec_opclasses_on_real_data() {
    // No autovacuum: the VACUUM after the inserts must be the one that
    // walks the index (see `check_passes_after_inserts`).
    let cluster = Cluster::start("types_index_halfvec", &["autovacuum = off"]);
    let mut c = cluster.connect_with_extension();
    let data = Dataset::load(5_000, 30);
    c.batch_execute("CREATE TABLE staging (id int, embedding vector(384))").unwrap();
    pg_hnsw_cluster_tests::copy_vectors(&mut c, "staging", 0, &data.base);
    c.batch_execute("ALTER TABLE staging RENAME embedding TO v").unwrap();
    let queries: Vec<String> = data.queries.iter().map(|q| format!("'{}'::halfvec(384)", text(q))).collect();
    recall_by_opclass(
        &mut c,
        "h",
        "halfvec(384)",
        "staging",
        &[
            ("halfvec_cosine_ops", "<=>"),
            ("halfvec_l2_ops", "<->"),
            ("halfvec_ip_ops", "<#>"),
            ("halfvec_l1_ops", "<+>"),
        ],
        &queries,
    );
    // Expression index over a vector column, as in pgvector's README.
    c.batch_execute("CREATE INDEX staging_half_idx ON staging USING hnsw ((v::halfvec(384)) halfvec_cosine_ops)")
        .unwrap();
    let plan = explain(&mut c, &format!("SELECT id FROM staging ORDER BY v::halfvec(384) <=> {} LIMIT 5", queries[0]));
    assert!(plan.contains("Index Scan using staging_half_idx"), "{plan}");
}

#[test]
fn bit_opclasses_on_binary_quantized_real_data() {
    // No autovacuum: the VACUUM after the inserts must be the one that
    // walks the index (see `check_passes_after_inserts`).
    let cluster = Cluster::start("types_index_bit", &["autovacuum = off"]);
    let mut c = cluster.connect_with_extension();
    let data = Dataset::load(5_000, 30);
    c.batch_execute("CREATE TABLE staging (id int, embedding vector(384))").unwrap();
    pg_hnsw_cluster_tests::copy_vectors(&mut c, "staging", 0, &data.base);
    c.batch_execute("ALTER TABLE staging RENAME embedding TO v").unwrap();
    c.batch_execute("CREATE TABLE bq AS SELECT id, binary_quantize(v)::bit(384) AS v FROM staging").unwrap();
    let queries: Vec<String> =
        data.queries.iter().map(|q| format!("binary_quantize('{}'::vector)::bit(384)", text(q))).collect();
    recall_by_opclass(
        &mut c,
        "b",
        "bit(384)",
        "bq",
        &[("bit_hamming_ops", "<~>"), ("bit_jaccard_ops", "<%>")],
        &queries,
    );
    // The README's expression index, used for ORDER BY on the expression.
    c.batch_execute(
        "CREATE INDEX staging_bq_idx ON staging USING hnsw ((binary_quantize(v)::bit(384)) bit_hamming_ops)",
    )
    .unwrap();
    let plan = explain(
        &mut c,
        &format!("SELECT id FROM staging ORDER BY binary_quantize(v)::bit(384) <~> {} LIMIT 5", queries[0]),
    );
    assert!(plan.contains("Index Scan using staging_bq_idx"), "{plan}");
    // varbit columns have no fixed length.
    c.batch_execute("CREATE TABLE vb (v varbit)").unwrap();
    assert!(sqlstate(&mut c, "CREATE INDEX ON vb USING hnsw (v bit_hamming_ops)").starts_with("0A000"));
}

#[test]
fn sparsevec_opclasses_on_sparse_data() {
    // No autovacuum: the VACUUM after the inserts must be the one that
    // walks the index (see `check_passes_after_inserts`).
    let cluster = Cluster::start("types_index_sparsevec", &["autovacuum = off"]);
    let mut c = cluster.connect_with_extension();
    let mut rng = rand::rngs::StdRng::seed_from_u64(31);
    let dims = 2_000;
    // 1–5% non-zeros, clustered around 30 topics so neighbours are meaningful.
    let topics: Vec<Vec<usize>> = (0..30).map(|_| (0..60).map(|_| rng.gen_range(0..dims)).collect()).collect();
    let row = |rng: &mut rand::rngs::StdRng| -> String {
        let topic = &topics[rng.gen_range(0..topics.len())];
        let nnz = rng.gen_range(20..=100);
        let mut entries: std::collections::BTreeMap<usize, f32> = std::collections::BTreeMap::new();
        while entries.len() < nnz {
            let i = if rng.gen_bool(0.7) { topic[rng.gen_range(0..topic.len())] } else { rng.gen_range(0..dims) };
            entries.insert(i, rng.gen_range(0.1f32..1.0));
        }
        let body: Vec<String> = entries.iter().map(|(i, v)| format!("{}:{v:?}", i + 1)).collect();
        format!("{{{}}}/{dims}", body.join(","))
    };
    {
        use std::io::Write;
        c.batch_execute(&format!("CREATE TABLE staging (id int, v sparsevec({dims}))")).unwrap();
        let mut w = c.copy_in("COPY staging FROM STDIN").unwrap();
        for i in 0..5_000 {
            writeln!(w, "{i}\t{}", row(&mut rng)).unwrap();
        }
        w.finish().unwrap();
    }
    let queries: Vec<String> = (0..30).map(|_| format!("'{}'::sparsevec({dims})", row(&mut rng))).collect();
    recall_by_opclass(
        &mut c,
        "s",
        &format!("sparsevec({dims})"),
        "staging",
        &[
            ("sparsevec_l2_ops", "<->"),
            ("sparsevec_cosine_ops", "<=>"),
            ("sparsevec_ip_ops", "<#>"),
            ("sparsevec_l1_ops", "<+>"),
        ],
        &queries,
    );
    // More than 1,000 non-zero elements in an indexed row is an error naming its count.
    let big: Vec<String> = (1..=1001).map(|i| format!("{i}:1")).collect();
    let err = sqlstate(&mut c, &format!("INSERT INTO s_grown VALUES (1, '{{{}}}/{dims}')", big.join(",")));
    assert!(err.starts_with("54000") && err.contains("1000 non-zero elements"), "{err}");
}

/// Duplicates share elements and VACUUM removes dead rows, for each type.
#[test]
fn duplicates_and_vacuum_per_type() {
    let cluster = Cluster::start("types_index_vacuum", &[]);
    let mut c = cluster.connect_with_extension();
    let cases = [
        ("halfvec(3)", "halfvec_l2_ops", "<->", "ARRAY[i % 7, i % 11, i % 13]::halfvec(3)", "'[1,2,3]'::halfvec(3)"),
        (
            "sparsevec(5)",
            "sparsevec_cosine_ops",
            "<=>",
            "ARRAY[i % 7 + 1, 0, i % 11, 0, i % 13]::real[]::sparsevec(5)",
            "'{1:1,3:2,5:3}/5'::sparsevec(5)",
        ),
        ("bit(8)", "bit_hamming_ops", "<~>", "(i % 97)::bit(8)", "B'00001111'"),
        ("bit(8)", "bit_jaccard_ops", "<%>", "((i % 97) + 1)::bit(8)", "B'00001111'"),
    ];
    for (coltype, opclass, op, expr, q) in cases {
        c.batch_execute(&format!(
            "DROP TABLE IF EXISTS d; CREATE TABLE d (id int, v {coltype});
             CREATE INDEX d_idx ON d USING hnsw (v {opclass});
             INSERT INTO d SELECT i, {expr} FROM generate_series(1, 3000) i;
             SET enable_seqscan = off; SET hnsw.iterative_scan = relaxed_order; SET hnsw.ef_search = 100;"
        ))
        .unwrap_or_else(|e| panic!("{opclass}: {e}"));
        check_passes(&mut c, "d_idx");
        let count = |c: &mut Client| -> i64 {
            c.query_one(&format!("SELECT count(*) FROM (SELECT id FROM d ORDER BY v {op} {q}) t"), &[]).unwrap().get(0)
        };
        assert_eq!(count(&mut c), 3000, "{opclass}: every duplicate is reachable through the index");
        c.batch_execute("DELETE FROM d WHERE id % 3 = 0").unwrap();
        c.batch_execute("VACUUM d").unwrap();
        check_passes(&mut c, "d_idx");
        assert_eq!(count(&mut c), 2000, "{opclass}: after VACUUM");
        c.batch_execute(&format!("INSERT INTO d SELECT i, {expr} FROM generate_series(3001, 4000) i;")).unwrap();
        check_passes(&mut c, "d_idx");
        assert_eq!(count(&mut c), 3000, "{opclass}: inserts reuse space");
        c.batch_execute("RESET ALL").unwrap();
    }
}

/// `vector` columns of up to 4,000 dimensions are indexed directly (half
/// precision pages, exact order through the recheck); more is an error.
#[test]
fn wide_vectors_up_to_4000_dimensions() {
    let cluster = Cluster::start("types_index_wide", &[]);
    let mut c = cluster.connect_with_extension();
    c.batch_execute(
        "SELECT setseed(0.1);
         CREATE TABLE w (id int, v vector(4000));
         INSERT INTO w SELECT i, (SELECT array_agg(random()) FROM generate_series(1, 4000) WHERE i > 0) FROM generate_series(1, 300) i;
         CREATE INDEX w_idx ON w USING hnsw (v vector_cosine_ops);
         INSERT INTO w SELECT i, (SELECT array_agg(random()) FROM generate_series(1, 4000) WHERE i > 0) FROM generate_series(301, 400) i;",
    )
    .unwrap();
    check_passes(&mut c, "w_idx");
    c.batch_execute("SET enable_seqscan = off").unwrap();
    let d: Vec<f64> = c
        .query(
            "SELECT v <=> (SELECT v FROM w WHERE id = 7) FROM w ORDER BY v <=> (SELECT v FROM w WHERE id = 7) LIMIT 20",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(d.len(), 20);
    assert!(d[0].abs() < 1e-6, "the row itself first: {d:?}");
    assert!(d.windows(2).all(|w| w[0] <= w[1]), "exact order: {d:?}");
    c.batch_execute("CREATE TABLE w2 (v vector(4001)); CREATE TABLE h2 (v halfvec(4001))").unwrap();
    for sql in ["CREATE INDEX ON w2 USING hnsw (v vector_l2_ops)", "CREATE INDEX ON h2 USING hnsw (v halfvec_l2_ops)"] {
        let err = sqlstate(&mut c, sql);
        assert!(err.starts_with("54000") && err.contains("4000 dimensions"), "{sql}: {err}");
    }
}
