//! The HNSW algorithm, independent of where the graph is stored.
//!
//! Malkov & Yashunin, "Efficient and robust approximate nearest neighbor
//! search using Hierarchical Navigable Small World graphs" (2016,
//! arXiv:1603.09320):
//! - [`Searcher::search_layer`] is Algorithm 2 (beam search on one layer);
//! - [`select_neighbors`] is Algorithm 4 (the neighbor-selection heuristic,
//!   without extending candidates; pruned candidates are kept in free
//!   layer-0 slots as *spare links*, which inserts may take back, see
//!   [`Tuning::spare_links`] and [`Heuristic`]);
//! - [`Searcher::find_insert_neighbors`] is lines 1–13 of Algorithm 1;
//! - [`random_level`] draws a level with `mL = 1 / ln(M)`.
//!
//! Storage is behind [`GraphStore`]: [`MemoryGraph`] (used by the index build
//! and by the tests) keeps everything in vectors; the index's buffer-page
//! store lives in `hnsw::storage`.
//!
//! The parts: `search.rs` (beam search, greedy descent, insert-neighbor
//! search, the resumable search of iterative scans), `heuristic.rs`
//! (neighbor selection and pruning), `relink.rs` (the one policy that keeps
//! pruned elements reachable, shared by build, insert and VACUUM), `memory.rs` (the in-memory graph and
//! its record storage, used by the build and the tests) and `parallel.rs`
//! (several threads inserting into one in-memory graph).

use rustc_hash::FxHashSet;
use std::cmp::{Ordering, Reverse};
use std::hash::Hash;

use crate::distance::Metric;

mod heuristic;
mod memory;
mod parallel;
pub mod relink;
mod search;
#[cfg(test)]
mod tests;

pub use heuristic::*;
pub use memory::*;
pub use parallel::*;
pub use relink::{LinkLists, MAX_RELINK_DEPTH, MIN_BACK_LINKS};
pub use search::*;

/// Graph construction parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// `M`: neighbors per element on layers ≥ 1; layer 0 allows `2·M`.
    pub m: usize,
    /// `ef_construction`: beam width while inserting.
    pub ef_construction: usize,
}

impl Params {
    /// Most neighbors an element keeps on `layer` (`M_max0 = 2·M` on layer 0).
    pub fn max_neighbors(&self, layer: usize) -> usize {
        if layer == 0 {
            2 * self.m
        } else {
            self.m
        }
    }

    /// The level normalisation `mL = 1 / ln(M)`.
    pub fn level_multiplier(&self) -> f64 {
        1.0 / (self.m as f64).ln()
    }
}

/// Draws an element's top layer, `⌊−ln(u) · mL⌋`, capped at `max_level`.
///
/// `u` is uniform in `(0, 1]`.
pub fn random_level(u: f64, level_multiplier: f64, max_level: usize) -> usize {
    let u = u.clamp(f64::MIN_POSITIVE, 1.0);
    let level = (-u.ln() * level_multiplier).floor();
    (level as usize).min(max_level)
}

/// How a graph compares vectors held in its working form: slices of
/// `Scalar` (dense `f32` values, or 32-bit words whose layout an index
/// codec defines for bits and sparse vectors).
pub trait Space {
    /// One component of a vector in working form.
    type Scalar: Copy + PartialEq + Send + Sync + 'static;

    /// The graph's internal distance between `a` and `b` (smaller is nearer;
    /// a monotone form of the SQL operator, e.g. squared L2).
    fn distance(&self, a: &[Self::Scalar], b: &[Self::Scalar]) -> f32;
}

/// Dense `f32` vectors under one of the four vector metrics.
impl Space for Metric {
    type Scalar = f32;

    #[inline]
    fn distance(&self, a: &[f32], b: &[f32]) -> f32 {
        Metric::distance(*self, a, b)
    }
}

/// The set of elements a search has already seen.
pub trait VisitedSet<K>: Default {
    /// Forgets everything (a new search begins).
    fn clear(&mut self);
    /// Adds `k`; returns whether it was new.
    fn insert(&mut self, k: K) -> bool;
    /// Makes room for about `n` more keys up front (a beam of `ef` visits
    /// roughly `16·ef` elements), so a search does not grow the set as it
    /// goes. A hint: nothing happens when the memory cannot be had.
    fn reserve(&mut self, _n: usize) {}
}

