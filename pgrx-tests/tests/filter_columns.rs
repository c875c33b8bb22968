//! Filter columns: the columns after the vector in a multi-column hnsw index
//! (`USING hnsw (v vector_l2_ops, cat, n, ...)`), whose conditions the scan
//! evaluates on each element inside the graph search. Every key type and
//! operator against the exact answer, NULL keys, generic plans, the planner's
//! Index Cond, inserts, updates and VACUUM on such an index with
//! `hnsw_index_check`, and the errors for what is not supported.

use pg_hnsw_cluster_tests::{explain, pg_major, sqlstate, Client, Cluster};

fn ids(c: &mut Client, sql: &str) -> Vec<i32> {
    c.query(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}")).iter().map(|r| r.get(0)).collect()
}

/// A table of `n` rows (3-d vectors from the seeded `random()`) with one
/// column of each supported key type, derived from the row number `i`; every
/// 97th row has NULL keys.
fn create_items(c: &mut Client, n: usize) {
    c.batch_execute(&format!(
        "SELECT setseed(0.25);
         CREATE TABLE items (i int4 PRIMARY KEY, v vector(3), cat text, n int4, s int2, big int8, b bool,
                             u uuid, vc varchar(10), tags int4[], ttags text[], utags uuid[]);
         INSERT INTO items
           SELECT i, ARRAY[random(), random(), random()],
                  CASE WHEN i % 97 = 0 THEN NULL ELSE 'c' || (i % 5) END,
                  CASE WHEN i % 97 = 0 THEN NULL ELSE i % 7 END,
                  (i % 3)::int2, i::int8 * 1000000007, i % 2 = 0,
                  md5((i % 4)::text)::uuid, 'v' || (i % 6),
                  CASE WHEN i % 97 = 0 THEN NULL ELSE ARRAY[i % 10, i % 13] END,
                  ARRAY['t' || (i % 8), NULL], ARRAY[md5((i % 3)::text)::uuid]
           FROM generate_series(1, {n}) i;
         ANALYZE items;"
    ))
    .unwrap();
}

const KEYED_INDEX: &str =
    "CREATE INDEX items_keyed ON items USING hnsw (v vector_l2_ops, cat, n, s, big, b, u, vc, tags, ttags, utags)";

/// The index's answer and the exact answer (a sequential scan and a sort)
/// to `WHERE cond ORDER BY v <-> q LIMIT limit`.
fn index_and_exact(c: &mut Client, cond: &str, limit: usize) -> (Vec<i32>, Vec<i32>) {
    let sql = format!("SELECT i FROM items WHERE {cond} ORDER BY v <-> '[0.5,0.4,0.3]' LIMIT {limit}");
    c.batch_execute("SET enable_seqscan = off; SET enable_indexscan = on").unwrap();
    let plan = explain(c, &sql);
    assert!(plan.contains("Index Scan using items_keyed"), "{cond}: {plan}");
    let found = ids(c, &sql);
    c.batch_execute("SET enable_seqscan = on; SET enable_indexscan = off").unwrap();
    let exact = ids(c, &sql);
    c.batch_execute("RESET enable_seqscan; RESET enable_indexscan").unwrap();
    (found, exact)
}

