-- Filtered search under generic plans, measured inside the server: for each
-- package-name family of the real dataset (category column: lib 41%,
-- python3 6.7%, r-cran 1.75%, fonts 0.78%, postgresql 0.16% of the rows),
-- 100 queries `WHERE category = cat ORDER BY embedding <=> q LIMIT 10` from
-- PL/pgSQL (whose static statements run as prepared statements; with
-- plan_cache_mode = force_generic_plan the planner never sees the family),
-- and the same queries planned without index scans for the exact answer.
-- Prints QPS (server time only, no protocol round trip), mean rows returned
-- and recall@10. The queries are the stored vectors of every 613th row.
--
-- Works unchanged with pg_hnsw or pgvector (both name the type `vector`) on
-- a table packages(id int, embedding vector(384), category text), e.g. the
-- demo's table, with either
--   CREATE INDEX ON packages USING hnsw (embedding vector_cosine_ops, category);  -- pg_hnsw
--   CREATE INDEX ON packages USING hnsw (embedding vector_cosine_ops);            -- pgvector or pg_hnsw
-- Usage: psql -d DB -f bench/sql/filtered_generic.sql
CREATE OR REPLACE FUNCTION pg_temp.filtered_generic(cat text, n int) RETURNS text AS $$
DECLARE
  t0 timestamptz; secs float; q vector; found int[]; exact int[];
  res int[][] := '{}'; qs vector[] := '{}'; rows int := 0; hits int := 0;
BEGIN
  FOR q IN SELECT embedding FROM packages WHERE id % 613 = 1 ORDER BY id LIMIT n LOOP
    qs := qs || q;
  END LOOP;
  t0 := clock_timestamp();
  FOR i IN 1..array_length(qs, 1) LOOP
    q := qs[i];
    SELECT array_agg(id) INTO found
      FROM (SELECT id FROM packages WHERE category = cat ORDER BY embedding <=> q LIMIT 10) s;
    found := coalesce(found, '{}');
    rows := rows + coalesce(array_length(found, 1), 0);
    res := res || array[found || array_fill(0, array[10 - coalesce(array_length(found, 1), 0)])];
  END LOOP;
  secs := extract(epoch FROM clock_timestamp() - t0);
  PERFORM set_config('enable_indexscan', 'off', true);
  FOR i IN 1..array_length(qs, 1) LOOP
    EXECUTE 'SELECT array_agg(id) FROM (SELECT id FROM packages WHERE category = $1
             ORDER BY embedding <=> $2 LIMIT 10) s' INTO exact USING cat, qs[i];
    SELECT hits + count(*) INTO hits FROM unnest(res[i:i][1:10]) x WHERE x = ANY(exact);
  END LOOP;
  PERFORM set_config('enable_indexscan', 'on', true);
  RETURN format('%s: %s QPS, %s rows, recall@10 %s', cat, round((array_length(qs, 1) / secs)::numeric, 1),
                round(rows::numeric / array_length(qs, 1), 1), round(hits::numeric / (10 * array_length(qs, 1)), 3));
END $$ LANGUAGE plpgsql;

SET plan_cache_mode = force_generic_plan;
SET hnsw.ef_search = 40;
SET hnsw.iterative_scan = relaxed_order;
\pset tuples_only on
SELECT pg_temp.filtered_generic('lib', 100);      -- warm-up
SELECT pg_temp.filtered_generic(f, 100) FROM unnest(ARRAY['lib', 'python3', 'r-cran', 'fonts', 'postgresql']) f;
