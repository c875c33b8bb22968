//! Buffer access for the index: the thin layer where page bytes meet the
//! buffer manager, and the [`GraphStore`] over buffer pages used by scans and
//! inserts.
//!
//! Rules every function here follows:
//! - at most one buffer content lock is held at a time, so two backends can
//!   never deadlock on buffer locks;
//! - every write is under an exclusive lock and through `GenericXLog` (so it
//!   is WAL-logged for logged relations and replayed on crash recovery and on
//!   replicas); every read is under a share lock, except the scan's element
//!   visits ([`PageStore::visit_many`]), which read bytes that never change
//!   while the element is reachable under a pin alone, as PostgreSQL's heap
//!   reads tuple data;
//! - the buffer each block was last found in is remembered per backend, so a
//!   read usually re-pins it with `ReadRecentBuffer` instead of a lookup in
//!   the shared buffer mapping table;
//! - page bytes are validated by [`super::page`] before use; a bad page is an
//!   `ERROR` naming the index, with a hint to `REINDEX`.
//!
//! If an `ERROR` is raised while a buffer is pinned or locked, transaction
//! abort releases it, as for C index AMs.

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use rustc_hash::FxHashMap;

use super::codec::Codec;
use super::graph::{GraphKey, GraphStore, Params};
use super::keys::Filter;
use super::page::{
    self, ElementHead, ElementMut, ElementRef, ItemPointer, Meta, NeighborsRef, PageError, PageKind, PageRef, BLCKSZ,
    ELEMENT_HEAD_SIZE, META_BLOCK, MIN_ELEMENT_HEADER_SIZE, PAGE_HEADER_SIZE,
};
use crate::compat::RelFile;
use crate::error::raise_hint;

/// An open index relation (borrowed from the caller; never closed here).
#[derive(Clone, Copy)]
pub struct IndexRel {
    rel: pg_sys::Relation,
    fork: pg_sys::ForkNumber::Type,
    /// Whether the relation lives in backend-local buffers (a temporary
    /// index): such relations never use the per-backend buffer hints.
    local: bool,
}

/// Per backend: the shared buffer each recently read index block was found
/// in, for `ReadRecentBuffer` (PostgreSQL 14+). A hint only: a stale entry
/// costs one failed check, never a wrong page.
struct RecentBuffers {
    /// (relfilenode, fork) → buffer per block number (0 = unknown).
    rels: Vec<((RelFile, pg_sys::ForkNumber::Type), Vec<pg_sys::Buffer>)>,
}

/// Indexes with hints kept per backend (least recently added dropped first).
const RECENT_RELS: usize = 8;
/// Blocks with hints per backend, all indexes together (4 MiB of hints, an
/// 8 GiB index): the hints of the indexes added first are dropped to make
/// room. The table grows with the blocks read, and a failed allocation only
/// means no hint (the table lives outside PostgreSQL's memory contexts, so
/// it must never abort the backend).
const RECENT_BLOCKS: u32 = 1 << 20;

impl RecentBuffers {
    fn slot(&self, node: RelFile, fork: pg_sys::ForkNumber::Type) -> Option<usize> {
        self.rels.iter().position(|((n, f), _)| crate::compat::same_file(n, &node) && *f == fork)
    }

    fn get(&mut self, node: RelFile, fork: pg_sys::ForkNumber::Type, block: u32) -> Option<pg_sys::Buffer> {
        let hints = &self.rels[self.slot(node, fork)?].1;
        hints.get(block as usize).copied().filter(|&b| b > 0)
    }

    fn set(&mut self, node: RelFile, fork: pg_sys::ForkNumber::Type, block: u32, buf: pg_sys::Buffer) {
        // Local (temporary-table) buffers are negative: never hinted.
        if buf <= 0 || block >= RECENT_BLOCKS {
            return;
        }
        let at = match self.slot(node, fork) {
            Some(at) => at,
            None => {
                if self.rels.len() == RECENT_RELS {
                    self.rels.remove(0);
                }
                self.rels.push(((node, fork), Vec::new()));
                self.rels.len() - 1
            }
        };
        let len = self.rels[at].1.len();
        if len <= block as usize {
            // Grow by doubling (fewer copies), within the backend's total.
            let want = (block as usize + 1).max(2 * len).min(RECENT_BLOCKS as usize);
            let mut at = at;
            while self.rels.iter().map(|r| r.1.len()).sum::<usize>() - len + want > RECENT_BLOCKS as usize {
                let Some(oldest) = (0..self.rels.len()).find(|&i| i != at) else { break };
                self.rels.remove(oldest);
                at -= (oldest < at) as usize;
            }
            let hints = &mut self.rels[at].1;
            if hints.try_reserve_exact(want - len).is_err() {
                return;
            }
            hints.resize(want, 0);
            hints[block as usize] = buf;
            return;
        }
        self.rels[at].1[block as usize] = buf;
    }
}

thread_local! {
    static RECENT: std::cell::RefCell<RecentBuffers> = const { std::cell::RefCell::new(RecentBuffers { rels: Vec::new() }) };
}

/// Whether `rel` lives in backend-local buffers (a temporary relation).
fn uses_local_buffers(rel: pg_sys::Relation) -> bool {
    // SAFETY: rd_rel of an open relation is valid.
    unsafe { (*(*rel).rd_rel).relpersistence as u8 == pg_sys::RELPERSISTENCE_TEMP }
}