/// The conditions the index evaluates (each becomes an Index Cond) and
/// how they compare with the exact answer: every matching row comes back
/// (a LIMIT above the number of matches), and the first ten are the ten
/// nearest.
#[test]
fn every_key_type_and_operator_matches_the_exact_answer() {
    let cluster = Cluster::start("filter_columns_ops", &[]);
    let mut c = cluster.connect_with_extension();
    create_items(&mut c, 3000);
    c.batch_execute(KEYED_INDEX).unwrap();
    let conditions = [
        "cat = 'c1'",
        "n = 3",
        "n = 3::int8",
        "n = 3::int2",
        "n < 2",
        "n <= 2",
        "n > 5",
        "n >= 5",
        "s = 2",
        "s < 1::int8",
        "big = 5000000035",
        "big > 2000000000000",
        "u = md5('2')::uuid",
        "vc = 'v4'",
        "tags && '{3}'",
        "tags && '{3,11,12}'",
        "tags @> '{3,4}'",
        "tags @> '{}'",
        "ttags && '{t1}'",
        "ttags @> '{t2}'",
        "utags && ARRAY[md5('1')::uuid]",
        "cat = 'c2' AND n > 3",
        "cat = 'c3' AND tags && '{1,2}' AND s = 0",
        "n = 99",
    ];
    for cond in conditions {
        let sql = format!("SELECT i FROM items WHERE {cond} ORDER BY v <-> '[0.5,0.4,0.3]' LIMIT 10");
        c.batch_execute("SET enable_seqscan = off").unwrap();
        let plan = explain(&mut c, &sql);
        c.batch_execute("RESET enable_seqscan").unwrap();
        assert!(plan.contains("Index Cond"), "{cond} is not an index condition: {plan}");
        assert!(!plan.contains("Filter:"), "{cond} left a filter: {plan}");
        let (all, exact_all) = index_and_exact(&mut c, cond, 100_000);
        let mut sorted = all.clone();
        sorted.sort_unstable();
        let mut exact_sorted = exact_all.clone();
        exact_sorted.sort_unstable();
        assert_eq!(sorted, exact_sorted, "{cond}: the index returns every matching row once");
        let (top, exact_top) = index_and_exact(&mut c, cond, 10);
        let hits = top.iter().filter(|i| exact_top.contains(i)).count();
        assert_eq!(top.len(), exact_top.len(), "{cond}: rows returned");
        assert!(hits + 1 >= exact_top.len(), "{cond}: {top:?} vs exact {exact_top:?}");
    }
    // A condition the index does not take stays a filter and still holds.
    let (found, exact) = index_and_exact(&mut c, "n = 1 AND i % 2 = 0", 100_000);
    assert_eq!(found.len(), exact.len());
}

/// `= ANY(...)` and `IN (...)` on filter columns: the index evaluates them
/// (one scan key with an array of values) on PostgreSQL 17 and later, where
/// the planner hands a key column's ScalarArrayOpExpr to an index that
/// orders by distance; 15 and 16 keep them as a filter above the scan, so
/// there the answer is complete with an iterative scan (as without filter
/// columns). Either way it is the exact one, with literal arrays and with
/// an array parameter under a generic plan.
#[test]
fn any_and_in_on_filter_columns() {
    let cluster = Cluster::start("filter_columns_any", &[]);
    let mut c = cluster.connect_with_extension();
    create_items(&mut c, 3000);
    c.batch_execute(KEYED_INDEX).unwrap();
    c.batch_execute("SET hnsw.iterative_scan = relaxed_order").unwrap();
    let in_index = pg_major() >= 17;
    let conditions = [
        "cat = ANY('{c1,c3}')",
        "cat IN ('c0', 'c4')",
        "n IN (1, 4)",
        "n = ANY(ARRAY[2, 99]::int8[])",
        "u = ANY(ARRAY[md5('1')::uuid, md5('3')::uuid])",
        "cat IN ('c2') AND n = ANY('{2,3}')",
        "n = ANY('{}')",
    ];
    for cond in conditions {
        let sql = format!("SELECT i FROM items WHERE {cond} ORDER BY v <-> '[0.5,0.4,0.3]' LIMIT 10");
        c.batch_execute("SET enable_seqscan = off").unwrap();
        let plan = explain(&mut c, &sql);
        c.batch_execute("RESET enable_seqscan").unwrap();
        if in_index {
            assert!(plan.contains("Index Cond"), "{cond} is not an index condition: {plan}");
            assert!(!plan.contains("Filter:"), "{cond} left a filter: {plan}");
        }
        let (mut all, mut exact_all) = index_and_exact(&mut c, cond, 100_000);
        all.sort_unstable();
        exact_all.sort_unstable();
        assert_eq!(all, exact_all, "{cond}: every matching row once");
        let (top, exact_top) = index_and_exact(&mut c, cond, 10);
        let hits = top.iter().filter(|i| exact_top.contains(i)).count();
        assert_eq!(top.len(), exact_top.len(), "{cond}: rows returned");
        assert!(hits + 1 >= exact_top.len(), "{cond}: {top:?} vs exact {exact_top:?}");
    }
    // An array parameter under a generic plan.
    c.batch_execute("SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off").unwrap();
    let sql = "SELECT i FROM items WHERE cat = ANY($1) ORDER BY v <-> '[0.5,0.4,0.3]' LIMIT 10";
    let stmt = c.prepare(sql).unwrap();
    let values = vec!["c1".to_string(), "c2".to_string()];
    let found: Vec<i32> = c.query(&stmt, &[&values]).unwrap().iter().map(|r| r.get(0)).collect();
    c.batch_execute("RESET plan_cache_mode; SET enable_seqscan = on; SET enable_indexscan = off").unwrap();
    let exact = ids(&mut c, "SELECT i FROM items WHERE cat IN ('c1', 'c2') ORDER BY v <-> '[0.5,0.4,0.3]' LIMIT 10");
    let hits = found.iter().filter(|i| exact.contains(i)).count();
    assert_eq!(found.len(), 10);
    assert!(hits >= 9, "generic plan: {found:?} vs exact {exact:?}");
    // PostgreSQL 18's EXPLAIN ANALYZE counts the scan's index searches (as
    // for pgvector and the built-in access methods: one per scan).
    if pg_major() >= 18 {
        c.batch_execute("RESET enable_indexscan; SET enable_seqscan = off").unwrap();
        let plan = explain(
            &mut c,
            "(ANALYZE, COSTS OFF) SELECT i FROM items WHERE cat = 'c1' ORDER BY v <-> '[0.5,0.4,0.3]' LIMIT 10",
        );
        assert!(plan.contains("Index Searches: 1"), "{plan}");
    }
}

