//! Production hazards, each on a cluster of its own: VACUUM while scans and
//! inserts run, crashes that end the WAL in the middle of inserts (the
//! inserting backends themselves are killed with SIGKILL), unlogged and
//! temporary tables, `CREATE`/`REINDEX INDEX CONCURRENTLY`, 2,000-dimension
//! pages, a 16 MB buffer pool, `ALTER INDEX ... SET`, who may run
//! `hnsw_index_check`, when VACUUM walks the index, and inserts reusing
//! elements while VACUUM frees them.

use pg_hnsw_cluster_tests::{
    copy_vectors, cosine, exact_knn, l2, recall_at, sqlstate, Client, Cluster, Dataset, NoTls,
};
use pgvector::Vector;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Report = Vec<(String, bool, String)>;

/// Runs each `;`-separated statement of `sql` on its own (VACUUM refuses to
/// run in the implicit transaction of a multi-statement query).
fn run(c: &mut Client, sql: &str) {
    for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        c.batch_execute(stmt).unwrap_or_else(|e| panic!("{stmt}: {e}"));
    }
}

/// `hnsw_index_check`'s rows for `index`.
fn check(c: &mut Client, index: &str) -> Report {
    c.query("SELECT check_name, passed, detail FROM hnsw_index_check($1::text::regclass)", &[&index])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

fn show(report: &Report) -> String {
    report.iter().map(|(n, p, d)| format!("  {n}: {p} ({d})")).collect::<Vec<_>>().join("\n")
}

/// Runs the check and fails with its report unless all six checks passed.
fn assert_check_passes(c: &mut Client, index: &str) -> Report {
    let report = check(c, index);
    assert_eq!(report.len(), 6, "{index}:\n{}", show(&report));
    assert!(report.iter().all(|r| r.1), "{index}:\n{}", show(&report));
    report
}

/// The number after `what` in the "pages and items" detail, e.g. `deleted`
/// in "... (100 live, 0 deleted, 3 free)".
fn element_count(report: &Report, what: &str) -> usize {
    let detail = &report.iter().find(|r| r.0 == "pages and items").expect("pages row").2;
    let at = detail.find(&format!(" {what}")).unwrap_or_else(|| panic!("{what} in {detail}"));
    detail[..at].rsplit(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

/// After a completed VACUUM with nothing running: every check passes, no
/// element is left deleted, and no list links to a deleted element.
fn assert_clean_after_vacuum(c: &mut Client, index: &str) -> Report {
    let report = assert_check_passes(c, index);
    assert_eq!(element_count(&report, "deleted"), 0, "{index}:\n{}", show(&report));
    let lists = &report.iter().find(|r| r.0 == "neighbor lists").unwrap().2;
    assert!(lists.contains("; 0 links to deleted"), "{index}: {lists}");
    report
}

/// A client with the index forced and a wide beam.
fn client(conn: &str, application_name: &str) -> Client {
    let mut c = Client::connect(&format!("{conn} application_name={application_name}"), NoTls).unwrap();
    c.batch_execute("SET enable_seqscan = off; SET hnsw.ef_search = 100").unwrap();
    c
}

/// Whether an index scan for `v` returns row `id` among the nearest 40
/// (identical vectors share an element, so a row is looked for among all
/// the rows at distance 0, not just the first).
fn finds(c: &mut Client, table: &str, id: i64, v: &[f32]) -> bool {
    c.query(&format!("SELECT id FROM {table} ORDER BY embedding <=> $1 LIMIT 40"), &[&Vector::from(v.to_vec())])
        .unwrap()
        .iter()
        .any(|r| r.get::<_, i64>(0) == id)
}

/// Rows of `rows` the index does not find by their own vector, first with
/// the session's `hnsw.ef_search`, then (for the misses) with 1,000.
/// Returns `(missed at first, missed with ef_search 1000)`.
fn unfound(c: &mut Client, table: &str, rows: &[(i64, Vec<f32>)]) -> (usize, Vec<i64>) {
    let first: Vec<&(i64, Vec<f32>)> = rows.iter().filter(|(id, v)| !finds(c, table, *id, v)).collect();
    c.batch_execute("SET hnsw.ef_search = 1000").unwrap();
    let still: Vec<i64> = first.iter().filter(|(id, v)| !finds(c, table, *id, v)).map(|r| r.0).collect();
    c.batch_execute("RESET hnsw.ef_search; SET hnsw.ef_search = 100").unwrap();
    (first.len(), still)
}

/// Mean recall@10 over `queries` against brute force over `rows`.
fn recall(c: &mut Client, table: &str, rows: &[(i64, Vec<f32>)], queries: &[Vec<f32>]) -> f64 {
    let vectors: Vec<Vec<f32>> = rows.iter().map(|r| r.1.clone()).collect();
    let mut total = 0.0;
    for q in queries {
        let truth: Vec<usize> = exact_knn(&vectors, q, 10, cosine).into_iter().map(|i| rows[i].0 as usize).collect();
        let found: Vec<i64> = c
            .query(&format!("SELECT id FROM {table} ORDER BY embedding <=> $1 LIMIT 10"), &[&Vector::from(q.clone())])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        total += recall_at(10, &found, &truth);
    }
    total / queries.len() as f64
}

/// Rows `(id, vector)` of the dataset with the given ids (an id past the
/// dataset's end has the vector of `id % len`).
fn rows_of(data: &Dataset, ids: impl IntoIterator<Item = i64>) -> Vec<(i64, Vec<f32>)> {
    ids.into_iter().map(|id| (id, data.base[id as usize % data.base.len()].clone())).collect()
}

/// Seeded random vectors in [-1, 1).
fn random_vectors(rng: &mut SmallRng, n: usize, dims: usize) -> Vec<Vec<f32>> {
    (0..n).map(|_| (0..dims).map(|_| rng.gen_range(-1.0f32..1.0)).collect()).collect()
}

/// A client that, until `stop`, looks up rows picked by `pick` (seeded with
/// `seed`) by their own vectors in `items`; returns how many it looked up
/// and how many it did not find.
fn spawn_finder(
    conn: &str,
    data: &Arc<Dataset>,
    stop: &Arc<AtomicBool>,
    seed: u64,
    pick: fn(&mut SmallRng) -> i64,
) -> std::thread::JoinHandle<(usize, usize)> {
    let (data, stop, conn) = (data.clone(), stop.clone(), conn.to_string());
    std::thread::spawn(move || {
        let mut c = client(&conn, "hazard_query");
        let mut rng = SmallRng::seed_from_u64(seed);
        let (mut n, mut missed) = (0usize, 0usize);
        while !stop.load(Ordering::Relaxed) {
            let id = pick(&mut rng);
            n += 1;
            missed += !finds(&mut c, "items", id, &data.base[id as usize]) as usize;
        }
        (n, missed)
    })
}

/// A client that inserts the dataset's rows `ids` into `items` one by one
/// until `stop`, recording each committed id in `inserted`.
fn spawn_inserter(
    conn: &str,
    data: &Arc<Dataset>,
    stop: &Arc<AtomicBool>,
    ids: std::ops::Range<i64>,
    inserted: &Arc<Mutex<Vec<i64>>>,
) -> std::thread::JoinHandle<()> {
    let (data, stop, conn, inserted) = (data.clone(), stop.clone(), conn.to_string(), inserted.clone());
    std::thread::spawn(move || {
        let mut c = client(&conn, "hazard_insert");
        for id in ids {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            c.execute("INSERT INTO items VALUES ($1, $2)", &[&id, &Vector::from(data.base[id as usize].clone())])
                .unwrap();
            inserted.lock().unwrap().push(id);
        }
    })
}

/// What the VACUUM tests under concurrency check afterwards: queries ran
/// during VACUUM and at most 1% of them (`looked_up`: how many, how many
/// missed) missed their row, rows were inserted meanwhile and every one is
/// found, and the index is clean. Returns recall@10 over the rows left:
/// those never deleted (`kept`) and the inserted ones.
fn verify_after_vacuum(
    cluster: &Cluster,
    c: &mut Client,
    data: &Dataset,
    looked_up: (usize, usize),
    inserted: &[i64],
    mut kept: Vec<i64>,
) -> f64 {
    let (n, missed) = looked_up;
    assert!(n >= 20, "queries ran during VACUUM ({n})");
    assert!(missed * 100 <= n, "{missed} of {n} queries missed their row during VACUUM");
    assert!(!inserted.is_empty());
    let report = assert_clean_after_vacuum(c, "items_idx");
    eprintln!("{}", show(&report));
    let mut c = client(&cluster.conn_string(), "hazard_main");
    let (first_miss, lost) = unfound(&mut c, "items", &rows_of(data, inserted.iter().copied()));
    assert!(lost.is_empty(), "rows inserted during VACUUM not found: {lost:?}");
    eprintln!(
        "rows inserted during VACUUM: {} of {} found at ef_search 100",
        inserted.len() - first_miss,
        inserted.len()
    );
    kept.extend(inserted);
    recall(&mut c, "items", &rows_of(data, kept), &data.queries)
}

/// Scans and inserts keep running, correct and error-free, through two
/// rounds of DELETE + VACUUM (the second in batches of 40 blocks, so the
/// batch path runs under concurrency too). Kills nothing; verifies that
/// every query during VACUUM finds the row whose vector it asks for (rows
/// never deleted), that every row inserted during VACUUM is found
/// afterwards, that no deleted element or link to one is left, and recall.
#[test]
fn vacuum_concurrent_with_scans_and_inserts() {
    let cluster = Cluster::start("hazards_vacuum_concurrency", &[]);
    let mut c = cluster.connect_with_extension();
    let data = Arc::new(Dataset::load(16_000, 50));
    c.batch_execute("CREATE TABLE items (id bigint PRIMARY KEY, embedding vector(384))").unwrap();
    copy_vectors(&mut c, "items", 0, &data.base[..14_000]);
    c.batch_execute("CREATE INDEX items_idx ON items USING hnsw (embedding vector_cosine_ops)").unwrap();
    // Rows with id % 10 >= 4 are never deleted: queries look for them.
    let stop = Arc::new(AtomicBool::new(false));
    let conn = cluster.conn_string();
    let kept = |rng: &mut SmallRng| 10 * rng.gen_range(0..1_400i64) + rng.gen_range(4..10i64);
    let queries: Vec<_> = (0..2u64).map(|w| spawn_finder(&conn, &data, &stop, w, kept)).collect();
    let inserted = Arc::new(Mutex::new(Vec::<i64>::new()));
    let writer = spawn_inserter(&conn, &data, &stop, 14_000..16_000, &inserted);
    std::thread::sleep(Duration::from_secs(1));
    let t = Instant::now();
    run(&mut c, "DELETE FROM items WHERE id % 10 < 3 AND id < 14000; VACUUM items");
    let first = t.elapsed();
    let t = Instant::now();
    run(
        &mut c,
        "DELETE FROM items WHERE id % 10 = 3 AND id < 14000;
         SET hnsw.debug_vacuum_batch_blocks = 40; VACUUM items; RESET hnsw.debug_vacuum_batch_blocks",
    );
    let second = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (mut n, mut missed) = (0, 0);
    for q in queries {
        let (a, b) = q.join().expect("a query client failed");
        n += a;
        missed += b;
    }
    writer.join().expect("the inserting client failed");
    let inserted = inserted.lock().unwrap().clone();
    eprintln!(
        "VACUUM {:.1} s and {:.1} s (batches of 40 blocks); {n} queries during them, {missed} did not find their row; {} rows inserted",
        first.as_secs_f64(),
        second.as_secs_f64(),
        inserted.len()
    );
    let kept: Vec<i64> = (0..14_000).filter(|id| id % 10 >= 4).collect();
    let r = verify_after_vacuum(&cluster, &mut c, &data, (n, missed), &inserted, kept);
    eprintln!("recall@10 after both VACUUMs: {r:.4}");
    assert!(r >= 0.9, "recall@10 {r}");
}

/// A VACUUM that removes most of the index (75% of the rows: the thorough
/// repair, which searches and adds reverse links as inserts do) while
/// inserts and queries run: queries for rows never deleted find them, rows
/// inserted meanwhile are found afterwards, every check passes, and recall
/// holds.
#[test]
fn heavy_vacuum_concurrent_with_scans_and_inserts() {
    let cluster = Cluster::start("hazards_heavy_vacuum", &[]);
    let mut c = cluster.connect_with_extension();
    let data = Arc::new(Dataset::load(10_000, 50));
    c.batch_execute("CREATE TABLE items (id bigint PRIMARY KEY, embedding vector(384))").unwrap();
    copy_vectors(&mut c, "items", 0, &data.base[..8_000]);
    c.batch_execute("CREATE INDEX items_idx ON items USING hnsw (embedding vector_cosine_ops)").unwrap();
    // Rows with id % 4 = 0 are never deleted: queries look for them.
    let stop = Arc::new(AtomicBool::new(false));
    let conn = cluster.conn_string();
    let query = spawn_finder(&conn, &data, &stop, 7, |rng| 4 * rng.gen_range(0..2_000i64));
    let inserted = Arc::new(Mutex::new(Vec::<i64>::new()));
    let writer = spawn_inserter(&conn, &data, &stop, 8_000..10_000, &inserted);
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    run(&mut c, "DELETE FROM items WHERE id % 4 <> 0 AND id < 8000; VACUUM items");
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (n, missed) = query.join().expect("the query client failed");
    writer.join().expect("the inserting client failed");
    let inserted = inserted.lock().unwrap().clone();
    eprintln!(
        "VACUUM of 75% in {:.1} s; {n} queries during it, {missed} did not find their row; {} rows inserted",
        took.as_secs_f64(),
        inserted.len()
    );
    let kept: Vec<i64> = (0..8_000).filter(|id| id % 4 == 0).collect();
    let r = verify_after_vacuum(&cluster, &mut c, &data, (n, missed), &inserted, kept);
    eprintln!("recall@10 after the VACUUM: {r:.4}");
    assert!(r >= 0.9, "recall@10 {r}");
}

/// Kills inserting backends (and once a VACUUM) with SIGKILL at random
/// moments, five times: the postmaster then resets every backend and
/// replays the WAL, which ends wherever the killed insert was (an element
/// without its reverse links, a pruned list without its relink, a neighbor
/// item without its element, a half-freed batch). Verifies that every
/// committed row is present and found by an index scan (after the VACUUM
/// that heals what a killed insert left unlinked), that every check passes,
/// and recall against a fresh index.
#[test]
fn crash_kills_inserting_backends_mid_insert() {
    // The WAL writer flushes every 10 ms and a ticking client commits
    // continuously, so the WAL that survives a kill ends within a few
    // milliseconds of it: usually inside the killed backend's insert.
    let cluster = Cluster::start("hazards_crash_backends", &["restart_after_crash = on", "wal_writer_delay = 10ms"]);
    let mut c = cluster.connect_with_extension();
    let data = Arc::new(Dataset::load(9_000, 50));
    c.batch_execute("CREATE TABLE items (id bigint PRIMARY KEY, embedding vector(384))").unwrap();
    copy_vectors(&mut c, "items", 0, &data.base[..2_000]);
    c.batch_execute(
        "CREATE INDEX items_idx ON items USING hnsw (embedding vector_cosine_ops) WITH (m = 8, ef_construction = 32);
         CREATE TABLE ticks (t bigint); CHECKPOINT",
    )
    .unwrap();
    drop(c);
    let seed: u64 = rand::random();
    eprintln!("seed {seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let committed = Arc::new(Mutex::new((0..2_000i64).collect::<Vec<_>>()));
    let touched_by_delete = Arc::new(Mutex::new(HashSet::<i64>::new()));
    let next_id = Arc::new(AtomicUsize::new(2_000));
    let conn = cluster.conn_string();
    for cycle in 0..5 {
        let with_vacuum = cycle == 2 || cycle == 4;
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for w in 0..3u64 {
            let (data, conn, committed, next_id) = (data.clone(), conn.clone(), committed.clone(), next_id.clone());
            threads.push(std::thread::spawn(move || {
                let Ok(mut c) = Client::connect(&format!("{conn} application_name=hazard_writer"), NoTls) else {
                    return;
                };
                loop {
                    let id = next_id.fetch_add(1, Ordering::Relaxed) as i64;
                    // Writers go on until the kill ends their connection;
                    // past the dataset, ids reuse its vectors in turn.
                    let v = Vector::from(data.base[id as usize % data.base.len()].clone());
                    if c.execute("INSERT INTO items VALUES ($1, $2)", &[&id, &v]).is_err() {
                        return;
                    }
                    committed.lock().unwrap().push(id);
                    let _ = w;
                }
            }));
        }
        {
            let (conn, stop) = (conn.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                let Ok(mut c) = Client::connect(&format!("{conn} application_name=hazard_ticker"), NoTls) else {
                    return;
                };
                while !stop.load(Ordering::Relaxed) {
                    if c.batch_execute("INSERT INTO ticks VALUES (1)").is_err() {
                        return;
                    }
                }
            }));
        }
        if with_vacuum {
            let (conn, committed, touched, stop, seed) =
                (conn.clone(), committed.clone(), touched_by_delete.clone(), stop.clone(), rng.gen::<u64>());
            threads.push(std::thread::spawn(move || {
                let Ok(mut c) = Client::connect(&format!("{conn} application_name=hazard_vacuum"), NoTls) else {
                    return;
                };
                let mut rng = SmallRng::seed_from_u64(seed);
                while !stop.load(Ordering::Relaxed) {
                    let ids: Vec<i64> = {
                        let all = committed.lock().unwrap();
                        (0..300).map(|_| all[rng.gen_range(0..all.len())]).collect()
                    };
                    touched.lock().unwrap().extend(&ids);
                    if c.execute("DELETE FROM items WHERE id = ANY($1)", &[&ids]).is_err()
                        || c.batch_execute("VACUUM items").is_err()
                    {
                        return;
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(300..1500)));
        let mut admin = cluster.connect();
        let target = if with_vacuum { "hazard_vacuum" } else { "hazard_writer" };
        let pids: Vec<i32> = admin
            .query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 ORDER BY state = 'active' DESC, pid",
                &[&target],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(!pids.is_empty(), "cycle {cycle}: no {target} backend to kill");
        let active: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'",
                &[&target],
            )
            .unwrap()
            .get(0);
        let pid = pids[rng.gen_range(0..(active as usize).clamp(1, pids.len()))];
        drop(admin);
        let status = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill -9 {pid}");
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().expect("a client thread panicked");
        }
        // The postmaster resets every backend and runs crash recovery.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(mut c) = Client::connect(&conn, NoTls) {
                if c.simple_query("SELECT 1").is_ok() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "the server did not come back after the crash");
            std::thread::sleep(Duration::from_millis(200));
        }
        // What the kill left (not asserted: a crash may leave elements
        // unlinked until VACUUM): index entries of rows that never
        // committed show inserts whose WAL ended after their element.
        let mut c = cluster.connect();
        let report = check(&mut c, "items_idx");
        let heap = report.iter().find(|r| r.0 == "heap rows indexed once").map_or(String::new(), |r| r.2.clone());
        let failed: Vec<String> = report.iter().filter(|r| !r.1).map(|r| format!("{}: {}", r.0, r.2)).collect();
        eprintln!(
            "cycle {cycle}: killed {target} {pid} ({} committed rows so far); after recovery: {heap}; failed checks: {failed:?}",
            committed.lock().unwrap().len()
        );
    }
    let mut c = client(&cluster.conn_string(), "hazard_main");
    let touched = touched_by_delete.lock().unwrap().clone();
    let expected: Vec<i64> = committed.lock().unwrap().iter().copied().filter(|id| !touched.contains(id)).collect();
    let present: i64 = c.query_one("SELECT count(*) FROM items WHERE id = ANY($1)", &[&expected]).unwrap().get(0);
    assert_eq!(present as usize, expected.len(), "every committed row survived");
    let before = check(&mut c, "items_idx");
    eprintln!("after recovery, before VACUUM:\n{}", show(&before));
    let (missed_before, _) = unfound(&mut c, "items", &rows_of(&data, expected.iter().copied()));
    // INDEX_CLEANUP ON: with few dead rows left (a kill just after the
    // vacuum thread's own VACUUM), a plain VACUUM skips index vacuuming
    // altogether (PostgreSQL's bypass below 2% of heap pages), and with it
    // the healing this test is about.
    c.batch_execute("VACUUM (INDEX_CLEANUP ON) items").unwrap();
    let after = assert_clean_after_vacuum(&mut c, "items_idx");
    eprintln!("after VACUUM:\n{}", show(&after));
    let (missed_first, lost) = unfound(&mut c, "items", &rows_of(&data, expected.iter().copied()));
    eprintln!(
        "{} committed rows: {missed_before} not found at ef_search 100 before VACUUM, {missed_first} after; \
         {} not found at ef_search 1000",
        expected.len(),
        lost.len()
    );
    // Every committed row is in the index and reachable (the check above);
    // a search for a row's own vector can still miss an outlier whose only
    // inbound links come from far away (a link the kill or a concurrent
    // prune took from its neighbors and VACUUM restored elsewhere): allow
    // one such row in a thousand, no more.
    assert!(
        lost.len() * 1000 <= expected.len(),
        "committed rows the index does not find even at ef_search 1000: {lost:?}"
    );
    let rows: Vec<(i64, Vec<f32>)> = rows_of(
        &data,
        c.query("SELECT id FROM items", &[]).unwrap().iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>(),
    );
    let recovered = recall(&mut c, "items", &rows, &data.queries);
    c.batch_execute("REINDEX INDEX items_idx").unwrap();
    let rebuilt = recall(&mut c, "items", &rows, &data.queries);
    eprintln!("recall@10 after the crashes {recovered:.4}, after REINDEX {rebuilt:.4}");
    assert!(recovered >= rebuilt - 0.03, "recovered {recovered} vs rebuilt {rebuilt}");
}

/// An unlogged table's index after a crash is its init fork: empty but
/// usable. Kills the postmaster; verifies queries return nothing without
/// error, the check passes, and inserts, queries, DELETE and VACUUM work.
#[test]
fn unlogged_table_index_after_crash() {
    let mut cluster = Cluster::start("hazards_unlogged", &[]);
    let mut c = cluster.connect_with_extension();
    c.batch_execute(
        "CREATE UNLOGGED TABLE u (id bigint, embedding vector(3));
         INSERT INTO u SELECT i, ARRAY[i, i % 7, i % 5]::vector FROM generate_series(1, 1000) i;
         CREATE INDEX u_idx ON u USING hnsw (embedding vector_l2_ops);
         CREATE UNLOGGED TABLE empty_u (id bigint, embedding vector(3));
         CREATE INDEX empty_u_idx ON empty_u USING hnsw (embedding vector_l2_ops);",
    )
    .unwrap();
    assert_check_passes(&mut c, "u_idx");
    drop(c);
    cluster.kill_postmaster();
    cluster.restart();
    let mut c = cluster.connect();
    c.batch_execute("SET enable_seqscan = off").unwrap();
    let q = "SELECT id FROM u ORDER BY embedding <-> '[5,5,0]' LIMIT 5";
    let plan: String = c.query(&format!("EXPLAIN {q}"), &[]).unwrap().iter().map(|r| r.get::<_, String>(0)).collect();
    assert!(plan.contains("u_idx"), "{plan}");
    assert_eq!(c.query(q, &[]).unwrap().len(), 0, "the table was reset, so is its index");
    for index in ["u_idx", "empty_u_idx"] {
        let report = assert_check_passes(&mut c, index);
        assert_eq!(element_count(&report, "elements"), 0, "{}", show(&report));
    }
    c.batch_execute(
        "INSERT INTO u SELECT i, ARRAY[i, i % 7, i % 5]::vector FROM generate_series(1, 500) i;
         INSERT INTO empty_u SELECT i, ARRAY[i, 1, 2]::vector FROM generate_series(1, 300) i;",
    )
    .unwrap();
    let ids: Vec<i64> = c.query(q, &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(ids.len(), 5);
    assert!(ids.contains(&5), "[5,5,0] is row 5: {ids:?}");
    run(&mut c, "DELETE FROM u WHERE id % 2 = 0; VACUUM u; VACUUM empty_u");
    assert_clean_after_vacuum(&mut c, "u_idx");
    assert_clean_after_vacuum(&mut c, "empty_u_idx");
    let ids: Vec<i64> = c.query(q, &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert!(ids.len() == 5 && ids.contains(&5) && ids.iter().all(|id| id % 2 == 1), "{ids:?}");
}

/// A temporary table's index lives in local buffers (here 800 kB, so they
/// are evicted): build, inserts, queries, DELETE, VACUUM and the check, all
/// in the owning session. Verifies every row is found by its own vector,
/// no deleted row comes back, and the check passes.
#[test]
fn temporary_table_index() {
    let cluster = Cluster::start("hazards_temp", &[]);
    let mut c = cluster.connect_with_extension();
    c.batch_execute("SET temp_buffers = '800kB'; SET enable_seqscan = off; SET hnsw.ef_search = 100").unwrap();
    let mut rng = SmallRng::seed_from_u64(7);
    let vectors = random_vectors(&mut rng, 6_000, 64);
    c.batch_execute("CREATE TEMP TABLE t (id bigint, embedding vector(64))").unwrap();
    copy_vectors(&mut c, "t", 0, &vectors[..4_000]);
    c.batch_execute("CREATE INDEX t_idx ON t USING hnsw (embedding vector_cosine_ops)").unwrap();
    for (i, v) in vectors.iter().enumerate().skip(4_000) {
        c.execute("INSERT INTO t VALUES ($1, $2)", &[&(i as i64), &Vector::from(v.clone())]).unwrap();
    }
    let size: i64 = c.query_one("SELECT pg_relation_size('t_idx')", &[]).unwrap().get(0);
    assert!(size > 2 * 800 * 1024, "the index ({size} bytes) outgrows temp_buffers");
    let rows: Vec<(i64, Vec<f32>)> = vectors.iter().cloned().enumerate().map(|(i, v)| (i as i64, v)).collect();
    let (_, lost) = unfound(&mut c, "t", &rows[..]);
    assert!(lost.is_empty(), "{lost:?}");
    run(&mut c, "DELETE FROM t WHERE id % 5 < 2; VACUUM t");
    assert_clean_after_vacuum(&mut c, "t_idx");
    let survivors: Vec<(i64, Vec<f32>)> = rows.iter().filter(|r| r.0 % 5 >= 2).cloned().collect();
    let (_, lost) = unfound(&mut c, "t", &survivors);
    assert!(lost.is_empty(), "{lost:?}");
    for (_, v) in rows.iter().step_by(97) {
        let ids: Vec<i64> = c
            .query("SELECT id FROM t ORDER BY embedding <=> $1 LIMIT 10", &[&Vector::from(v.clone())])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(ids.iter().all(|id| id % 5 >= 2), "a deleted row came back: {ids:?}");
    }
}

/// `CREATE INDEX CONCURRENTLY` and `REINDEX INDEX CONCURRENTLY` while a
/// client inserts rows. Verifies each resulting index passes the check and
/// finds every row inserted meanwhile, plus a sample of the others.
#[test]
fn create_and_reindex_concurrently() {
    let cluster = Cluster::start("hazards_concurrently", &[]);
    let mut c = cluster.connect_with_extension();
    let data = Arc::new(Dataset::load(12_000, 20));
    c.batch_execute("CREATE TABLE items (id bigint PRIMARY KEY, embedding vector(384))").unwrap();
    copy_vectors(&mut c, "items", 0, &data.base[..8_000]);
    let conn = cluster.conn_string();
    let run_while = |c: &mut Client, sql: &str, ids: std::ops::Range<i64>| -> Vec<i64> {
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (data, stop, conn) = (data.clone(), stop.clone(), conn.clone());
            std::thread::spawn(move || {
                let mut c = client(&conn, "hazard_insert");
                let mut done = Vec::new();
                for id in ids {
                    if stop.load(Ordering::Relaxed) && done.len() >= 50 {
                        break;
                    }
                    let v = Vector::from(data.base[id as usize].clone());
                    c.execute("INSERT INTO items VALUES ($1, $2)", &[&id, &v]).unwrap();
                    done.push(id);
                }
                done
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        c.batch_execute(sql).unwrap();
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("the inserting client failed")
    };
    let during_create = run_while(
        &mut c,
        "CREATE INDEX CONCURRENTLY items_idx ON items USING hnsw (embedding vector_cosine_ops)",
        8_000..10_000,
    );
    let valid: bool =
        c.query_one("SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_idx'::regclass", &[]).unwrap().get(0);
    assert!(valid);
    assert_check_passes(&mut c, "items_idx");
    let mut q = client(&conn, "hazard_main");
    let sample: Vec<i64> = (0..8_000).step_by(16).chain(during_create.iter().copied()).collect();
    let (_, lost) = unfound(&mut q, "items", &rows_of(&data, sample));
    assert!(lost.is_empty(), "after CREATE INDEX CONCURRENTLY: {lost:?}");

    let during_reindex = run_while(&mut c, "REINDEX INDEX CONCURRENTLY items_idx", 10_000..12_000);
    assert_check_passes(&mut c, "items_idx");
    let sample: Vec<i64> =
        (0..8_000).step_by(16).chain(during_create.iter().copied()).chain(during_reindex.iter().copied()).collect();
    let (_, lost) = unfound(&mut q, "items", &rows_of(&data, sample));
    assert!(lost.is_empty(), "after REINDEX CONCURRENTLY: {lost:?}");
    eprintln!(
        "{} rows inserted during CREATE INDEX CONCURRENTLY and {} during REINDEX CONCURRENTLY, all found",
        during_create.len(),
        during_reindex.len()
    );
}

/// 2,000 dimensions, the most an element page holds (4,088-byte elements):
/// build, inserts, a query whose vector comes from a subquery (TOASTed),
/// DELETE, VACUUM and the check. Verifies rows are found by their own
/// vectors and recall against brute force.
#[test]
fn two_thousand_dimensions() {
    let cluster = Cluster::start("hazards_2000_dims", &[]);
    let mut c = cluster.connect_with_extension();
    c.batch_execute("SET enable_seqscan = off; SET hnsw.ef_search = 100").unwrap();
    let mut rng = SmallRng::seed_from_u64(2000);
    let vectors = random_vectors(&mut rng, 700, 2000);
    c.batch_execute("CREATE TABLE wide (id bigint, embedding vector(2000))").unwrap();
    copy_vectors(&mut c, "wide", 0, &vectors[..500]);
    c.batch_execute("CREATE INDEX wide_idx ON wide USING hnsw (embedding vector_cosine_ops)").unwrap();
    for (i, v) in vectors.iter().enumerate().skip(500) {
        c.execute("INSERT INTO wide VALUES ($1, $2)", &[&(i as i64), &Vector::from(v.clone())]).unwrap();
    }
    assert_check_passes(&mut c, "wide_idx");
    let from_subquery: Vec<i64> = c
        .query("SELECT id FROM wide ORDER BY embedding <=> (SELECT embedding FROM wide WHERE id = 5) LIMIT 3", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(from_subquery.first(), Some(&5), "{from_subquery:?}");
    run(&mut c, "DELETE FROM wide WHERE id % 3 = 0; VACUUM wide");
    assert_clean_after_vacuum(&mut c, "wide_idx");
    let survivors: Vec<(i64, Vec<f32>)> =
        vectors.iter().cloned().enumerate().map(|(i, v)| (i as i64, v)).filter(|r| r.0 % 3 != 0).collect();
    let (_, lost) = unfound(&mut c, "wide", &survivors);
    assert!(lost.is_empty(), "{lost:?}");
    let queries = random_vectors(&mut rng, 20, 2000);
    let r = recall(&mut c, "wide", &survivors, &queries);
    eprintln!("2,000 dimensions: recall@10 {r:.4} after DELETE + VACUUM");
    assert!(r >= 0.9, "recall@10 {r}");
    // Re-inserting reuses the freed elements (the index hardly grows).
    let size = |c: &mut Client| c.query_one("SELECT pg_relation_size('wide_idx')", &[]).unwrap().get::<_, i64>(0);
    let before = size(&mut c);
    for (i, v) in vectors.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
        c.execute("INSERT INTO wide VALUES ($1, $2)", &[&(10_000 + i as i64), &Vector::from(v.clone())]).unwrap();
    }
    let after = size(&mut c);
    assert!((after as f64) < before as f64 * 1.1, "{before} -> {after}");
    assert_check_passes(&mut c, "wide_idx");
}

/// A 16 MB buffer pool under a 20,000-row index (about 20 MB) and its
/// table: two clients query and one inserts while rows are deleted and
/// VACUUMed, so pages are evicted and re-read under scans and inserts.
/// Verifies queries find their rows, inserted rows are found, the check
/// passes and recall.
#[test]
fn small_shared_buffers() {
    let cluster = Cluster::start("hazards_16mb", &["shared_buffers = 16MB"]);
    let mut c = cluster.connect_with_extension();
    let setting: String = c.query_one("SHOW shared_buffers", &[]).unwrap().get(0);
    assert_eq!(setting, "16MB");
    let data = Arc::new(Dataset::load(21_000, 50));
    c.batch_execute("CREATE TABLE items (id bigint PRIMARY KEY, embedding vector(384))").unwrap();
    copy_vectors(&mut c, "items", 0, &data.base[..20_000]);
    c.batch_execute("CREATE INDEX items_idx ON items USING hnsw (embedding vector_cosine_ops)").unwrap();
    let size: i64 = c.query_one("SELECT pg_relation_size('items_idx')", &[]).unwrap().get(0);
    assert!(size > 16 << 20, "the index ({size} bytes) is larger than shared_buffers");
    let stop = Arc::new(AtomicBool::new(false));
    let conn = cluster.conn_string();
    let queries: Vec<_> = (0..2u64)
        .map(|w| {
            let (data, stop, conn) = (data.clone(), stop.clone(), conn.clone());
            std::thread::spawn(move || {
                let mut c = client(&conn, "hazard_query");
                let mut rng = SmallRng::seed_from_u64(100 + w);
                let (mut n, mut missed) = (0usize, 0usize);
                while !stop.load(Ordering::Relaxed) || n < 200 {
                    let id = rng.gen_range(0..20_000i64) | 1; // odd ids are never deleted
                    n += 1;
                    missed += !finds(&mut c, "items", id, &data.base[id as usize]) as usize;
                }
                (n, missed)
            })
        })
        .collect();
    let writer = {
        let (data, conn) = (data.clone(), conn.clone());
        std::thread::spawn(move || {
            let mut c = client(&conn, "hazard_insert");
            for id in 20_000..21_000i64 {
                c.execute("INSERT INTO items VALUES ($1, $2)", &[&id, &Vector::from(data.base[id as usize].clone())])
                    .unwrap();
            }
        })
    };
    run(&mut c, "DELETE FROM items WHERE id % 10 = 0 AND id < 20000; VACUUM items");
    writer.join().expect("the inserting client failed");
    stop.store(true, Ordering::Relaxed);
    let (mut n, mut missed) = (0, 0);
    for q in queries {
        let (a, b) = q.join().expect("a query client failed");
        n += a;
        missed += b;
    }
    let evicted: i64 = c
        .query_one("SELECT heap_blks_read + idx_blks_read FROM pg_statio_user_tables WHERE relname = 'items'", &[])
        .unwrap()
        .get(0);
    eprintln!(
        "16 MB shared_buffers: {n} queries, {missed} missed their row; {evicted} blocks read from outside the pool"
    );
    assert!(missed * 100 <= n, "{missed} of {n}");
    c.batch_execute("VACUUM items").unwrap();
    assert_clean_after_vacuum(&mut c, "items_idx");
    let mut q = client(&conn, "hazard_main");
    let (_, lost) = unfound(&mut q, "items", &rows_of(&data, 20_000..21_000));
    assert!(lost.is_empty(), "{lost:?}");
    let ids: Vec<i64> = (0..21_000).filter(|id| !(id % 10 == 0 && *id < 20_000)).collect();
    let r = recall(&mut q, "items", &rows_of(&data, ids), &data.queries);
    eprintln!("recall@10 {r:.4}");
    assert!(r >= 0.9, "recall@10 {r}");
}

/// `ALTER INDEX ... SET/RESET (m, ef_construction)`: combinations breaking
/// `ef_construction >= 2·m` are refused at ALTER time (22023); accepted ones
/// leave the existing graph (its meta page's M) in charge of queries,
/// inserts and VACUUM until REINDEX rebuilds with them. An index whose
/// stored options break the rule (as an older version could leave) still
/// answers queries; only REINDEX refuses.
#[test]
fn alter_index_options() {
    let cluster = Cluster::start("hazards_alter", &[]);
    let mut c = cluster.connect_with_extension();
    c.batch_execute(
        "CREATE TABLE t (id bigint, embedding vector(8));
         SELECT setseed(0.25);
         INSERT INTO t SELECT i, ARRAY(SELECT random() + 0 * i FROM generate_series(1, 8) j)::vector
           FROM generate_series(1, 3000) i;
         CREATE INDEX t_idx ON t USING hnsw (embedding vector_l2_ops);
         SET enable_seqscan = off; SET hnsw.ef_search = 100;",
    )
    .unwrap();
    let meta = |c: &mut Client| -> String { check(c, "t_idx").into_iter().find(|r| r.0 == "meta page").unwrap().2 };
    let works = |c: &mut Client, id: i64| {
        let plan: String = c
            .query("EXPLAIN SELECT id FROM t ORDER BY embedding <-> '[1,2,3,4,5,6,7,8]' LIMIT 3", &[])
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        assert!(plan.contains("t_idx"), "{plan}");
        let first: i64 = c
            .query_one(
                "SELECT id FROM t ORDER BY embedding <-> (SELECT embedding FROM t WHERE id = $1) LIMIT 1",
                &[&id],
            )
            .unwrap()
            .get(0);
        assert_eq!(first, id);
    };
    let refused = "22023 ef_construction must be greater than or equal to 2 * m";
    assert_eq!(sqlstate(&mut c, "ALTER INDEX t_idx SET (m = 40)"), refused);
    assert_eq!(sqlstate(&mut c, "ALTER INDEX t_idx SET (ef_construction = 20)"), refused);
    assert_eq!(sqlstate(&mut c, "CREATE INDEX ON t USING hnsw (embedding vector_l2_ops) WITH (m = 40)"), refused);
    c.batch_execute("ALTER INDEX t_idx SET (m = 8)").unwrap();
    works(&mut c, 17);
    run(
        &mut c,
        "INSERT INTO t SELECT i, ARRAY(SELECT random() + 0 * i FROM generate_series(1, 8) j)::vector
           FROM generate_series(3001, 3500) i;
         DELETE FROM t WHERE id % 4 = 0; VACUUM t;",
    );
    works(&mut c, 3001);
    assert_clean_after_vacuum(&mut c, "t_idx");
    assert!(meta(&mut c).contains("m 16 ef_construction 64"), "{}", meta(&mut c));
    c.batch_execute("ALTER INDEX t_idx SET (ef_construction = 20)").unwrap();
    assert_eq!(sqlstate(&mut c, "ALTER INDEX t_idx RESET (m)"), refused);
    c.batch_execute("REINDEX INDEX t_idx").unwrap();
    assert!(meta(&mut c).contains("m 8 ef_construction 20"), "{}", meta(&mut c));
    works(&mut c, 17);
    c.batch_execute("ALTER INDEX t_idx RESET (ef_construction, m); REINDEX INDEX t_idx").unwrap();
    assert!(meta(&mut c).contains("m 16 ef_construction 64"), "{}", meta(&mut c));
    assert_check_passes(&mut c, "t_idx");

    // Options stored before ALTER checked them (written here directly).
    c.batch_execute("UPDATE pg_class SET reloptions = '{m=40}' WHERE relname = 't_idx'").unwrap();
    let mut c = cluster.connect();
    c.batch_execute("SET enable_seqscan = off; SET hnsw.ef_search = 100").unwrap();
    works(&mut c, 29);
    c.execute("INSERT INTO t VALUES (5000, '[1,1,1,1,1,1,1,1]')", &[]).unwrap();
    run(&mut c, "DELETE FROM t WHERE id % 4 = 1; VACUUM t");
    works(&mut c, 5000);
    assert_eq!(sqlstate(&mut c, "REINDEX INDEX t_idx"), refused);
    c.batch_execute("ALTER INDEX t_idx SET (m = 16); REINDEX INDEX t_idx").unwrap();
    works(&mut c, 5000);
}

/// `hnsw_index_check` is for the index's owner (and superusers): an
/// ordinary role gets 42501 on someone else's index, the owner of a table
/// can check its own index, and a superuser can check both.
#[test]
fn check_requires_index_owner() {
    let cluster = Cluster::start("hazards_privileges", &[]);
    let mut c = cluster.connect_with_extension();
    c.batch_execute(
        "CREATE TABLE t (id bigint, embedding vector(3));
         INSERT INTO t SELECT i, ARRAY[i, 1, 2]::vector FROM generate_series(1, 200) i;
         CREATE INDEX t_idx ON t USING hnsw (embedding vector_l2_ops);
         GRANT SELECT ON t TO PUBLIC;
         CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN;
         GRANT CREATE ON SCHEMA public TO bob;
         SET ROLE bob;
         CREATE TABLE b (id bigint, embedding vector(3));
         INSERT INTO b SELECT i, ARRAY[i, 2, 1]::vector FROM generate_series(1, 200) i;
         CREATE INDEX b_idx ON b USING hnsw (embedding vector_l2_ops);
         RESET ROLE;",
    )
    .unwrap();
    for (role, index, allowed) in
        [("alice", "t_idx", false), ("alice", "b_idx", false), ("bob", "t_idx", false), ("bob", "b_idx", true)]
    {
        c.batch_execute(&format!("SET ROLE {role}")).unwrap();
        let sql = format!("SELECT * FROM hnsw_index_check('{index}')");
        if allowed {
            assert_check_passes(&mut c, index);
        } else {
            assert_eq!(sqlstate(&mut c, &sql), format!("42501 must be owner of index {index}"), "{role} {index}");
        }
        c.batch_execute("RESET ROLE").unwrap();
    }
    // Reading the table is not enough: alice may SELECT from t.
    c.batch_execute("SET ROLE alice").unwrap();
    let n: i64 = c.query_one("SELECT count(*) FROM t", &[]).unwrap().get(0);
    assert_eq!(n, 200);
    c.batch_execute("RESET ROLE").unwrap();
    assert_check_passes(&mut c, "t_idx");
    assert_check_passes(&mut c, "b_idx");
}

/// Index blocks read so far (hits and reads from `pg_statio_user_indexes`,
/// this session's counts flushed first).
fn index_blocks(c: &mut Client, index: &str) -> i64 {
    c.batch_execute("SELECT pg_stat_force_next_flush()").unwrap();
    c.batch_execute("SELECT pg_stat_clear_snapshot()").unwrap();
    c.query_one("SELECT idx_blks_hit + idx_blks_read FROM pg_statio_user_indexes WHERE indexrelname = $1", &[&index])
        .unwrap()
        .get(0)
}

/// A VACUUM that removes nothing (autovacuum of an insert-only table) does
/// not walk the index again until it has doubled; one that removes rows
/// always repairs and walks. Counts the index blocks each VACUUM reads.
#[test]
fn vacuum_walks_the_index_only_when_needed() {
    let cluster = Cluster::start("hazards_cleanup_walk", &["autovacuum = off"]);
    let mut c = cluster.connect_with_extension();
    c.batch_execute(
        "CREATE TABLE t (id bigint, embedding vector(16));
         INSERT INTO t SELECT i, ARRAY(SELECT sin(i * j) FROM generate_series(1, 16) j)::vector
           FROM generate_series(1, 4000) i;
         CREATE INDEX t_idx ON t USING hnsw (embedding vector_l2_ops);",
    )
    .unwrap();
    let pages = |c: &mut Client| -> i64 { c.query_one("SELECT pg_relation_size('t_idx') / 8192", &[]).unwrap().get(0) };
    // Each VACUUM in a new session: a backend re-pins blocks it has read
    // before through its buffer hints (ReadRecentBuffer), which the block
    // counters do not see.
    let vacuum = |c: &mut Client, sql: &str| -> i64 {
        let before = index_blocks(c, "t_idx");
        let mut v = cluster.connect();
        run(&mut v, sql);
        // Flushed when the session goes idle after this statement, so
        // before the next one returns.
        v.batch_execute("SELECT pg_stat_force_next_flush()").unwrap();
        v.batch_execute("SELECT 1").unwrap();
        index_blocks(c, "t_idx") - before
    };
    let n = pages(&mut c);
    let first = vacuum(&mut c, "VACUUM t");
    let second = vacuum(&mut c, "VACUUM t");
    c.batch_execute(
        "INSERT INTO t SELECT i, ARRAY(SELECT cos(i * j) FROM generate_series(1, 16) j)::vector
           FROM generate_series(4001, 5000) i",
    )
    .unwrap();
    let grown = vacuum(&mut c, "VACUUM t");
    let deleting = vacuum(&mut c, "DELETE FROM t WHERE id % 50 = 0; VACUUM t");
    c.batch_execute(
        "INSERT INTO t SELECT i, ARRAY(SELECT cos(i * j + 1) FROM generate_series(1, 16) j)::vector
           FROM generate_series(5001, 15000) i",
    )
    .unwrap();
    let doubled = vacuum(&mut c, "VACUUM t");
    let after = vacuum(&mut c, "VACUUM t");
    eprintln!(
        "index of {n} pages: index blocks read by VACUUM: first {first}, unchanged {second}, +25% rows {grown}, \
         after DELETE {deleting}, after growing to {} pages {doubled}, unchanged {after}",
        pages(&mut c)
    );
    assert!(first >= n, "the first VACUUM walks the index ({first} < {n})");
    assert!(second <= 3, "an unchanged index is not walked ({second} blocks)");
    assert!(grown <= 3, "a 25% larger index is not walked ({grown} blocks)");
    assert!(deleting >= n, "a VACUUM that removes rows repairs and walks ({deleting})");
    assert!(doubled >= 2 * n, "a doubled index is walked ({doubled})");
    assert!(after <= 3, "{after}");
    assert_clean_after_vacuum(&mut c, "t_idx");
}

/// The little-endian `u32` at `at` in `b`.
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// The little-endian `u16` at `at` in `b`.
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}

/// The item at `offset` (1-based) of the page starting at `page` in `bytes`:
/// its byte range.
fn item_range(bytes: &[u8], page: usize, offset: usize) -> std::ops::Range<usize> {
    let lp = u32_at(bytes, page + 24 + 4 * (offset - 1));
    let (off, len) = ((lp & 0x7fff) as usize, ((lp >> 17) & 0x7fff) as usize);
    page + off..page + off + len
}

/// Every item of the index file `bytes` after the meta page, in address
/// order: its `(block, offset)` and byte range.
fn items(bytes: &[u8]) -> Vec<((u32, u16), std::ops::Range<usize>)> {
    let mut out = Vec::new();
    for page in (8192..bytes.len()).step_by(8192) {
        let lower = u16_at(bytes, page + 12) as usize;
        for offset in 1..=(lower.saturating_sub(24) / 4) {
            out.push((((page / 8192) as u32, offset as u16), item_range(bytes, page, offset)));
        }
    }
    out
}

/// The check can fail where it matters most: a live element's list pointing
/// at a free (reusable) element, written into the file on purpose, is
/// reported by the neighbor-list and reachability checks.
#[test]
fn check_reports_links_to_free_elements() {
    let mut cluster = Cluster::start("hazards_free_link", &[]);
    let mut c = cluster.connect_with_extension();
    run(
        &mut c,
        "CREATE TABLE t (id bigint, embedding vector(3));
         INSERT INTO t SELECT i, ARRAY[i, i % 7, i % 5]::vector FROM generate_series(1, 2000) i;
         CREATE INDEX t_idx ON t USING hnsw (embedding vector_l2_ops);
         DELETE FROM t WHERE id % 2 = 0; VACUUM t",
    );
    let report = assert_clean_after_vacuum(&mut c, "t_idx");
    assert!(element_count(&report, "free") > 0, "{}", show(&report));
    let rel: String = c.query_one("SELECT pg_relation_filepath('t_idx')", &[]).unwrap().get(0);
    let path = cluster.data.join(rel);
    drop(c);
    cluster.stop("fast");
    let mut bytes = std::fs::read(&path).unwrap();
    // Elements: kind 1 at byte 0, flags at 2 (1 deleted, 2 free), neighbor
    // item address at 4..10 (block u32, offset u16).
    let (mut free, mut live) = (None, None);
    for (at, r) in items(&bytes) {
        if bytes[r.start] != 1 {
            continue;
        }
        let flags = bytes[r.start + 2];
        if flags & 2 != 0 && free.is_none() {
            free = Some(at);
        } else if flags == 0 && live.is_none() {
            live = Some((u32_at(&bytes, r.start + 4) as usize, u16_at(&bytes, r.start + 8) as usize));
        }
    }
    let ((fb, fo), (nb, no)) = (free.expect("a free element"), live.expect("a live element"));
    // First layer-0 slot of the live element's neighbor item (4-byte header).
    let slot = item_range(&bytes, nb * 8192, no).start + 4;
    bytes[slot..slot + 4].copy_from_slice(&fb.to_le_bytes());
    bytes[slot + 4..slot + 6].copy_from_slice(&fo.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    cluster.restart();
    let mut c = cluster.connect();
    let report = check(&mut c, "t_idx");
    let failed = |name: &str| report.iter().any(|r| r.0 == name && !r.1 && r.2.contains(&format!("({fb},{fo})")));
    assert!(failed("neighbor lists"), "{}", show(&report));
    assert!(failed("reachable from entry point"), "{}", show(&report));
}

/// The reachability check tells a lost row from a dead one: two level-0
/// elements are cut off from the graph in the file on purpose (every
/// layer-0 link to them removed). While one of them holds a visible row the
/// check fails and names that one only; once both rows are deleted (not yet
/// vacuumed) it passes and counts them, as after an insert killed before it
/// linked its element; VACUUM then frees both.
#[test]
fn check_fails_unreachable_rows_only_while_visible() {
    let mut cluster = Cluster::start("hazards_unreachable", &["autovacuum = off"]);
    let mut c = cluster.connect_with_extension();
    // One build thread: the same graph on every run.
    run(
        &mut c,
        "CREATE TABLE t (id bigint, embedding vector(3));
         INSERT INTO t SELECT i, ARRAY[i, i % 7, i % 5]::vector FROM generate_series(1, 2000) i;
         SET max_parallel_maintenance_workers = 0;
         CREATE INDEX t_idx ON t USING hnsw (embedding vector_l2_ops)",
    );
    let ids: HashMap<String, i64> =
        c.query("SELECT ctid::text, id FROM t", &[]).unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    let rel: String = c.query_one("SELECT pg_relation_filepath('t_idx')", &[]).unwrap().get(0);
    let path = cluster.data.join(rel);
    drop(c);
    cluster.stop("fast");
    let mut bytes = std::fs::read(&path).unwrap();
    // Elements (kind 1): level at byte 1, flags at 2, heap TID count in the
    // low nibble of byte 3 (its slot count in the high one), heap TIDs from
    // byte 12. Two live level-0 elements of one row each.
    let picked: Vec<((u32, u16), i64)> = items(&bytes)
        .into_iter()
        .filter(|(_, r)| bytes[r.start..r.start + 3] == [1, 0, 0] && bytes[r.start + 3] & 0x0F == 1)
        .map(|(at, r)| {
            let heap = format!("({},{})", u32_at(&bytes, r.start + 12), u16_at(&bytes, r.start + 16));
            (at, ids[&heap])
        })
        .take(2)
        .collect();
    let targets = [picked[0].0, picked[1].0];
    // Neighbor items (kind 2): M at bytes 2..4, then 2·M layer-0 slots of 6
    // bytes (block u32, offset u16; bit 15 of the offset marks a spare link),
    // the list ending at the first invalid one.
    let mut removed = 0;
    for (_, r) in items(&bytes) {
        if bytes[r.start] != 2 {
            continue;
        }
        let slots = 2 * u16_at(&bytes, r.start + 2) as usize;
        let slot = |i: usize| r.start + 4 + 6 * i;
        let list: Vec<(u32, u16)> = (0..slots)
            .map(|i| (u32_at(&bytes, slot(i)), u16_at(&bytes, slot(i) + 4)))
            .take_while(|&(b, o)| b != u32::MAX && o & 0x7FFF != 0)
            .collect();
        let kept: Vec<(u32, u16)> =
            list.iter().copied().filter(|&(b, o)| !targets.contains(&(b, o & 0x7FFF))).collect();
        removed += list.len() - kept.len();
        for i in 0..slots {
            let (b, o) = kept.get(i).copied().unwrap_or((u32::MAX, 0));
            bytes[slot(i)..slot(i) + 4].copy_from_slice(&b.to_le_bytes());
            bytes[slot(i) + 4..slot(i) + 6].copy_from_slice(&o.to_le_bytes());
        }
    }
    assert!(removed > 0, "links to {targets:?}");
    std::fs::write(&path, bytes).unwrap();
    cluster.restart();
    let mut c = cluster.connect();
    let reachability =
        |c: &mut Client| check(c, "t_idx").into_iter().find(|r| r.0 == "reachable from entry point").unwrap();
    let name = |(b, o): (u32, u16)| format!("element ({b},{o}) unreachable");
    let (lost, dead) = (picked[1], picked[0]);
    c.execute("DELETE FROM t WHERE id = $1", &[&dead.1]).unwrap();
    let (_, passed, detail) = reachability(&mut c);
    assert!(!passed && detail.starts_with("1 problem(s)") && detail.contains(&name(lost.0)), "{detail}");
    c.execute("DELETE FROM t WHERE id = $1", &[&lost.1]).unwrap();
    let (_, passed, detail) = reachability(&mut c);
    assert!(passed && detail.contains("; 2 unreachable element(s) only for rows not visible"), "{detail}");
    // Two dead rows are below PostgreSQL's threshold for vacuuming indexes.
    run(&mut c, "VACUUM (INDEX_CLEANUP ON) t");
    let report = assert_clean_after_vacuum(&mut c, "t_idx");
    assert_eq!(element_count(&report, "live"), 1998, "{}", show(&report));
    assert!(!show(&report).contains("unreachable"), "{}", show(&report));
}

/// `(layer-0 links, spare ones)` from the "neighbor lists" row, e.g. "...;
/// 4000 layer-0 links, 1200 of them spare".
fn layer0_links(report: &Report) -> (usize, usize) {
    let detail = &report.iter().find(|r| r.0 == "neighbor lists").expect("lists row").2;
    let number_before = |what: &str| -> usize {
        let at = detail.find(what).unwrap_or_else(|| panic!("{what} in {detail}"));
        detail[..at].trim_end().rsplit(' ').next().unwrap().parse().unwrap()
    };
    (number_before(" layer-0 links"), number_before(" of them spare"))
}

/// The build fills the layer-0 slots its selected links leave free with
/// spare links (format 5); single-row inserts take those slots back for
/// selected links, and every row stays reachable and found.
#[test]
fn spare_links_fill_lists_and_give_way_to_inserts() {
    let cluster = Cluster::start("hazards_spare_links", &["autovacuum = off"]);
    let mut c = cluster.connect_with_extension();
    let mut rng = SmallRng::seed_from_u64(5);
    let rows: Vec<Vec<f32>> = (0..4000).map(|_| (0..8).map(|_| rng.gen::<f32>()).collect()).collect();
    run(&mut c, "CREATE TABLE t (id bigint, embedding vector(8))");
    copy_vectors(&mut c, "t", 0, &rows[..3000]);
    run(
        &mut c,
        "SET max_parallel_maintenance_workers = 0;
         CREATE INDEX t_idx ON t USING hnsw (embedding vector_l2_ops) WITH (m = 8)",
    );
    let report = assert_check_passes(&mut c, "t_idx");
    let reach = &report.iter().find(|r| r.0 == "reachable from entry point").unwrap().2;
    assert!(!reach.contains("spare"), "the build links every element with selected links: {reach}");
    let (links, spare) = layer0_links(&report);
    // 16 layer-0 slots per element: nearly all in use, a good part by spare links.
    assert!(links > 3000 * 15 && spare > 3000 * 3, "{links} links, {spare} spare");
    for (i, v) in rows[3000..].iter().enumerate() {
        c.execute("INSERT INTO t VALUES ($1, $2)", &[&(3000 + i as i64), &Vector::from(v.clone())]).unwrap();
    }
    let report = assert_check_passes(&mut c, "t_idx");
    eprintln!("after inserts: {}", show(&report));
    let (links_after, spare_after) = layer0_links(&report);
    assert!(links_after > links && spare_after > 0, "{links_after} links, {spare_after} spare after inserts");
    assert!(
        spare_after * links < spare * links_after,
        "inserts took spare links' slots: {spare} of {links} spare before, {spare_after} of {links_after} after"
    );
    c.batch_execute("SET enable_seqscan = off; SET hnsw.ef_search = 40").unwrap();
    let mut recall = 0.0;
    for q in rows.iter().step_by(100) {
        let found: Vec<i64> = c
            .query("SELECT id FROM t ORDER BY embedding <-> $1 LIMIT 10", &[&Vector::from(q.clone())])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        recall += recall_at(10, &found, &exact_knn(&rows, q, 10, l2)) / 40.0;
    }
    assert!(recall >= 0.95, "recall@10 {recall}");
}

/// Live elements of the index file `bytes` whose layer-0 list is empty, as
/// `(block, offset)`. Elements (kind 1): flags at byte 2 (1 deleted, 2
/// free), neighbor item address at 4..10; neighbor items (kind 2): layer-0
/// slots from byte 4, the list ending at the first invalid one.
fn live_elements_without_links(bytes: &[u8]) -> Vec<(u32, u16)> {
    let all = items(bytes);
    let ranges: HashMap<(u32, u16), std::ops::Range<usize>> = all.iter().cloned().collect();
    all.iter()
        .filter(|(_, r)| bytes[r.start] == 1 && bytes[r.start + 2] == 0)
        .filter(|(_, r)| {
            let n = &ranges[&(u32_at(bytes, r.start + 4), u16_at(bytes, r.start + 8))];
            let (b, o) = (u32_at(bytes, n.start + 4), u16_at(bytes, n.start + 8));
            b == u32::MAX || o & 0x7FFF == 0
        })
        .map(|(at, _)| *at)
        .collect()
}

/// VACUUM's free step never wipes the lists of an element an insert has
/// just reused: inserts run while VACUUM is held (by the test hook
/// `hnsw.debug_vacuum_free_lock`) between the two writes of its first
/// freed block, with the meta page's free hint pointing there (an earlier
/// VACUUM freed a few elements just before). Verifies the check passes,
/// every row inserted meanwhile is found by its own vector, and no live
/// element in the file is left without layer-0 links.
#[test]
fn vacuum_free_step_keeps_lists_of_reused_elements() {
    let mut cluster = Cluster::start("hazards_free_order", &["autovacuum = off"]);
    let mut c = cluster.connect_with_extension();
    let mut rng = SmallRng::seed_from_u64(22);
    let rows = random_vectors(&mut rng, 2150, 8);
    run(&mut c, "CREATE TABLE t (id bigint, embedding vector(8))");
    copy_vectors(&mut c, "t", 0, &rows[..2000]);
    // One build thread: elements lie in id order.
    run(
        &mut c,
        "SET max_parallel_maintenance_workers = 0;
         CREATE INDEX t_idx ON t USING hnsw (embedding vector_cosine_ops) WITH (m = 8);
         DELETE FROM t WHERE id < 30; VACUUM t;
         DELETE FROM t WHERE id < 600",
    );
    const KEY: i32 = 4242;
    run(&mut c, &format!("SELECT pg_advisory_lock({KEY})"));
    let vacuum = {
        let conn = cluster.conn_string();
        std::thread::spawn(move || {
            let mut v = Client::connect(&format!("{conn} application_name=hazard_vacuum"), NoTls).unwrap();
            v.batch_execute(&format!("SET hnsw.debug_vacuum_free_lock = {KEY}")).unwrap();
            v.batch_execute("VACUUM t").unwrap();
        })
    };
    let waiting =
        format!("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = {KEY} AND NOT granted");
    let start = Instant::now();
    while c.query_one(&waiting, &[]).unwrap().get::<_, i64>(0) == 0 {
        assert!(start.elapsed() < Duration::from_secs(120), "VACUUM never reached its free step");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut w = client(&cluster.conn_string(), "hazard_insert");
    for (i, v) in rows[2000..].iter().enumerate() {
        w.execute("INSERT INTO t VALUES ($1, $2)", &[&(2000 + i as i64), &Vector::from(v.clone())]).unwrap();
    }
    run(&mut c, &format!("SELECT pg_advisory_unlock({KEY})"));
    vacuum.join().expect("VACUUM failed");
    let report = assert_check_passes(&mut c, "t_idx");
    eprintln!("{}", show(&report));
    let inserted: Vec<(i64, Vec<f32>)> = (2000..2150).map(|id| (id, rows[id as usize].clone())).collect();
    let (_, lost) = unfound(&mut w, "t", &inserted);
    assert!(lost.is_empty(), "rows inserted during VACUUM's free step not found: {lost:?}");
    let rel: String = c.query_one("SELECT pg_relation_filepath('t_idx')", &[]).unwrap().get(0);
    let path = cluster.data.join(rel);
    drop((c, w));
    cluster.stop("fast");
    let bare = live_elements_without_links(&std::fs::read(&path).unwrap());
    assert!(bare.is_empty(), "live elements without layer-0 links (lists wiped by VACUUM): {bare:?}");
}

/// `hnsw_index_check` lets writers go on: while a check is held (by the
/// test hook `hnsw.debug_check_pause_lock`) between reading the index's
/// pages and checking its lists and reachability, single-row INSERTs (with
/// `lock_timeout = 5s`, so a wait for the check fails them), an UPDATE, a
/// DELETE and a VACUUM all complete. The paused check then passes, although
/// the graph changed under it (links to elements it never read, elements
/// freed and reused), and so does a check after it.
#[test]
fn index_check_lets_writers_go_on() {
    let cluster = Cluster::start("hazards_check_writers", &["autovacuum = off"]);
    let mut c = cluster.connect_with_extension();
    let mut rng = SmallRng::seed_from_u64(44);
    let rows = random_vectors(&mut rng, 3200, 8);
    run(&mut c, "CREATE TABLE t (id bigint, embedding vector(8))");
    copy_vectors(&mut c, "t", 0, &rows[..3000]);
    run(
        &mut c,
        "CREATE INDEX t_idx ON t USING hnsw (embedding vector_l2_ops) WITH (m = 8);
         DELETE FROM t WHERE id < 300",
    );
    const KEY: i32 = 4343;
    run(&mut c, &format!("SELECT pg_advisory_lock({KEY})"));
    let paused = {
        let conn = cluster.conn_string();
        std::thread::spawn(move || {
            let mut k = Client::connect(&format!("{conn} application_name=hazard_check"), NoTls).unwrap();
            k.batch_execute(&format!("SET hnsw.debug_check_pause_lock = {KEY}")).unwrap();
            check(&mut k, "t_idx")
        })
    };
    let waiting =
        format!("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = {KEY} AND NOT granted");
    let start = Instant::now();
    while c.query_one(&waiting, &[]).unwrap().get::<_, i64>(0) == 0 {
        assert!(start.elapsed() < Duration::from_secs(120), "the check never reached its pause");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut w = client(&cluster.conn_string(), "hazard_writer");
    w.batch_execute("SET lock_timeout = '5s'").unwrap();
    for (i, v) in rows[3000..].iter().enumerate() {
        w.execute("INSERT INTO t VALUES ($1, $2)", &[&(3000 + i as i64), &Vector::from(v.clone())]).unwrap_or_else(
            |e| panic!("INSERT during hnsw_index_check: {e} (SQLSTATE {:?})", e.code().map(|c| c.code().to_string())),
        );
    }
    run(&mut w, "UPDATE t SET embedding = embedding WHERE id BETWEEN 1000 AND 1050; DELETE FROM t WHERE id >= 3150");
    run(&mut w, "VACUUM t");
    for (i, v) in rows[3150..].iter().enumerate() {
        w.execute("INSERT INTO t VALUES ($1, $2)", &[&(3150 + i as i64), &Vector::from(v.clone())]).unwrap();
    }
    let still_paused = c.query_one(&waiting, &[]).unwrap().get::<_, i64>(0);
    assert_eq!(still_paused, 1, "the check finished before the writers did: the test proved nothing");
    run(&mut c, &format!("SELECT pg_advisory_unlock({KEY})"));
    let report = paused.join().expect("hnsw_index_check failed");
    assert!(report.iter().all(|r| r.1), "the check that ran beside the writers:\n{}", show(&report));
    eprintln!("{}", show(&report));
    assert_check_passes(&mut c, "t_idx");
}
