//! Migrating from pgvector: pg_hnsw installed under the extension name
//! `vector` (`scripts/install-as-vector.sh`) takes a plain-format `pg_dump`
//! of a database with vector, halfvec, sparsevec and bit columns and hnsw
//! indexes, and answers the same queries after the restore. The install
//! script refuses to overwrite a `vector` extension that is not pg_hnsw.

use pg_hnsw_cluster_tests::{pg_bindir, pg_command, Client, Cluster, NoTls};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn pg_config() -> String {
    std::env::var("PG_CONFIG").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin/pg_config".into())
}

/// Runs the install script with `args`; returns (success, stderr).
fn install_as_vector(args: &[&str]) -> (bool, String) {
    let out = Command::new("bash")
        .arg(repo().join("scripts/install-as-vector.sh"))
        .args(args)
        .env("PG_CONFIG", pg_config())
        .stdin(Stdio::null())
        .output()
        .expect("run install-as-vector.sh");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn extension_dir() -> PathBuf {
    let out = Command::new(pg_config()).arg("--sharedir").output().unwrap();
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("extension")
}

fn connect(cluster: &Cluster, db: &str) -> Client {
    let conn = cluster.conn_string().replace("dbname=postgres", &format!("dbname={db}"));
    Client::connect(&conn, NoTls).unwrap()
}

/// The answers the test compares before and after the restore: the
/// distances of each query's results (ids may tie).
fn answers(c: &mut Client) -> Vec<Vec<String>> {
    c.batch_execute("SET enable_seqscan = off").unwrap();
    let queries = [
        ("embedding", "<->", "'[1,2,3]'"),
        ("embedding", "<=>", "'[1,2,3]'"),
        ("embedding", "<->", "'[5,5,5]'"),
        ("half", "<#>", "'[1,2,3]'"),
        ("half", "<+>", "'[1,2,3]'"),
        ("sparse", "<->", "'{1:1,3:3}/3'"),
        ("sparse", "<=>", "'{1:1,2:2,3:3}/3'"),
        ("bits", "<~>", "'101'"),
    ];
    let mut out = Vec::new();
    for (column, op, q) in queries {
        let sql = format!("SELECT ({column} {op} {q})::text FROM items ORDER BY {column} {op} {q} LIMIT 5");
        let plan: Vec<String> = c.query(&format!("EXPLAIN {sql}"), &[]).unwrap().iter().map(|r| r.get(0)).collect();
        assert!(plan.join("\n").contains("Index Scan"), "{sql}: {plan:?}");
        out.push(c.query(&sql, &[]).unwrap().iter().map(|r| r.get(0)).collect());
    }
    out
}

/// Keeps a real pgvector out of the way while the test runs: the
/// PostgreSQL 18 build that `scripts/setup.sh` fetches ships pgvector as
/// `vector`. Its `vector.control` is moved to a backup name on creation and
/// put back on drop (after pg_hnsw's `vector` files are removed), also
/// when the test fails.
struct PgvectorSetAside {
    backup: Option<PathBuf>,
}

impl PgvectorSetAside {
    fn new() -> PgvectorSetAside {
        let control = extension_dir().join("vector.control");
        let foreign = std::fs::read_to_string(&control).is_ok_and(|t| !t.contains("pg_hnsw installed as vector"));
        if !foreign {
            return PgvectorSetAside { backup: None };
        }
        let backup = extension_dir().join("vector.control.test-backup");
        std::fs::rename(&control, &backup).unwrap();
        PgvectorSetAside { backup: Some(backup) }
    }
}

impl Drop for PgvectorSetAside {
    fn drop(&mut self) {
        if let Some(backup) = &self.backup {
            let _ = install_as_vector(&["--uninstall"]);
            std::fs::rename(backup, extension_dir().join("vector.control")).unwrap();
        }
    }
}

#[test]
fn migration_from_pgvector() {
    let _aside = PgvectorSetAside::new();
    install_script_refuses_to_overwrite_pgvector();
    pg_dump_of_a_vector_database_restores_into_pg_hnsw();
}

fn pg_dump_of_a_vector_database_restores_into_pg_hnsw() {
    let (ok, err) = install_as_vector(&[]);
    assert!(ok, "install-as-vector.sh: {err}");
    let cluster = Cluster::start("migration", &[]);
    let mut admin = cluster.connect();
    admin.batch_execute("CREATE DATABASE src").unwrap();
    admin.batch_execute("CREATE DATABASE dst").unwrap();

    let mut src = connect(&cluster, "src");
    src.batch_execute(
        "CREATE EXTENSION vector;
         CREATE TABLE items (id int PRIMARY KEY, embedding vector(3), half halfvec(3), sparse sparsevec(3), bits bit(3));
         INSERT INTO items SELECT i, ARRAY[i % 17, i % 5 + 1, i % 11],
             ARRAY[i % 13, i % 7, i % 3 + 1]::halfvec(3), ARRAY[i % 4, i % 9 + 1, 0]::real[]::sparsevec(3),
             (i % 8)::bit(3)
           FROM generate_series(1, 500) i;
         CREATE INDEX ON items USING hnsw (embedding vector_l2_ops);
         CREATE INDEX ON items USING hnsw (embedding vector_cosine_ops) WITH (m = 8, ef_construction = 32);
         CREATE INDEX ON items USING hnsw (half halfvec_ip_ops);
         CREATE INDEX ON items USING hnsw (half halfvec_l1_ops);
         CREATE INDEX ON items USING hnsw (sparse sparsevec_l2_ops);
         CREATE INDEX ON items USING hnsw (sparse sparsevec_cosine_ops);
         CREATE INDEX ON items USING hnsw (bits bit_hamming_ops);
         ANALYZE items;",
    )
    .unwrap();
    let before = answers(&mut src);

    // Plain-format dump, restored with psql into another database.
    let dump = cluster.data.join("../migration.sql");
    let mut pg_dump = pg_command("pg_dump");
    pg_dump
        .args(["-h", &cluster.socket_dir.display().to_string(), "-p", &cluster.port.to_string(), "-U", "postgres"])
        .args(["--format=plain", "-f", &dump.display().to_string(), "src"]);
    let out = pg_dump.stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&dump).unwrap();
    assert!(text.contains("CREATE EXTENSION IF NOT EXISTS vector"), "the dump names the extension vector");
    assert!(text.contains("USING hnsw"), "the dump recreates the hnsw indexes");

    let mut psql = pg_command("psql");
    psql.args(["-h", &cluster.socket_dir.display().to_string(), "-p", &cluster.port.to_string(), "-U", "postgres"])
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-d", "dst", "-f", &dump.display().to_string()]);
    let out = psql.stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "restore: {}", String::from_utf8_lossy(&out.stderr));
    assert!(pg_bindir().exists());

    let mut dst = connect(&cluster, "dst");
    let after = answers(&mut dst);
    assert_eq!(before, after, "the restored database answers the same queries");
    let indexes: Vec<String> = dst
        .query(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'items'::regclass AND NOT indisprimary",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(indexes.len(), 7);
    for index in indexes {
        for r in dst.query(&format!("SELECT check_name, passed, detail FROM hnsw_index_check('{index}')"), &[]).unwrap()
        {
            let (name, passed, detail): (String, bool, String) = (r.get(0), r.get(1), r.get(2));
            assert!(passed, "{index}: {name}: {detail}");
        }
    }
    let ext: String = dst.query_one("SELECT extname FROM pg_extension WHERE extname = 'vector'", &[]).unwrap().get(0);
    assert_eq!(ext, "vector");
}

/// The script refuses to overwrite another `vector` extension unless told,
/// and puts it back on --uninstall.
fn install_script_refuses_to_overwrite_pgvector() {
    let dir = extension_dir();
    let control = dir.join("vector.control");
    let (ok, err) = install_as_vector(&[]);
    assert!(ok, "{err}");
    // Pretend pgvector is installed.
    std::fs::write(&control, "comment = 'vector data type and ivfflat and hnsw access methods'\n").unwrap();
    let (ok, err) = install_as_vector(&[]);
    assert!(!ok && err.contains("--force"), "refused: {err}");
    assert!(std::fs::read_to_string(&control).unwrap().contains("ivfflat"), "left untouched");
    let (ok, err) = install_as_vector(&["--force"]);
    assert!(ok, "{err}");
    assert!(dir.join("vector.control.pgvector").exists(), "moved aside");
    let (ok, err) = install_as_vector(&["--uninstall"]);
    assert!(ok, "{err}");
    assert!(std::fs::read_to_string(&control).unwrap().contains("ivfflat"), "restored");
    std::fs::remove_file(&control).unwrap();
}