/// NULL keys are indexed (the row is still found without a filter) and never
/// match: not `=` with any value, not a NULL argument, and the rows with
/// NULL arrays never overlap anything.
#[test]
fn null_keys_never_match() {
    let cluster = Cluster::start("filter_columns_nulls", &[]);
    let mut c = cluster.connect_with_extension();
    create_items(&mut c, 2000);
    c.batch_execute(KEYED_INDEX).unwrap();
    c.batch_execute("SET enable_seqscan = off").unwrap();
    let all = ids(&mut c, "SELECT i FROM items ORDER BY v <-> '[0.5,0.4,0.3]' LIMIT 100000");
    // Without iterative scan the unfiltered scan returns ef_search rows.
    assert!(!all.is_empty());
    c.batch_execute("SET hnsw.iterative_scan = relaxed_order").unwrap();
    let all = ids(&mut c, "SELECT i FROM items ORDER BY v <-> '[0.5,0.4,0.3]' LIMIT 100000");
    assert_eq!(all.len(), 2000, "rows with NULL keys are indexed");
    c.batch_execute("RESET hnsw.iterative_scan").unwrap();
    let nulls = ids(&mut c, "SELECT i FROM items WHERE cat IS NULL");
    assert_eq!(nulls.len(), 2000 / 97);
    for cond in ["cat = 'c1'", "n >= 0", "n < 100", "tags && '{0,1,2,3,4,5,6,7,8,9}'", "tags @> '{}'"] {
        let found =
            ids(&mut c, &format!("SELECT i FROM items WHERE {cond} ORDER BY v <-> '[0.5,0.4,0.3]' LIMIT 100000"));
        assert!(!found.is_empty(), "{cond}");
        assert!(found.iter().all(|i| i % 97 != 0), "{cond} matched a NULL key");
    }
    // A NULL argument matches nothing; so does an array holding NULL under @>.
    c.batch_execute(
        "PREPARE by_cat(text) AS SELECT i FROM items WHERE cat = $1 ORDER BY v <-> '[0.5,0.4,0.3]' LIMIT 10",
    )
    .unwrap();
    assert!(ids(&mut c, "EXECUTE by_cat(NULL)").is_empty());
    assert!(
        ids(&mut c, "SELECT i FROM items WHERE tags @> '{1,NULL}' ORDER BY v <-> '[0.5,0.4,0.3]' LIMIT 10").is_empty()
    );
    // ttags hold a NULL element beside 't<i % 8>': && still finds the rows.
    assert_eq!(
        ids(&mut c, "SELECT i FROM items WHERE ttags && '{t0}' ORDER BY v <-> '[0.5,0.4,0.3]' LIMIT 100000").len(),
        2000 / 8
    );
}

