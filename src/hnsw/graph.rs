//! The HNSW algorithm, independent of where the graph is stored.
//!
//! Malkov & Yashunin, "Efficient and robust approximate nearest neighbor
//! search using Hierarchical Navigable Small World graphs" (2016,
//! arXiv:1603.09320):
//! - [`Searcher::search_layer`] is Algorithm 2 (beam search on one layer);
//! - [`select_neighbors`] is Algorithm 4 (the neighbor-selection heuristic,
//!   without extending or keeping pruned candidates, as hnswlib and pgvector);
//! - [`Searcher::find_insert_neighbors`] is lines 1–13 of Algorithm 1;
//! - [`random_level`] draws a level with `mL = 1 / ln(M)`.
//!
//! Storage is behind [`GraphStore`]: [`MemoryGraph`] (used by the index build
//! and by the tests) keeps everything in vectors; the index's buffer-page
//! store lives in `hnsw::storage`.

use rustc_hash::FxHashSet;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::hash::Hash;

use crate::distance::Metric;

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
    /// Makes room for about `n` keys up front (a beam of `ef` visits roughly
    /// `16·ef` elements), so a search does not grow the set as it goes.
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
        FxHashSet::reserve(self, n)
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

/// Reusable scratch space for searches (visited set and neighbor buffer), so
/// repeated searches allocate nothing once warmed up.
pub struct Searcher<K: GraphKey, N = ()> {
    visited: K::Visited,
    neighbors: Vec<K>,
    unvisited: Vec<K>,
    visits: Vec<Option<(f32, N)>>,
}

impl<K: GraphKey, N> Default for Searcher<K, N> {
    fn default() -> Self {
        Searcher { visited: K::Visited::default(), neighbors: Vec::new(), unvisited: Vec::new(), visits: Vec::new() }
    }
}

impl<K: GraphKey, N: Copy> Searcher<K, N> {
    /// Beam search on one layer (Algorithm 2): starting from `entries`,
    /// returns up to `ef` nearest elements found, nearest first.
    pub fn search_layer<S>(
        &mut self,
        store: &mut S,
        query: &S::Query,
        entries: &[Candidate<S::Node>],
        ef: usize,
        layer: usize,
    ) -> Vec<Candidate<S::Node>>
    where
        S: GraphStore<Key = K, Node = N>,
    {
        let ef = ef.max(1);
        self.visited.clear();
        self.visited.reserve(16 * ef);
        let mut candidates: BinaryHeap<Nearest<S::Node>> = BinaryHeap::with_capacity(ef * 2);
        let mut results: BinaryHeap<ByDistance<S::Node>> = BinaryHeap::with_capacity(ef + 1);
        for e in entries {
            if self.visited.insert(store.key(&e.node)) {
                candidates.push(Reverse(ByDistance(*e)));
                results.push(ByDistance(*e));
                if results.len() > ef {
                    results.pop();
                }
            }
        }
        let mut neighbors = std::mem::take(&mut self.neighbors);
        let mut unvisited = std::mem::take(&mut self.unvisited);
        let mut visits = std::mem::take(&mut self.visits);
        while let Some(Reverse(ByDistance(c))) = candidates.pop() {
            let farthest = results.peek().map_or(f32::INFINITY, |f| f.0.distance);
            if c.distance > farthest && results.len() >= ef {
                break;
            }
            if let Some(Reverse(ByDistance(next))) = candidates.peek() {
                store.prefetch_neighbors(&next.node);
            }
            store.neighbors(&c.node, layer, &mut neighbors);
            unvisited.clear();
            unvisited.extend(neighbors.iter().copied().filter(|&k| self.visited.insert(k)));
            store.visit_many(query, &unvisited, &mut visits);
            for &(distance, node) in visits.iter().flatten() {
                let farthest = results.peek().map_or(f32::INFINITY, |f| f.0.distance);
                if results.len() < ef || distance < farthest {
                    let c = Candidate { distance, node };
                    candidates.push(Reverse(ByDistance(c)));
                    results.push(ByDistance(c));
                    if results.len() > ef {
                        results.pop();
                    }
                }
            }
        }
        self.neighbors = neighbors;
        self.unvisited = unvisited;
        self.visits = visits;
        results.into_sorted_vec().into_iter().map(|f| f.0).collect()
    }

