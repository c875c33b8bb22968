//! The key directory of an index with filter columns (format 6).
//!
//! An exact pass over a filtered scan needs the elements whose keys match
//! the filter. Element items are large (a 384-dimension `vector` element
//! takes about 1 kB), so testing the filter on every element page reads the
//! whole index. The directory keeps a copy of each element's key blob with
//! its address on a chain of small pages ([`page::DirectoryEntry`], about 30
//! bytes each for a text and an integer key), so an exact pass reads those
//! pages and then only the elements that match.
//!
//! Its rules:
//! - `CREATE INDEX` writes one entry per element after the graph pages; an
//!   insert that writes a new element (or reuses a free one) appends one
//!   ([`append`]) after the element, before its transaction can commit, so
//!   every row a scan's snapshot can see has its entry.
//! - An entry is a hint: a reader uses it only if the element is live, has
//!   the entry's version (reuse count) and keys that match. Entries of freed
//!   or reused elements are dropped by VACUUM ([`compact`]).
//! - Directory pages hold nothing else, are rewritten only by [`compact`]
//!   (under their exclusive lock) and chained by the special space's next
//!   link from the meta page's `keys_head`; the meta page's `keys_hint`
//!   says where appends start looking for room.

use super::codec::Codec;
use super::page::{self, DirectoryEntry, ElementRef, ItemPointer, Meta, PageKind, PageRef, META_BLOCK};
use super::storage::IndexRel;

/// Appends the entry of element `element` (reuse count `version`, key blob
/// `keys`) to the directory, if the index has one: on the first page from
/// the meta page's hint on that has room, or on a new page linked at the
/// end of the chain.
pub fn append(rel: &IndexRel, element: ItemPointer, version: u8, keys: &[u8]) {
    let meta = rel.read_meta();
    let Some(head) = meta.keys_head else { return };
    let item = DirectoryEntry { element, version, keys }.encode();
    let start = meta.keys_hint.unwrap_or(head);
    let mut steps = 0u32;
    let mut block = checked_next(rel, start, &mut steps);
    loop {
        let (fits, next) = rel.read(block, |p| {
            check_page(rel, block, p);
            (page::fits(p, item.len()), page::directory_next(p))
        });
        if fits && rel.modify(block, |p| page::add_item(p, &item).map(|_| ())).is_some() {
            if block != start {
                set_hint(rel, Some(block));
            }
            return;
        }
        match next {
            // Steps along the chain are counted, not retries on one page.
            Some(n) => block = checked_next(rel, n, &mut steps),
            None if fits => {} // another backend took the room: look again
            None => {
                let new = rel.append(PageKind::Graph, |p| {
                    page::init_directory_page(p);
                    page::add_item(p, &item).expect("an entry always fits an empty page");
                });
                link_at_end(rel, block, new);
                set_hint(rel, Some(new));
                return;
            }
        }
    }
}

/// Links directory page `new` after the last page of the chain, starting
/// the search at `from` (another backend may have linked a page first).
fn link_at_end(rel: &IndexRel, from: u32, new: u32) {
    let mut steps = 0u32;
    let mut at = checked_next(rel, from, &mut steps);
    loop {
        let mut after = None;
        let linked = rel.modify(at, |p| {
            check_page(rel, at, p);
            match page::directory_next(p) {
                None => {
                    page::set_directory_next(p, new);
                    Some(())
                }
                Some(n) => {
                    after = Some(n);
                    None
                }
            }
        });
        match (linked, after) {
            (Some(()), _) => return,
            (None, Some(n)) => at = checked_next(rel, n, &mut steps),
            (None, None) => unreachable!("a page without a next link was linked"),
        }
    }
}

/// `block`, a step of a walk along the chain, checked: inside the index and
/// not the meta page, and the walk no longer than the index (a damaged
/// chain that loops is corruption, not a hang). Checks for interrupts.
fn checked_next(rel: &IndexRel, block: u32, steps: &mut u32) -> u32 {
    *steps += 1;
    let nblocks = rel.nblocks();
    if block == META_BLOCK || block >= nblocks || *steps > nblocks {
        rel.corrupt(block, page::PageError(format!("key directory chain reaches block {block} of {nblocks}")));
    }
    pgrx::check_for_interrupts!();
    block
}

/// Validates a directory page read from disk.
fn check_page(rel: &IndexRel, block: u32, p: &[u8]) {
    PageRef::new(p, PageKind::Graph).unwrap_or_else(|e| rel.corrupt(block, e));
    if !page::is_directory_page(p) {
        rel.corrupt(block, page::PageError("not a key directory page".into()));
    }
}

