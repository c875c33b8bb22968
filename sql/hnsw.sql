-- The hnsw access method and its operator classes.
-- Support function 1 of each class names the metric the graph is built for.

CREATE ACCESS METHOD hnsw TYPE INDEX HANDLER hnsw_handler;
COMMENT ON ACCESS METHOD hnsw IS 'hnsw index access method';

CREATE OPERATOR CLASS vector_l2_ops DEFAULT FOR TYPE vector USING hnsw AS
    OPERATOR 1 <-> (vector, vector) FOR ORDER BY float_ops,
    FUNCTION 1 (vector, vector) hnsw_l2_support();

CREATE OPERATOR CLASS vector_ip_ops FOR TYPE vector USING hnsw AS
    OPERATOR 1 <#> (vector, vector) FOR ORDER BY float_ops,
    FUNCTION 1 (vector, vector) hnsw_ip_support();

CREATE OPERATOR CLASS vector_cosine_ops FOR TYPE vector USING hnsw AS
    OPERATOR 1 <=> (vector, vector) FOR ORDER BY float_ops,
    FUNCTION 1 (vector, vector) hnsw_cosine_support();

CREATE OPERATOR CLASS vector_l1_ops FOR TYPE vector USING hnsw AS
    OPERATOR 1 <+> (vector, vector) FOR ORDER BY float_ops,
    FUNCTION 1 (vector, vector) hnsw_l1_support();