/// `ExclusiveLock` (lmgr lock mode 7).
pub const EXCLUSIVE_LOCK: pg_sys::LOCKMODE = pg_sys::ExclusiveLock as pg_sys::LOCKMODE;
/// Page-lock number used as the scan lock (a lock tag, not a real page lock).
const SCAN_LOCK: u32 = 1;

/// `ShareLock` (lmgr lock mode 5).
pub const SHARE_LOCK: pg_sys::LOCKMODE = pg_sys::ShareLock as pg_sys::LOCKMODE;

impl IndexRel {
    /// Wraps the main fork of an open index relation.
    pub fn new(rel: pg_sys::Relation) -> IndexRel {
        IndexRel { rel, fork: pg_sys::ForkNumber::MAIN_FORKNUM, local: uses_local_buffers(rel) }
    }

    /// Wraps the init fork (for `ambuildempty` of unlogged indexes).
    pub fn init_fork(rel: pg_sys::Relation) -> IndexRel {
        IndexRel { rel, fork: pg_sys::ForkNumber::INIT_FORKNUM, local: uses_local_buffers(rel) }
    }

    /// The raw relation pointer.
    pub fn raw(&self) -> pg_sys::Relation {
        self.rel
    }

    /// The index's name, for messages.
    pub fn name(&self) -> String {
        // SAFETY: rd_rel of an open relation is valid; relname is a NameData.
        unsafe {
            let name = &(*(*self.rel).rd_rel).relname;
            std::ffi::CStr::from_ptr(name.data.as_ptr()).to_string_lossy().into_owned()
        }
    }

    /// The index's OID.
    pub fn oid(&self) -> pg_sys::Oid {
        // SAFETY: an open relation's descriptor is valid.
        unsafe { (*self.rel).rd_id }
    }

    /// Number of blocks in the fork.
    pub fn nblocks(&self) -> u32 {
        // SAFETY: the relation is open.
        unsafe { pg_sys::RelationGetNumberOfBlocksInFork(self.rel, self.fork) }
    }

    /// Raises the corruption `ERROR` for `block`.
    pub fn corrupt(&self, block: u32, e: PageError) -> ! {
        raise_hint(
            PgSqlErrorCode::ERRCODE_INDEX_CORRUPTED,
            format!("index \"{}\" contains a corrupted page at block {block}", self.name()),
            e.0,
            "Please REINDEX it.",
        )
    }

    /// Pins `block`. A block past the end of the relation (a corrupt link)
    /// makes the buffer manager raise an `ERROR`, not a crash; we do not check
    /// the size first because that costs a system call per read.
    ///
    /// The buffer a block was last found in is remembered per backend
    /// ([`RecentBuffers`]); `ReadRecentBuffer` re-pins it without the buffer
    /// mapping lookup when the block is still there (it checks the buffer's
    /// tag), and we fall back to a normal read when it is not.
    pub(crate) fn read_buffer(&self, block: u32) -> pg_sys::Buffer {
        self.pin(block, self.recent_buffer(block))
    }

    /// The shared buffer `block` was last found in by this backend, if any.
    pub(crate) fn recent_buffer(&self, block: u32) -> Option<pg_sys::Buffer> {
        if self.local {
            return None;
        }
        // SAFETY: the relation is open.
        let node = unsafe { crate::compat::rel_file(self.rel) };
        RECENT.with(|r| r.borrow_mut().get(node, self.fork, block))
    }

    /// [`IndexRel::recent_buffer`] for several blocks at once, appended to
    /// `out` in order.
    pub(crate) fn recent_buffers(&self, blocks: impl Iterator<Item = u32>, out: &mut Vec<Option<pg_sys::Buffer>>) {
        if self.local {
            out.extend(blocks.map(|_| None));
            return;
        }
        // SAFETY: the relation is open.
        let node = unsafe { crate::compat::rel_file(self.rel) };
        RECENT.with(|r| {
            let r = r.borrow();
            match r.slot(node, self.fork) {
                Some(at) => {
                    let hints = &r.rels[at].1;
                    out.extend(blocks.map(|b| hints.get(b as usize).copied().filter(|&buf| buf > 0)))
                }
                None => out.extend(blocks.map(|_| None)),
            }
        })
    }

    /// [`IndexRel::read_buffer`] with the hint already looked up.
    pub(crate) fn pin(&self, block: u32, hint: Option<pg_sys::Buffer>) -> pg_sys::Buffer {
        // SAFETY: the relation is open.
        let node = unsafe { crate::compat::rel_file(self.rel) };
        if let Some(buf) = hint {
            // SAFETY: `buf` is a shared buffer number this backend was given
            // for this block; ReadRecentBuffer pins it only if it still holds
            // (node, fork, block), and returns false otherwise.
            if unsafe { pg_sys::ReadRecentBuffer(node, self.fork, block, buf) } {
                return buf;
            }
        }
        // SAFETY: ReadBufferExtended pins an existing block or raises an ERROR.
        let buf = unsafe {
            pg_sys::ReadBufferExtended(
                self.rel,
                self.fork,
                block,
                pg_sys::ReadBufferMode::RBM_NORMAL,
                std::ptr::null_mut(),
            )
        };
        if !self.local {
            RECENT.with(|r| r.borrow_mut().set(node, self.fork, block, buf));
        }
        buf
    }

