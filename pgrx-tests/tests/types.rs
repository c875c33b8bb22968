//! `halfvec`, `sparsevec` and `bit` through a real client: the `pgvector`
//! crate's binary encodings (`HalfVector`, `SparseVector`, `Bit`) round-trip
//! through the server, text forms read back, COPY BINARY round-trips, and
//! corrupt or random binary payloads and bad text are refused with
//! pgvector's SQLSTATEs (never an internal error, never a crash).

use pg_hnsw_cluster_tests::{sqlstate, Client, Cluster};
use rand::{Rng, SeedableRng};
use std::io::{Read, Write};

fn one<T: for<'a> postgres::types::FromSql<'a>>(client: &mut Client, sql: &str) -> T {
    client.query_one(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

/// A COPY BINARY stream holding one row with one field of bytes `payload`.
fn copy_file(payload: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    data.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    data.extend_from_slice(&0i32.to_be_bytes());
    data.extend_from_slice(&0i32.to_be_bytes());
    data.extend_from_slice(&1i16.to_be_bytes());
    data.extend_from_slice(&(payload.len() as i32).to_be_bytes());
    data.extend_from_slice(payload);
    data.extend_from_slice(&(-1i16).to_be_bytes());
    data
}

/// Loads `payload` as one binary field of a fresh one-column table of type
/// `ty`; `Ok` with the value's text form, or `Err("SQLSTATE message")`.
fn load_binary(c: &mut Client, ty: &str, payload: &[u8]) -> Result<String, String> {
    c.batch_execute(&format!("DROP TABLE IF EXISTS bin; CREATE TABLE bin (v {ty})")).unwrap();
    let mut w = c.copy_in("COPY bin FROM STDIN (FORMAT binary)").unwrap();
    w.write_all(&copy_file(payload)).unwrap();
    match w.finish() {
        Ok(_) => Ok(one::<String>(c, "SELECT v::text FROM bin")),
        Err(e) => {
            let db = e.as_db_error().unwrap_or_else(|| panic!("{payload:?}: not a server error: {e}"));
            Err(format!("{} {}", db.code().code(), db.message()))
        }
    }
}

/// The field bytes of the first row of a `COPY (query) TO STDOUT (FORMAT
/// binary)`: exactly what the type's send function wrote.
fn send_bytes(c: &mut Client, query: &str) -> Vec<u8> {
    let mut r = c.copy_out(&format!("COPY ({query}) TO STDOUT (FORMAT binary)")).unwrap();
    let mut all = Vec::new();
    r.read_to_end(&mut all).unwrap();
    // 11-byte signature, flags, extension length, field count, field length.
    let at = 11 + 4 + 4 + 2;
    let len = i32::from_be_bytes(all[at..at + 4].try_into().unwrap()) as usize;
    all[at + 4..at + 4 + len].to_vec()
}

/// Random payloads of a few shapes (truncated valid ones, random headers,
/// random bytes): each must load or fail with a user-facing SQLSTATE, and
/// whatever loads must survive a text round trip.
fn fuzz_binary(c: &mut Client, ty: &str, valid: &[u8], seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut accepted = 0;
    for round in 0..300 {
        let payload: Vec<u8> = match round % 3 {
            0 => valid[..rng.gen_range(0..valid.len())].to_vec(),
            1 => {
                let mut p = valid.to_vec();
                for _ in 0..rng.gen_range(1..4) {
                    let k = rng.gen_range(0..p.len());
                    p[k] = rng.gen();
                }
                p
            }
            _ => (0..rng.gen_range(0..40)).map(|_| rng.gen()).collect(),
        };
        match load_binary(c, ty, &payload) {
            Ok(text) => {
                accepted += 1;
                let back = one::<String>(c, &format!("SELECT ('{text}'::{ty})::text"));
                assert_eq!(back, text, "{ty} {payload:?} loaded but its text does not read back");
            }
            Err(e) => {
                let code = &e[..5];
                assert!(
                    ["08P01", "22000", "22003", "22P02", "22P03", "54000", "22023"].contains(&code),
                    "{ty} {payload:?}: unexpected error {e}"
                );
            }
        }
    }
    assert!(accepted > 0, "{ty}: the flipped-byte payloads should sometimes stay valid");
    assert_eq!(one::<i32>(c, "SELECT 1"), 1, "the session survives");
}

#[test]
fn halfvec_through_a_client() {
    let cluster = Cluster::start("types_halfvec", &[]);
    let mut c = cluster.connect_with_extension();

    // pgvector crate encoding, both directions.
    c.batch_execute("CREATE TABLE items (id int, embedding halfvec(3))").unwrap();
    let v = pgvector::HalfVector::from_f32_slice(&[1.5, -2.0, 65504.0]);
    c.execute("INSERT INTO items VALUES (1, $1)", &[&v]).unwrap();
    let back: pgvector::HalfVector = c.query_one("SELECT embedding FROM items", &[]).unwrap().get(0);
    assert_eq!(back.to_vec(), v.to_vec());
    assert_eq!(one::<String>(&mut c, "SELECT embedding::text FROM items"), "[1.5,-2,65504]");
    let q = pgvector::HalfVector::from_f32_slice(&[1.5, -2.0, 65503.0]);
    let d: f64 = c.query_one("SELECT embedding <-> $1 FROM items", &[&q]).unwrap().get(0);
    assert_eq!(d, 0.0, "65503 rounds to 65504 in binary16");
    let long: Vec<f32> = (0..4000).map(|i| (i as f32 - 2000.0) / 16.0).collect();
    let long = pgvector::HalfVector::from_f32_slice(&long);
    let back: pgvector::HalfVector = c.query_one("SELECT $1::halfvec", &[&long]).unwrap().get(0);
    assert_eq!(back.to_vec(), long.to_vec());

    // Our send function writes pgvector's bytes: int16 dim, int16 0, BE binary16.
    assert_eq!(
        send_bytes(&mut c, "SELECT '[1,-2.5,6e-8]'::halfvec"),
        vec![0, 3, 0, 0, 0x3C, 0x00, 0xC1, 0x00, 0x00, 0x01]
    );

    // COPY BINARY out and back in.
    c.batch_execute(
        "CREATE TABLE src (v halfvec(3)); INSERT INTO src VALUES ('[0,0,0]'), ('[1,2,3]'), ('[1e-7,-65504,0.1]'), (NULL);
         CREATE TABLE dst (v halfvec(3));",
    )
    .unwrap();
    copy_table(&mut c, "src", "dst");
    let same: bool =
        one(&mut c, "SELECT array_agg(v::text ORDER BY v) IS NOT DISTINCT FROM (SELECT array_agg(v::text ORDER BY v) FROM dst) FROM src");
    assert!(same);

    // Corrupt payloads.
    let corrupt: Vec<(&[u8], &str)> = vec![
        (&[0, 2, 0, 0, 0x3C, 0x00], "08P01"),             // says 2 dims, carries 1
        (&[0, 1, 0, 1, 0x3C, 0x00], "22000"),             // unused != 0
        (&[0, 1, 0, 0, 0x7E, 0x00], "22000"),             // NaN
        (&[0, 1, 0, 0, 0x7C, 0x00], "22000"),             // +Infinity
        (&[0, 0, 0, 0], "22000"),                         // zero dims
        (&[0x3E, 0x81, 0, 0, 0x3C, 0x00], "54000"),       // 16001 dims
        (&[0, 1, 0, 0, 0x3C, 0x00, 0x3C, 0x00], "22P03"), // trailing bytes
    ];
    for (bytes, code) in corrupt {
        let err = load_binary(&mut c, "halfvec", bytes).expect_err("corrupt halfvec accepted");
        assert!(err.starts_with(code), "{bytes:?}: {err}");
    }
    let err = load_binary(&mut c, "halfvec(2)", &[0, 1, 0, 0, 0x3C, 0x00]).unwrap_err();
    assert_eq!(err, "22000 expected 2 dimensions, not 1");
    fuzz_binary(&mut c, "halfvec", &[0, 3, 0, 0, 0x3C, 0x00, 0xC1, 0x00, 0x00, 0x01], 1);

    // Bad text and casts: pgvector's wording and SQLSTATEs.
    let cases = [
        ("SELECT '[1,2'::halfvec", "22P02 invalid input syntax for type halfvec: \"[1,2\""),
        ("SELECT '1,2'::halfvec", "22P02 invalid input syntax for type halfvec: \"1,2\""),
        ("SELECT '[]'::halfvec", "22000 halfvec must have at least 1 dimension"),
        ("SELECT '[NaN]'::halfvec", "22000 NaN not allowed in halfvec"),
        ("SELECT '[-Infinity]'::halfvec", "22000 infinite value not allowed in halfvec"),
        ("SELECT '[65520]'::halfvec", "22003 \"65520\" is out of range for type halfvec"),
        ("SELECT '[4e38]'::halfvec", "22003 \"4e38\" is out of range for type halfvec"),
        (
            "SELECT ('[' || repeat('1,', 16000) || '1]')::halfvec",
            "54000 halfvec cannot have more than 16000 dimensions",
        ),
        ("SELECT '[1,2]'::halfvec(3)", "22000 expected 3 dimensions, not 2"),
        ("CREATE TABLE bad (v halfvec(0))", "22023 dimensions for type halfvec must be at least 1"),
        ("CREATE TABLE bad (v halfvec(16001))", "22023 dimensions for type halfvec cannot exceed 16000"),
        ("SELECT '[1,2]'::halfvec <=> '[1]'", "22000 different halfvec dimensions 2 and 1"),
        ("SELECT '[65504]'::halfvec + '[65504]'", "22003 value out of range: overflow"),
        ("SELECT '[1e-7]'::halfvec * '[1e-7]'", "22003 value out of range: underflow"),
        (
            "SELECT array_fill(0, ARRAY[16000])::halfvec || '[1]'",
            "54000 halfvec cannot have more than 16000 dimensions",
        ),
        ("SELECT '{65520,-65520}'::real[]::halfvec", "22003 \"65520\" is out of range for type halfvec"),
        ("SELECT '{4e38}'::float8[]::halfvec", "22000 infinite value not allowed in halfvec"),
        ("SELECT '{NULL}'::real[]::halfvec", "22004 array must not contain nulls"),
        ("SELECT '{{1}}'::real[]::halfvec", "22000 array must be 1-D"),
        ("SELECT '{}'::real[]::halfvec", "22000 halfvec must have at least 1 dimension"),
        ("SELECT '[65520]'::vector::halfvec", "22003 \"65520\" is out of range for type halfvec"),
        ("SELECT halfvec_accum('{0,0}', '[1,2,3]')", "22000 expected 1 dimensions, not 3"),
        ("SELECT halfvec_avg('{}')", "XX000 halfvec_avg: expected state array"),
        (
            "SELECT halfvec_avg(array_agg(n)) FROM generate_series(1, 16002) n",
            "54000 halfvec cannot have more than 16000 dimensions",
        ),
        ("SELECT subvector('[1,2,3]'::halfvec, 4, 1)", "22000 halfvec must have at least 1 dimension"),
    ];
    for (sql, expected) in cases {
        assert_eq!(sqlstate(&mut c, sql), expected, "{sql}");
    }
    assert_eq!(one::<i32>(&mut c, "SELECT 1"), 1);
}

#[test]
fn sparsevec_through_a_client() {
    let cluster = Cluster::start("types_sparsevec", &[]);
    let mut c = cluster.connect_with_extension();

    c.batch_execute("CREATE TABLE items (id int, embedding sparsevec(6))").unwrap();
    let v = pgvector::SparseVector::from_dense(&[1.5, 0.0, 0.0, -2.0, 0.0, 3.0]);
    c.execute("INSERT INTO items VALUES (1, $1)", &[&v]).unwrap();
    let back: pgvector::SparseVector = c.query_one("SELECT embedding FROM items", &[]).unwrap().get(0);
    assert_eq!((back.dimensions(), back.indices(), back.values()), (6, &[0, 3, 5][..], &[1.5, -2.0, 3.0][..]));
    assert_eq!(one::<String>(&mut c, "SELECT embedding::text FROM items"), "{1:1.5,4:-2,6:3}/6");
    let q = pgvector::SparseVector::from_dense(&[0.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
    let ip: f64 = c.query_one("SELECT embedding <#> $1 FROM items", &[&q]).unwrap().get(0);
    assert_eq!(ip, 2.0);
    // A huge, very sparse vector: a billion dimensions, 16,000 entries.
    let map: Vec<(i32, f32)> = (0..16_000).map(|k| (k * 62_000 + 7, (k % 13) as f32 + 0.5)).collect();
    let big = pgvector::SparseVector::from_map(map.iter().map(|(i, x)| (i, x)), 1_000_000_000);
    let back: pgvector::SparseVector = c.query_one("SELECT $1::sparsevec", &[&big]).unwrap().get(0);
    assert_eq!((back.indices(), back.values()), (big.indices(), big.values()));

    assert_eq!(
        send_bytes(&mut c, "SELECT '{2:1.5,4:-2}/5'::sparsevec"),
        [
            &5i32.to_be_bytes()[..],
            &2i32.to_be_bytes(),
            &[0; 4],
            &1i32.to_be_bytes(),
            &3i32.to_be_bytes(),
            &1.5f32.to_be_bytes(),
            &(-2f32).to_be_bytes()
        ]
        .concat()
    );

    c.batch_execute(
        "CREATE TABLE src (v sparsevec(3)); INSERT INTO src VALUES ('{}/3'), ('{1:1,2:2,3:3}/3'), ('{3:-1e-30}/3'), (NULL);
         CREATE TABLE dst (v sparsevec(3));",
    )
    .unwrap();
    copy_table(&mut c, "src", "dst");
    let same: bool =
        one(&mut c, "SELECT array_agg(v::text ORDER BY v) IS NOT DISTINCT FROM (SELECT array_agg(v::text ORDER BY v) FROM dst) FROM src");
    assert!(same);

    let payload = |dim: i32, nnz: i32, unused: i32, idx: &[i32], val: &[f32]| -> Vec<u8> {
        let mut p = [dim.to_be_bytes(), nnz.to_be_bytes(), unused.to_be_bytes()].concat();
        idx.iter().for_each(|i| p.extend_from_slice(&i.to_be_bytes()));
        val.iter().for_each(|x| p.extend_from_slice(&x.to_be_bytes()));
        p
    };
    let corrupt = [
        (payload(5, 2, 0, &[3, 1], &[1.0, 2.0]), "22000 sparsevec indices must be in ascending order"),
        (payload(5, 2, 0, &[1, 1], &[1.0, 2.0]), "22000 sparsevec indices must not contain duplicates"),
        (payload(5, 1, 0, &[5], &[1.0]), "22000 sparsevec index out of bounds"),
        (payload(5, 1, 0, &[-1], &[1.0]), "22000 sparsevec index out of bounds"),
        (payload(5, 1, 0, &[0], &[0.0]), "22000 binary representation of sparsevec cannot contain zero values"),
        (payload(5, 1, 0, &[0], &[f32::NAN]), "22000 NaN not allowed in sparsevec"),
        (payload(5, 1, 0, &[0], &[f32::INFINITY]), "22000 infinite value not allowed in sparsevec"),
        (payload(5, 0, 3, &[], &[]), "22000 expected unused to be 0, not 3"),
        (payload(0, 0, 0, &[], &[]), "22000 sparsevec must have at least 1 dimension"),
        (payload(1_000_000_001, 0, 0, &[], &[]), "54000 sparsevec cannot have more than 1000000000 dimensions"),
        (payload(5, -1, 0, &[], &[]), "22000 sparsevec cannot have negative number of elements"),
        (payload(5, 6, 0, &[], &[]), "54000 sparsevec cannot have more elements than dimensions"),
        (payload(100_000, 16_001, 0, &[], &[]), "54000 sparsevec cannot have more than 16000 non-zero elements"),
    ];
    for (bytes, expected) in &corrupt {
        assert_eq!(load_binary(&mut c, "sparsevec", bytes).unwrap_err(), *expected);
    }
    let short = payload(5, 2, 0, &[1, 2], &[1.0]);
    assert!(load_binary(&mut c, "sparsevec", &short).unwrap_err().starts_with("08P01"));
    assert_eq!(
        load_binary(&mut c, "sparsevec(4)", &payload(5, 0, 0, &[], &[])).unwrap_err(),
        "22000 expected 4 dimensions, not 5"
    );
    fuzz_binary(&mut c, "sparsevec", &payload(7, 3, 0, &[0, 2, 6], &[1.0, -2.0, 0.5]), 2);

    let cases = [
        ("SELECT ''::sparsevec", "22P02 invalid input syntax for type sparsevec: \"\""),
        ("SELECT '{}'::sparsevec", "22P02 invalid input syntax for type sparsevec: \"{}\""),
        ("SELECT '{1:1a}/1'::sparsevec", "22P02 invalid input syntax for type sparsevec: \"{1:1a}/1\""),
        ("SELECT '{}/1a'::sparsevec", "22P02 invalid input syntax for type sparsevec: \"{}/1a\""),
        ("SELECT '{1:NaN}/2'::sparsevec", "22000 NaN not allowed in sparsevec"),
        ("SELECT '{1:4e38}/2'::sparsevec", "22003 \"4e38\" is out of range for type sparsevec"),
        ("SELECT '{1:1e-46}/2'::sparsevec", "22003 \"1e-46\" is out of range for type sparsevec"),
        ("SELECT '{1:1,1:1}/2'::sparsevec", "22000 sparsevec indices must not contain duplicates"),
        ("SELECT '{0:1}/1'::sparsevec", "22000 sparsevec index out of bounds"),
        ("SELECT '{}/-1'::sparsevec", "22000 sparsevec must have at least 1 dimension"),
        ("SELECT '{}/1000000001'::sparsevec", "54000 sparsevec cannot have more than 1000000000 dimensions"),
        ("SELECT '{}/3'::sparsevec(2)", "22000 expected 2 dimensions, not 3"),
        ("CREATE TABLE bad (v sparsevec(0))", "22023 dimensions for type sparsevec must be at least 1"),
        ("CREATE TABLE bad (v sparsevec(1000000001))", "22023 dimensions for type sparsevec cannot exceed 1000000000"),
        ("SELECT '{1:1}/2'::sparsevec <-> '{1:1}/3'", "22000 different sparsevec dimensions 2 and 3"),
        ("SELECT '{}/16001'::sparsevec::halfvec", "54000 halfvec cannot have more than 16000 dimensions"),
        ("SELECT '{1:65520}/1'::sparsevec::halfvec", "22003 \"65520\" is out of range for type halfvec"),
        ("SELECT '{{1}}'::real[]::sparsevec", "22000 array must be 1-D"),
        ("SELECT '{NaN}'::real[]::sparsevec", "22000 NaN not allowed in sparsevec"),
        ("SELECT array_agg(n)::sparsevec FROM generate_series(1, 16001) n", "54000 sparsevec cannot have more than 16000 non-zero elements"),
        (
            "SELECT ('{' || (SELECT string_agg(n || ':1', ',') FROM generate_series(1, 16001) n) || '}/20000')::sparsevec",
            "54000 sparsevec cannot have more than 16000 non-zero elements",
        ),
    ];
    for (sql, expected) in cases {
        assert_eq!(sqlstate(&mut c, sql), expected, "{sql}");
    }
    assert_eq!(one::<i32>(&mut c, "SELECT 1"), 1);
}

#[test]
fn bit_through_a_client() {
    let cluster = Cluster::start("types_bit", &[]);
    let mut c = cluster.connect_with_extension();

    c.batch_execute("CREATE TABLE items (id int, embedding bit(10))").unwrap();
    let v = pgvector::Bit::new(&[true, false, true, true, false, false, false, false, true, true]);
    c.execute("INSERT INTO items VALUES (1, $1)", &[&v]).unwrap();
    let back: pgvector::Bit = c.query_one("SELECT embedding FROM items", &[]).unwrap().get(0);
    assert_eq!(back.as_bytes(), v.as_bytes());
    let q = pgvector::Bit::new(&[false, false, true, true, false, false, false, false, true, false]);
    let h: f64 = c.query_one("SELECT embedding <~> $1 FROM items", &[&q]).unwrap().get(0);
    assert_eq!(h, 2.0);
    let j: f64 = c.query_one("SELECT embedding <%> $1 FROM items", &[&q]).unwrap().get(0);
    assert_eq!(j, 1.0 - 3.0 / 5.0);
    // binary_quantize of a dense vector parameter, read back as a Bit.
    let bits: pgvector::Bit = c
        .query_one("SELECT binary_quantize($1::vector)", &[&pgvector::Vector::from(vec![0.5, -1.0, 0.0, 2.0])])
        .unwrap()
        .get(0);
    assert_eq!((bits.len(), bits.as_bytes()), (4, &[0b1001_0000][..]));
    let bits: pgvector::Bit = c
        .query_one("SELECT binary_quantize($1::halfvec)", &[&pgvector::HalfVector::from_f32_slice(&[-0.5, 1.0, 1.0])])
        .unwrap()
        .get(0);
    assert_eq!((bits.len(), bits.as_bytes()), (3, &[0b0110_0000][..]));

    let cases = [
        ("SELECT hamming_distance('111', '00')", "22000 different bit lengths 3 and 2"),
        ("SELECT jaccard_distance('1111', '000')", "22000 different bit lengths 4 and 3"),
        ("SELECT B'101' <~> B'1010'", "22000 different bit lengths 3 and 4"),
    ];
    for (sql, expected) in cases {
        assert_eq!(sqlstate(&mut c, sql), expected, "{sql}");
    }
    // Long strings against a bit-by-bit count in SQL.
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for len in [1usize, 63, 64, 65, 1000, 64_000] {
        let a: String = (0..len).map(|_| if rng.gen_bool(0.3) { '1' } else { '0' }).collect();
        let b: String = (0..len).map(|_| if rng.gen_bool(0.3) { '1' } else { '0' }).collect();
        let differ = a.chars().zip(b.chars()).filter(|(x, y)| x != y).count() as f64;
        let both = a.chars().zip(b.chars()).filter(|&(x, y)| x == '1' && y == '1').count() as f64;
        let either = a.chars().zip(b.chars()).filter(|&(x, y)| x == '1' || y == '1').count() as f64;
        let (h, j): (f64, f64) = {
            let row = c
                .query_one(
                    "SELECT $1::text::varbit <~> $2::text::varbit, $1::text::varbit <%> $2::text::varbit",
                    &[&a, &b],
                )
                .unwrap();
            (row.get(0), row.get(1))
        };
        assert_eq!(h, differ, "len {len}");
        let expected = if both == 0.0 { 1.0 } else { 1.0 - both / either };
        assert!((j - expected).abs() < 1e-12, "len {len}: {j} vs {expected}");
    }
}

/// Copies table `from` into `to` through COPY BINARY.
fn copy_table(c: &mut Client, from: &str, to: &str) {
    let mut data = Vec::new();
    c.copy_out(&format!("COPY {from} TO STDOUT (FORMAT binary)")).unwrap().read_to_end(&mut data).unwrap();
    let mut w = c.copy_in(&format!("COPY {to} FROM STDIN (FORMAT binary)")).unwrap();
    w.write_all(&data).unwrap();
    w.finish().unwrap();
}

/// The types, functions and operators live in the schema chosen at CREATE
/// EXTENSION, and casts work without that schema on the search path.
#[test]
fn types_in_the_extension_schema() {
    let cluster = Cluster::start("types_schema", &[]);
    let mut c = cluster.connect();
    c.batch_execute("CREATE SCHEMA vec; CREATE EXTENSION pg_hnsw SCHEMA vec").unwrap();
    let schemas: Vec<String> = c
        .query(
            "SELECT typnamespace::regnamespace::text FROM pg_type WHERE typname IN ('vector', 'halfvec', 'sparsevec') ORDER BY typname",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(schemas, vec!["vec", "vec", "vec"]);
    let in_public: i64 = one(&mut c, "SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace");
    assert_eq!(in_public, 0, "nothing of the extension in public");
    assert_eq!(one::<String>(&mut c, "SELECT '{2:1.5}/3'::vec.sparsevec::vec.halfvec::vec.vector::text"), "[0,1.5,0]");
    assert_eq!(one::<f64>(&mut c, "SELECT vec.l2_distance('[0,0]'::vec.halfvec, '[3,4]')"), 5.0);
    assert_eq!(one::<f64>(&mut c, "SELECT B'101' OPERATOR(vec.<~>) B'011'"), 2.0);
    c.batch_execute("SET search_path = vec; CREATE TABLE public.t (h halfvec(2), s sparsevec(2))").unwrap();
    c.batch_execute("INSERT INTO public.t VALUES ('[1,2]', '{1:1}/2')").unwrap();
    assert_eq!(one::<f64>(&mut c, "SELECT h <-> '[1,3]' FROM public.t"), 1.0);
    assert_eq!(one::<f64>(&mut c, "SELECT s <#> '{1:2}/2' FROM public.t"), -2.0);
}