/// Prepared statements under generic plans: the condition on `$2` is an
/// Index Cond, a value held by one row in 20,000 gets that row without any
/// iterative-scan setting. The rows carry a 200-byte document beside the
/// vector, as the rows of a search table do (with 3-dimension vectors alone
/// the heap is a fifth of the index's size, and a sequential scan and sort
/// is the cheaper plan, which the planner then rightly takes).
#[test]
fn generic_plans_keep_the_filter_in_the_index() {
    let cluster = Cluster::start("filter_columns_generic", &[]);
    let mut c = cluster.connect_with_extension();
    c.batch_execute(
        "SELECT setseed(0.75);
         CREATE TABLE items (i int4 PRIMARY KEY, v vector(3), tenant int8, flag bool, doc text);
         INSERT INTO items SELECT i, ARRAY[random(), random(), random()],
             CASE WHEN i = 12345 THEN -1 ELSE i % 10 END, i % 3 = 0, repeat(md5(i::text), 6)
             FROM generate_series(1, 20000) i;
         CREATE INDEX items_keyed ON items USING hnsw (v vector_l2_ops, tenant, flag);
         ANALYZE items;
         SET plan_cache_mode = force_generic_plan;
         PREPARE nearest(vector, int8) AS
             SELECT i FROM items WHERE tenant = $2 ORDER BY v <-> $1 LIMIT 10;
         PREPARE nearest_flag(vector, bool) AS
             SELECT i FROM items WHERE flag = $2 ORDER BY v <-> $1 LIMIT 10;",
    )
    .unwrap();
    let plan = explain(&mut c, "EXECUTE nearest('[0.5,0.5,0.5]', -1)");
    assert!(plan.contains("Index Cond: (tenant = $2)"), "{plan}");
    assert_eq!(ids(&mut c, "EXECUTE nearest('[0.5,0.5,0.5]', -1)"), vec![12345]);
    assert_eq!(ids(&mut c, "EXECUTE nearest('[0,0,0]', 7)").len(), 10);
    let plan = explain(&mut c, "EXECUTE nearest_flag('[0.5,0.5,0.5]', true)");
    assert!(plan.contains("Index Cond: (flag = $2)"), "{plan}");
    for (q, flag) in [("[0.1,0.2,0.3]", true), ("[0.9,0.1,0.5]", false)] {
        let found = ids(&mut c, &format!("EXECUTE nearest_flag('{q}', {flag})"));
        let exact =
            ids(&mut c, &format!("SELECT i FROM items WHERE (i % 3 = 0) = {flag} ORDER BY v <-> '{q}' LIMIT 10"));
        let hits = found.iter().filter(|i| exact.contains(i)).count();
        assert!(hits >= 9, "{found:?} vs {exact:?}");
    }
}