    /// Starts loading, into the CPU cache, the buffer header and page header
    /// of buffer `buf` (a hint from [`IndexRel::recent_buffer`]: nothing is
    /// pinned or read, and a stale hint only wastes the prefetch).
    pub(crate) fn prefetch_buffer(buf: pg_sys::Buffer) {
        // SAFETY: `buf` is a shared buffer number (1..=NBuffers) handed out
        // earlier in this backend, so both addresses lie inside the shared
        // buffer arrays; a prefetch never dereferences anyway.
        unsafe {
            prefetch(pg_sys::BufferDescriptors.add(buf as usize - 1) as *const u8);
            prefetch(pg_sys::BufferBlocks.add((buf as usize - 1) * BLCKSZ) as *const u8);
        }
    }

    /// Calls `f` with the bytes of `block` under a share lock.
    pub fn read<R>(&self, block: u32, f: impl FnOnce(&[u8]) -> R) -> R {
        let buf = self.read_buffer(block);
        // SAFETY: `buf` is pinned; a share lock makes its page stable, and
        // BufferGetPage points at BLCKSZ bytes of shared memory that stay
        // valid until the pin is released below.
        unsafe {
            pg_sys::LockBuffer(buf, pg_sys::BUFFER_LOCK_SHARE as i32);
            let bytes = std::slice::from_raw_parts(pg_sys::BufferGetPage(buf) as *const u8, BLCKSZ);
            let r = f(bytes);
            pg_sys::UnlockReleaseBuffer(buf);
            r
        }
    }

    /// Calls `f` with a modifiable image of `block` under an exclusive lock;
    /// if `f` returns `Some`, the change is applied and WAL-logged with
    /// `GenericXLog`, otherwise it is discarded.
    pub fn modify<R>(&self, block: u32, f: impl FnOnce(&mut [u8]) -> Option<R>) -> Option<R> {
        let buf = self.read_buffer(block);
        // SAFETY: exclusive lock on a pinned buffer; GenericXLogRegisterBuffer
        // returns a private BLCKSZ copy that we may write freely, which
        // GenericXLogFinish copies back and logs.
        unsafe {
            pg_sys::LockBuffer(buf, pg_sys::BUFFER_LOCK_EXCLUSIVE as i32);
            let state = pg_sys::GenericXLogStart(self.rel);
            let image = pg_sys::GenericXLogRegisterBuffer(state, buf, 0) as *mut u8;
            let r = f(std::slice::from_raw_parts_mut(image, BLCKSZ));
            if r.is_some() {
                pg_sys::GenericXLogFinish(state);
            } else {
                pg_sys::GenericXLogAbort(state);
            }
            pg_sys::UnlockReleaseBuffer(buf);
            r
        }
    }

    /// Extends the fork by one page, formats it as `kind`, lets `f` fill it,
    /// and WAL-logs it as a full image. Returns the new block number.
    pub fn append(&self, kind: PageKind, f: impl FnOnce(&mut [u8])) -> u32 {
        // SAFETY: the relation extension lock serialises extension;
        // RBM_ZERO_AND_LOCK takes the content lock before the new buffer
        // becomes valid, so no other backend can lock it first (readers of
        // the last page also skip zeroed pages); the GenericXLog image is
        // BLCKSZ bytes as above.
        unsafe {
            pg_sys::LockRelationForExtension(self.rel, EXCLUSIVE_LOCK);
            let buf = pg_sys::ReadBufferExtended(
                self.rel,
                self.fork,
                u32::MAX,
                pg_sys::ReadBufferMode::RBM_ZERO_AND_LOCK,
                std::ptr::null_mut(),
            );
            pg_sys::UnlockRelationForExtension(self.rel, EXCLUSIVE_LOCK);
            let block = pg_sys::BufferGetBlockNumber(buf);
            let state = pg_sys::GenericXLogStart(self.rel);
            let image =
                pg_sys::GenericXLogRegisterBuffer(state, buf, pg_sys::GENERIC_XLOG_FULL_IMAGE as i32) as *mut u8;
            let bytes = std::slice::from_raw_parts_mut(image, BLCKSZ);
            page::init_page(bytes, kind);
            f(bytes);
            pg_sys::GenericXLogFinish(state);
            pg_sys::UnlockReleaseBuffer(buf);
            block
        }
    }

    /// Appends a page image built in memory, without WAL: for `ambuild`,
    /// which logs the whole relation with [`IndexRel::log_all_pages`] after.
    pub fn append_unlogged_image(&self, image: &[u8]) -> u32 {
        assert_eq!(image.len(), BLCKSZ);
        // SAFETY: as in `append`; we copy exactly BLCKSZ bytes into the page.
        unsafe {
            let buf = pg_sys::ReadBufferExtended(
                self.rel,
                self.fork,
                u32::MAX,
                pg_sys::ReadBufferMode::RBM_NORMAL,
                std::ptr::null_mut(),
            );
            pg_sys::LockBuffer(buf, pg_sys::BUFFER_LOCK_EXCLUSIVE as i32);
            let block = pg_sys::BufferGetBlockNumber(buf);
            std::ptr::copy_nonoverlapping(image.as_ptr(), pg_sys::BufferGetPage(buf) as *mut u8, BLCKSZ);
            pg_sys::MarkBufferDirty(buf);
            pg_sys::UnlockReleaseBuffer(buf);
            block
        }
    }

