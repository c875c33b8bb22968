//! Parallel inserts into one [`MemoryGraph`] (the index build).

use super::*;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering as AtomicOrdering};

// ---------------------------------------------------------------------------
// Parallel inserts.

/// Several threads inserting into one [`MemoryGraph`] (the index build).
///
/// One thread *loads* elements ([`ParallelInsert::load`]: the vector goes
/// into the graph's storage, not yet linked); any number of threads *link*
/// loaded elements into the graph in load order as they become available
/// ([`ParallelInsert::work`] in worker threads, [`ParallelInsert::link_one`]
/// from the loading thread between loads). Threads share the graph through
/// the per-element locks, so the result depends on the interleaving; with
/// one thread linking right after each load it is the same graph as
/// [`MemoryGraph::insert`] in that order.
///
/// Identical vectors are merged into one element as in
/// [`MemoryGraph::insert`] (a merged record becomes a hole, removed by
/// [`ParallelInsert::into_graph`]).
pub struct ParallelInsert<S: Space> {
    graph: MemoryGraph<S>,
    /// Next loaded element to link.
    next: AtomicU32,
    /// Elements linked (or merged).
    linked: AtomicU32,
    /// No more loads will come.
    closed: AtomicBool,
    /// Workers should return as soon as possible.
    stopped: AtomicBool,
    /// The first failure of a worker.
    failure: Mutex<Option<InsertFailure>>,
    sleepers: AtomicU32,
    wake_lock: Mutex<()>,
    wake: Condvar,
    /// Memory held by workers' scratch space.
    scratch_bytes: AtomicUsize,
}

/// Why a worker of a [`ParallelInsert`] stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InsertFailure {
    /// An allocation failed.
    OutOfMemory(OutOfMemory),
    /// A bug (a panic in the worker), with its message.
    Panic(String),
}

impl<S: Space + Sync> ParallelInsert<S> {
    /// Starts parallel inserts into `graph`, which must have been made with
    /// [`MemoryGraph::with_vector_len`] (its layout settled).
    pub fn new(graph: MemoryGraph<S>) -> ParallelInsert<S> {
        assert!(graph.rec.layout.settled, "ParallelInsert needs MemoryGraph::with_vector_len");
        let loaded = graph.rec.loaded();
        ParallelInsert {
            graph,
            next: AtomicU32::new(loaded),
            linked: AtomicU32::new(loaded),
            closed: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            failure: Mutex::new(None),
            sleepers: AtomicU32::new(0),
            wake_lock: Mutex::new(()),
            wake: Condvar::new(),
            scratch_bytes: AtomicUsize::new(0),
        }
    }

    /// Loads an element (only one thread may load). It is linked later by
    /// whichever thread claims it.
    pub fn load(&self, vector: &[S::Scalar], heap_tid: u64, level: usize) -> Result<u32, OutOfMemory> {
        let id = self.graph.push(vector, heap_tid, level.min(self.graph.max_level))?;
        if self.sleepers.load(AtomicOrdering::Acquire) > 0 {
            let _guard = self.wake_lock.lock();
            self.wake.notify_one();
        }
        Ok(id)
    }

    /// Claims the next loaded element, if any.
    fn claim(&self) -> Option<u32> {
        let mut next = self.next.load(AtomicOrdering::Acquire);
        loop {
            if next >= self.graph.rec.loaded() {
                return None;
            }
            match self.next.compare_exchange_weak(next, next + 1, AtomicOrdering::AcqRel, AtomicOrdering::Acquire) {
                Ok(_) => return Some(next),
                Err(now) => next = now,
            }
        }
    }

