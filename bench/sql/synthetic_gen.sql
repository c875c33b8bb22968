-- Seeded clustered synthetic vectors for a side-by-side run of pg_hnsw and
-- pgvector on the same rows, generated inside the server with no extension
-- (plain real[] columns), so one database feeds both systems:
--   items(id int, v real[])    n rows: center (id % centers) plus uniform noise
--   queries(id int, v real[])  `queries` rows drawn the same way (ids from 1)
-- Centers are uniform in [-0.5, 0.5]^dims; the noise is uniform of width
-- `width` per dimension. setseed(0.42) makes every run the same.
--
-- Usage (about 3 minutes for 1,000,000 x 128 on the 2-core VM):
--   createdb gen && psql -d gen -v n=1000000 -v dims=128 -v centers=100 \
--     -v width=0.25 -v queries=100 -f bench/sql/synthetic_gen.sql
-- then copy both tables into each system's database (binary COPY), cast
-- with `ALTER TABLE items ALTER v TYPE vector(128) USING v::vector(128)`,
-- and run bench/sql/synthetic_knn.sql there.
\set ON_ERROR_STOP on
SELECT setseed(0.42);
DROP TABLE IF EXISTS centers, items, queries;
CREATE TABLE centers AS
  SELECT c, array_agg(random()::real - 0.5 ORDER BY d) AS v
    FROM generate_series(0, :centers - 1) c, generate_series(1, :dims) d
   GROUP BY c;
CREATE TABLE items AS
  SELECT i AS id,
         (SELECT array_agg(ce.v[d] + (random()::real - 0.5) * :width ORDER BY d)
            FROM generate_series(1, :dims) d) AS v
    FROM generate_series(1, :n) i JOIN centers ce ON ce.c = i % :centers;
CREATE TABLE queries AS
  SELECT i AS id,
         (SELECT array_agg(ce.v[d] + (random()::real - 0.5) * :width ORDER BY d)
            FROM generate_series(1, :dims) d) AS v
    FROM generate_series(1, :queries) i JOIN centers ce ON ce.c = (i * 7919) % :centers;
SELECT count(*) AS items, (SELECT count(*) FROM queries) AS queries FROM items;