    /// Greedy descent from the entry point through layers `top..=1`, then a
    /// beam of width `ef` on layer 0: the k-NN search of Algorithm 5.
    /// Returns up to `ef` elements, nearest first.
    pub fn search<S>(
        &mut self,
        store: &mut S,
        query: &S::Query,
        entry: K,
        entry_level: usize,
        ef: usize,
    ) -> Vec<Candidate<S::Node>>
    where
        S: GraphStore<Key = K, Node = N>,
    {
        let ep = self.descend(store, query, entry, entry_level);
        if ep.is_empty() {
            return ep;
        }
        self.search_layer(store, query, &ep, ef, 0)
    }

    /// The greedy descent of Algorithm 5 alone: from the entry point through
    /// layers `entry_level..=1`, returning the element nearest the query on
    /// layer 1 (the entry point itself when `entry_level` is 0), where a
    /// layer-0 search starts. Empty if the entry point cannot be read.
    pub fn descend<S>(
        &mut self,
        store: &mut S,
        query: &S::Query,
        entry: K,
        entry_level: usize,
    ) -> Vec<Candidate<S::Node>>
    where
        S: GraphStore<Key = K, Node = N>,
    {
        let Some((distance, node)) = store.visit(query, entry) else {
            return Vec::new();
        };
        let mut ep = vec![Candidate { distance, node }];
        for layer in (1..=entry_level).rev() {
            ep = self.search_layer(store, query, &ep, 1, layer);
        }
        ep
    }

    /// For a new element at `level`, finds its neighbors on each layer
    /// `0..=min(level, entry_level)` (Algorithm 1, lines 1–13). Entry `i` of
    /// the result holds the selected neighbors on layer `i`, nearest first.
    pub fn find_insert_neighbors<S>(
        &mut self,
        store: &mut S,
        query: &S::Query,
        level: usize,
        entry: K,
        entry_level: usize,
        params: &Params,
    ) -> Vec<Vec<Candidate<S::Node>>>
    where
        S: GraphStore<Key = K, Node = N>,
    {
        let mut lists = vec![Vec::new(); level + 1];
        let Some((distance, node)) = store.visit(query, entry) else {
            return lists;
        };
        let mut ep = vec![Candidate { distance, node }];
        for layer in (level + 1..=entry_level).rev() {
            ep = self.search_layer(store, query, &ep, 1, layer);
        }
        for layer in (0..=level.min(entry_level)).rev() {
            let w = self.search_layer(store, query, &ep, params.ef_construction, layer);
            let live: Vec<Candidate<S::Node>> = w.iter().filter(|c| !store.is_deleted(&c.node)).copied().collect();
            lists[layer] = select_neighbors(store, &live, params.max_neighbors(layer), false);
            ep = w;
        }
        lists
    }
}

/// A layer-0 search that can be resumed for more results: the iterative
/// index scan (`hnsw.iterative_scan`, as in pgvector 0.8).
///
/// The first [`ResumableSearch::next_batch`] is Algorithm 2 with beam `ef`:
/// the same elements, in the same order, as [`Searcher::search_layer`]. It
/// differs in what it keeps afterwards: every element it visited but did not
/// return stays *pending* (nearest first), and every element it visited but
/// did not expand stays *unexpanded*, with the visited set. The next batch
/// seeds its beam with the nearest pending elements and goes on expanding
/// the nearest unexpanded ones under the same stopping rule (stop when the
/// nearest unexpanded element is farther than the beam's farthest), so the
/// search moves outward ring by ring instead of restarting.
pub struct ResumableSearch<K: GraphKey, N> {
    visited: K::Visited,
    /// Visited, not yet expanded, nearest first.
    unexpanded: BinaryHeap<Nearest<N>>,
    /// Visited, not yet returned, nearest first.
    pending: BinaryHeap<Nearest<N>>,
    /// Elements visited so far (distances computed).
    visits: usize,
    neighbors: Vec<K>,
    unvisited: Vec<K>,
    batch: Vec<Option<(f32, N)>>,
}

