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
}
