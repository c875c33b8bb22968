//! `hnsw_recall(...)` and `hnsw_suggest_ef_search(...)`: the `ef_search`
//! tuning loop of every HNSW guide (Malkov & Yashunin 2016, arXiv:1603.09320,
//! §4: recall grows with the search beam `ef`, and so does the work), run in
//! SQL against one `hnsw` index.
//!
//! For a set of query vectors, the exact top-k of each is computed once with
//! a sequential scan (index scans disabled for those queries only), then the
//! index's top-k for each `ef_search` of a list; each `ef_search` gives one
//! row: recall@k (the fraction of the exact top-k the index returned), the
//! mean and 99th-percentile latency of the index query in milliseconds, and
//! the mean number of elements the search visited (distances computed,
//! [`crate::hnsw::scan::visited_in_last_scan`]).
//!
//! The queries are, by default, a seeded sample of the indexed rows' own
//! vectors; each sampled row is then left out of both its exact and its index
//! result (the query is the row's own vector, so it would always find itself).
//! At `ef_search <= k` the sampled row's own element takes one of the scan's
//! `ef_search` results, so recall there is capped at `(ef_search − 1) / k`.
//! Queries can instead come from an array (`queries => ARRAY[...]`) or from a
//! table (`query_table`, `query_column`), as real queries are usually not rows
//! of the table.
//!
//! Guarantees:
//! - **Snapshot**: every query runs read-only in the snapshot of the calling
//!   statement, so the exact and index results see the same rows.
//! - **Filters**: `filter => 'category = 3'` is added to the `WHERE` clause of
//!   both the exact and the index queries (filtered recall: the index returns
//!   at most `ef_search` rows, and the filter is applied to those). A partial
//!   index's own predicate is always added.
//! - **Bounded cost**: the exact top-k reads every row of the table once per
//!   query; when `queries × table rows` exceeds `max_rows` (default 100
//!   million) the function refuses before scanning, naming `sample_size` and
//!   `max_rows`.
//! - **Cancellation**: interrupts (cancel, `statement_timeout`) are checked
//!   between queries, and PostgreSQL checks them inside each scan.
//! - **Settings**: the planner settings and `hnsw.ef_search` it changes are
//!   restored when it returns, as for a function with `SET` clauses.
//!
//! Privileges: both functions are revoked from `PUBLIC` when the extension is
//! created (a superuser grants `EXECUTE` to whom may tune), and the caller must
//! also have the privileges of the index's owner (the table owner), or be a
//! member of `pg_maintain` where that role exists (PostgreSQL 17+);
//! superusers pass. The queries run as the caller, so reading the table also
//! needs `SELECT` on it.
//!
//! The indexed column or expression comes from `pg_get_indexdef`, the
//! ordering operator from the index's operator class (`pg_amop`, strategy 1),
//! so any operator class works.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{pg_sys, AnyArray, PgLogLevel, PgRelation, PgSqlErrorCode};
use std::ffi::{CStr, CString};
use std::time::Instant;

use crate::error::{raise, raise_hint};

/// `ef_search` values `hnsw_recall` sweeps by default.
pub const DEFAULT_EF_SWEEP: [i32; 6] = [10, 20, 40, 80, 160, 320];
/// `ef_search` values `hnsw_suggest_ef_search` tries by default (it stops at
/// the first reaching the target, then bisects below it).
pub const DEFAULT_EF_CANDIDATES: [i32; 8] = [10, 20, 40, 80, 160, 320, 640, 1000];
/// Default `max_rows`: table rows the exact scans may read in total.
pub const DEFAULT_MAX_ROWS: i64 = 100_000_000;
/// Largest `k` (the largest `hnsw.ef_search`).
pub const MAX_K: i32 = 1000;
/// Largest `sample_size`.
pub const MAX_SAMPLE: i32 = 100_000;
/// Range of `hnsw.ef_search`.
const EF_RANGE: (i32, i32) = (1, 1000);

// ---------------------------------------------------------------------------
// The pure part: recall, percentiles, the bisection.
// ---------------------------------------------------------------------------

/// One result row of the exact or the index query: the row's heap TID as
/// text (`ctid::text`) and its distance to the query.
pub type Ranked = (String, f64);

/// The text PostgreSQL 18.6 gives as `ctid` of rows that an index scan
/// passed through the executor's ORDER BY reorder queue (it does so for
/// every index that asks for a recheck of ORDER BY values, GiST's too):
/// such rows cannot be told apart by TID, only by distance.
pub const LOST_TID: &str = "(4294967295,0)";

/// Drops the query row `self_tid` from a result list fetched with `LIMIT
/// k + 1` (or, when the row is not in it, the last entry), keeping at most
/// `k` rows. Without a query row, keeps the first `k`.
pub fn without_self(mut list: Vec<Ranked>, self_tid: Option<&str>, k: usize) -> Vec<Ranked> {
    if let Some(me) = self_tid {
        if let Some(at) = list.iter().position(|t| t.0 == me) {
            list.remove(at);
        }
    }
    list.truncate(k);
    list
}

/// [`without_self`] for an index result whose TIDs were lost
/// ([`LOST_TID`]): drops the first row at the query row's own distance
/// `self_distance` (from the exact list; `None` when the query is not a
/// table row), keeping at most `k` rows.
pub fn without_self_by_distance(mut list: Vec<Ranked>, self_distance: Option<f64>, k: usize) -> Vec<Ranked> {
    if let Some(d) = self_distance {
        if let Some(at) = list.iter().position(|t| t.1 == d) {
            list.remove(at);
        }
    }
    list.truncate(k);
    list
}