impl<K: GraphKey, N: Copy> ResumableSearch<K, N> {
    /// A search on layer 0 starting from `entries` (from
    /// [`Searcher::descend`]), which count as visited.
    pub fn new<S>(store: &S, entries: &[Candidate<N>]) -> ResumableSearch<K, N>
    where
        S: GraphStore<Key = K, Node = N>,
    {
        let mut search = ResumableSearch {
            visited: K::Visited::default(),
            unexpanded: BinaryHeap::new(),
            pending: BinaryHeap::new(),
            visits: entries.len(),
            neighbors: Vec::new(),
            unvisited: Vec::new(),
            batch: Vec::new(),
        };
        VisitedSet::clear(&mut search.visited);
        for e in entries {
            if VisitedSet::insert(&mut search.visited, store.key(&e.node)) {
                search.unexpanded.push(Reverse(ByDistance(*e)));
                search.pending.push(Reverse(ByDistance(*e)));
            }
        }
        search
    }

    /// Elements visited so far (the search's cost; the scan's budget counts them).
    pub fn visits(&self) -> usize {
        self.visits
    }

    /// Elements held in memory (pending and unexpanded), for the scan's
    /// memory limit; the visited set holds about as many keys again.
    pub fn held(&self) -> usize {
        self.pending.len() + self.unexpanded.len()
    }

    /// Whether nothing is left to return or expand.
    pub fn is_exhausted(&self) -> bool {
        self.pending.is_empty() && self.unexpanded.is_empty()
    }

    /// The next batch: up to `ef` elements not returned before, nearest
    /// first, expanding the graph until the beam-search stopping rule holds or
    /// `visit_limit` visits (in total) have been spent. Empty when the graph
    /// is exhausted.
    pub fn next_batch<S>(&mut self, store: &mut S, query: &S::Query, ef: usize, visit_limit: usize) -> Vec<Candidate<N>>
    where
        S: GraphStore<Key = K, Node = N>,
    {
        let ef = ef.max(1);
        let mut beam: BinaryHeap<ByDistance<N>> = BinaryHeap::with_capacity(ef + 1);
        while beam.len() < ef {
            let Some(Reverse(ByDistance(c))) = self.pending.pop() else { break };
            beam.push(ByDistance(c));
        }
        let mut neighbors = std::mem::take(&mut self.neighbors);
        let mut unvisited = std::mem::take(&mut self.unvisited);
        let mut batch = std::mem::take(&mut self.batch);
        while self.visits < visit_limit {
            let Some(Reverse(ByDistance(c))) = self.unexpanded.peek() else { break };
            let farthest = beam.peek().map_or(f32::INFINITY, |f| f.0.distance);
            if beam.len() >= ef && c.distance > farthest {
                break;
            }
            let Some(Reverse(ByDistance(c))) = self.unexpanded.pop() else { break };
            if let Some(Reverse(ByDistance(next))) = self.unexpanded.peek() {
                store.prefetch_neighbors(&next.node);
            }
            store.neighbors(&c.node, 0, &mut neighbors);
            unvisited.clear();
            unvisited.extend(neighbors.iter().copied().filter(|&k| VisitedSet::insert(&mut self.visited, k)));
            store.visit_many(query, &unvisited, &mut batch);
            self.visits += unvisited.len();
            for &(distance, node) in batch.iter().flatten() {
                let found = Candidate { distance, node };
                self.unexpanded.push(Reverse(ByDistance(found)));
                let farthest = beam.peek().map_or(f32::INFINITY, |f| f.0.distance);
                if beam.len() < ef || distance < farthest {
                    beam.push(ByDistance(found));
                    if beam.len() > ef {
                        if let Some(ByDistance(out)) = beam.pop() {
                            self.pending.push(Reverse(ByDistance(out)));
                        }
                    }
                } else {
                    self.pending.push(Reverse(ByDistance(found)));
                }
            }
        }
        self.neighbors = neighbors;
        self.unvisited = unvisited;
        self.batch = batch;
        beam.into_sorted_vec().into_iter().map(|f| f.0).collect()
    }

    /// Up to `n` pending elements, nearest first, without expanding anything
    /// (what a scan returns once its budget is spent).
    pub fn take_pending(&mut self, n: usize) -> Vec<Candidate<N>> {
        let mut out = Vec::with_capacity(n.min(self.pending.len()));
        while out.len() < n {
            let Some(Reverse(ByDistance(c))) = self.pending.pop() else { break };
            out.push(c);
        }
        out
    }
}