-- hnsw operator classes of halfvec, sparsevec and bit (pgvector's names).
-- Support function 1 returns the element kind and metric (see
-- src/hnsw/codec.rs); the operators come from sql/{halfvec,sparsevec,bit}.sql.

CREATE OPERATOR CLASS halfvec_l2_ops FOR TYPE halfvec USING hnsw AS
    OPERATOR 1 <-> (halfvec, halfvec) FOR ORDER BY float_ops,
    FUNCTION 1 (halfvec, halfvec) hnsw_halfvec_l2_support();

CREATE OPERATOR CLASS halfvec_ip_ops FOR TYPE halfvec USING hnsw AS
    OPERATOR 1 <#> (halfvec, halfvec) FOR ORDER BY float_ops,
    FUNCTION 1 (halfvec, halfvec) hnsw_halfvec_ip_support();

CREATE OPERATOR CLASS halfvec_cosine_ops FOR TYPE halfvec USING hnsw AS
    OPERATOR 1 <=> (halfvec, halfvec) FOR ORDER BY float_ops,
    FUNCTION 1 (halfvec, halfvec) hnsw_halfvec_cosine_support();

CREATE OPERATOR CLASS halfvec_l1_ops FOR TYPE halfvec USING hnsw AS
    OPERATOR 1 <+> (halfvec, halfvec) FOR ORDER BY float_ops,
    FUNCTION 1 (halfvec, halfvec) hnsw_halfvec_l1_support();

CREATE OPERATOR CLASS sparsevec_l2_ops FOR TYPE sparsevec USING hnsw AS
    OPERATOR 1 <-> (sparsevec, sparsevec) FOR ORDER BY float_ops,
    FUNCTION 1 (sparsevec, sparsevec) hnsw_sparsevec_l2_support();

CREATE OPERATOR CLASS sparsevec_ip_ops FOR TYPE sparsevec USING hnsw AS
    OPERATOR 1 <#> (sparsevec, sparsevec) FOR ORDER BY float_ops,
    FUNCTION 1 (sparsevec, sparsevec) hnsw_sparsevec_ip_support();

CREATE OPERATOR CLASS sparsevec_cosine_ops FOR TYPE sparsevec USING hnsw AS
    OPERATOR 1 <=> (sparsevec, sparsevec) FOR ORDER BY float_ops,
    FUNCTION 1 (sparsevec, sparsevec) hnsw_sparsevec_cosine_support();

CREATE OPERATOR CLASS sparsevec_l1_ops FOR TYPE sparsevec USING hnsw AS
    OPERATOR 1 <+> (sparsevec, sparsevec) FOR ORDER BY float_ops,
    FUNCTION 1 (sparsevec, sparsevec) hnsw_sparsevec_l1_support();

CREATE OPERATOR CLASS bit_hamming_ops FOR TYPE bit USING hnsw AS
    OPERATOR 1 <~> (bit, bit) FOR ORDER BY float_ops,
    FUNCTION 1 (bit, bit) hnsw_bit_hamming_support();

CREATE OPERATOR CLASS bit_jaccard_ops FOR TYPE bit USING hnsw AS
    OPERATOR 1 <%> (bit, bit) FOR ORDER BY float_ops,
    FUNCTION 1 (bit, bit) hnsw_bit_jaccard_support();

-- Filter columns: the columns after the vector in a multi-column hnsw
-- index, `CREATE INDEX ON items USING hnsw (embedding vector_cosine_ops,
-- category)`. Each element stores its row's keys, and the scan evaluates
-- conditions on them inside the graph search (src/hnsw/keys.rs). The
-- strategy numbers are those of src/hnsw/key_datum.rs: 1 <, 2 <=, 3 =,
-- 4 >=, 5 >, 6 &&, 7 @>. These classes have no support functions; the
-- vector classes above have support function 1, which is how the access
-- method tells the two apart.

CREATE OPERATOR FAMILY integer_ops USING hnsw;

CREATE OPERATOR CLASS int2_ops DEFAULT FOR TYPE int2 USING hnsw FAMILY integer_ops AS
    OPERATOR 1 < (int2, int2),
    OPERATOR 2 <= (int2, int2),
    OPERATOR 3 = (int2, int2),
    OPERATOR 4 >= (int2, int2),
    OPERATOR 5 > (int2, int2);

CREATE OPERATOR CLASS int4_ops DEFAULT FOR TYPE int4 USING hnsw FAMILY integer_ops AS
    OPERATOR 1 < (int4, int4),
    OPERATOR 2 <= (int4, int4),
    OPERATOR 3 = (int4, int4),
    OPERATOR 4 >= (int4, int4),
    OPERATOR 5 > (int4, int4);

CREATE OPERATOR CLASS int8_ops DEFAULT FOR TYPE int8 USING hnsw FAMILY integer_ops AS
    OPERATOR 1 < (int8, int8),
    OPERATOR 2 <= (int8, int8),
    OPERATOR 3 = (int8, int8),
    OPERATOR 4 >= (int8, int8),
    OPERATOR 5 > (int8, int8);

-- Comparisons across integer widths (`int4_column = $1::int8`).
ALTER OPERATOR FAMILY integer_ops USING hnsw ADD
    OPERATOR 1 < (int2, int4),
    OPERATOR 2 <= (int2, int4),
    OPERATOR 3 = (int2, int4),
    OPERATOR 4 >= (int2, int4),
    OPERATOR 5 > (int2, int4),
    OPERATOR 1 < (int2, int8),
    OPERATOR 2 <= (int2, int8),
    OPERATOR 3 = (int2, int8),
    OPERATOR 4 >= (int2, int8),
    OPERATOR 5 > (int2, int8),
    OPERATOR 1 < (int4, int2),
    OPERATOR 2 <= (int4, int2),
    OPERATOR 3 = (int4, int2),
    OPERATOR 4 >= (int4, int2),
    OPERATOR 5 > (int4, int2),
    OPERATOR 1 < (int4, int8),
    OPERATOR 2 <= (int4, int8),
    OPERATOR 3 = (int4, int8),
    OPERATOR 4 >= (int4, int8),
    OPERATOR 5 > (int4, int8),
    OPERATOR 1 < (int8, int2),
    OPERATOR 2 <= (int8, int2),
    OPERATOR 3 = (int8, int2),
    OPERATOR 4 >= (int8, int2),
    OPERATOR 5 > (int8, int2),
    OPERATOR 1 < (int8, int4),
    OPERATOR 2 <= (int8, int4),
    OPERATOR 3 = (int8, int4),
    OPERATOR 4 >= (int8, int4),
    OPERATOR 5 > (int8, int4);

CREATE OPERATOR CLASS bool_ops DEFAULT FOR TYPE bool USING hnsw AS
    OPERATOR 3 = (bool, bool);

CREATE OPERATOR CLASS text_ops DEFAULT FOR TYPE text USING hnsw AS
    OPERATOR 3 = (text, text);

CREATE OPERATOR CLASS uuid_ops DEFAULT FOR TYPE uuid USING hnsw AS
    OPERATOR 3 = (uuid, uuid);

-- Arrays: `tags && $1` (overlap) and `tags @> $1` (contains). One family
-- holds the two polymorphic operators; each array type has its class.
CREATE OPERATOR FAMILY array_ops USING hnsw;
ALTER OPERATOR FAMILY array_ops USING hnsw ADD
    OPERATOR 6 && (anyarray, anyarray),
    OPERATOR 7 @> (anyarray, anyarray);

CREATE OPERATOR CLASS int2_array_ops DEFAULT FOR TYPE int2[] USING hnsw FAMILY array_ops AS
    STORAGE int2[];

CREATE OPERATOR CLASS int4_array_ops DEFAULT FOR TYPE int4[] USING hnsw FAMILY array_ops AS
    STORAGE int4[];

CREATE OPERATOR CLASS int8_array_ops DEFAULT FOR TYPE int8[] USING hnsw FAMILY array_ops AS
    STORAGE int8[];

CREATE OPERATOR CLASS bool_array_ops DEFAULT FOR TYPE bool[] USING hnsw FAMILY array_ops AS
    STORAGE bool[];

CREATE OPERATOR CLASS text_array_ops DEFAULT FOR TYPE text[] USING hnsw FAMILY array_ops AS
    STORAGE text[];

CREATE OPERATOR CLASS varchar_array_ops DEFAULT FOR TYPE varchar[] USING hnsw FAMILY array_ops AS
    STORAGE varchar[];

CREATE OPERATOR CLASS uuid_array_ops DEFAULT FOR TYPE uuid[] USING hnsw FAMILY array_ops AS
    STORAGE uuid[];

-- Every other type: a default class with nothing in it, so that
-- `CREATE INDEX ... USING hnsw (embedding, price)` reaches the access
-- method, whose error names the type and lists the supported ones (rather
-- than PostgreSQL's "no default operator class"). Exact-type classes above
-- win over this one.
CREATE OPERATOR CLASS hnsw_unsupported_ops DEFAULT FOR TYPE anyelement USING hnsw AS
    STORAGE anyelement;
