//! Searches over a [`GraphStore`]: Algorithm 2 (one layer), the greedy
//! descent and insert-neighbor search of Algorithm 1, and the resumable
//! layer-0 search of iterative scans.

use super::*;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

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
        self.beam(store, query, entries, ef, layer, false)
    }

    /// The beam of Algorithm 2. With `live_only`, only live elements count
    /// towards `ef`: deleted elements ([`GraphStore::is_deleted`]) are
    /// expanded (when nearer than the farthest result) but kept out of the
    /// results, so the result holds up to `ef` live elements however many
    /// deleted ones lie between (VACUUM's repair searches, as pgvector's
    /// `hnswvacuum.c` does).
    fn beam<S>(
        &mut self,
        store: &mut S,
        query: &S::Query,
        entries: &[Candidate<S::Node>],
        ef: usize,
        layer: usize,
        live_only: bool,
    ) -> Vec<Candidate<S::Node>>
    where
        S: GraphStore<Key = K, Node = N>,
    {
        let counts = |store: &S, node: &N| !live_only || !store.is_deleted(node);
        let ef = ef.max(1);
        self.visited.clear();
        self.visited.reserve(16 * ef);
        let mut candidates: BinaryHeap<Nearest<S::Node>> = BinaryHeap::with_capacity(ef * 2);
        let mut results: BinaryHeap<ByDistance<S::Node>> = BinaryHeap::with_capacity(ef + 1);
        for e in entries {
            if self.visited.insert(store.key(&e.node)) {
                candidates.push(Reverse(ByDistance(*e)));
                if counts(store, &e.node) {
                    results.push(ByDistance(*e));
                    if results.len() > ef {
                        results.pop();
                    }
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
                    if counts(store, &node) {
                        results.push(ByDistance(c));
                        if results.len() > ef {
                            results.pop();
                        }
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
    /// the result holds the selected neighbors on layer `i`, nearest first;
    /// on layer 0 they are followed by the returned number of spare links
    /// (see [`Tuning::spare_links`]).
    pub fn find_insert_neighbors<S>(
        &mut self,
        store: &mut S,
        query: &S::Query,
        level: usize,
        entry: K,
        entry_level: usize,
        params: &Params,
    ) -> (Vec<Vec<Candidate<S::Node>>>, usize)
    where
        S: GraphStore<Key = K, Node = N>,
    {
        let found = self.insert_candidates(store, query, level, entry, entry_level, params.ef_construction, false);
        let mut lists = vec![Vec::new(); level + 1];
        let mut spare0 = 0;
        for (layer, w) in found.iter().enumerate() {
            let live: Vec<Candidate<S::Node>> = w.iter().filter(|c| !store.is_deleted(&c.node)).copied().collect();
            let spare = layer == 0;
            let (list, spare) = select_neighbors(store, &live, params.max_neighbors(layer), spare);
            lists[layer] = list;
            if layer == 0 {
                spare0 = spare;
            }
        }
        (lists, spare0)
    }

    /// The candidate sets of Algorithm 1 (lines 1–9) for an element at
    /// `level`: entry `i` holds the up to `ef` nearest elements the beam
    /// search found on layer `i`, nearest first, deleted ones included, for
    /// layers `0..=min(level, entry_level)` (higher layers are left empty).
    /// The search on each layer starts from the previous layer's set. With
    /// `live_only` the sets hold live elements only, `ef` of them where the
    /// graph has them.
    pub fn insert_candidates<S>(
        &mut self,
        store: &mut S,
        query: &S::Query,
        level: usize,
        entry: K,
        entry_level: usize,
        ef: usize,
        live_only: bool,
    ) -> Vec<Vec<Candidate<S::Node>>>
    where
        S: GraphStore<Key = K, Node = N>,
    {
        let mut found = vec![Vec::new(); level + 1];
        let Some((distance, node)) = store.visit(query, entry) else {
            return found;
        };
        let mut ep = vec![Candidate { distance, node }];
        for layer in (level + 1..=entry_level).rev() {
            // (A live-only layer without live elements keeps the entries.)
            let w = self.beam(store, query, &ep, 1, layer, live_only);
            if !w.is_empty() {
                ep = w;
            }
        }
        for layer in (0..=level.min(entry_level)).rev() {
            found[layer] = self.beam(store, query, &ep, ef, layer, live_only);
            if !found[layer].is_empty() {
                ep = found[layer].clone();
            }
        }
        found
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

    /// The smallest distance of an element visited but not returned or not
    /// expanded: elements a later batch returns are (as far as the walk can
    /// tell) at least this far. `None` when the search is exhausted.
    pub fn frontier(&self) -> Option<f32> {
        let pending = self.pending.peek().map(|Reverse(ByDistance(c))| c.distance);
        let unexpanded = self.unexpanded.peek().map(|Reverse(ByDistance(c))| c.distance);
        match (pending, unexpanded) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether nothing is left to return or expand.
    pub fn is_exhausted(&self) -> bool {
        self.pending.is_empty() && self.unexpanded.is_empty()
    }

    /// The next batch: the nearest `emit` (at most `ef`) elements not
    /// returned before, nearest first, from a beam of width `ef` that expands
    /// the graph until the beam-search stopping rule holds or `visit_limit`
    /// visits (in total) have been spent; the rest of the beam stays pending.
    /// Empty when the graph is exhausted. With `emit < ef` the elements
    /// returned are the more reliable front of a wider beam (measured on the
    /// real dataset: a filtered scan's recall@10 rises from 0.90 to 0.94 at
    /// 1.75% selectivity with `ef = 2 · emit`, for 15% more visits).
    pub fn next_batch<S>(
        &mut self,
        store: &mut S,
        query: &S::Query,
        ef: usize,
        emit: usize,
        visit_limit: usize,
    ) -> Vec<Candidate<N>>
    where
        S: GraphStore<Key = K, Node = N>,
    {
        self.walk(store, query, ef, emit, visit_limit, false).0
    }

    /// The next batch of a filtered walk: like [`ResumableSearch::next_batch`],
    /// but the beam holds only elements that [`GraphStore::matches`], so the
    /// walk goes on through non-matching elements (expanding them, never
    /// returning them) until `ef` matching ones are settled: none nearer can
    /// still turn up, as far as the walk can tell. Returns the nearest `emit`
    /// of them, nearest first, and how many non-matching elements the walk
    /// expanded (the caller's estimate of the filter's selectivity near the
    /// query). Stops early when `visit_limit` elements have been visited,
    /// returning only the matching elements nearer than every element still
    /// to expand (possibly none; the rest wait). Non-matching elements left
    /// pending by an earlier unfiltered batch are dropped (and counted).
    pub fn next_matching_batch<S>(
        &mut self,
        store: &mut S,
        query: &S::Query,
        ef: usize,
        emit: usize,
        visit_limit: usize,
    ) -> (Vec<Candidate<N>>, usize)
    where
        S: GraphStore<Key = K, Node = N>,
    {
        self.walk(store, query, ef, emit, visit_limit, true)
    }

    /// The walk behind both batches. With `matching_only` the beam admits
    /// only elements that [`GraphStore::matches`] (the others are expanded,
    /// counted in the second result, and dropped from the pending set) and
    /// only settled elements are returned; without it every visited element
    /// is a candidate and the whole front of the beam is returned.
    fn walk<S>(
        &mut self,
        store: &mut S,
        query: &S::Query,
        ef: usize,
        emit: usize,
        visit_limit: usize,
        matching_only: bool,
    ) -> (Vec<Candidate<N>>, usize)
    where
        S: GraphStore<Key = K, Node = N>,
    {
        let admits = |store: &S, node: &N| !matching_only || store.matches(node);
        let ef = ef.max(1);
        // Room for the visits this batch is likely to make (as a search
        // from scratch reserves), instead of rehashing as the set grows.
        VisitedSet::reserve(&mut self.visited, (16 * ef).min(visit_limit.saturating_sub(self.visits)));
        let mut passed = 0;
        let mut beam: BinaryHeap<ByDistance<N>> = BinaryHeap::with_capacity(ef + 1);
        while beam.len() < ef {
            let Some(Reverse(ByDistance(c))) = self.pending.pop() else { break };
            if admits(store, &c.node) {
                beam.push(ByDistance(c));
            } else {
                passed += 1;
            }
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
            if !admits(store, &c.node) {
                passed += 1;
            }
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
                if !admits(store, &node) {
                    continue;
                }
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
        let mut out: Vec<Candidate<N>> = beam.into_sorted_vec().into_iter().map(|f| f.0).collect();
        let mut keep = emit.min(out.len());
        if matching_only {
            // Only settled elements are returned: when the visit limit cut
            // the walk short, those beyond the nearest unexpanded element wait.
            let bound = self.unexpanded.peek().map_or(f32::INFINITY, |Reverse(ByDistance(c))| c.distance);
            keep = out.iter().take(keep).take_while(|c| c.distance <= bound).count();
        }
        for rest in out.drain(keep..) {
            self.pending.push(Reverse(ByDistance(rest)));
        }
        (out, passed)
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
