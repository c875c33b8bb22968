//! `amcostestimate`: lets the planner use the index for
//! `ORDER BY embedding <op> $1 LIMIT k` and never for anything else.
//!
//! A scan does all its work before returning the first row, so the startup
//! cost equals the total cost. The work is about `ef_search · 2M` element
//! visits plus the greedy descent, each a random page read; PostgreSQL's
//! `genericcostestimate` prices that from the index's size.

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::options;

/// The cost of a path the index cannot serve (no ORDER BY distance): infinite,
/// as pgvector does, so it loses even to a sequential scan that
/// `enable_seqscan = off` penalised with `disable_cost` (a scan without an
/// ORDER BY key returns no rows, so choosing it would lose rows).
const DISABLE_COST: f64 = f64::INFINITY;

/// `amcostestimate`.
#[pg_guard]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C-unwind" fn amcostestimate(
    root: *mut pg_sys::PlannerInfo,
    path: *mut pg_sys::IndexPath,
    loop_count: f64,
    startup_cost: *mut pg_sys::Cost,
    total_cost: *mut pg_sys::Cost,
    selectivity: *mut pg_sys::Selectivity,
    correlation: *mut f64,
    pages: *mut f64,
) {
    // SAFETY: the planner passes a valid path and output pointers.
    unsafe {
        if (*path).indexorderbys.is_null() {
            *startup_cost = DISABLE_COST;
            *total_cost = DISABLE_COST;
            *selectivity = 0.0;
            *correlation = 0.0;
            *pages = 0.0;
            return;
        }
        let info = (*path).indexinfo;
        let tuples = (*info).tuples.max(1.0);
        let index = pg_sys::index_open((*info).indexoid, pg_sys::NoLock as pg_sys::LOCKMODE);
        let m = options::graph_m(index) as f64;
        pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
        let ef = options::ef_search() as f64;
        let visited = (ef * m * 2.0 + m * tuples.log2().max(1.0)).min(tuples);

        let mut costs: pg_sys::GenericCosts = std::mem::zeroed();
        costs.numIndexTuples = visited;
        pg_sys::genericcostestimate(root, path, loop_count, &mut costs);
        *startup_cost = costs.indexTotalCost;
        *total_cost = costs.indexTotalCost;
        *selectivity = costs.indexSelectivity;
        *correlation = 0.0;
        *pages = costs.numIndexPages;
    }
}