/// The neighbor-selection heuristic (Algorithm 4): walking `candidates`
/// nearest first, keeps one only if it is at least as close to the base
/// element as to every neighbor already kept, up to `max` neighbors. This
/// keeps links pointing in diverse directions. With `keep_pruned` the
/// remaining slots are filled with the nearest discarded candidates
/// (Malkov's keepPrunedConnections).
///
/// `candidates` must be sorted by distance to the base, ascending.
pub fn select_neighbors<S: GraphStore>(
    store: &mut S,
    candidates: &[Candidate<S::Node>],
    max: usize,
    keep_pruned: bool,
) -> Vec<Candidate<S::Node>> {
    let mut selected: Vec<Candidate<S::Node>> = Vec::with_capacity(max);
    let mut pruned: Vec<Candidate<S::Node>> = Vec::new();
    for c in candidates {
        if selected.len() >= max {
            break;
        }
        let diverse = selected.iter().all(|r| store.distance_between(&c.node, &r.node) >= c.distance);
        if diverse {
            selected.push(*c);
        } else {
            pruned.push(*c);
        }
    }
    // keepPrunedConnections: fill the remaining slots with the nearest
    // discarded candidates (used when pruning a full list, so exactly one
    // element leaves it).
    if keep_pruned {
        let room = max.saturating_sub(selected.len());
        selected.extend(pruned.into_iter().take(room));
    }
    selected
}

/// Recomputes the neighbors of `base` on one layer when a new link would
/// overflow it: `current` plus `added`, pruned by [`select_neighbors`] to
/// `max`. Returns the keys to keep.
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
) -> Vec<S::Key> {
    let live: Vec<S::Node> =
        current.iter().chain(std::iter::once(&added)).filter(|n| !store.is_deleted(n)).copied().collect();
    live.iter().for_each(|n| store.prefetch(n));
    let mut candidates: Vec<Candidate<S::Node>> =
        live.iter().map(|n| Candidate { distance: store.distance_between(base, n), node: *n }).collect();
    candidates.sort_by(|a, b| a.distance.total_cmp(&b.distance));
    select_neighbors(store, &candidates, max, false).iter().map(|c| store.key(&c.node)).collect()
}

/// Most heap TIDs one element holds (identical vectors share an element).
pub const MAX_HEAP_TIDS: usize = 10;

/// An HNSW graph held in memory: the index build's working set, and the
/// reference implementation the tests check recall against.
///
/// Vectors are kept in one contiguous array in the [`Space`]'s working form
/// (element `i` is `vectors[starts[i]..starts[i + 1]]`, so elements may
/// differ in length, as sparse vectors do).
pub struct MemoryGraph<S: Space = Metric> {
    space: S,
    params: Params,
    max_level: usize,
    vectors: Vec<S::Scalar>,
    starts: Vec<usize>,
    /// `neighbors[element][layer]`: neighbor ids, nearest first when pruned.
    neighbors: Vec<Vec<Vec<u32>>>,
    heap_tids: Vec<Vec<u64>>,
    entry: Option<(u32, usize)>,
    searcher: Searcher<u32, u32>,
    bytes: usize,
}

/// What [`MemoryGraph::insert`] did with a vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// A new element with this id.
    Element(u32),
    /// The vector equals element `id`'s; the heap TID was added to it.
    Duplicate(u32),
}

impl<S: Space> MemoryGraph<S> {
    /// An empty graph comparing vectors in `space`. `max_level` caps the
    /// levels drawn (the page format limits how many layers fit a page).
    pub fn new(space: S, params: Params, max_level: usize) -> MemoryGraph<S> {
        MemoryGraph {
            space,
            params,
            max_level,
            vectors: Vec::new(),
            starts: vec![0],
            neighbors: Vec::new(),
            heap_tids: Vec::new(),
            entry: None,
            searcher: Searcher::default(),
            bytes: 0,
        }
    }

    /// Number of elements (distinct vectors).
    pub fn len(&self) -> usize {
        self.neighbors.len()
    }