/// Number of entries of `found` that are in `truth`: by heap TID (unique
/// within one list), or, when the index result lost its TIDs
/// ([`LOST_TID`]), the rows no farther than the exact k-th distance (rows
/// tied at that distance are interchangeable), at most `truth.len()`.
pub fn hits(found: &[Ranked], truth: &[Ranked]) -> usize {
    if found.iter().any(|f| f.0 == LOST_TID) {
        let Some(kth) = truth.last().map(|t| t.1) else { return 0 };
        return found.iter().filter(|f| f.1 <= kth).count().min(truth.len());
    }
    found.iter().filter(|f| truth.iter().any(|t| t.0 == f.0)).count()
}

/// The `p`-quantile (0..=1) of ascending `sorted` values by nearest rank
/// (`round((n − 1)·p)`, as the benchmark computes it); 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize]
}

/// One query's outcome at one `ef_search`.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueryOutcome {
    /// Index results that are in the exact top-k.
    pub hits: usize,
    /// Size of the exact top-k (k, or fewer when fewer rows qualify).
    pub truth: usize,
    /// Latency of the index query, ms.
    pub ms: f64,
    /// Elements the search visited.
    pub visited: u64,
}

/// One output row of `hnsw_recall`.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepRow {
    /// `hnsw.ef_search`.
    pub ef_search: i32,
    /// `k` of recall@k.
    pub k: i32,
    /// Number of queries.
    pub queries: i32,
    /// recall@k: exact top-k rows the index returned, over all queries,
    /// divided by the size of the exact top-k lists.
    pub recall: f64,
    /// Mean index-query latency, ms.
    pub mean_ms: f64,
    /// 99th-percentile index-query latency, ms.
    pub p99_ms: f64,
    /// Mean elements visited per index query.
    pub mean_visited: f64,
}

/// Aggregates the per-query outcomes of one `ef_search`. `recall` is NaN
/// when no query had any exact result.
pub fn summarize(ef_search: i32, k: i32, outcomes: &[QueryOutcome]) -> SweepRow {
    let n = outcomes.len().max(1) as f64;
    let hit: usize = outcomes.iter().map(|o| o.hits).sum();
    let truth: usize = outcomes.iter().map(|o| o.truth).sum();
    let mut ms: Vec<f64> = outcomes.iter().map(|o| o.ms).collect();
    ms.sort_by(f64::total_cmp);
    SweepRow {
        ef_search,
        k,
        queries: outcomes.len() as i32,
        recall: if truth == 0 { f64::NAN } else { hit as f64 / truth as f64 },
        mean_ms: ms.iter().sum::<f64>() / n,
        p99_ms: percentile(&ms, 0.99),
        mean_visited: outcomes.iter().map(|o| o.visited as f64).sum::<f64>() / n,
    }
}

/// The smallest `ef_search` whose recall reaches `target`, assuming recall
/// grows with `ef_search`: tries `candidates` (ascending) until one reaches
/// it, then bisects between the previous candidate (or 0) and it. `recall_at`
/// measures one `ef_search`. `None` when no candidate reaches the target.
/// Returns the answer and every `(ef_search, recall)` measured.
pub fn smallest_reaching(
    candidates: &[i32],
    target: f64,
    mut recall_at: impl FnMut(i32) -> f64,
) -> (Option<i32>, Vec<(i32, f64)>) {
    let mut seen = Vec::new();
    let mut lo = 0;
    for &c in candidates {
        let r = recall_at(c);
        seen.push((c, r));
        if r >= target {
            let mut hi = c;
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                let r = recall_at(mid);
                seen.push((mid, r));
                if r >= target {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            return (Some(hi), seen);
        }
        lo = c;
    }
    (None, seen)
}

// ---------------------------------------------------------------------------
// A thin layer over SPI: read-only queries in the caller's snapshot, results
// as text.
// ---------------------------------------------------------------------------

/// Rows of the last SPI result, every column as its text output (`None` for
/// NULL); frees the result.
fn take_rows() -> Vec<Vec<Option<String>>> {
    // SAFETY: called right after a successful SPI execution, so SPI_tuptable
    // is null or points at SPI_processed tuples described by its tupdesc;
    // SPI_getvalue returns a palloc'd C string or null, which we copy and free.
    unsafe {
        let tt = pg_sys::SPI_tuptable;
        if tt.is_null() {
            return Vec::new();
        }
        let n = pg_sys::SPI_processed as usize;
        let desc = (*tt).tupdesc;
        let natts = (*desc).natts;
        let mut rows = Vec::with_capacity(n);
        for i in 0..n {
            let tuple = *(*tt).vals.add(i);
            let row = (1..=natts)
                .map(|col| {
                    let p = pg_sys::SPI_getvalue(tuple, desc, col);
                    if p.is_null() {
                        None
                    } else {
                        let s = CStr::from_ptr(p).to_string_lossy().into_owned();
                        pg_sys::pfree(p.cast());
                        Some(s)
                    }
                })
                .collect();
            rows.push(row);
        }
        pg_sys::SPI_freetuptable(tt);
        rows
    }
}

fn spi_failed(status: i32, sql: &str) -> ! {
    raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("SPI failed with code {status} on: {sql}"))
}