    /// WAL-logs every page of the fork as a full image, if the relation is
    /// WAL-logged or this is the init fork of an unlogged one (the build
    /// writes pages without WAL first).
    pub fn log_all_pages(&self) {
        // SAFETY: rd_rel is valid for an open relation; log_newpage_range
        // reads each block through the buffer manager.
        unsafe {
            let permanent = (*(*self.rel).rd_rel).relpersistence as u8 == pg_sys::RELPERSISTENCE_PERMANENT;
            if permanent || self.fork == pg_sys::ForkNumber::INIT_FORKNUM {
                let n = self.nblocks();
                if n > 0 {
                    pg_sys::log_newpage_range(self.rel, self.fork, 0, n, true);
                }
            }
        }
    }

    /// Calls `f(offset, element)` for every element item of a graph page
    /// image being modified (a zeroed page has none).
    pub fn for_each_element_mut(
        &self,
        block: u32,
        page: &mut [u8],
        codec: &Codec,
        m: usize,
        mut f: impl FnMut(u16, &mut ElementMut<'_>),
    ) {
        if page::page_is_new(page) {
            return;
        }
        let max_offset = PageRef::new(page, PageKind::Graph).unwrap_or_else(|e| self.corrupt(block, e)).max_offset();
        for offset in 1..=max_offset {
            let range = self.item_range(block, page, offset);
            if page::is_element_item(&page[range.clone()]) {
                let mut e = ElementMut::new(&mut page[range], codec, m).unwrap_or_else(|e| self.corrupt(block, e));
                f(offset, &mut e);
            }
        }
    }

    /// Bounds of item `offset` of graph page `page` (block `block`), validated.
    pub fn item_range(&self, block: u32, page: &[u8], offset: u16) -> std::ops::Range<usize> {
        PageRef::new(page, PageKind::Graph)
            .and_then(|r| r.item_range(offset))
            .unwrap_or_else(|e| self.corrupt(block, e))
    }

    /// Reads and validates the meta page.
    pub fn read_meta(&self) -> Meta {
        if self.nblocks() == 0 {
            raise_hint(
                PgSqlErrorCode::ERRCODE_INDEX_CORRUPTED,
                format!("index \"{}\" has no meta page", self.name()),
                "the index relation is empty",
                "Please REINDEX it.",
            );
        }
        self.read(META_BLOCK, |p| Meta::read_page(p)).unwrap_or_else(|e| self.corrupt(META_BLOCK, e))
    }

    /// Rewrites the meta page's entry point.
    pub fn set_entry(&self, entry: Option<(ItemPointer, u16)>) {
        self.modify(META_BLOCK, |p| {
            let mut meta = Meta::read_page(p).unwrap_or_else(|e| self.corrupt(META_BLOCK, e));
            meta.entry = entry;
            meta.write_page(p);
            Some(())
        });
    }

    /// Takes the index-wide lock that orders inserts against entry-point
    /// changes and VACUUM (a heavyweight page lock on the meta block's number,
    /// not a buffer lock, so waits are visible in `pg_locks`, honour
    /// `lock_timeout` and deadlocks are detected): every insert holds it in
    /// `SHARE_LOCK` from reading the entry point to its last link, or in
    /// `EXCLUSIVE_LOCK` when it changes the entry point; VACUUM takes it in
    /// `EXCLUSIVE_LOCK` only for an instant ([`IndexRel::wait_for_inserts`])
    /// or to move the entry point.
    ///
    /// Nesting rule: no other heavyweight lock is ever requested while this
    /// lock or [`IndexRel::lock_scans`] is held, except the relation
    /// extension lock, and the two are never held together. PostgreSQL
    /// 15.0–15.3 assert exactly that (`IsPageLockHeld` in `lock.c`), so
    /// assert-enabled builds of those minor versions accept the extension.
    pub fn lock_graph(&self, mode: pg_sys::LOCKMODE) {
        // SAFETY: the relation is open; the lock is released by
        // `unlock_graph` or at transaction end.
        unsafe { pg_sys::LockPage(self.rel, META_BLOCK, mode) }
    }

    /// Releases [`IndexRel::lock_graph`].
    pub fn unlock_graph(&self, mode: pg_sys::LOCKMODE) {
        // SAFETY: as above; we hold the lock in `mode`.
        unsafe { pg_sys::UnlockPage(self.rel, META_BLOCK, mode) }
    }

    /// Takes the lock that orders scans against VACUUM freeing elements:
    /// scans hold it in `SHARE_LOCK` from reading the entry point until they
    /// have read the heap TIDs of their results; VACUUM takes it in
    /// `EXCLUSIVE_LOCK` only for an instant ([`IndexRel::wait_for_scans`])
    /// before it frees elements, so no scan can still hold the address of an
    /// element that is freed and reused. Same nesting rule as
    /// [`IndexRel::lock_graph`].
    pub fn lock_scans(&self, mode: pg_sys::LOCKMODE) {
        // SAFETY: the relation is open; released below or at transaction end.
        unsafe { pg_sys::LockPage(self.rel, SCAN_LOCK, mode) }
    }

    /// Releases [`IndexRel::lock_scans`].
    pub fn unlock_scans(&self, mode: pg_sys::LOCKMODE) {
        // SAFETY: as above; we hold the lock in `mode`.
        unsafe { pg_sys::UnlockPage(self.rel, SCAN_LOCK, mode) }
    }

    /// Waits until every insert that holds [`IndexRel::lock_graph`] now has
    /// finished (takes the lock in `EXCLUSIVE_LOCK` and releases it at once).
    /// Inserts that start afterwards see every change this backend made
    /// before the call (the lock manager's locks order the memory accesses).
    /// Inserts that arrive while we wait queue behind us for as long as the
    /// slowest insert in progress takes: one insert, not a pass.
    pub fn wait_for_inserts(&self) {
        self.lock_graph(EXCLUSIVE_LOCK);
        self.unlock_graph(EXCLUSIVE_LOCK);
    }

    /// Waits until every scan that holds [`IndexRel::lock_scans`] now has
    /// finished its search, as [`IndexRel::wait_for_inserts`] does for inserts.
    pub fn wait_for_scans(&self) {
        self.lock_scans(EXCLUSIVE_LOCK);
        self.unlock_scans(EXCLUSIVE_LOCK);
    }

    /// Rewrites the meta page's free-element hint.
    pub fn set_free_hint(&self, hint: Option<u32>) {
        self.modify(META_BLOCK, |p| {
            let mut meta = Meta::read_page(p).unwrap_or_else(|e| self.corrupt(META_BLOCK, e));
            if meta.free_hint == hint {
                return None;
            }
            meta.free_hint = hint;
            meta.write_page(p);
            Some(())
        });
    }
}

impl GraphKey for ItemPointer {
    type Visited = rustc_hash::FxHashSet<ItemPointer>;
}

/// A visited element of the on-disk graph.
#[derive(Clone, Copy, Debug)]
pub struct ElementNode {
    /// Where the element item is.
    pub tid: ItemPointer,
    /// Where its neighbor item is.
    pub neighbors: ItemPointer,
    /// Its top layer.
    pub level: u8,
    /// Whether VACUUM deleted it (still traversed, never returned). Like
    /// `heap_tids`, exact only when read under the content lock; the scan
    /// reads both again before returning a result.
    pub deleted: bool,
    /// How many heap TIDs it has.
    pub heap_tids: u8,
    /// Its reuse count when read: a scan that holds the node across batches
    /// checks it before trusting the element again.
    pub version: u8,
    /// Whether its keys satisfied the store's [`PageStore::filter`] when it
    /// was read (always with no filter). A hint for the walk: a scan tests
    /// the keys again under the content lock before returning the element.
    pub matches: bool,
}

impl ElementNode {
    /// The node for element `tid` with head `head`.
    pub fn new(tid: ItemPointer, head: &ElementHead) -> ElementNode {
        ElementNode {
            tid,
            neighbors: head.neighbors,
            level: head.level,
            deleted: head.is_deleted(),
            heap_tids: head.heap_tids,
            version: head.version,
            matches: true,
        }
    }