    /// Whether the graph has no elements.
    pub fn is_empty(&self) -> bool {
        self.neighbors.is_empty()
    }

    /// Approximate bytes held, for the `maintenance_work_mem` check.
    pub fn memory_bytes(&self) -> usize {
        self.bytes
    }

    /// The entry point and its level.
    pub fn entry(&self) -> Option<(u32, usize)> {
        self.entry
    }

    /// The construction parameters.
    pub fn params(&self) -> Params {
        self.params
    }

    /// Top layer of element `id`.
    pub fn level(&self, id: u32) -> usize {
        self.neighbors[id as usize].len() - 1
    }

    /// Vector of element `id`, in working form.
    pub fn vector(&self, id: u32) -> &[S::Scalar] {
        &self.vectors[self.starts[id as usize]..self.starts[id as usize + 1]]
    }

    /// The space the graph compares vectors in.
    pub fn space(&self) -> &S {
        &self.space
    }

    /// Neighbor ids of element `id` on `layer`.
    pub fn neighbor_ids(&self, id: u32, layer: usize) -> &[u32] {
        &self.neighbors[id as usize][layer]
    }

    /// Heap TIDs of element `id`.
    pub fn heap_tids(&self, id: u32) -> &[u64] {
        &self.heap_tids[id as usize]
    }

    /// Inserts `vector` for heap row `heap_tid` at `level` (Algorithm 1).
    /// A vector equal to an existing element with spare TID slots joins it.
    pub fn insert(&mut self, vector: &[S::Scalar], heap_tid: u64, level: usize) -> Inserted {
        let level = level.min(self.max_level);
        let params = self.params;
        let mut searcher = std::mem::take(&mut self.searcher);
        let lists = match self.entry {
            Some((entry, entry_level)) => {
                searcher.find_insert_neighbors(self, vector, level, entry, entry_level, &params)
            }
            None => vec![Vec::new(); level + 1],
        };
        self.searcher = searcher;
        let nearest = lists[0].first().map_or(f32::NAN, |c| c.distance);
        for c in lists[0].iter().take_while(|c| c.distance == nearest) {
            let id = c.node;
            if self.vector(id) == vector && self.heap_tids[id as usize].len() < MAX_HEAP_TIDS {
                self.heap_tids[id as usize].push(heap_tid);
                self.bytes += 8;
                return Inserted::Duplicate(id);
            }
        }
        let id = self.neighbors.len() as u32;
        self.vectors.extend_from_slice(vector);
        self.starts.push(self.vectors.len());
        self.heap_tids.push(vec![heap_tid]);
        self.neighbors.push(lists.iter().map(|l| l.iter().map(|c| c.node).collect()).collect());
        self.bytes += std::mem::size_of_val(vector) + 72 + 24 * (level + 1) + 4 * (params.m * (level + 2) + 1);
        let mut linked = false;
        for (layer, list) in lists.iter().enumerate() {
            for c in list {
                linked |= self.add_link(c.node, id, layer);
            }
        }
        if !linked {
            if let Some(nearest) = lists[0].first() {
                self.force_link(nearest.node, id);
            }
        }
        match self.entry {
            Some((_, entry_level)) if entry_level >= level => {}
            _ => self.entry = Some((id, level)),
        }
        Inserted::Element(id)
    }

    /// Makes `to` reachable when no neighbor kept a link to it: replaces the
    /// farthest entry of `from`'s layer-0 list with it.
    fn force_link(&mut self, from: u32, to: u32) {
        let max = self.params.max_neighbors(0);
        if self.neighbors[from as usize][0].len() < max {
            self.neighbors[from as usize][0].push(to);
            return;
        }
        let farthest = self.farthest(from, 0);
        self.neighbors[from as usize][0][farthest] = to;
    }

    /// Index of the entry of `id`'s list on `layer` farthest from `id`.
    fn farthest(&self, id: u32, layer: usize) -> usize {
        let (base, list) = (self.vector(id), &self.neighbors[id as usize][layer]);
        (0..list.len())
            .max_by(|&a, &b| {
                let da = self.space.distance(base, self.vector(list[a]));
                let db = self.space.distance(base, self.vector(list[b]));
                da.total_cmp(&db)
            })
            .unwrap_or(0)
    }