/// Sets the meta page's append hint.
fn set_hint(rel: &IndexRel, hint: Option<u32>) {
    rel.modify(META_BLOCK, |p| {
        let mut meta = Meta::read_page(p).unwrap_or_else(|e| rel.corrupt(META_BLOCK, e));
        if meta.keys_hint == hint || meta.keys_head.is_none() {
            return None;
        }
        meta.keys_hint = hint;
        meta.write_page(p);
        Some(())
    })
    .unwrap_or(())
}

/// Reads up to `pages` directory pages from `block` on (each under its own
/// share lock), pushing `(element, version)` of every entry `wanted`
/// accepts to `out`. Returns the next block of the chain (`None`: the end).
pub fn collect(
    rel: &IndexRel,
    block: u32,
    pages: u32,
    mut wanted: impl FnMut(&DirectoryEntry<'_>) -> bool,
    out: &mut Vec<(ItemPointer, u8)>,
) -> Option<u32> {
    let mut at = Some(block);
    for _ in 0..pages {
        let Some(b) = at else { break };
        at = rel.read(b, |p| {
            check_page(rel, b, p);
            let r = PageRef::new(p, PageKind::Graph).unwrap_or_else(|e| rel.corrupt(b, e));
            for offset in 1..=r.max_offset() {
                let item = r.item(offset).unwrap_or_else(|e| rel.corrupt(b, e));
                let e = DirectoryEntry::read(item).unwrap_or_else(|e| rel.corrupt(b, e));
                if wanted(&e) {
                    out.push((e.element, e.version));
                }
            }
            page::directory_next(p)
        });
    }
    at
}

/// Every directory page, in chain order (for [`compact`] and the index
/// check); stops at a page seen before, so a damaged chain cannot loop.
pub fn pages(rel: &IndexRel, meta: &Meta) -> Vec<u32> {
    let mut out = Vec::new();
    let mut seen = rustc_hash::FxHashSet::default();
    let mut at = meta.keys_head;
    while let Some(b) = at {
        if b >= rel.nblocks() || !seen.insert(b) {
            break;
        }
        out.push(b);
        at = rel.read(b, |p| {
            check_page(rel, b, p);
            page::directory_next(p)
        });
    }
    out
}

/// Whether element `element` is still the one an entry of `version` was
/// written for: an element item, not free, of that version.
pub fn is_current(rel: &IndexRel, codec: &Codec, m: usize, element: ItemPointer, version: u8) -> bool {
    if element.block == META_BLOCK || element.block >= rel.nblocks() {
        return false;
    }
    rel.read(element.block, |p| {
        let Ok(r) = PageRef::new(p, PageKind::Graph) else { return false };
        let Ok(item) = r.item(element.offset) else { return false };
        page::is_element_item(item)
            && ElementRef::new(item, codec, m).is_ok_and(|e| !e.is_free() && e.head().version == version)
    })
}

/// VACUUM's pass over the directory: drops the entries of elements freed
/// or reused since they were written, page by page (each page read, its
/// elements checked, then rewritten under its own exclusive lock, so no
/// lock is held across the pass), and points the append hint at the first
/// page left with room for a few entries. Calls `delay` between pages
/// (`vacuum_delay_point`). Returns the number of entries dropped.
pub fn compact(rel: &IndexRel, mut delay: impl FnMut()) -> usize {
    let meta = rel.read_meta();
    let (codec, m) = (meta.codec, meta.m as usize);
    let mut dropped = 0;
    let mut first_room = None;
    for block in pages(rel, &meta) {
        delay();
        let mut entries = Vec::new();
        collect(rel, block, 1, |_| true, &mut entries);
        let stale: rustc_hash::FxHashSet<(ItemPointer, u8)> =
            entries.into_iter().filter(|&(e, v)| !is_current(rel, &codec, m, e, v)).collect();
        if !stale.is_empty() {
            dropped += rel
                .modify(block, |p| {
                    check_page(rel, block, p);
                    let n = page::compact_directory_page(p, |e| !stale.contains(&(e.element, e.version)))
                        .unwrap_or_else(|e| rel.corrupt(block, e));
                    (n > 0).then_some(n)
                })
                .unwrap_or(0);
        }
        if first_room.is_none() && rel.read(block, |p| page::free_space(p) >= ROOM_FOR_HINT) {
            first_room = Some(block);
        }
    }
    if first_room.is_some() && first_room != meta.keys_hint {
        set_hint(rel, first_room);
    }
    dropped
}

/// Free bytes that make a directory page worth pointing appends at.
const ROOM_FOR_HINT: usize = 1024;
