-- Recall@10 and server-side QPS of `ORDER BY v <-> q LIMIT 10` over the
-- tables of bench/sql/synthetic_gen.sql (v cast to vector), with the exact
-- answers in truth(id int, ids int[]) (make them once, before any index:
-- the `exact` step below). Works unchanged with pg_hnsw or pgvector (both
-- name the type `vector` and read hnsw.ef_search).
--
-- Usage:
--   psql -d DB -f bench/sql/synthetic_knn.sql -c "SELECT * FROM knn_exact()"    -- once, no index yet
--   psql -d DB -f bench/sql/synthetic_knn.sql -c "SELECT * FROM knn_bench(40, 5)"
-- knn_bench(ef, reps): one untimed pass for recall@10, then `reps` timed passes
-- over every query from PL/pgSQL (a prepared statement; no protocol round
-- trip in the time).
CREATE OR REPLACE FUNCTION knn_exact() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE q record;
BEGIN
  SET LOCAL enable_indexscan = off;
  SET LOCAL enable_bitmapscan = off;
  DROP TABLE IF EXISTS truth;
  CREATE TABLE truth (id int PRIMARY KEY, ids int[]);
  FOR q IN SELECT id, v FROM queries ORDER BY id LOOP
    INSERT INTO truth SELECT q.id, array_agg(s.id) FROM (SELECT i.id FROM items i ORDER BY i.v <-> q.v LIMIT 10) s;
  END LOOP;
  RETURN (SELECT count(*) FROM truth);
END $$;

CREATE OR REPLACE FUNCTION knn_bench(ef int, reps int) RETURNS TABLE (ef_search int, recall float8, qps float8)
LANGUAGE plpgsql AS $$
DECLARE q record; got int[]; hits bigint := 0; t0 timestamptz; nq int;
BEGIN
  PERFORM set_config('hnsw.ef_search', ef::text, true);
  SELECT count(*) INTO nq FROM queries;
  FOR q IN SELECT qs.id, qs.v, t.ids FROM queries qs JOIN truth t USING (id) LOOP
    SELECT array_agg(s.id) INTO got FROM (SELECT i.id FROM items i ORDER BY i.v <-> q.v LIMIT 10) s;
    hits := hits + (SELECT count(*) FROM unnest(got) g WHERE g = ANY (q.ids));
  END LOOP;
  t0 := clock_timestamp();
  FOR r IN 1..reps LOOP
    FOR q IN SELECT qs.v FROM queries qs LOOP
      SELECT array_agg(s.id) INTO got FROM (SELECT i.id FROM items i ORDER BY i.v <-> q.v LIMIT 10) s;
    END LOOP;
  END LOOP;
  ef_search := ef;
  recall := hits::float8 / (10 * nq);
  qps := reps * nq / extract(epoch FROM clock_timestamp() - t0);
  RETURN NEXT;
END $$;
