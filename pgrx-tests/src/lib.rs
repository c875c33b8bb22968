//! Throwaway PostgreSQL clusters for tests, and the real dataset.
//!
//! A [`Cluster`] is `initdb`-ed under `target/clusters/<name>` and runs as
//! the `postgres` OS user (PostgreSQL refuses root) on its own port and
//! socket directory. When its handle is dropped the cluster is stopped and,
//! unless the test is failing (panicking) or `PG_HNSW_KEEP_CLUSTERS` is set,
//! its directory is removed: a whole run would otherwise leave about 3 GB of
//! data directories behind. The `pg_hnsw` extension must already be
//! installed into that PostgreSQL (`cargo pgrx install`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub use postgres::{Client, NoTls};

/// The `pg_config` of the PostgreSQL the tests run: `$PG_CONFIG`, by
/// default PostgreSQL 15's (`scripts/test.sh` sets it to 18's for the second
/// pass).
pub fn pg_config() -> String {
    std::env::var("PG_CONFIG").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin/pg_config".into())
}

/// Directory of PostgreSQL's server binaries (`pg_config --bindir`).
pub fn pg_bindir() -> PathBuf {
    let out = Command::new(pg_config()).arg("--bindir").output().expect("run pg_config");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Major version of that PostgreSQL (`pg_config --version`: "PostgreSQL 18.6").
pub fn pg_major() -> u32 {
    let out = Command::new(pg_config()).arg("--version").output().expect("run pg_config");
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.trim().trim_start_matches("PostgreSQL ");
    let major = version.split(|c: char| !c.is_ascii_digit()).next().unwrap_or("");
    major.parse().unwrap_or_else(|_| panic!("pg_config --version printed {text:?}"))
}

fn is_root() -> bool {
    // SAFETY-free check: `id -u` keeps this crate free of libc.
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// Runs a PostgreSQL binary as the `postgres` user when we are root.
pub fn pg_command(binary: &str) -> Command {
    let path = pg_bindir().join(binary);
    if is_root() {
        let mut c = Command::new("sudo");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn run(mut c: Command, what: &str) {
    let out = c.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running throwaway cluster.
pub struct Cluster {
    /// Data directory.
    pub data: PathBuf,
    /// Directory of the Unix socket.
    pub socket_dir: PathBuf,
    /// Port.
    pub port: u16,
    stopped: bool,
    /// Left running on purpose: dropping neither stops nor removes it.
    left_running: bool,
}

/// Root of the clusters' directories (`<repo>/target/clusters`).
pub fn clusters_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/clusters")
}

fn make_postgres_owned_dir(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    if is_root() {
        run(
            {
                let mut c = Command::new("chown");
                c.args(["postgres:"]).arg(dir);
                c
            },
            "chown",
        );
    }
}

impl Cluster {
    /// Creates and starts a fresh cluster named `name` with extra
    /// `postgresql.conf` lines.
    pub fn start(name: &str, conf: &[&str]) -> Cluster {
        Cluster::start_in(&clusters_root().join(name), free_port(), conf)
    }

    /// Creates and starts a fresh cluster in directory `base` on `port`
    /// (a cluster already running there is stopped and replaced).
    pub fn start_in(base: &Path, port: u16, conf: &[&str]) -> Cluster {
        let base = base.to_path_buf();
        if base.join("data/postmaster.pid").exists() {
            let mut c = pg_command("pg_ctl");
            c.args(["-w", "-m", "fast", "-D"]).arg(base.join("data")).arg("stop");
            let _ = c.stdin(Stdio::null()).output();
        }
        let _ = std::fs::remove_dir_all(&base);
        if let Some(parent) = base.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        make_postgres_owned_dir(&base);
        let data = base.join("data");
        let socket_dir = base.join("sock");
        make_postgres_owned_dir(&socket_dir);
        let mut initdb = pg_command("initdb");
        initdb.args(["-A", "trust", "-U", "postgres", "--no-sync"]);
        // PostgreSQL 18's initdb turns data checksums on by default; the
        // clusters stay without them, as on 15, so that a test damaging an
        // index page meets pg_hnsw's own page checks, not the checksum's.
        if pg_major() >= 18 {
            initdb.arg("--no-data-checksums");
        }
        initdb.arg("-D").arg(&data);
        run(initdb, "initdb");
        let mut lines = vec![
            format!("port = {port}"),
            format!("unix_socket_directories = '{}'", socket_dir.display()),
            "listen_addresses = '127.0.0.1'".to_string(),
            "fsync = off".to_string(),
            "shared_buffers = 256MB".to_string(),
            "maintenance_work_mem = 512MB".to_string(),
            "max_wal_senders = 4".to_string(),
            "wal_level = replica".to_string(),
        ];
        lines.extend(conf.iter().map(|s| s.to_string()));
        let conf_path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).unwrap_or_default();
        text.push_str(&lines.join("\n"));
        text.push('\n');
        std::fs::write(&conf_path, text).unwrap();
        let mut c = Cluster { data, socket_dir, port, stopped: true, left_running: false };
        c.pg_ctl_start();
        c.stopped = false;
        c
    }

    /// Wraps an existing data directory (e.g. a replica from
    /// `pg_basebackup`) on `port` and starts it.
    pub fn start_existing(data: PathBuf, socket_dir: PathBuf, port: u16) -> Cluster {
        let mut c = Cluster { data, socket_dir, port, stopped: true, left_running: false };
        c.pg_ctl_start();
        c.stopped = false;
        c
    }

    fn pg_ctl_start(&self) {
        let mut c = pg_command("pg_ctl");
        c.args(["-w", "-t", "120", "-D"]).arg(&self.data).arg("-l").arg(self.data.join("../server.log"));
        c.args(["-o", &format!("-p {} -k {}", self.port, self.socket_dir.display())]).arg("start");
        run(c, "pg_ctl start");
    }

    /// Connection string for the `postgres` database.
    pub fn conn_string(&self) -> String {
        format!("host={} port={} user=postgres dbname=postgres", self.socket_dir.display(), self.port)
    }

    /// A new client connection.
    pub fn connect(&self) -> Client {
        Client::connect(&self.conn_string(), NoTls).expect("connect")
    }

    /// A new connection with `CREATE EXTENSION pg_hnsw` done.
    pub fn connect_with_extension(&self) -> Client {
        let mut c = self.connect();
        c.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_hnsw").expect("CREATE EXTENSION pg_hnsw (is it installed?)");
        c
    }

    /// Stops the cluster (`mode` is `fast` or `immediate`).
    pub fn stop(&mut self, mode: &str) {
        if self.stopped {
            return;
        }
        let mut c = pg_command("pg_ctl");
        c.args(["-w", "-m", mode, "-D"]).arg(&self.data).arg("stop");
        let _ = c.stdin(Stdio::null()).output();
        self.stopped = true;
    }

    /// Kills the postmaster with SIGKILL (a crash: no shutdown checkpoint),
    /// then waits for every backend to exit.
    pub fn kill_postmaster(&mut self) {
        let pid_text = std::fs::read_to_string(self.data.join("postmaster.pid")).expect("postmaster.pid");
        let pid = pid_text.lines().next().unwrap().trim().to_string();
        run(
            {
                let mut c = Command::new("kill");
                c.args(["-9", &pid]);
                c
            },
            "kill -9",
        );
        // Backends notice the dead postmaster and exit; wait for them.
        for _ in 0..200 {
            let out = Command::new("pgrep").args(["-f", &format!("postgres: .*{}", self.port)]).output();
            let busy = out.map(|o| !o.stdout.is_empty()).unwrap_or(false);
            let alive = Path::new(&format!("/proc/{pid}")).exists();
            if !busy && !alive {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        self.stopped = true;
    }

    /// Leaves the cluster running, with its directory, when this handle is
    /// dropped.
    pub fn leave_running(mut self) {
        self.left_running = true;
    }

    /// Starts the cluster again after a stop or crash (crash recovery runs).
    pub fn restart(&mut self) {
        self.pg_ctl_start();
        self.stopped = false;
    }
}

impl Drop for Cluster {
    /// Stops the cluster; removes its directory (the parent of `data`) when
    /// the test passed, so only failing tests leave their logs and data.
    fn drop(&mut self) {
        if self.left_running {
            return;
        }
        self.stop("immediate");
        if std::thread::panicking() || std::env::var_os("PG_HNSW_KEEP_CLUSTERS").is_some() {
            return;
        }
        if let Some(base) = self.data.parent() {
            let _ = std::fs::remove_dir_all(base);
        }
    }
}

/// The real dataset (`debian-minilm-384`): 384-dim unit vectors.
pub struct Dataset {
    /// Base vectors.
    pub base: Vec<Vec<f32>>,
    /// Public queries.
    pub queries: Vec<Vec<f32>>,
    /// Exact top-100 base rows per query (cosine).
    pub ground_truth: Vec<Vec<u32>>,
}

/// Folder of the dataset: `$PG_HNSW_DATASET`, or `../shared/datasets/
/// debian-minilm-384` beside the repository.
pub fn dataset_dir() -> PathBuf {
    match std::env::var("PG_HNSW_DATASET") {
        Ok(d) => PathBuf::from(d),
        Err(_) => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets/debian-minilm-384"),
    }
}

#[path = "../../tests/common/vecs.rs"]
mod vecs;
pub use vecs::{read_fvecs, read_ivecs};

impl Dataset {
    /// Loads the first `n_base` base vectors and `n_queries` queries.
    pub fn load(n_base: usize, n_queries: usize) -> Dataset {
        let dir = dataset_dir();
        Dataset {
            base: read_fvecs(&dir.join("base.fvecs"), n_base),
            queries: read_fvecs(&dir.join("queries.fvecs"), n_queries),
            ground_truth: read_ivecs(&dir.join("groundtruth.ivecs"), n_queries),
        }
    }
}

/// Text form of a vector, `[x,y,...]`, with round-trip precision.
pub fn vector_literal(v: &[f32]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
    format!("[{}]", parts.join(","))
}

/// Loads `(id, embedding)` rows into `table` (which must have those columns)
/// with COPY in text form; ids start at `first_id`.
pub fn copy_vectors(client: &mut Client, table: &str, first_id: i64, vectors: &[Vec<f32>]) {
    use std::io::Write;
    let mut w = client.copy_in(&format!("COPY {table} (id, embedding) FROM STDIN")).unwrap();
    for (i, v) in vectors.iter().enumerate() {
        writeln!(w, "{}\t{}", first_id + i as i64, vector_literal(v)).unwrap();
    }
    w.finish().unwrap();
}

/// Exact k nearest ids of `query` among `base` for `distance` (brute force).
pub fn exact_knn(base: &[Vec<f32>], query: &[f32], k: usize, distance: impl Fn(&[f32], &[f32]) -> f32) -> Vec<usize> {
    let mut d: Vec<(f32, usize)> = base.iter().enumerate().map(|(i, b)| (distance(query, b), i)).collect();
    d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    d.into_iter().take(k).map(|x| x.1).collect()
}

/// Squared L2 distance.
pub fn l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Negative inner product.
pub fn neg_ip(a: &[f32], b: &[f32]) -> f32 {
    -a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>()
}

/// Cosine distance.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    1.0 - dot / (na * nb)
}

/// Fraction of `truth`'s first `k` ids found in `found`'s first `k`.
pub fn recall_at(k: usize, found: &[i64], truth: &[usize]) -> f64 {
    let truth: Vec<i64> = truth.iter().take(k).map(|&t| t as i64).collect();
    found.iter().take(k).filter(|f| truth.contains(f)).count() as f64 / k as f64
}

/// The plan of `sql` (`EXPLAIN`), one line per plan row.
pub fn explain(client: &mut Client, sql: &str) -> String {
    client
        .query(&format!("EXPLAIN {sql}"), &[])
        .unwrap_or_else(|e| panic!("EXPLAIN {sql}: {e}"))
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every check of `hnsw_index_check` on `index` passes (fails the test
/// naming the first check that does not, with its detail).
pub fn assert_index_checks(c: &mut Client, index: &str) {
    let rows =
        c.query("SELECT check_name, passed, detail FROM hnsw_index_check($1::text::regclass)", &[&index]).unwrap();
    assert!(!rows.is_empty());
    for row in rows {
        let (name, passed, detail): (String, bool, String) = (row.get(0), row.get(1), row.get(2));
        assert!(passed, "{index}: check '{name}' failed: {detail}");
    }
}

/// Runs `sql`, which must fail, and returns `"<SQLSTATE> <message>"`.
pub fn sqlstate(client: &mut Client, sql: &str) -> String {
    match client.batch_execute(sql) {
        Ok(()) => panic!("expected an error from {sql}"),
        Err(e) => {
            let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: not a server error: {e}"));
            format!("{} {}", db.code().code(), db.message())
        }
    }
}