fn c_string(s: &str) -> CString {
    CString::new(s).unwrap_or_else(|_| {
        raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "argument must not contain a zero byte")
    })
}

/// Runs `sql` read-only in the current snapshot with typed parameters
/// (`(type oid, datum)`, never NULL) and returns its rows as text. Must run
/// inside an SPI connection.
fn query(sql: &str, args: &[(pg_sys::Oid, pg_sys::Datum)]) -> Vec<Vec<Option<String>>> {
    run_sql(sql, args, true)
}

/// [`query`] with SPI's `read_only` flag given: utility statements (EXPLAIN)
/// need `false`, which takes a fresh snapshot.
fn run_sql(sql: &str, args: &[(pg_sys::Oid, pg_sys::Datum)], read_only: bool) -> Vec<Vec<Option<String>>> {
    let c = c_string(sql);
    let mut types: Vec<pg_sys::Oid> = args.iter().map(|a| a.0).collect();
    let mut values: Vec<pg_sys::Datum> = args.iter().map(|a| a.1).collect();
    let nulls = vec![b' ' as std::ffi::c_char; args.len()];
    // SAFETY: SPI is connected (callers run inside Spi::connect); the arrays
    // hold `args.len()` entries; read_only = true runs in the active snapshot.
    let status = unsafe {
        if args.is_empty() {
            pg_sys::SPI_execute(c.as_ptr(), read_only, 0)
        } else {
            pg_sys::SPI_execute_with_args(
                c.as_ptr(),
                args.len() as i32,
                types.as_mut_ptr(),
                values.as_mut_ptr(),
                nulls.as_ptr(),
                read_only,
                0,
            )
        }
    };
    if status < 0 {
        spi_failed(status, sql);
    }
    take_rows()
}

/// The first row's first column of `sql`.
fn query_value(sql: &str) -> Option<String> {
    query(sql, &[]).into_iter().next().and_then(|r| r.into_iter().next().flatten())
}

/// A statement prepared once and run many times with one parameter.
struct Plan {
    plan: pg_sys::SPIPlanPtr,
    sql: String,
}

impl Plan {
    fn new(sql: String, arg_type: pg_sys::Oid) -> Plan {
        let c = c_string(&sql);
        let mut types = [arg_type];
        // SAFETY: SPI is connected; one argument type. The plan lives in the
        // SPI procedure context until SPI_finish.
        let plan = unsafe { pg_sys::SPI_prepare(c.as_ptr(), 1, types.as_mut_ptr()) };
        if plan.is_null() {
            // SAFETY: SPI_result is set by the failed SPI_prepare.
            spi_failed(unsafe { pg_sys::SPI_result }, &sql);
        }
        Plan { plan, sql }
    }

    /// Runs the plan with `arg` and returns each row's first two columns:
    /// the heap TID as text and the distance (a NULL distance reads as
    /// infinity).
    fn run(&self, arg: pg_sys::Datum) -> Vec<Ranked> {
        let mut values = [arg];
        let nulls = [b' ' as std::ffi::c_char];
        // SAFETY: the plan was prepared with one parameter of arg's type;
        // read_only = true runs in the active snapshot.
        let status = unsafe { pg_sys::SPI_execute_plan(self.plan, values.as_mut_ptr(), nulls.as_ptr(), true, 0) };
        if status < 0 {
            spi_failed(status, &self.sql);
        }
        take_rows()
            .into_iter()
            .filter_map(|r| {
                let mut it = r.into_iter();
                let tid = it.next().flatten()?;
                let distance = it.next().flatten().and_then(|d| d.parse().ok()).unwrap_or(f64::INFINITY);
                Some((tid, distance))
            })
            .collect()
    }
}

/// The datum of type `type_oid` that `text` reads as (the type's input
/// function; a bad value raises that type's own error).
fn input_datum(type_oid: pg_sys::Oid, text: &str) -> pg_sys::Datum {
    let c = c_string(text);
    let (mut input, mut ioparam) = (pg_sys::InvalidOid, pg_sys::InvalidOid);
    // SAFETY: getTypeInputInfo raises for an unknown type; the input function
    // copies the string into a datum in the current (SPI) memory context.
    unsafe {
        pg_sys::getTypeInputInfo(type_oid, &mut input, &mut ioparam);
        pg_sys::OidInputFunctionCall(input, c.as_ptr() as *mut std::ffi::c_char, ioparam, -1)
    }
}

/// Sets a configuration parameter until the function returns (restored by
/// `AtEOXact_GUC` at the nest level opened in [`with_run`]).
fn set_guc(name: &CStr, value: &str) {
    let v = c_string(value);
    // SAFETY: both strings are NUL-terminated; elevel 0 raises an ERROR for
    // a bad value; GUC_ACTION_SAVE keeps the old value for AtEOXact_GUC.
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            v.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
    }
}

/// SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

// ---------------------------------------------------------------------------
// The index, its table, its operator.
// ---------------------------------------------------------------------------

/// What the queries need to know about the index.
struct Target {
    /// The index as `regclass` text (for messages).
    index: String,
    /// `quote_ident(relname)`, as EXPLAIN prints it.
    index_ident: String,
    /// The table as `regclass` text.
    table: String,
    /// The table's OID.
    table_oid: pg_sys::Oid,
    /// The indexed column or expression, parenthesised.
    expr: String,
    /// The indexed column's name when the index is on a plain column.
    column: Option<String>,
    /// `OPERATOR(schema.op)`.
    op: String,
    /// Right-hand type of the operator (the query's type).
    query_type: pg_sys::Oid,
    /// The partial index's predicate, parenthesised.
    predicate: Option<String>,
}

