//! The `vector` type through a real client: pgvector's answers, its error
//! wording and SQLSTATEs, and its binary wire format (the `pgvector` crate).

use pg_hnsw_cluster_tests::{sqlstate, Client, Cluster};

fn one<T: for<'a> postgres::types::FromSql<'a>>(client: &mut Client, sql: &str) -> T {
    client.query_one(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

#[test]
fn vector_type_end_to_end() {
    let cluster = Cluster::start("vector_type", &[]);
    let mut c = cluster.connect_with_extension();

    // pgvector's reference answers.
    assert_eq!(one::<f64>(&mut c, "SELECT '[1,2,3]'::vector <-> '[4,5,6]'"), 5.196152422706632);
    assert_eq!(one::<f64>(&mut c, "SELECT '[1,2,3]'::vector <#> '[4,5,6]'"), -32.0);
    assert_eq!(one::<f64>(&mut c, "SELECT '[1,2,3]'::vector <=> '[4,5,6]'"), 0.025368153802923787);
    assert_eq!(one::<f64>(&mut c, "SELECT '[1,2,3]'::vector <+> '[4,5,6]'"), 9.0);
    assert_eq!(one::<f64>(&mut c, "SELECT inner_product('[1,2,3]'::vector, '[4,5,6]')"), 32.0);
    assert_eq!(one::<f64>(&mut c, "SELECT vector_norm('[3,4]')"), 5.0);
    assert_eq!(one::<i32>(&mut c, "SELECT vector_dims('[1,2,3]'::vector)"), 3);
    assert!(one::<f64>(&mut c, "SELECT '[0,0]'::vector <=> '[1,2]'").is_nan(), "zero vector: NaN as pgvector");
    // As in pgvector, an untyped literal is ambiguous once halfvec and
    // sparsevec overload the function names.
    assert!(sqlstate(&mut c, "SELECT inner_product('[1,2,3]', '[4,5,6]')").starts_with("42725"));

    // Text output: shortest round-trip, float4out style.
    let text = |c: &mut Client, sql: &str| one::<String>(c, &format!("SELECT ({sql})::text"));
    assert_eq!(text(&mut c, "'[1.5, 2.0, 3]'::vector"), "[1.5,2,3]");
    assert_eq!(text(&mut c, "'[ 1e-7 ,1e30,-0.1]'::vector"), "[1e-07,1e+30,-0.1]");
    assert_eq!(text(&mut c, "l2_normalize('[3,4]'::vector)"), "[0.6,0.8]");
    assert_eq!(text(&mut c, "subvector('[1,2,3,4,5]'::vector, 2, 3)"), "[2,3,4]");
    assert_eq!(text(&mut c, "'[1,2]'::vector + '[3,4]'"), "[4,6]");
    assert_eq!(text(&mut c, "'[1,2]'::vector - '[3,4]'"), "[-2,-2]");
    assert_eq!(text(&mut c, "'[1,2]'::vector * '[3,4]'"), "[3,8]");
    assert_eq!(text(&mut c, "'[1,2]'::vector || '[3]'"), "[1,2,3]");
    assert_eq!(text(&mut c, "(SELECT avg(v) FROM (VALUES ('[1,2]'::vector), ('[3,5]')) t(v))"), "[2,3.5]");
    assert_eq!(text(&mut c, "(SELECT sum(v) FROM (VALUES ('[1,2]'::vector), ('[3,5]')) t(v))"), "[4,7]");
    assert_eq!(text(&mut c, "ARRAY[1,2,3]::vector"), "[1,2,3]");
    assert_eq!(text(&mut c, "ARRAY[1.5,2]::real[]::vector"), "[1.5,2]");
    assert_eq!(text(&mut c, "ARRAY[1.5,2]::float8[]::vector"), "[1.5,2]");
    assert_eq!(text(&mut c, "ARRAY[1.5,2]::numeric[]::vector(2)"), "[1.5,2]");
    assert_eq!(text(&mut c, "'[1,2]'::vector::real[]"), "{1,2}");
    assert_eq!(text(&mut c, "'[1,2]'::vector::float8[]"), "{1,2}");
    assert!(one::<bool>(
        &mut c,
        "SELECT '[1,2]'::vector < '[1,3]' AND '[1,2]'::vector = '[1,2]' AND '[1]'::vector < '[1,0]'"
    ));
    assert_eq!(
        one::<i64>(&mut c, "SELECT count(DISTINCT v) FROM (VALUES ('[1,2]'::vector), ('[1,2]'), ('[2,1]')) t(v)"),
        2
    );
    assert_eq!(text(&mut c, "format_type('vector'::regtype, 3)"), "vector(3)");

    // Bad input: pgvector's wording and SQLSTATEs.
    c.batch_execute("CREATE TABLE t3 (v vector(3))").unwrap();
    let cases = [
        ("SELECT '[1,2'::vector", "22P02 invalid input syntax for type vector: \"[1,2\""),
        ("SELECT '[1,,2]'::vector", "22P02 invalid input syntax for type vector: \"[1,,2]\""),
        ("SELECT '[a]'::vector", "22P02 invalid input syntax for type vector: \"[a]\""),
        ("SELECT '[1,2]x'::vector", "22P02 invalid input syntax for type vector: \"[1,2]x\""),
        ("SELECT '1,2'::vector", "22P02 invalid input syntax for type vector: \"1,2\""),
        ("SELECT '[]'::vector", "22000 vector must have at least 1 dimension"),
        ("SELECT '[NaN]'::vector", "22000 NaN not allowed in vector"),
        ("SELECT '[1,Infinity]'::vector", "22000 infinite value not allowed in vector"),
        ("SELECT '[1e39]'::vector", "22003 \"1e39\" is out of range for type vector"),
        ("SELECT ('[' || repeat('1,', 16000) || '1]')::vector", "54000 vector cannot have more than 16000 dimensions"),
        ("SELECT '[1,2]'::vector <-> '[1,2,3]'", "22000 different vector dimensions 2 and 3"),
        ("INSERT INTO t3 VALUES ('[1,2]')", "22000 expected 3 dimensions, not 2"),
        ("SELECT '[1,2]'::vector(3)", "22000 expected 3 dimensions, not 2"),
        ("SELECT ARRAY[1,2]::vector(3)", "22000 expected 3 dimensions, not 2"),
        ("SELECT ARRAY[1,NULL]::vector", "22004 array must not contain nulls"),
        ("CREATE TABLE bad (v vector(0))", "22023 dimensions for type vector must be at least 1"),
        ("CREATE TABLE bad (v vector(16001))", "22023 dimensions for type vector cannot exceed 16000"),
        ("SELECT '[3e38]'::vector + '[3e38]'", "22003 value out of range: overflow"),
        ("SELECT subvector('[1,2,3]'::vector, 5, 2)", "22000 vector must have at least 1 dimension"),
        ("SELECT '{{1}}'::real[]::vector", "22000 array must be 1-D"),
        ("SELECT ARRAY[[1,2],[3,4]]::int[]::vector", "22000 array must be 1-D"),
        ("SELECT '{4e38,-4e38}'::float8[]::vector", "22000 infinite value not allowed in vector"),
        ("SELECT '{1,NaN}'::numeric[]::vector", "22000 NaN not allowed in vector"),
        ("SELECT '{}'::real[]::vector", "22000 vector must have at least 1 dimension"),
        (
            "SELECT array_agg(n)::vector FROM generate_series(1, 16001) n",
            "54000 vector cannot have more than 16000 dimensions",
        ),
        ("SELECT vector_avg('{{2,2,4,6}}')", "XX000 vector_avg: expected state array"),
        ("SELECT vector_avg('{NULL,2,4,6}')", "XX000 vector_avg: expected state array"),
        ("SELECT vector_avg('{}')", "XX000 vector_avg: expected state array"),
        ("SELECT vector_avg('{1}')", "22000 vector must have at least 1 dimension"),
        (
            "SELECT vector_avg(array_agg(n)) FROM generate_series(1, 16002) n",
            "54000 vector cannot have more than 16000 dimensions",
        ),
        ("SELECT vector_accum('{NULL}', '[1,2,3]')", "XX000 vector_accum: expected state array"),
        ("SELECT vector_accum('{0,0}', '[1,2,3]')", "22000 expected 1 dimensions, not 3"),
        ("SELECT vector_combine('{1,1e308}', '{1,1e308}')", "22003 value out of range: overflow"),
        ("SELECT vector_combine('{1,2}', '{3,4,5}')", "22000 expected 1 dimensions, not 2"),
        ("SELECT vector_combine('{1,2}', '{{3,4}}')", "XX000 vector_combine: expected state array"),
        ("SELECT vector_combine('{1,2}', '{3,NULL}')", "XX000 vector_combine: expected state array"),
        (
            "SELECT vector_combine('{0}', (SELECT array_agg(n) FROM generate_series(1, 16002) n))",
            "54000 vector cannot have more than 16000 dimensions",
        ),
    ];
    for (sql, expected) in cases {
        assert_eq!(sqlstate(&mut c, sql), expected, "{sql}");
    }
    // The session survives every error.
    assert_eq!(one::<i32>(&mut c, "SELECT 1"), 1);

    // pgvector's answers where a C library's strtof underflows: zero, no error.
    assert_eq!(text(&mut c, "'[1e-46,-1e-46,1]'::vector"), "[0,-0,1]");
    assert_eq!(text(&mut c, "'{1e-46,-1e-46}'::float8[]::vector"), "[0,-0]");
    assert_eq!(text(&mut c, "'[0x10,1.]'::vector"), "[16,1]");
    assert_eq!(text(&mut c, "vector_accum('{0,0,0,0}', '[1,2,3]')"), "{1,1,2,3}");
    assert_eq!(text(&mut c, "vector_combine('{1,2}', '{3,4}')"), "{4,6}");
    assert_eq!(text(&mut c, "vector_avg('{2,2,4,6}')"), "[1,2,3]");

    // Corrupt binary input through recv is refused, not trusted.
    let corrupt: Vec<(&[u8], &str)> = vec![
        (&[0, 2, 0, 0, 0x3f, 0x80, 0, 0], "08P01"),       // says 2 dims, carries 1
        (&[0, 1, 0, 7, 0x3f, 0x80, 0, 0], "22000"),       // unused != 0
        (&[0, 1, 0, 0, 0x7f, 0xc0, 0, 0], "22000"),       // NaN
        (&[0xff, 0xff, 0, 0, 0x3f, 0x80, 0, 0], "54000"), // 65535 dims (read unsigned, as pgvector)
        (&[0, 0, 0, 0], "22000"),                         // zero dims
    ];
    for (bytes, code) in corrupt {
        let err = binary_copy_error(&mut c, bytes);
        assert!(err.starts_with(code), "{bytes:?}: {err}");
    }

    // The pgvector crate's binary encoding round-trips through the server.
    c.batch_execute("CREATE TABLE items (id int, embedding vector(3))").unwrap();
    let v = pgvector::Vector::from(vec![1.5, -2.0, 3.25]);
    c.execute("INSERT INTO items VALUES (1, $1)", &[&v]).unwrap();
    let back: pgvector::Vector = c.query_one("SELECT embedding FROM items WHERE id = 1", &[]).unwrap().get(0);
    assert_eq!(back.to_vec(), vec![1.5, -2.0, 3.25]);
    let d: f64 = c
        .query_one("SELECT embedding <-> $1 FROM items", &[&pgvector::Vector::from(vec![1.5, -2.0, 4.25])])
        .unwrap()
        .get(0);
    assert_eq!(d, 1.0);
    let big = pgvector::Vector::from((0..2000).map(|i| i as f32 / 7.0).collect::<Vec<f32>>());
    let back: pgvector::Vector = c.query_one("SELECT $1::vector", &[&big]).unwrap().get(0);
    assert_eq!(back.to_vec(), big.to_vec());
}

/// Feeds `payload` as one binary vector field through COPY BINARY and
/// returns the SQLSTATE and message of the resulting error.
fn binary_copy_error(c: &mut Client, payload: &[u8]) -> String {
    use std::io::Write;
    c.batch_execute("DROP TABLE IF EXISTS bin; CREATE TABLE bin (v vector)").unwrap();
    let mut data = Vec::new();
    data.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    data.extend_from_slice(&0i32.to_be_bytes());
    data.extend_from_slice(&0i32.to_be_bytes());
    data.extend_from_slice(&1i16.to_be_bytes());
    data.extend_from_slice(&(payload.len() as i32).to_be_bytes());
    data.extend_from_slice(payload);
    data.extend_from_slice(&(-1i16).to_be_bytes());
    let mut w = c.copy_in("COPY bin FROM STDIN (FORMAT binary)").unwrap();
    w.write_all(&data).unwrap();
    match w.finish() {
        Ok(_) => panic!("corrupt binary vector {payload:?} was accepted"),
        Err(e) => {
            let db = e.as_db_error().expect("server error");
            format!("{} {}", db.code().code(), db.message())
        }
    }
}