    /// Keeps `d` reachable after it left a list for `to`: links `to -> d` if
    /// `to`'s list has room; otherwise, if none of `d`'s layer-0 neighbors
    /// links back to it, replaces the farthest entry of `to`'s list with `d`
    /// and checks the displaced element the same way (to depth 2).
    fn relink(&mut self, to: u32, d: u32, layer: usize, depth: usize) {
        let max = self.params.max_neighbors(layer);
        let list = &self.neighbors[to as usize][layer];
        if d == to || list.contains(&d) {
            return;
        }
        if list.len() < max {
            self.neighbors[to as usize][layer].push(d);
            return;
        }
        // One back link suffices here: the build is single-threaded, so no
        // concurrent insert can drop it meanwhile (the on-disk insert asks
        // for two).
        let back = self.neighbors[d as usize][0].iter().any(|&u| self.neighbors[u as usize][0].contains(&d));
        if depth >= 2 || back {
            return;
        }
        let farthest = self.farthest(to, layer);
        let displaced = std::mem::replace(&mut self.neighbors[to as usize][layer][farthest], d);
        let next_layer = layer.min(self.level(d));
        self.relink(d, displaced, next_layer, depth + 1);
    }

    /// Adds the reverse link `from -> to` on `layer`, pruning `from`'s list
    /// with the heuristic when it is full. Returns whether `from` links to
    /// `to` afterwards.
    fn add_link(&mut self, from: u32, to: u32, layer: usize) -> bool {
        let max = self.params.max_neighbors(layer);
        let list = &mut self.neighbors[from as usize][layer];
        if list.contains(&to) {
            return true;
        }
        if list.len() < max {
            list.push(to);
            return true;
        }
        let current = std::mem::take(list);
        let kept = prune_neighbors(self, &from, &current, to, max);
        let linked = kept.contains(&to);
        let dropped: Vec<u32> =
            if linked { current.iter().copied().filter(|c| !kept.contains(c)).collect() } else { Vec::new() };
        self.neighbors[from as usize][layer] = kept;
        // Elements that left `from`'s list are linked from `to` instead.
        for d in dropped {
            self.relink(to, d, layer, 0);
        }
        self.neighbors[from as usize][layer].contains(&to)
    }

    /// Number of elements reachable from the entry point over all layers'
    /// links (all of them, in a healthy graph).
    pub fn reachable(&self) -> usize {
        let Some((entry, _)) = self.entry else {
            return 0;
        };
        let mut seen = vec![false; self.len()];
        let mut stack = vec![entry];
        seen[entry as usize] = true;
        let mut count = 1;
        while let Some(id) = stack.pop() {
            for list in &self.neighbors[id as usize] {
                for &n in list {
                    if !seen[n as usize] {
                        seen[n as usize] = true;
                        count += 1;
                        stack.push(n);
                    }
                }
            }
        }
        count
    }

    /// The k-NN search: up to `ef` `(distance, id)` pairs, nearest first.
    pub fn search(&mut self, query: &[S::Scalar], ef: usize) -> Vec<Candidate<u32>> {
        let Some((entry, entry_level)) = self.entry else {
            return Vec::new();
        };
        let mut searcher = std::mem::take(&mut self.searcher);
        let found = searcher.search(self, query, entry, entry_level, ef);
        self.searcher = searcher;
        found
    }
}

impl<S: Space> GraphStore for MemoryGraph<S> {
    type Key = u32;
    type Node = u32;
    type Query = [S::Scalar];

    fn key(&self, node: &u32) -> u32 {
        *node
    }

    fn visit(&mut self, query: &[S::Scalar], key: u32) -> Option<(f32, u32)> {
        Some((self.space.distance(query, self.vector(key)), key))
    }

    /// Prefetches every vector first, so the cache misses of one batch of
    /// neighbors overlap instead of following one another.
    fn visit_many(&mut self, query: &[S::Scalar], keys: &[u32], out: &mut Vec<Option<(f32, u32)>>) {
        out.clear();
        for &k in keys {
            crate::distance::prefetch(self.vector(k));
        }
        out.extend(keys.iter().map(|&k| Some((self.space.distance(query, self.vector(k)), k))));
    }