fn resolve(index: &PgRelation) -> Target {
    let oid = index.oid().to_u32();
    let sql = format!(
        "SELECT c.relkind::text, am.amname::text, c.oid::regclass::text, quote_ident(c.relname::text), \
                i.indrelid::regclass::text, i.indrelid::oid::text, pg_get_indexdef(c.oid, 1, true), \
                (SELECT quote_ident(a.attname::text) FROM pg_attribute a \
                  WHERE a.attrelid = i.indrelid AND a.attnum = i.indkey[0] AND i.indkey[0] <> 0), \
                pg_get_expr(i.indpred, i.indrelid, true), i.indisvalid::text, \
                (SELECT format('OPERATOR(%I.%s)', n.nspname, o.oprname) || ' ' || ao.amoprighttype::oid::text \
                   FROM pg_opclass opc JOIN pg_amop ao ON ao.amopfamily = opc.opcfamily \
                   JOIN pg_operator o ON o.oid = ao.amopopr JOIN pg_namespace n ON n.oid = o.oprnamespace \
                  WHERE opc.oid = i.indclass[0] AND ao.amoppurpose = 'o' AND ao.amopstrategy = 1 \
                    AND ao.amoplefttype = opc.opcintype LIMIT 1) \
           FROM pg_class c LEFT JOIN pg_am am ON am.oid = c.relam LEFT JOIN pg_index i ON i.indexrelid = c.oid \
          WHERE c.oid = {oid}"
    );
    let row = query(&sql, &[]).into_iter().next().unwrap_or_default();
    let get = |i: usize| row.get(i).cloned().flatten();
    if get(0).as_deref() != Some("i") || get(1).as_deref() != Some("hnsw") {
        raise(PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE, format!("\"{}\" is not an hnsw index", index.name()));
    }
    let index_text = get(2).unwrap_or_else(|| index.name().to_string());
    if get(9).as_deref() != Some("true") {
        raise_hint(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("index \"{index_text}\" is not valid"),
            "its build failed or has not finished",
            "REINDEX the index.",
        );
    }
    let (op, query_type) = get(10)
        .and_then(|s| {
            let (op, ty) = s.rsplit_once(' ')?;
            Some((op.to_string(), pg_sys::Oid::from(ty.parse::<u32>().ok()?)))
        })
        .unwrap_or_else(|| {
            raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("the operator class of index \"{index_text}\" has no ordering operator"),
            )
        });
    let table_oid = get(5).and_then(|s| s.parse::<u32>().ok()).map(pg_sys::Oid::from).unwrap_or_default();
    Target {
        index: index_text,
        index_ident: get(3).unwrap_or_default(),
        table: get(4).unwrap_or_default(),
        table_oid,
        expr: format!("({})", get(6).unwrap_or_default()),
        column: get(7),
        op,
        query_type,
        predicate: get(8).map(|p| format!("({p})")),
    }
}

/// The caller must have the privileges of the index's owner, or of
/// `pg_maintain` where that role exists; superusers pass.
fn check_privilege(index: &PgRelation, function: &str, target: &Target) {
    let sql = format!(
        "SELECT (pg_has_role(current_user, c.relowner, 'USAGE') \
             OR EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = 'pg_maintain' \
                          AND pg_has_role(current_user, r.oid, 'USAGE')))::text \
           FROM pg_class c WHERE c.oid = {}",
        index.oid().to_u32()
    );
    if query_value(&sql).as_deref() != Some("true") {
        raise_hint(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("permission denied to run {function} on index \"{}\"", target.index),
            "the caller must own the index (own its table) or be a member of pg_maintain",
            "Run it as the table's owner, or grant its owner role to the caller.",
        );
    }
}

// ---------------------------------------------------------------------------
// One run: queries, their exact top-k, then index sweeps.
// ---------------------------------------------------------------------------

/// Arguments shared by both functions.
struct Options<'a> {
    function: &'static str,
    k: i32,
    sample_size: i32,
    seed: i64,
    filter: Option<String>,
    queries: Option<&'a AnyArray>,
    query_table: Option<&'a PgRelation>,
    query_column: Option<String>,
    max_rows: i64,
}

fn invalid(message: String) -> ! {
    raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message)
}

/// The value of an argument that must not be NULL (else SQLSTATE 22004).
fn required<T>(v: Option<T>, argument: &str) -> T {
    v.unwrap_or_else(|| raise(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, format!("{argument} must not be NULL")))
}

impl Options<'_> {
    fn validate(&self) {
        if !(1..=MAX_K).contains(&self.k) {
            invalid(format!("k must be between 1 and {MAX_K}, not {}", self.k));
        }
        if !(1..=MAX_SAMPLE).contains(&self.sample_size) {
            invalid(format!("sample_size must be between 1 and {MAX_SAMPLE}, not {}", self.sample_size));
        }
        if self.max_rows < 1 {
            invalid(format!("max_rows must be positive, not {}", self.max_rows));
        }
        if self.queries.is_some() && self.query_table.is_some() {
            invalid("give either queries or query_table, not both".into());
        }
        if self.query_column.is_some() && self.query_table.is_none() {
            invalid("query_column needs query_table".into());
        }
        if self.filter.as_deref().is_some_and(|f| f.trim().is_empty()) {
            invalid("filter must not be empty (pass NULL for no filter)".into());
        }
    }
}