    /// The node for element `tid` as read from its item.
    pub fn read(tid: ItemPointer, e: &ElementRef<'_>) -> ElementNode {
        ElementNode::new(tid, &e.head())
    }
}

/// The graph in buffer pages, as a [`GraphStore`]. Queries are vectors in
/// the working form of the index's [`Codec`].
pub struct PageStore {
    /// The index.
    pub rel: IndexRel,
    /// The meta page read when the operation began.
    pub meta: Meta,
    /// Working forms of stored vectors read for
    /// [`GraphStore::distance_between`] (inserts and VACUUM only).
    vectors: FxHashMap<ItemPointer, Vec<u32>>,
    /// Scratch for `visit_many`: pinned buffer, its page, item bounds.
    pinned: Vec<(pg_sys::Buffer, *const u8, std::ops::Range<usize>)>,
    /// Scratch for `visit_many`: each key's buffer hint.
    hints: Vec<Option<pg_sys::Buffer>>,
    /// Elements whose distance was computed so far (visits), for statistics.
    pub visits: u64,
    /// Whether graph searches ([`GraphStore::neighbors`]) walk spare links
    /// too (scans: yes; an insert's own search: no, as in the build).
    pub walk_spare: bool,
    /// A filtered scan's conditions on filter columns: visits test them on
    /// each element's keys and set [`ElementNode::matches`].
    pub filter: Option<Filter>,
}

/// Most buffers [`PageStore::visit_many`] keeps pinned at once: below
/// PostgreSQL's `REFCOUNT_ARRAY_ENTRIES` (8), leaving room for a pin the
/// caller holds.
const PIN_WINDOW: usize = 6;

/// Hints the CPU to load the cache line at `p` (never faults).
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is only a hint; it does not dereference `p`.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0)
    };
}

/// Copies `N` bytes at `at` out of a page that may be written concurrently
/// (one plain read of each byte, through a raw pointer, so no Rust reference
/// ever covers bytes another backend may change).
///
/// # Safety
/// `page` must point at a pinned shared buffer page of [`BLCKSZ`] bytes and
/// `at + N <= BLCKSZ`.
unsafe fn copy_out<const N: usize>(page: *const u8, at: usize) -> [u8; N] {
    debug_assert!(at + N <= BLCKSZ);
    let mut out = [0u8; N];
    // SAFETY: in bounds of the pinned page (caller's contract); `out` is ours.
    unsafe { std::ptr::copy_nonoverlapping(page.add(at), out.as_mut_ptr(), N) };
    out
}