    /// Links element `id` (loaded, claimed).
    fn link_claimed(&self, id: u32, sc: &mut Scratch) -> Result<(), OutOfMemory> {
        let g = &self.graph;
        let before = sc.memory_bytes();
        sc.prepare(g.rec.loaded() as usize)?;
        // SAFETY: the header was written before the record was published.
        let (tid, level) = unsafe { ((*g.header(id)).tid, (*g.header(id)).level as usize) };
        let result = g.link(g.vector(id), tid, level, Some(id), sc);
        let after = sc.memory_bytes();
        if after > before {
            self.scratch_bytes.fetch_add(after - before, AtomicOrdering::Relaxed);
        }
        self.linked.fetch_add(1, AtomicOrdering::AcqRel);
        result.map(|_| ())
    }

    /// Links one loaded element, if one is waiting; returns whether it did.
    /// For the loading thread, between loads and after the last one.
    pub fn link_one(&self, sc: &mut Scratch) -> Result<bool, OutOfMemory> {
        match self.claim() {
            Some(id) => self.link_claimed(id, sc).map(|()| true),
            None => Ok(false),
        }
    }

    /// A worker thread's loop: links loaded elements until the loads are
    /// closed and all are linked, or [`ParallelInsert::stop`]. A failure
    /// (memory, or a panic) is recorded for [`ParallelInsert::failure`] and
    /// stops every worker.
    pub fn work(&self) {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut sc = Scratch::default();
            while !self.stopped.load(AtomicOrdering::Acquire) {
                if let Some(id) = self.claim() {
                    if let Err(e) = self.link_claimed(id, &mut sc) {
                        self.fail(InsertFailure::OutOfMemory(e));
                    }
                    continue;
                }
                if self.closed.load(AtomicOrdering::Acquire) {
                    break;
                }
                self.sleepers.fetch_add(1, AtomicOrdering::AcqRel);
                {
                    let mut guard = self.wake_lock.lock();
                    if self.next.load(AtomicOrdering::Acquire) >= self.graph.rec.loaded()
                        && !self.closed.load(AtomicOrdering::Acquire)
                        && !self.stopped.load(AtomicOrdering::Acquire)
                    {
                        self.wake.wait_for(&mut guard, std::time::Duration::from_millis(20));
                    }
                }
                self.sleepers.fetch_sub(1, AtomicOrdering::AcqRel);
            }
        }));
        if let Err(panic) = run {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            self.fail(InsertFailure::Panic(message));
        }
    }

    fn fail(&self, f: InsertFailure) {
        self.failure.lock().get_or_insert(f);
        self.stop();
    }

    /// No more loads: workers return once everything loaded is linked.
    pub fn close(&self) {
        self.closed.store(true, AtomicOrdering::Release);
        let _guard = self.wake_lock.lock();
        self.wake.notify_all();
    }

    /// Asks workers to return now (cancel, error).
    pub fn stop(&self) {
        self.stopped.store(true, AtomicOrdering::Release);
        let _guard = self.wake_lock.lock();
        self.wake.notify_all();
    }

    /// The first failure of a worker, if any.
    pub fn failure(&self) -> Option<InsertFailure> {
        self.failure.lock().clone()
    }

    /// Elements loaded.
    pub fn loaded(&self) -> u32 {
        self.graph.rec.loaded()
    }

    /// Elements linked (or merged into identical ones).
    pub fn linked(&self) -> u32 {
        self.linked.load(AtomicOrdering::Acquire)
    }

    /// Bytes held: the graph and the workers' scratch space.
    pub fn memory_bytes(&self) -> usize {
        self.graph.memory_bytes() + self.scratch_bytes.load(AtomicOrdering::Relaxed)
    }

    /// Bytes the next [`ParallelInsert::load`] of a vector of `vector_len`
    /// scalars at `level` may allocate.
    pub fn bytes_for_next(&self, vector_len: usize, level: usize) -> usize {
        self.graph.rec.bytes_for_next(vector_len, level)
    }

    /// The graph, with the holes of merged duplicates removed. Every worker
    /// must have returned (the caller owns `self`, so none can be running).
    pub fn into_graph(self) -> Result<MemoryGraph<S>, OutOfMemory> {
        let mut graph = self.graph;
        graph.compact()?;
        Ok(graph)
    }
}