/// Checks an `ef_search` list: not empty, no NULLs, each in 1..=1000;
/// returns it sorted, without duplicates.
fn ef_list(values: Vec<Option<i32>>, argument: &str) -> Vec<i32> {
    if values.is_empty() {
        invalid(format!("{argument} must not be empty"));
    }
    let mut out: Vec<i32> =
        values.into_iter().map(|v| v.unwrap_or_else(|| invalid(format!("{argument} must not contain NULL")))).collect();
    if let Some(bad) = out.iter().find(|v| !(EF_RANGE.0..=EF_RANGE.1).contains(*v)) {
        invalid(format!("{argument} values must be between {} and {}, not {bad}", EF_RANGE.0, EF_RANGE.1));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// One query: its value as the operator's right-hand type, and the heap TID
/// of the row it was sampled from.
struct Query {
    datum: pg_sys::Datum,
    self_tid: Option<String>,
    /// The query row's distance to itself, from the exact list.
    self_distance: Option<f64>,
}

/// A prepared run: queries with their exact top-k, and the index query.
struct Run {
    k: usize,
    queries: Vec<Query>,
    truths: Vec<Vec<Ranked>>,
    index_plan: Plan,
}

impl Run {
    /// The index query at `ef_search` for every query.
    fn sweep(&self, ef_search: i32) -> SweepRow {
        index_settings();
        set_guc(c"hnsw.ef_search", &ef_search.to_string());
        // One untimed run: the generic plan is built on first use.
        if let Some(q) = self.queries.first() {
            self.index_plan.run(q.datum);
        }
        let mut outcomes = Vec::with_capacity(self.queries.len());
        for (q, truth) in self.queries.iter().zip(&self.truths) {
            pgrx::check_for_interrupts!();
            let start = Instant::now();
            let found = self.index_plan.run(q.datum);
            let ms = start.elapsed().as_secs_f64() * 1000.0;
            let visited = crate::hnsw::scan::visited_in_last_scan();
            let found = if found.iter().any(|f| f.0 == LOST_TID) {
                without_self_by_distance(found, q.self_distance, self.k)
            } else {
                without_self(found, q.self_tid.as_deref(), self.k)
            };
            outcomes.push(QueryOutcome { hits: hits(&found, truth), truth: truth.len(), ms, visited });
        }
        summarize(ef_search, self.k as i32, &outcomes)
    }
}

/// Planner settings for the exact top-k: sequential scan only.
fn exact_settings() {
    set_guc(c"enable_seqscan", "on");
    set_guc(c"enable_sort", "on");
    set_guc(c"enable_indexscan", "off");
    set_guc(c"enable_indexonlyscan", "off");
    set_guc(c"enable_bitmapscan", "off");
}

/// Planner settings for the index queries: only the hnsw index can give
/// the order (no sort over another index's or the table's rows).
fn index_settings() {
    set_guc(c"enable_seqscan", "off");
    set_guc(c"enable_sort", "off");
    set_guc(c"enable_indexscan", "on");
    set_guc(c"enable_bitmapscan", "off");
}

/// Estimated rows of the table (`reltuples`, or a count when it was never
/// analyzed).
fn table_rows(t: &Target) -> f64 {
    let est: f64 = query_value(&format!("SELECT reltuples FROM pg_class WHERE oid = {}", t.table_oid.to_u32()))
        .and_then(|s| s.parse().ok())
        .unwrap_or(-1.0);
    if est >= 0.0 {
        est
    } else {
        query_value(&format!("SELECT count(*) FROM {}", t.table)).and_then(|s| s.parse().ok()).unwrap_or(0.0)
    }
}

/// Refuses a run whose exact scans would read more than `max_rows` rows.
fn check_cost(o: &Options, nqueries: usize, rows: f64) {
    let total = nqueries as f64 * rows;
    if total > o.max_rows as f64 {
        raise_hint(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "{} would read about {:.0} table rows for the exact top-k, more than max_rows = {}",
                o.function, total, o.max_rows
            ),
            format!("{nqueries} queries × about {rows:.0} rows each (one sequential scan per query)"),
            "Lower sample_size (or pass fewer queries), or raise max_rows.",
        );
    }
}

/// The query vectors, as text, with their source row's TID when sampled.
fn fetch_queries(o: &Options, t: &Target, where_indexed: &str) -> Vec<(String, Option<String>)> {
    let hash_order =
        format!("hashint8extended(((ctid::text::point)[0] * 65536 + (ctid::text::point)[1])::int8, {}), ctid", o.seed);
    if let Some(array) = o.queries {
        let rows = query(
            "SELECT u.x::text FROM unnest($1) WITH ORDINALITY AS u(x, i) ORDER BY u.i",
            &[(array.oid(), array.datum())],
        );
        return rows
            .into_iter()
            .map(|r| {
                let v = r.into_iter().next().flatten();
                (
                    v.unwrap_or_else(|| {
                        raise(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, "queries must not contain NULL")
                    }),
                    None,
                )
            })
            .collect();
    }
    if let Some(table) = o.query_table {
        let column = match (&o.query_column, &t.column) {
            (Some(c), _) => query_value(&format!("SELECT quote_ident({})", literal(c))).unwrap_or_default(),
            (None, Some(c)) => c.clone(),
            (None, None) => invalid("query_column is required when the index is on an expression".into()),
        };
        let qtable = query_value(&format!("SELECT {}::oid::regclass::text", table.oid().to_u32())).unwrap_or_default();
        let sql = format!(
            "SELECT ({column})::text FROM {qtable} WHERE ({column}) IS NOT NULL ORDER BY {hash_order} LIMIT {}",
            o.sample_size
        );
        return query(&sql, &[])
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .map(|v| (v, None))
            .collect();
    }
    // A seeded sample of the indexed rows (NULLs and vectors whose distance to
    // themselves is undefined, such as zero vectors under cosine, are not in
    // the index).
    let sql = format!(
        "SELECT ctid::text, {e}::text FROM {table} WHERE {where_indexed} \
            AND NOT (({e} {op} {e})::float8 = 'NaN'::float8) ORDER BY {hash_order} LIMIT {n}",
        e = t.expr,
        table = t.table,
        op = t.op,
        n = o.sample_size
    );
    query(&sql, &[])
        .into_iter()
        .filter_map(|r| {
            let mut it = r.into_iter();
            let tid = it.next().flatten()?;
            Some((it.next().flatten()?, Some(tid)))
        })
        .collect()
}

/// Sets up a run (checks, queries, exact top-k, the index query), calls `f`
/// with it, and restores the settings it changed.
fn with_run<R>(index: &PgRelation, o: &Options, f: impl FnOnce(&Run) -> R) -> R {
    o.validate();
    Spi::connect(|_client| {
        let t = resolve(index);
        check_privilege(index, o.function, &t);
        // SAFETY: opens a GUC nest level; closed by AtEOXact_GUC below, or
        // by transaction abort on error.
        let nest = unsafe { pg_sys::NewGUCNestLevel() };
        // Plan each statement once, not once per query.
        set_guc(c"plan_cache_mode", "force_generic_plan");
        exact_settings();

        let mut where_indexed = format!("{} IS NOT NULL", t.expr);
        if let Some(p) = &t.predicate {
            where_indexed += &format!(" AND {p}");
        }
        let mut where_results = where_indexed.clone();
        if let Some(f) = &o.filter {
            where_results += &format!(" AND ({f})");
        }

        let rows = table_rows(&t);
        let planned = match o.queries {
            Some(a) => query("SELECT coalesce(cardinality($1), 0)", &[(a.oid(), a.datum())])
                .into_iter()
                .next()
                .and_then(|r| r.into_iter().next().flatten())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            None => o.sample_size as usize,
        };
        check_cost(o, planned, rows);

        let texts = fetch_queries(o, &t, &where_indexed);
        if texts.is_empty() {
            raise(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                match (o.queries.is_some(), o.query_table.is_some()) {
                    (true, _) => "queries is empty".to_string(),
                    (_, true) => "query_table has no non-NULL query vectors".to_string(),
                    _ => format!("index \"{}\" has no indexed rows to sample queries from", t.index),
                },
            );
        }
        let queries: Vec<Query> = texts
            .into_iter()
            .map(|(text, self_tid)| Query { datum: input_datum(t.query_type, &text), self_tid, self_distance: None })
            .collect();
        if o.queries.is_some() || o.query_table.is_some() {
            // A query whose distance to itself is undefined (a zero vector
            // under cosine) has no nearest neighbours.
            let check = format!("SELECT (($1 {op} $1)::float8 = 'NaN'::float8)::text", op = t.op);
            for (i, q) in queries.iter().enumerate() {
                let undefined = query(&check, &[(t.query_type, q.datum)]);
                if undefined.first().and_then(|r| r.first().cloned().flatten()).as_deref() == Some("true") {
                    raise(
                        PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
                        format!("query {} has no defined distance (a zero vector under cosine distance?)", i + 1),
                    );
                }
            }
        }

        let k = o.k as usize;
        let sql = format!(
            "SELECT ctid::text, ({e} {op} $1)::float8 FROM {} WHERE {where_results} ORDER BY {e} {op} $1 LIMIT {}",
            t.table,
            k + 1,
            e = t.expr,
            op = t.op,
        );
        // Exact top-k: sequential scans.
        let exact_plan = Plan::new(sql.clone(), t.query_type);
        let mut truths = Vec::with_capacity(queries.len());
        let mut queries = queries;
        for q in &mut queries {
            pgrx::check_for_interrupts!();
            let exact = exact_plan.run(q.datum);
            q.self_distance = q.self_tid.as_ref().and_then(|me| exact.iter().find(|r| &r.0 == me)).map(|r| r.1);
            truths.push(without_self(exact, q.self_tid.as_deref(), k));
        }
        if truths.iter().all(|t| t.is_empty()) {
            raise(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "no row of \"{}\" qualifies{}",
                    t.table,
                    if o.filter.is_some() { " under the filter" } else { "" }
                ),
            );
        }

        // The index query must use this index.
        index_settings();
        let plan_text: Vec<String> =
            run_sql(&format!("EXPLAIN (COSTS OFF) {sql}"), &[(t.query_type, queries[0].datum)], false)
                .into_iter()
                .filter_map(|r| r.into_iter().next().flatten())
                .collect();
        let wanted = format!("Index Scan using {} on", t.index_ident);
        if !plan_text.iter().any(|l| l.contains(&wanted)) {
            raise_hint(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("the planner does not use index \"{}\" for the index queries", t.index),
                format!("plan: {}", plan_text.join(" / ")),
                "Check the filter: with sorts and sequential scans off, no other plan should win.",
            );
        }
        let run = Run { k, queries, truths, index_plan: Plan::new(sql, t.query_type) };
        let out = f(&run);
        // SAFETY: closes the nest level opened above, restoring the settings.
        unsafe { pg_sys::AtEOXact_GUC(true, nest) };
        out
    })
}