/// Bounds of item `offset` of a page held only by a pin: the page header and
/// the line pointer are copied out first (`pd_lower`/`pd_upper` move as
/// other backends add items; an existing line pointer never changes), then
/// validated.
///
/// Why a pin is enough (pgvector takes the share lock here): on graph pages
/// items never move. The access method only appends items and edits item
/// bytes in place (heap TIDs, flags, neighbor lists, reuse of a free element
/// at its own length); it never deletes, compacts or re-initialises a graph
/// page that holds items (test `page::tests::graph_page_items_never_move`;
/// only key directory pages are compacted, and scans read those under the
/// share lock). An element's address reaches a scan only through a link
/// written after the element (the insert writes its page first), and the
/// bytes the walk uses (the payload and keys) do not change while the element
/// is reachable; what may change (heap TIDs, flags) is read again under the
/// share lock before a row is returned.
///
/// # Safety
/// `page` must point at a pinned shared buffer page of [`BLCKSZ`] bytes.
unsafe fn pinned_item_range(page: *const u8, offset: u16) -> Result<std::ops::Range<usize>, PageError> {
    // SAFETY: the header lies at the start of the pinned page.
    let header = unsafe { copy_out::<PAGE_HEADER_SIZE>(page, 0) };
    let (max_offset, upper) = page::graph_header_bounds(&header)?;
    if offset == 0 || offset > max_offset {
        return Err(PageError(format!("item {offset} beyond {max_offset} line pointers")));
    }
    // SAFETY: offset <= max_offset, so the line pointer lies below pd_lower.
    let lp = u32::from_ne_bytes(unsafe { copy_out::<4>(page, page::line_pointer_at(offset)) });
    page::line_pointer_range(lp, upper, offset)
}

impl PageStore {
    /// A store over `rel` described by `meta`.
    pub fn new(rel: IndexRel, meta: Meta) -> PageStore {
        PageStore {
            rel,
            meta,
            vectors: FxHashMap::default(),
            pinned: Vec::new(),
            hints: Vec::new(),
            visits: 0,
            walk_spare: true,
            filter: None,
        }
    }

    /// Construction parameters from the meta page.
    pub fn params(&self) -> Params {
        Params { m: self.meta.m as usize, ef_construction: self.meta.ef_construction as usize }
    }

    /// The element codec from the meta page.
    pub fn codec(&self) -> &Codec {
        &self.meta.codec
    }