impl<K: Copy + Eq + Hash> VisitedSet<K> for FxHashSet<K> {
    fn clear(&mut self) {
        FxHashSet::clear(self)
    }
    fn insert(&mut self, k: K) -> bool {
        FxHashSet::insert(self, k)
    }
    fn reserve(&mut self, n: usize) {
        // A hint only: when the memory is not there, the set grows as it
        // goes (a scan's set stays within its memory limit, see scan.rs).
        let _ = FxHashSet::try_reserve(self, n);
    }
}

/// A visited set for dense `u32` ids: one stamp per id, so clearing is a
/// counter increment and a lookup is an array access.
#[derive(Default)]
pub struct DenseVisited {
    stamps: Vec<u32>,
    epoch: u32,
}

impl VisitedSet<u32> for DenseVisited {
    fn clear(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.stamps.fill(0);
            self.epoch = 1;
        }
    }
    fn insert(&mut self, k: u32) -> bool {
        let i = k as usize;
        if i >= self.stamps.len() {
            self.stamps.resize((i + 1).next_power_of_two(), 0);
        }
        let new = self.stamps[i] != self.epoch;
        self.stamps[i] = self.epoch;
        new
    }
}

/// A key of graph elements, with the visited-set type suited to it.
pub trait GraphKey: Copy + Eq + Hash {
    /// The visited set searches over such keys use.
    type Visited: VisitedSet<Self>;
}

impl GraphKey for u32 {
    type Visited = DenseVisited;
}

/// Where the graph lives: elements addressed by `Key`, visited as `Node`s.
///
/// A `Node` is what a search carries after reading an element (for the page
/// store: where its neighbor list is, its level, whether it is deleted), so
/// following its neighbors needs no second lookup.
pub trait GraphStore {
    /// What neighbor lists hold (an element id, or a page address).
    type Key: GraphKey;
    /// A visited element.
    type Node: Copy;
    /// A query as searches take it (for [`MemoryGraph`], a vector in the
    /// [`Space`]'s working form).
    type Query: ?Sized;

    /// The key of a visited node.
    fn key(&self, node: &Self::Node) -> Self::Key;

    /// Reads element `key` and returns its distance to `query` (the graph's
    /// internal metric, smaller is nearer); `None` when it cannot be used.
    fn visit(&mut self, query: &Self::Query, key: Self::Key) -> Option<(f32, Self::Node)>;

    /// Visits several elements at once, in order, appending one result per
    /// key to `out`. Stores override this to overlap the memory accesses of
    /// independent elements (the page store prefetches them).
    fn visit_many(&mut self, query: &Self::Query, keys: &[Self::Key], out: &mut Vec<Option<(f32, Self::Node)>>) {
        out.clear();
        for &k in keys {
            out.push(self.visit(query, k));
        }
    }

    /// Replaces `out` with the neighbors of `node` on `layer`.
    fn neighbors(&mut self, node: &Self::Node, layer: usize, out: &mut Vec<Self::Key>);

    /// Distance between two stored elements.
    fn distance_between(&mut self, a: &Self::Node, b: &Self::Node) -> f32;

    /// Hints that `node`'s vector is about to be read by
    /// [`GraphStore::distance_between`] (stores that can, start loading it).
    fn prefetch(&self, _node: &Self::Node) {}

    /// Hints that `node`'s neighbor list is read next (the search calls it
    /// for the following candidate while it works on the current one).
    fn prefetch_neighbors(&self, _node: &Self::Node) {}

    /// Whether a visited element was deleted by VACUUM: it is still walked
    /// through, but never chosen as a neighbor or returned.
    fn is_deleted(&self, _node: &Self::Node) -> bool {
        false
    }

    /// Whether a visited element satisfies the search's filter (a scan's
    /// conditions on filter columns, tested when the element was read);
    /// stores without filters match everything. Used by
    /// [`ResumableSearch::next_matching_batch`].
    fn matches(&self, _node: &Self::Node) -> bool {
        true
    }
}

/// A visited element with its distance to the query.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<N> {
    /// Distance to the query under the graph's metric.
    pub distance: f32,
    /// The element.
    pub node: N,
}

/// Heap entry ordered by distance, so a max-heap pops the *farthest* first;
/// wrapped in [`Reverse`] it pops the *nearest* first.
struct ByDistance<N>(Candidate<N>);

/// Candidates to expand, nearest first.
type Nearest<N> = Reverse<ByDistance<N>>;

impl<N> PartialEq for ByDistance<N> {
    fn eq(&self, other: &Self) -> bool {
        self.0.distance == other.0.distance
    }
}
impl<N> Eq for ByDistance<N> {}
impl<N> PartialOrd for ByDistance<N> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<N> Ord for ByDistance<N> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.distance.total_cmp(&other.0.distance)
    }
}