/// Measures recall@k, latency and work of an `hnsw` index for each
/// `ef_search` in a list (see the module documentation).
///
/// - `index`: an `hnsw` index (else SQLSTATE 42809).
/// - `k`: recall@k, 1..=1000 (default 10).
/// - `ef_search`: the values to sweep, each 1..=1000 (default 10 … 320).
/// - `sample_size`: number of queries, 1..=100,000 (default 100): sampled
///   rows, or the first of a seeded order of `query_table`'s rows.
/// - `seed`: the sample's seed (default 0); the same seed on the same table
///   gives the same queries.
/// - `filter`: a `WHERE` predicate (SQL text) on the table, for both lists.
/// - `queries`: an array of query vectors (any array type whose elements
///   read as the operator's right-hand type, e.g. `vector[]`).
/// - `query_table`, `query_column`: take the queries from a table's column
///   (default: the index's column name).
/// - `max_rows`: refuse when `queries × table rows` exceeds it (default 100
///   million), SQLSTATE 54000.
///
/// Returns one row per `ef_search`, ascending: `ef_search`, `k`, `queries`,
/// `recall` (0..1), `mean_ms`, `p99_ms` (index-query latency inside the
/// server, planning excluded), `mean_visited` (elements whose distance the
/// search computed).
#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, parallel_unsafe)]
fn hnsw_recall(
    index: Option<PgRelation>,
    k: default!(Option<i32>, 10),
    ef_search: default!(Option<Vec<Option<i32>>>, "ARRAY[10, 20, 40, 80, 160, 320]"),
    sample_size: default!(Option<i32>, 100),
    seed: default!(Option<i64>, 0),
    filter: default!(Option<String>, "NULL"),
    queries: default!(Option<AnyArray>, "NULL"),
    query_table: default!(Option<PgRelation>, "NULL"),
    query_column: default!(Option<String>, "NULL"),
    max_rows: default!(Option<i64>, 100000000),
) -> TableIterator<
    'static,
    (
        name!(ef_search, i32),
        name!(k, i32),
        name!(queries, i32),
        name!(recall, f64),
        name!(mean_ms, f64),
        name!(p99_ms, f64),
        name!(mean_visited, f64),
    ),