    /// Reads element `tid` and calls `f` with it (share-locked, in place).
    pub fn with_element<R>(&self, tid: ItemPointer, f: impl FnOnce(ElementRef<'_>) -> R) -> R {
        let (codec, m) = (self.meta.codec, self.meta.m as usize);
        self.rel.read(tid.block, |bytes| {
            let element = PageRef::graph_header_only(bytes)
                .and_then(|p| p.item(tid.offset))
                .and_then(|item| ElementRef::new(item, &codec, m));
            match element {
                Ok(e) => f(e),
                Err(e) => self.rel.corrupt(tid.block, e),
            }
        })
    }

    /// The node of element `tid`, read without computing a distance.
    pub fn node(&self, tid: ItemPointer) -> ElementNode {
        self.with_element(tid, |e| ElementNode::read(tid, &e))
    }

    /// Forgets cached vectors (VACUUM calls this between elements so the
    /// cache stays small).
    pub fn clear_cache(&mut self) {
        self.vectors.clear();
    }

    /// Makes sure element `tid`'s vector is in the cache.
    fn cache_vector(&mut self, tid: ItemPointer) {
        if !self.vectors.contains_key(&tid) {
            let mut v = Vec::new();
            let codec = self.meta.codec;
            self.with_element(tid, |e| codec.decode(e.payload(), &mut v));
            self.vectors.insert(tid, v);
        }
    }

    /// Element `tid`'s stored vector in working form (decoded from its
    /// payload; cached).
    pub fn vector(&mut self, tid: ItemPointer) -> &[u32] {
        self.cache_vector(tid);
        &self.vectors[&tid]
    }

    /// Reads the selected links of `node` on `layer` (without its spare
    /// links: what reachability may rely on, since an insert may take a
    /// spare link's slot).
    pub fn read_selected(&self, node: &ElementNode, layer: usize, out: &mut Vec<ItemPointer>) {
        let spare = self.read_neighbors(node, layer, out);
        out.truncate(out.len() - spare);
    }

    /// Reads the current list of `node` on `layer`, selected links first;
    /// returns how many spare links follow them.
    pub fn read_neighbors(&self, node: &ElementNode, layer: usize, out: &mut Vec<ItemPointer>) -> usize {
        out.clear();
        let at = node.neighbors;
        let m = self.meta.m as usize;
        self.rel.read(at.block, |bytes| {
            let n = PageRef::graph_header_only(bytes)
                .and_then(|p| p.item(at.offset))
                .and_then(|item| NeighborsRef::new(item, m));
            match n {
                Ok(n) => n.read_layer(layer, out),
                Err(e) => self.rel.corrupt(at.block, e),
            }
        })
    }

    /// The distance from `query` to the element whose item occupies `item`
    /// of the pinned `page`, and its node. Reads only bytes that never change
    /// while the element is reachable (see [`GraphStore::visit_many`]); the
    /// head's flags and heap TID count are a snapshot.
    ///
    /// # Safety
    /// `page` must point at a page pinned by this backend, and `item` must be
    /// bounds of an item of it from [`pinned_item_range`].
    unsafe fn visit_pinned(
        &self,
        query: &[u32],
        key: ItemPointer,
        page: *const u8,
        item: &std::ops::Range<usize>,
    ) -> Result<(f32, ElementNode), PageError> {
        let (codec, m) = (&self.meta.codec, self.meta.m as usize);
        if item.len() < MIN_ELEMENT_HEADER_SIZE {
            return Err(PageError(format!("element item of {} bytes", item.len())));
        }
        // SAFETY: the item lies inside the pinned page (from pinned_item_range).
        let head = ElementHead::parse(&unsafe { copy_out::<ELEMENT_HEAD_SIZE>(page, item.start) }, m)?;
        let header = head.header_size();
        let lens = if head.has_keys() && item.len() >= header + page::KEYS_LEN_SIZE {
            // SAFETY: inside the item (just checked), in the pinned page.
            unsafe { copy_out::<{ page::KEYS_LEN_SIZE }>(page, item.start + header) }
        } else {
            [0xff; page::KEYS_LEN_SIZE]
        };
        let body = page::body_offset(&head, lens, item.len())?;
        let payload_len = item.len() - body;
        // SAFETY: the stable part of the payload lies inside the item, and no
        // backend writes those bytes while the element is reachable: scans
        // and inserts only reach reachable elements, and VACUUM frees an
        // element for reuse only after every link to it is gone and every
        // scan that could hold its address has finished.
        let stable = unsafe { std::slice::from_raw_parts(page.add(item.start + body), codec.stable_len(payload_len)) };
        codec.validate(payload_len, stable).map_err(|e| PageError(format!("{e:?}")))?;
        let mut node = ElementNode::new(key, &head);
        if let Some(filter) = &self.filter {
            let start = item.start + header + page::KEYS_LEN_SIZE;
            let blob = if head.has_keys() { u16::from_ne_bytes([lens[0], lens[1]]) as usize } else { 0 };
            // SAFETY: body_offset checked that the key blob lies inside the
            // item's key area, inside the pinned page; the keys are as
            // stable as the payload (see above).
            let keys = unsafe { std::slice::from_raw_parts(page.add(start), blob) };
            node.matches = filter.matches(keys);
        }
        Ok((codec.distance_to_payload(query, stable), node))
    }
}

impl GraphStore for PageStore {
    type Key = ItemPointer;
    type Node = ElementNode;
    type Query = [u32];

    fn key(&self, node: &ElementNode) -> ItemPointer {
        node.tid
    }

    fn visit(&mut self, query: &[u32], key: ItemPointer) -> Option<(f32, ElementNode)> {
        let codec = self.meta.codec;
        self.visits += 1;
        let filter = self.filter.as_ref();
        Some(self.with_element(key, |e| {
            let mut node = ElementNode::read(key, &e);
            node.matches = filter.is_none_or(|f| f.matches(e.keys()));
            (codec.distance_to_payload(query, e.payload()), node)
        }))
    }

    /// Visits `keys` so their cache misses overlap: first prefetch the
    /// buffer and page headers where each block was last found; then pin
    /// the buffers one by one, find each element item and prefetch it, and
    /// compute the distance of the element pinned [`PIN_WINDOW`]` − 1` keys
    /// earlier before unpinning it. At most [`PIN_WINDOW`] buffers are pinned
    /// at once, so the backend's pin bookkeeping stays in its small array
    /// (eight entries) instead of spilling into a hash table.
    ///
    /// Elements are read under a pin only, without the content lock, by the
    /// rule PostgreSQL's heap follows for tuple data (see
    /// `src/backend/storage/buffer/README`, "Buffer access rules"). Bytes
    /// other backends may change meanwhile (the page header's `pd_lower` and
    /// `pd_upper`, an element's flags, heap TID count and heap TIDs, the error
    /// bounds of a `vector` payload) are copied out through raw pointers and
    /// never covered by a Rust reference; Rust slices are made only over bytes
    /// that never change while the element is reachable: its line pointer,
    /// level, neighbor-item address and the stable part of its payload
    /// ([`Codec::stable_len`]). Writers of the same page copy the page image
    /// back with the same values for those bytes; an element's payload is
    /// rewritten only when an insert reuses a free element, which VACUUM
    /// freed with scans locked out after dropping every link to it. The
    /// changing fields are read again under the content lock before a result
    /// is returned.
    fn visit_many(&mut self, query: &[u32], keys: &[ItemPointer], out: &mut Vec<Option<(f32, ElementNode)>>) {
        out.clear();
        self.visits += keys.len() as u64;
        let mut pinned = std::mem::take(&mut self.pinned);
        pinned.clear();
        let mut hints = std::mem::take(&mut self.hints);
        hints.clear();
        self.rel.recent_buffers(keys.iter().map(|k| k.block), &mut hints);
        hints.iter().flatten().for_each(|&b| IndexRel::prefetch_buffer(b));
        let finish = |(buf, page, item): &(pg_sys::Buffer, *const u8, std::ops::Range<usize>), k: &ItemPointer| {
            // SAFETY: `page` is still pinned and `item` came from
            // pinned_item_range on it.
            let visited = unsafe { self.visit_pinned(query, *k, *page, item) };
            // SAFETY: releasing the pin taken when it was pinned.
            unsafe { pg_sys::ReleaseBuffer(*buf) };
            visited.unwrap_or_else(|e| self.rel.corrupt(k.block, e))
        };
        for (k, &hint) in keys.iter().zip(hints.iter()) {
            let buf = self.rel.pin(k.block, hint);
            // SAFETY: `buf` is pinned, so its page stays at this address.
            let page = unsafe { pg_sys::BufferGetPage(buf) } as *const u8;
            // SAFETY: `page` is pinned and BLCKSZ bytes long.
            let range = unsafe { pinned_item_range(page, k.offset) }.unwrap_or_else(|e| self.rel.corrupt(k.block, e));
            // SAFETY: a prefetch is a hint; the addresses lie inside the page.
            unsafe {
                for line in (range.start..range.end).step_by(64) {
                    prefetch(page.add(line));
                }
            }
            pinned.push((buf, page, range));
            if pinned.len() - out.len() == PIN_WINDOW {
                let i = out.len();
                out.push(Some(finish(&pinned[i], &keys[i])));
            }
        }
        for i in out.len()..pinned.len() {
            out.push(Some(finish(&pinned[i], &keys[i])));
        }
        self.pinned = pinned;
        self.hints = hints;
    }