    fn neighbors(&mut self, node: &u32, layer: usize, out: &mut Vec<u32>) {
        out.clear();
        if let Some(list) = self.neighbors[*node as usize].get(layer) {
            out.extend_from_slice(list);
        }
    }

    fn distance_between(&mut self, a: &u32, b: &u32) -> f32 {
        self.space.distance(self.vector(*a), self.vector(*b))
    }

    fn prefetch(&self, node: &u32) {
        crate::distance::prefetch(self.vector(*node));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Clustered data: `n` points and `nq` queries around the same 20
    /// random centres in `dim` dims.
    fn clustered(n: usize, nq: usize, dim: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let centres: Vec<Vec<f32>> = (0..20).map(|_| (0..dim).map(|_| rng.gen_range(-1.0..1.0)).collect()).collect();
        let mut point = || {
            let c = &centres[rng.gen_range(0..centres.len())];
            c.iter().map(|x| x + rng.gen_range(-0.3..0.3)).collect::<Vec<f32>>()
        };
        let data = (0..n).map(|_| point()).collect();
        let queries = (0..nq).map(|_| point()).collect();
        (data, queries)
    }

    fn build(data: &[Vec<f32>], metric: Metric, params: Params, seed: u64) -> MemoryGraph {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut g = MemoryGraph::new(metric, params, 16);
        for (i, v) in data.iter().enumerate() {
            let level = random_level(rng.gen::<f64>(), params.level_multiplier(), 16);
            g.insert(v, i as u64, level);
        }
        g
    }

    fn recall_at_10(g: &mut MemoryGraph, data: &[Vec<f32>], queries: &[Vec<f32>], metric: Metric, ef: usize) -> f64 {
        let mut hits = 0;
        for q in queries {
            let mut exact: Vec<(f32, usize)> =
                data.iter().enumerate().map(|(i, v)| (metric.distance(q, v), i)).collect();
            exact.sort_by(|a, b| a.0.total_cmp(&b.0));
            let truth: Vec<usize> = exact[..10].iter().map(|e| e.1).collect();
            let found: Vec<usize> = g.search(q, ef).iter().take(10).map(|c| g.heap_tids(c.node)[0] as usize).collect();
            hits += found.iter().filter(|f| truth.contains(f)).count();
        }
        hits as f64 / (10 * queries.len()) as f64
    }

    #[test]
    fn recall_matches_brute_force_for_each_metric() {
        let (data, queries) = clustered(3000, 50, 24, 1);
        let params = Params { m: 16, ef_construction: 64 };
        for metric in [Metric::L2, Metric::InnerProduct, Metric::L1] {
            let mut g = build(&data, metric, params, 3);
            let recall = recall_at_10(&mut g, &data, &queries, metric, 64);
            assert!(recall >= 0.95, "{metric:?}: recall@10 {recall}");
        }
    }

    #[test]
    fn neighbor_lists_respect_bounds_and_never_self_link() {
        let (data, _) = clustered(1000, 0, 8, 4);
        let params = Params { m: 4, ef_construction: 16 };
        let g = build(&data, Metric::L2, params, 5);
        for id in 0..g.len() as u32 {
            for layer in 0..=g.level(id) {
                let list = g.neighbor_ids(id, layer);
                assert!(list.len() <= params.max_neighbors(layer));
                assert!(!list.contains(&id));
                for &n in list {
                    assert!(g.level(n) >= layer, "link to an element absent from the layer");
                }
            }
        }
    }

    #[test]
    fn duplicates_share_an_element_up_to_the_tid_limit() {
        let params = Params { m: 4, ef_construction: 16 };
        let mut g = MemoryGraph::new(Metric::L2, params, 8);
        for i in 0..25u64 {
            g.insert(&[1.0, 1.0], i, 0);
        }
        assert_eq!(g.len(), 3, "25 copies need 3 elements of 10 TIDs");
        let found = g.search(&[1.0, 1.0], 10);
        let tids: usize = found.iter().map(|c| g.heap_tids(c.node).len()).sum();
        assert_eq!(tids, 25, "every copy is findable");
    }

    #[test]
    fn levels_follow_the_geometric_distribution() {
        let ml = Params { m: 16, ef_construction: 64 }.level_multiplier();
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let n = 100_000;
        let above0 = (0..n).filter(|_| random_level(rng.gen::<f64>(), ml, 30) > 0).count();
        // P(level > 0) = 1/M = 0.0625
        let p = above0 as f64 / n as f64;
        assert!((p - 0.0625).abs() < 0.005, "{p}");
        assert_eq!(random_level(1e-300, ml, 7), 7, "capped");
    }

    #[test]
    fn every_element_stays_reachable() {
        for (m, ef) in [(4, 16), (8, 32), (16, 64)] {
            let (data, _) = clustered(4000, 0, 16, 11);
            let g = build(&data, Metric::L2, Params { m, ef_construction: ef }, 12);
            eprintln!("m={m}: {} of {} reachable", g.reachable(), g.len());
            if m >= 8 {
                assert_eq!(g.reachable(), g.len(), "m={m}");
            }
        }
    }

    /// The first batch is the ordinary beam search; further batches return
    /// new elements only, and all batches together approach a full ranking.
    #[test]
    fn resumable_search_continues_outward() {
        let (data, queries) = clustered(3000, 10, 16, 21);
        let params = Params { m: 16, ef_construction: 64 };
        let mut g = build(&data, Metric::L2, params, 22);
        let (entry, entry_level) = g.entry().unwrap();
        for q in &queries {
            let plain = g.search(q, 40);
            let mut searcher: Searcher<u32, u32> = Searcher::default();
            let ep = searcher.descend(&mut g, q, entry, entry_level);
            let mut it = ResumableSearch::new(&g, &ep);
            let first = it.next_batch(&mut g, q, 40, usize::MAX);
            let ids = |c: &[Candidate<u32>]| c.iter().map(|c| c.node).collect::<Vec<u32>>();
            assert_eq!(ids(&first), ids(&plain), "first batch = beam search");
            let mut seen: Vec<u32> = ids(&first);
            for _ in 0..10 {
                let batch = it.next_batch(&mut g, q, 40, usize::MAX);
                assert!(batch.windows(2).all(|w| w[0].distance <= w[1].distance), "each batch sorted");
                seen.extend(ids(&batch));
            }
            let n = seen.len();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), n, "no element returned twice");
            assert!(n >= 400, "eleven batches of 40 return {n}");
            // The 400 nearest found by brute force are nearly all among them.
            let mut exact: Vec<(f32, u32)> =
                data.iter().enumerate().map(|(i, v)| (Metric::L2.distance(q, v), i as u32)).collect();
            exact.sort_by(|a, b| a.0.total_cmp(&b.0));
            let hits = exact[..200].iter().filter(|e| seen.binary_search(&e.1).is_ok()).count();
            assert!(hits >= 190, "the 200 nearest: {hits} found in the first 440 returned");
        }
    }

    #[test]
    fn resumable_search_respects_its_visit_limit_and_drains() {
        let (data, queries) = clustered(2000, 1, 8, 23);
        let mut g = build(&data, Metric::L2, Params { m: 8, ef_construction: 32 }, 24);
        let (entry, entry_level) = g.entry().unwrap();
        let q = &queries[0];
        let ep = Searcher::<u32, u32>::default().descend(&mut g, q, entry, entry_level);
        let mut it = ResumableSearch::new(&g, &ep);
        let first = it.next_batch(&mut g, q, 10, 300);
        assert!(!first.is_empty());
        let spent = it.visits();
        assert!(spent <= 300 + 2 * 8, "a batch stops within one expansion of its limit: {spent}");
        let more = it.next_batch(&mut g, q, 10, spent);
        assert!(more.len() <= 10, "no expansion past the limit, only pending elements");
        assert_eq!(it.visits(), spent);
        let rest = it.take_pending(usize::MAX);
        assert!(rest.windows(2).all(|w| w[0].distance <= w[1].distance));
        let mut all: Vec<u32> = first.iter().chain(&more).chain(&rest).map(|c| c.node).collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
        assert_eq!(n, spent, "every visited element is returned exactly once");
    }

    #[test]
    fn empty_graph_search_returns_nothing() {
        let mut g = MemoryGraph::new(Metric::L2, Params { m: 4, ef_construction: 8 }, 4);
        assert!(g.search(&[0.0, 0.0, 0.0], 10).is_empty());
    }
}
