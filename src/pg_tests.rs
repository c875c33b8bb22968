//! In-database tests run by `cargo pgrx test` inside a backend (through SPI).
//! Tests needing whole clusters or a real client are in `pgrx-tests/`.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn text_io_round_trips_in_shortest_form() {
        let out = Spi::get_one::<String>("SELECT '[1.5, 2.0, -3e-5]'::vector::text").unwrap();
        assert_eq!(out.as_deref(), Some("[1.5,2,-3e-05]"));
    }

    #[pg_test]
    fn ef_search_defaults_to_40() {
        let v = Spi::get_one::<String>("SELECT current_setting('hnsw.ef_search')").unwrap();
        assert_eq!(v.as_deref(), Some("40"));
    }

    #[pg_test]
    fn index_scan_agrees_with_exact_search() {
        Spi::run(
            "CREATE TABLE pts (id int, embedding vector(8));
             INSERT INTO pts SELECT i, ARRAY(SELECT sin(i * j) FROM generate_series(1, 8) j)::vector
               FROM generate_series(1, 2000) i;
             CREATE INDEX ON pts USING hnsw (embedding vector_l2_ops);
             SET hnsw.ef_search = 100;",
        )
        .unwrap();
        let ids = |sql: &str| -> Vec<i32> {
            Spi::connect(|c| c.select(sql, None, &[]).unwrap().map(|r| r.get::<i32>(1).unwrap().unwrap()).collect())
        };
        let q = "ORDER BY embedding <-> '[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8]' LIMIT 10";
        Spi::run("SET enable_seqscan = off").unwrap();
        let approx = ids(&format!("SELECT id FROM pts {q}"));
        Spi::run("SET enable_seqscan = on; SET enable_indexscan = off").unwrap();
        let exact = ids(&format!("SELECT id FROM pts {q}"));
        let overlap = approx.iter().filter(|i| exact.contains(i)).count();
        assert!(overlap >= 9, "{approx:?} vs {exact:?}");
    }

    #[pg_test(error = "different vector dimensions 8 and 2")]
    fn wrong_dimension_query_is_an_error() {
        Spi::run(
            "CREATE TABLE w (embedding vector(8)); CREATE INDEX ON w USING hnsw (embedding vector_l2_ops);
             SET enable_seqscan = off;
             SELECT * FROM w ORDER BY embedding <-> '[1,2]' LIMIT 1;",
        )
        .unwrap();
    }

    /// The "heap rows indexed once" row of `hnsw_index_check` for `index`.
    fn heap_check(index: &str) -> (bool, String) {
        Spi::connect(|c| {
            let row = c
                .select(
                    &format!(
                        "SELECT passed, detail FROM hnsw_index_check('{index}'::regclass) \
                         WHERE check_name = 'heap rows indexed once'"
                    ),
                    None,
                    &[],
                )
                .unwrap()
                .first();
            (row.get::<bool>(1).unwrap().unwrap(), row.get::<String>(2).unwrap().unwrap())
        })
    }

    /// `hnsw_index_check` checks the heap against what the index takes: on
    /// a partial index only the rows its predicate admits (the others are
    /// not "not indexed"), and on an expression index the rows whose
    /// expression is not null (it used to skip that check and pass).
    #[pg_test]
    fn index_check_honours_predicates_and_expressions() {
        Spi::run(
            "CREATE TABLE pe (id int, embedding vector(3));
             INSERT INTO pe SELECT i, ARRAY[i, i % 7, i % 5]::vector FROM generate_series(1, 300) i;
             INSERT INTO pe VALUES (301, NULL);
             CREATE INDEX pe_partial ON pe USING hnsw (embedding vector_l2_ops) WHERE id % 3 = 0;
             CREATE INDEX pe_expr ON pe USING hnsw ((embedding::halfvec(3)) halfvec_l2_ops);
             CREATE INDEX pe_both ON pe USING hnsw ((l2_normalize(embedding)::vector(3)) vector_cosine_ops) WHERE id > 100;",
        )
        .unwrap();
        for (index, rows) in [("pe_partial", 100), ("pe_expr", 300), ("pe_both", 200)] {
            let (passed, detail) = heap_check(index);
            assert!(passed && detail.starts_with(&format!("{rows} rows;")), "{index}: {detail}");
        }
        // A row updated into the predicate is indexed and counted; one
        // updated out of it leaves an entry for a row not visible.
        Spi::run("UPDATE pe SET id = 3000 WHERE id = 1; UPDATE pe SET id = 3001 WHERE id = 3").unwrap();
        let (passed, detail) = heap_check("pe_partial");
        assert!(passed && detail.starts_with("100 rows; 1 index entries"), "after updates: {detail}");
    }

    /// The access method says it uses `maintenance_work_mem` (VACUUM sizes
    /// its batches from it), so parallel VACUUM gives each worker its share
    /// of it instead of letting every worker take all of it.
    #[pg_test]
    fn access_method_uses_maintenance_work_mem() {
        let am = Spi::get_one::<pg_sys::Oid>("SELECT oid FROM pg_am WHERE amname = 'hnsw'").unwrap().unwrap();
        // SAFETY: a guarded catalog lookup returning a palloc'd routine.
        let uses = unsafe { (*pg_sys::GetIndexAmRoutineByAmId(am, false)).amusemaintenanceworkmem };
        assert!(uses);
    }
}