> {
    let index = required(index, "index");
    let efs = ef_list(required(ef_search, "ef_search"), "ef_search");
    let o = Options {
        function: "hnsw_recall",
        k: required(k, "k"),
        sample_size: required(sample_size, "sample_size"),
        seed: required(seed, "seed"),
        filter,
        queries: queries.as_ref(),
        query_table: query_table.as_ref(),
        query_column,
        max_rows: required(max_rows, "max_rows"),
    };
    let rows = with_run(&index, &o, |run| efs.iter().map(|&ef| run.sweep(ef)).collect::<Vec<_>>());
    TableIterator::new(
        rows.into_iter().map(|r| (r.ef_search, r.k, r.queries, r.recall, r.mean_ms, r.p99_ms, r.mean_visited)),
    )
}

/// The smallest `hnsw.ef_search` at which the index's recall@k on the
/// sample reaches `target_recall` (default 0.95): tries `ef_search`
/// candidates in order (default 10, 20, … 640, 1000), then bisects between
/// the last one below the target and the first one reaching it. Same queries,
/// filter, cost limit and privilege rule as [`hnsw_recall`].
///
/// Returns NULL, with a NOTICE and a hint to rebuild with a larger `m` or
/// `ef_construction`, when no candidate reaches the target.
#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, parallel_unsafe)]
fn hnsw_suggest_ef_search(
    index: Option<PgRelation>,
    target_recall: default!(Option<f64>, 0.95),
    k: default!(Option<i32>, 10),
    sample_size: default!(Option<i32>, 100),
    seed: default!(Option<i64>, 0),
    filter: default!(Option<String>, "NULL"),
    queries: default!(Option<AnyArray>, "NULL"),
    query_table: default!(Option<PgRelation>, "NULL"),
    query_column: default!(Option<String>, "NULL"),
    max_rows: default!(Option<i64>, 100000000),
    ef_search: default!(Option<Vec<Option<i32>>>, "ARRAY[10, 20, 40, 80, 160, 320, 640, 1000]"),
) -> Option<i32> {
    let index = required(index, "index");
    let target_recall = required(target_recall, "target_recall");
    if !(target_recall > 0.0 && target_recall <= 1.0) {
        invalid(format!("target_recall must be in (0, 1], not {target_recall}"));
    }
    let candidates = ef_list(required(ef_search, "ef_search"), "ef_search");
    let o = Options {
        function: "hnsw_suggest_ef_search",
        k: required(k, "k"),
        sample_size: required(sample_size, "sample_size"),
        seed: required(seed, "seed"),
        filter,
        queries: queries.as_ref(),
        query_table: query_table.as_ref(),
        query_column,
        max_rows: required(max_rows, "max_rows"),
    };
    let (answer, seen) =
        with_run(&index, &o, |run| smallest_reaching(&candidates, target_recall, |ef| run.sweep(ef).recall));
    if answer.is_none() {
        let (best_ef, best) = seen.iter().copied().fold((0, f64::NEG_INFINITY), |a, b| if b.1 > a.1 { b } else { a });
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
            format!(
                "no ef_search up to {} reaches recall@{} = {target_recall}; the best was {best:.4} at ef_search = {best_ef}",
                candidates.last().copied().unwrap_or_default(),
                o.k
            ),
            "hnsw_suggest_ef_search",
        )
        .set_hint("Rebuild the index with a larger m or ef_construction, e.g. WITH (m = 32, ef_construction = 200).")
        .report(PgLogLevel::NOTICE);
    }
    answer
}