    fn neighbors(&mut self, node: &ElementNode, layer: usize, out: &mut Vec<ItemPointer>) {
        if self.walk_spare {
            self.read_neighbors(node, layer, out);
        } else {
            self.read_selected(node, layer, out);
        }
    }

    fn is_deleted(&self, node: &ElementNode) -> bool {
        node.deleted
    }

    fn matches(&self, node: &ElementNode) -> bool {
        node.matches
    }

    fn prefetch_neighbors(&self, node: &ElementNode) {
        if let Some(buf) = self.rel.recent_buffer(node.neighbors.block) {
            IndexRel::prefetch_buffer(buf);
        }
    }

    fn distance_between(&mut self, a: &ElementNode, b: &ElementNode) -> f32 {
        use super::graph::Space;
        self.cache_vector(a.tid);
        self.cache_vector(b.tid);
        self.meta.codec.distance(&self.vectors[&a.tid], &self.vectors[&b.tid])
    }
}

/// Converts a Postgres heap TID to an [`ItemPointer`].
pub fn from_pg_tid(tid: &pg_sys::ItemPointerData) -> ItemPointer {
    let block = ((tid.ip_blkid.bi_hi as u32) << 16) | tid.ip_blkid.bi_lo as u32;
    ItemPointer { block, offset: tid.ip_posid }
}

/// Converts an [`ItemPointer`] back to a Postgres heap TID.
pub fn to_pg_tid(t: ItemPointer) -> pg_sys::ItemPointerData {
    pg_sys::ItemPointerData {
        ip_blkid: pg_sys::BlockIdData { bi_hi: (t.block >> 16) as u16, bi_lo: (t.block & 0xFFFF) as u16 },
        ip_posid: t.offset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(n: u32) -> RelFile {
        // SAFETY: a plain C struct of integers; all zeroes is a valid value.
        let mut f: RelFile = unsafe { std::mem::zeroed() };
        #[cfg(feature = "pg15")]
        {
            f.relNode = n.into();
        }
        #[cfg(not(feature = "pg15"))]
        {
            f.relNumber = n.into();
        }
        f
    }

    /// The buffer hints of all indexes together stay within
    /// `RECENT_BLOCKS`: a large index's hints push out the oldest index's,
    /// never the current one's, and a hint set is a hint read back.
    #[test]
    fn recent_buffer_hints_share_one_budget() {
        let mut r = RecentBuffers { rels: Vec::new() };
        let main = pg_sys::ForkNumber::MAIN_FORKNUM;
        let total = |r: &RecentBuffers| r.rels.iter().map(|x| x.1.len()).sum::<usize>();
        for n in 0..RECENT_RELS as u32 {
            r.set(file(n), main, 1_000 + n, 7);
        }
        assert_eq!(r.rels.len(), RECENT_RELS);
        assert_eq!(r.get(file(3), main, 1_003), Some(7));
        r.set(file(5), main, RECENT_BLOCKS - 1, 9);
        assert_eq!(r.get(file(5), main, RECENT_BLOCKS - 1), Some(9));
        assert_eq!(r.get(file(5), main, 1_005), Some(7), "its own hints stay");
        assert!(total(&r) <= RECENT_BLOCKS as usize, "{} hints", total(&r));
        assert_eq!(r.get(file(0), main, 1_000), None, "the oldest index's hints went");
        r.set(file(6), main, RECENT_BLOCKS / 2, 4);
        assert!(total(&r) <= RECENT_BLOCKS as usize, "{} hints", total(&r));
        assert_eq!(r.get(file(6), main, RECENT_BLOCKS / 2), Some(4));
        r.set(file(6), main, RECENT_BLOCKS, 4);
        assert_eq!(r.get(file(6), main, RECENT_BLOCKS), None, "blocks past the limit get no hint");
    }
}