/// Inserts (into an index built empty and one built full), updates of the
/// key columns, deletes and VACUUM (which frees elements that inserts then
/// reuse): the filtered answers stay complete and `hnsw_index_check`
/// passes every check.
#[test]
fn inserts_updates_and_vacuum_keep_the_keys() {
    let cluster = Cluster::start("filter_columns_dml", &["autovacuum = off"]);
    let mut c = cluster.connect_with_extension();
    c.batch_execute(
        "SELECT setseed(0.5);
         CREATE TABLE items (i int4 PRIMARY KEY, v vector(3), cat text, tags int4[]);
         CREATE INDEX items_keyed ON items USING hnsw (v vector_l2_ops, cat, tags);
         INSERT INTO items SELECT i, ARRAY[random(), random(), random()], 'c' || (i % 4), ARRAY[i % 9]
           FROM generate_series(1, 3000) i;",
    )
    .unwrap();
    let check = |c: &mut Client, when: &str| {
        let rows = c.query("SELECT check_name, passed, detail FROM hnsw_index_check('items_keyed')", &[]).unwrap();
        assert_eq!(rows.len(), 6, "{when}");
        for r in rows {
            let (name, passed, detail): (String, bool, String) = (r.get(0), r.get(1), r.get(2));
            assert!(passed, "{when}: {name}: {detail}");
        }
    };
    // Every matching row, through the graph walk and the exact pass that
    // follows it, and with a walk budget of one element, through the exact
    // pass and so the key directory alone (an element without its entry
    // would be missing).
    let complete = |c: &mut Client, when: &str| {
        c.batch_execute("SET enable_seqscan = off").unwrap();
        for budget in ["DEFAULT", "1"] {
            c.batch_execute(&format!("SET hnsw.max_scan_tuples = {budget}; SET hnsw.ef_search = 1")).unwrap();
            for cond in ["cat = 'c1'", "cat = 'c3'", "tags && '{4}'", "tags @> '{0}' AND cat = 'c0'"] {
                let sql = format!("SELECT i FROM items WHERE {cond} ORDER BY v <-> '[0.3,0.3,0.3]' LIMIT 100000");
                let mut found = ids(c, &sql);
                found.sort_unstable();
                let mut exact = ids(c, &format!("SELECT i FROM items WHERE {cond} ORDER BY i"));
                exact.sort_unstable();
                assert_eq!(found, exact, "{when}: {cond}, max_scan_tuples {budget}");
            }
        }
        c.batch_execute("RESET enable_seqscan; RESET hnsw.max_scan_tuples; RESET hnsw.ef_search").unwrap();
    };
    // The key directory's row: entries, and those of freed or reused
    // elements (which VACUUM drops).
    let directory = |c: &mut Client| -> String {
        c.query_one("SELECT detail FROM hnsw_index_check('items_keyed') WHERE check_name = 'key directory'", &[])
            .unwrap()
            .get(0)
    };
    complete(&mut c, "after inserts");
    check(&mut c, "after inserts");
    c.batch_execute(
        "UPDATE items SET cat = 'c1' WHERE i % 10 = 3;
         UPDATE items SET tags = ARRAY[4, 5] WHERE i % 10 = 7;
         DELETE FROM items WHERE i % 3 = 0;",
    )
    .unwrap();
    complete(&mut c, "after updates and deletes");
    let before = directory(&mut c);
    c.batch_execute("VACUUM items").unwrap();
    complete(&mut c, "after VACUUM");
    check(&mut c, "after VACUUM");
    // 3,000 rows and the 600 new versions from the updates have an element
    // and an entry each (a new version with the same vector and keys too:
    // rows share elements only without filter columns); VACUUM freed the
    // elements of the old versions and the deleted rows and dropped their
    // entries.
    assert!(before.starts_with("3600 entries") && before.contains("3600 live"), "{before}");
    let after = directory(&mut c);
    assert!(after.starts_with("2000 entries") && after.contains("for 2000 live elements (0 for freed"), "{after}");
    // Inserts reuse the freed elements with their own keys.
    c.batch_execute(
        "INSERT INTO items SELECT i, ARRAY[random(), random(), random()], 'c' || (i % 4), ARRAY[i % 9, 100]
           FROM generate_series(3001, 4500) i;",
    )
    .unwrap();
    complete(&mut c, "after reuse");
    assert_eq!(
        ids(&mut c, "SELECT i FROM items WHERE tags && '{100}' ORDER BY v <-> '[0.3,0.3,0.3]' LIMIT 100000").len(),
        1500
    );
    check(&mut c, "after reuse");
    // An index built over existing rows (the build's own path) holds the same.
    c.batch_execute(
        "DROP INDEX items_keyed; CREATE INDEX items_keyed ON items USING hnsw (v vector_l2_ops, cat, tags)",
    )
    .unwrap();
    complete(&mut c, "after a rebuild");
    check(&mut c, "after a rebuild");
}

