-- Server-side QPS of the demo's query, `ORDER BY embedding <=> q LIMIT 10` on
-- packages(id, embedding vector(384)), without the client round trip: the
-- stored vectors of every 61st row (1,011 queries) run from PL/pgSQL (one
-- prepared statement) `reps` times. Recall is what `bench queries` measures
-- on the same index; this isolates the server's time per query. Works
-- unchanged with pg_hnsw or pgvector.
-- Usage: psql -d DB -f bench/sql/server_loop.sql -c "SELECT * FROM pg_temp.server_loop(40, 3)"
CREATE OR REPLACE FUNCTION pg_temp.server_loop(ef int, reps int) RETURNS TABLE (ef_search int, qps float8)
LANGUAGE plpgsql AS $$
DECLARE qs vector[]; got int[]; t0 timestamptz;
BEGIN
  PERFORM set_config('hnsw.ef_search', ef::text, true);
  SELECT array_agg(embedding ORDER BY id) INTO qs FROM packages WHERE id % 61 = 0;
  -- One untimed pass warms the cache.
  FOR i IN 1..array_length(qs, 1) LOOP
    SELECT array_agg(s.id) INTO got FROM (SELECT p.id FROM packages p ORDER BY p.embedding <=> qs[i] LIMIT 10) s;
  END LOOP;
  t0 := clock_timestamp();
  FOR r IN 1..reps LOOP
    FOR i IN 1..array_length(qs, 1) LOOP
      SELECT array_agg(s.id) INTO got FROM (SELECT p.id FROM packages p ORDER BY p.embedding <=> qs[i] LIMIT 10) s;
    END LOOP;
  END LOOP;
  ef_search := ef;
  qps := reps * array_length(qs, 1) / extract(epoch FROM clock_timestamp() - t0);
  RETURN NEXT;
END $$;
