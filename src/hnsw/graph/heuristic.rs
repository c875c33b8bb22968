//! The neighbor-selection heuristic (Algorithm 4) and list pruning.

use super::*;

/// How the neighbor-selection heuristic (Algorithm 4) decides.
///
/// Walking the candidates nearest first, a candidate `c` is *dominated* (and
/// left out) when a neighbor `r` already kept is at least as near to it as the
/// base element is: `d(c,r) ≤ d(c,base)` ([`Heuristic::dominates`]). Two
/// departures from the paper's rule as written (`<`), both about distances
/// the rule was not meant for:
///
/// - **Ties prune** (as pgvector does). Distances between near-identical
///   vectors differ only by rounding (under cosine, `−a·b` of unit vectors
///   is −1 to the last bit), so they tie; keeping every tied candidate filled
///   the lists of a cluster of a hundred near-duplicates with each other, and
///   a search that entered the cluster could not leave it.
/// - **Hubs never prune**: `r` may dominate `c` only if `d(c,r) ≥ d(c,c)`,
///   i.e. `r` is not "nearer to `c` than `c` itself". In a metric space this
///   always holds (`d(c,c) = 0`, or −1 for cosine on unit vectors); under
///   inner product a long vector `r` has `c·r > ‖c‖²` for most `c` and would
///   dominate every candidate, leaving lists of a few such hubs (recall@20
///   0.91 on `random() * random()` data; 1.00 with this rule).
///
/// Lists are not filled up with dominated candidates as selected links
/// (`keep_pruned`, Malkov's keepPrunedConnections, which pgvector applies to
/// every list): every reverse link to a full list then re-runs the
/// heuristic, about three times the build time. The free layer-0 slots hold
/// them as *spare links* instead ([`Tuning::spare_links`]), which costs the
/// build nothing (see `bench/RESULTS.md`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Heuristic {
    /// Keep a candidate tied with a kept neighbor (the paper as written).
    pub keep_ties: bool,
    /// Fill every list with the nearest dominated candidates (except
    /// near-duplicates of kept ones), as pgvector does.
    pub keep_pruned: bool,
}

/// The heuristic every graph of this extension uses.
pub const HEURISTIC: Heuristic = Heuristic { keep_ties: false, keep_pruned: false };

/// Relative slack around `d(c,c)` within which a distance counts as "as far
/// as `c` itself" (the self distance is computed with rounding too).
const SELF_SLACK: f32 = 1.0 / (1 << 20) as f32;

/// What the heuristic decided about one candidate.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Kept: no kept neighbor dominates it.
    Keep,
    /// Dominated by a kept neighbor: may fill a free slot.
    Pruned,
    /// Dominated by a kept neighbor it cannot be told apart from
    /// (`d(c,r) ≈ d(c,c)`): never fills a slot, so clusters of
    /// near-duplicates do not fill each other's lists.
    Duplicate,
}

impl Heuristic {
    /// Whether kept neighbor `r` dominates candidate `c`: `d_cr = d(c,r)`,
    /// `d_cb = d(c,base)`, `zero = d(c,c)` (see [`Heuristic`]).
    #[inline]
    pub fn dominates(&self, d_cr: f32, d_cb: f32, zero: f32) -> bool {
        if d_cr < zero - zero.abs() * SELF_SLACK {
            return false;
        }
        if self.keep_ties {
            d_cr < d_cb
        } else {
            d_cr <= d_cb
        }
    }

    /// Judges a candidate at distance `d_cb` from the base, with self
    /// distance `zero`, against `kept` kept neighbors whose distances to it
    /// `d_to(i)` gives (computed only as needed).
    #[inline]
    pub(super) fn judge(&self, kept: usize, mut d_to: impl FnMut(usize) -> f32, d_cb: f32, zero: f32) -> Verdict {
        for i in 0..kept {
            let d = d_to(i);
            if self.dominates(d, d_cb, zero) {
                return if d <= zero + zero.abs() * SELF_SLACK { Verdict::Duplicate } else { Verdict::Pruned };
            }
        }
        Verdict::Keep
    }
}

/// The neighbor-selection heuristic (Algorithm 4): walking `candidates`
/// nearest first, keeps one unless a neighbor already kept dominates it
/// ([`Heuristic::dominates`] with [`HEURISTIC`]), up to `max` neighbors. This
/// keeps links pointing in diverse directions. With `spare` the remaining
/// slots are filled with the nearest dominated candidates, except
/// near-duplicates of kept ones, as spare links ([`Tuning::spare_links`]).
///
/// `candidates` must be sorted by distance to the base, ascending. Returns
/// the selected links followed by the spare ones, and how many are spare.
pub fn select_neighbors<S: GraphStore>(
    store: &mut S,
    candidates: &[Candidate<S::Node>],
    max: usize,
    spare: bool,
) -> (Vec<Candidate<S::Node>>, usize) {
    let h = HEURISTIC;
    let mut selected: Vec<Candidate<S::Node>> = Vec::with_capacity(max);
    let mut pruned: Vec<Candidate<S::Node>> = Vec::new();
    for c in candidates {
        if selected.len() >= max {
            break;
        }
        let zero = store.distance_between(&c.node, &c.node);
        let verdict = h.judge(selected.len(), |i| store.distance_between(&c.node, &selected[i].node), c.distance, zero);
        match verdict {
            Verdict::Keep => selected.push(*c),
            Verdict::Pruned => pruned.push(*c),
            Verdict::Duplicate => {}
        }
    }
    // Spare links: the remaining slots take the nearest discarded
    // candidates (not near-duplicates of kept ones).
    let room = max.saturating_sub(selected.len());
    let n = if spare { pruned.len().min(room) } else { 0 };
    selected.extend(pruned.into_iter().take(n));
    (selected, n)
}

/// Recomputes the neighbors of `base` on one layer when a new link would
/// overflow it: `current` plus `added`, pruned by [`select_neighbors`] to
/// `max`. Returns the keys to keep, followed (with `spare`, on layer 0) by
/// spare links in the slots left (the pruned ones, nearest first), and how
/// many spare links there are.
///
/// When `added` is kept, callers relink the elements that left from `added`
/// while it has room (see [`MemoryGraph::insert`]): they stay reachable
/// through `added`, which `base` now links to.
pub fn prune_neighbors<S: GraphStore>(
    store: &mut S,
    base: &S::Node,
    current: &[S::Node],
    added: S::Node,
    max: usize,
    spare: bool,
) -> (Vec<S::Key>, usize) {
    let live: Vec<S::Node> =
        current.iter().chain(std::iter::once(&added)).filter(|n| !store.is_deleted(n)).copied().collect();
    live.iter().for_each(|n| store.prefetch(n));
    let mut candidates: Vec<Candidate<S::Node>> =
        live.iter().map(|n| Candidate { distance: store.distance_between(base, n), node: *n }).collect();
    candidates.sort_by(|a, b| a.distance.total_cmp(&b.distance));
    let (links, spare) = select_neighbors(store, &candidates, max, spare);
    (links.iter().map(|c| store.key(&c.node)).collect(), spare)
}