/// Rows with equal vectors and equal keys inserted into a multi-column
/// index keep an element (and a key directory entry) each, as the build
/// does, so a failed insert's element never takes in a committed row.
#[test]
fn equal_rows_keep_their_own_elements() {
    let cluster = Cluster::start("filter_columns_equal", &["autovacuum = off"]);
    let mut c = cluster.connect_with_extension();
    c.batch_execute(
        "CREATE TABLE items (i int4, v vector(3), cat text);
         CREATE INDEX items_keyed ON items USING hnsw (v vector_l2_ops, cat);
         INSERT INTO items SELECT i, '[1,2,3]', 'a' FROM generate_series(1, 5) i;",
    )
    .unwrap();
    let pages: String = c
        .query_one("SELECT detail FROM hnsw_index_check('items_keyed') WHERE check_name = 'pages and items'", &[])
        .unwrap()
        .get(0);
    assert!(pages.contains("5 elements (5 live"), "{pages}");
    let directory: String = c
        .query_one("SELECT detail FROM hnsw_index_check('items_keyed') WHERE check_name = 'key directory'", &[])
        .unwrap()
        .get(0);
    assert!(directory.starts_with("5 entries"), "{directory}");
    c.batch_execute("SET hnsw.max_scan_tuples = 1").unwrap();
    let found = ids(&mut c, "SELECT i FROM items WHERE cat = 'a' ORDER BY v <-> '[1,2,3]' LIMIT 100");
    assert_eq!(found.len(), 5);
}

/// What filter columns do not support is an ERROR naming the column's type
/// and listing the supported ones, and nothing is left behind.
#[test]
fn unsupported_filter_columns_are_clear_errors() {
    let cluster = Cluster::start("filter_columns_errors", &[]);
    let mut c = cluster.connect_with_extension();
    c.batch_execute(
        "CREATE TABLE items (i int4, v vector(3), w vector(3), h halfvec(3), price numeric, tags int4[], ts timestamptz[]);
         INSERT INTO items VALUES (1, '[1,2,3]', '[1,2,3]', '[1,2,3]', 1.5, '{1}', NULL);",
    )
    .unwrap();
    let e = sqlstate(&mut c, "CREATE INDEX ON items USING hnsw (v vector_l2_ops, price)");
    assert!(e.starts_with("0A000 data type numeric is not supported for an hnsw filter column"), "{e}");
    let detail = c.batch_execute("CREATE INDEX ON items USING hnsw (v vector_l2_ops, price)").unwrap_err();
    let detail = detail.as_db_error().and_then(|d| d.detail()).unwrap_or_default().to_string();
    assert!(detail.contains("integer") && detail.contains("text") && detail.contains("uuid"), "{detail}");
    let e = sqlstate(&mut c, "CREATE INDEX ON items USING hnsw (v vector_l2_ops, ts)");
    assert!(e.starts_with("0A000 data type timestamp with time zone[] is not supported"), "{e}");
    let e = sqlstate(&mut c, "CREATE INDEX ON items USING hnsw (v vector_l2_ops, w vector_l2_ops)");
    assert!(e.starts_with("0A000 an hnsw index has one vector column"), "{e}");
    let e = sqlstate(&mut c, "CREATE INDEX ON items USING hnsw (i, v vector_l2_ops)");
    assert!(e.starts_with("42704"), "{e}");
    let e = sqlstate(&mut c, "CREATE INDEX ON items USING hnsw (h)");
    assert!(e.starts_with("42704 data type halfvec has no default operator class for access method \"hnsw\""), "{e}");
    c.batch_execute("CREATE INDEX ON items USING hnsw (v vector_l2_ops, tags) WHERE i > 0").unwrap();
    let n: i64 = c.query_one("SELECT count(*) FROM pg_indexes WHERE tablename = 'items'", &[]).unwrap().get(0);
    assert_eq!(n, 1, "only the good index exists");
    // An array key too long to store: 54000, and the row is not inserted.
    let e = sqlstate(
        &mut c,
        "INSERT INTO items (i, v, tags) SELECT 2, '[1,1,1]', array_agg(g) FROM generate_series(1, 1000) g",
    );
    assert!(e.starts_with("54000 hnsw filter keys of"), "{e}");
    let n: i64 = c.query_one("SELECT count(*) FROM items", &[]).unwrap().get(0);
    assert_eq!(n, 1);
    // Operators the index does not take are filters, answered correctly.
    c.batch_execute("SET enable_seqscan = off").unwrap();
    let plan = explain(&mut c, "SELECT i FROM items WHERE tags <@ '{1,2}' ORDER BY v <-> '[1,2,3]' LIMIT 5");
    assert!(plan.contains("Filter: (tags <@"), "{plan}");
    assert_eq!(ids(&mut c, "SELECT i FROM items WHERE tags <@ '{1,2}' ORDER BY v <-> '[1,2,3]' LIMIT 5"), vec![1]);
}