extension_sql!(
    "REVOKE ALL ON FUNCTION hnsw_recall FROM PUBLIC;\n\
     REVOKE ALL ON FUNCTION hnsw_suggest_ef_search FROM PUBLIC;\n",
    name = "hnsw_recall_privileges",
    requires = [hnsw_recall, hnsw_suggest_ef_search]
);

#[cfg(test)]
mod tests {
    use super::*;

    fn tids(v: &[&str]) -> Vec<Ranked> {
        v.iter().enumerate().map(|(i, s)| (s.to_string(), i as f64)).collect()
    }

    #[test]
    fn self_row_is_dropped_or_the_list_is_cut() {
        let l = tids(&["(0,1)", "(0,2)", "(0,3)"]);
        let names = |v: Vec<Ranked>| v.into_iter().map(|r| r.0).collect::<Vec<_>>();
        assert_eq!(names(without_self(l.clone(), Some("(0,2)"), 2)), ["(0,1)", "(0,3)"]);
        assert_eq!(names(without_self(l.clone(), Some("(9,9)"), 2)), ["(0,1)", "(0,2)"]);
        assert_eq!(without_self(l.clone(), None, 5), l);
    }

    #[test]
    fn hits_by_tid_or_by_distance_when_tids_are_lost() {
        let truth: Vec<Ranked> = vec![("(0,1)".into(), 0.1), ("(0,2)".into(), 0.2), ("(0,3)".into(), 0.3)];
        let found: Vec<Ranked> = vec![("(0,2)".into(), 0.2), ("(0,9)".into(), 0.25), ("(0,1)".into(), 0.1)];
        assert_eq!(hits(&found, &truth), 2);
        // Lost TIDs: rows within the exact 3rd distance count; a row tied
        // at that distance counts too.
        let lost = |d: &[f64]| d.iter().map(|&d| (LOST_TID.to_string(), d)).collect::<Vec<Ranked>>();
        assert_eq!(hits(&lost(&[0.1, 0.2, 0.4]), &truth), 2);
        assert_eq!(hits(&lost(&[0.1, 0.2, 0.3]), &truth), 3);
        assert_eq!(hits(&lost(&[0.5]), &truth), 0);
        assert_eq!(hits(&lost(&[0.1]), &[]), 0);
        // The query row is dropped by its own distance, once.
        let kept = without_self_by_distance(lost(&[0.0, 0.0, 0.2]), Some(0.0), 2);
        assert_eq!(kept.iter().map(|r| r.1).collect::<Vec<_>>(), [0.0, 0.2]);
        assert_eq!(without_self_by_distance(lost(&[0.1, 0.2, 0.3]), None, 2).len(), 2);
    }

    #[test]
    fn recall_latency_and_visits_are_aggregated() {
        let o = |hits, truth, ms, visited| QueryOutcome { hits, truth, ms, visited };
        let outcomes: Vec<QueryOutcome> = (0..100).map(|i| o(i % 11, 10, i as f64, 2 * i as u64)).collect();
        let r = summarize(40, 10, &outcomes);
        let hits: usize = (0..100).map(|i| i % 11).sum();
        assert_eq!(r.queries, 100);
        assert!((r.recall - hits as f64 / 1000.0).abs() < 1e-12);
        assert!((r.mean_ms - 49.5).abs() < 1e-12);
        assert_eq!(r.p99_ms, 98.0);
        assert!((r.mean_visited - 99.0).abs() < 1e-12);
        assert!(summarize(10, 10, &[o(0, 0, 1.0, 0)]).recall.is_nan());
    }

    #[test]
    fn bisection_finds_the_first_ef_reaching_the_target() {
        // recall = ef / 100, capped at 1: 0.95 is first reached at ef 95.
        let curve = |ef: i32| (ef as f64 / 100.0).min(1.0);
        let (got, seen) = smallest_reaching(&DEFAULT_EF_CANDIDATES, 0.95, curve);
        assert_eq!(got, Some(95));
        assert!(seen.len() < 8 + 8, "{seen:?}");
        assert_eq!(smallest_reaching(&[10, 20], 0.5, curve).0, None);
        assert_eq!(smallest_reaching(&[10, 20], 0.01, curve).0, Some(1));
    }

    #[test]
    fn percentile_by_nearest_rank() {
        assert_eq!(percentile(&[], 0.99), 0.0);
        assert_eq!(percentile(&[3.0], 0.99), 3.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 0.5), 2.0);
    }
}
