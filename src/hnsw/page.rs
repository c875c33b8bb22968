//! The on-disk format of an `hnsw` index, encoded and decoded in pure Rust.
//!
//! Every page is a standard PostgreSQL page (24-byte header, line pointers
//! growing down from the header, items growing up from the special space), so
//! checksums, `GenericXLog` deltas and `pageinspect` work unchanged; an 8-byte
//! special space ([`Special`]) marks it as ours.
//!
//! - Block 0 is the **meta page** ([`Meta`]): magic number, format version,
//!   the element codec (type, metric, dimensions), `M`, `ef_construction`,
//!   the entry point and a hint to reusable space.
//! - Other blocks are **graph pages** holding two kinds of items:
//!   - an **element item**: a header (level, deleted/free flags, the
//!     address of its neighbor item, and its heap TIDs: as many slots as it
//!     holds TIDs, up to [`MAX_HEAP_TIDS`], plus what the item's `MAXALIGN`
//!     padding leaves room for; 20-24 bytes for one row, 72 in formats
//!     before 7) and the vector's **payload**, whose layout the index's
//!     [`Codec`](super::codec::Codec) defines (for `vector`: half-precision
//!     codes with their scale and rounding error, `24 + 16 + 2·dims` bytes);
//!   - a **neighbor item**: `2·M` slots for layer 0 and `M` for each layer
//!     above (`4 + 6·M·(level + 2)` bytes), updated in place so a new link
//!     never rewrites the vector. A list holds its selected links, then its
//!     *spare links* (pruned candidates kept in free slots, see
//!     [`Tuning::spare_links`](super::graph::Tuning::spare_links)), marked
//!     by [`SPARE_BIT`] in the slot's offset; empty slots are invalid.
//! - An index with filter columns (format 6) also has **key directory
//!   pages**: graph pages flagged in their special space
//!   ([`is_directory_page`]) that hold only *directory entries*
//!   ([`DirectoryEntry`]: an element's address, its reuse count and a copy
//!   of its key blob), chained from the meta page's `keys_head` through the
//!   special space's next-block field. An exact pass tests a filter on the
//!   directory's few pages instead of every element page, then reads only
//!   the elements that match (see [`super::directory`]).
//!
//! Bytes read from disk are checked ([`PageRef::new`], [`ElementRef::new`],
//! [`NeighborsRef::new`]) before any field is used; a bad page is a
//! [`PageError`], never a panic or an out-of-bounds read.

use crate::hnsw::codec::Codec;
pub use crate::hnsw::graph::MAX_HEAP_TIDS;

/// PostgreSQL block size this format is laid out for.
pub const BLCKSZ: usize = 8192;
/// `sizeof(PageHeaderData)`.
pub const PAGE_HEADER_SIZE: usize = 24;
/// `sizeof(ItemIdData)`: one line pointer.
pub const ITEM_ID_SIZE: usize = 4;
/// Bytes of our special space.
pub const SPECIAL_SIZE: usize = 8;
/// `MAXALIGN` on the 64-bit platforms we support.
pub const MAXIMUM_ALIGNOF: usize = 8;
/// `PG_PAGE_LAYOUT_VERSION`.
const PAGE_LAYOUT_VERSION: u16 = 4;
/// Offset of `pd_special`, the start of the special space.
pub const SPECIAL_OFFSET: usize = BLCKSZ - SPECIAL_SIZE;

/// Block number of the meta page.
pub const META_BLOCK: u32 = 0;
/// Meta page magic number ("HNSW").
pub const MAGIC: u32 = 0x484E_5357;
/// Version of this format, checked on every open (4: element payloads by
/// codec, the stable part of a `vector` payload first; 5: spare links; 6:
/// the key directory of a multi-column index; 7: element headers sized to
/// their heap TIDs).
pub const FORMAT_VERSION: u32 = 7;
/// Oldest format version this build reads: format 4 is format 5 without
/// spare links, format 5 is format 6 without a key directory (an exact
/// pass then reads every element page), and format 6 is format 7 with every
/// element header holding [`MAX_HEAP_TIDS`] slots (the slot count's nibble
/// is 0 there, which reads as 10), so such an index needs no `REINDEX` (its
/// meta page is stamped 7 at its next update).
pub const OLDEST_FORMAT_VERSION: u32 = 4;
/// Tag in every page's special space identifying an `hnsw` page.
pub const PAGE_ID: u16 = 0xFF91;
/// Bytes of the header of an element item with `slots` heap TID slots:
/// [`ELEMENT_HEAD_SIZE`] and the slots, rounded up to a multiple of 4 so the
/// payload after it stays aligned for its `u16`/`u32` codes (20 for one
/// slot; 72 for [`MAX_HEAP_TIDS`], the fixed header of formats 4-6).
pub const fn element_header_size(slots: usize) -> usize {
    (HEAP_TIDS_AT + SLOT_SIZE * slots).div_ceil(4) * 4
}
/// Bytes of the smallest element header (one heap TID slot).
pub const MIN_ELEMENT_HEADER_SIZE: usize = element_header_size(1);
/// Bytes at the start of an element item a scan copies out under a pin
/// ([`ElementHead`]): kind, level, flags, heap TID count, neighbor item,
/// capacity.
pub const ELEMENT_HEAD_SIZE: usize = 12;
/// Offset of the heap TIDs in an element item.
const HEAP_TIDS_AT: usize = 12;
/// Bytes of a neighbor item before its slots.
pub const NEIGHBORS_HEADER_SIZE: usize = 4;
/// Bytes per neighbor slot (block u32, offset u16).
pub const SLOT_SIZE: usize = 6;
/// Set in a neighbor slot's offset when it holds a spare link (offsets of
/// an 8 kB page stay below 2,048).
pub const SPARE_BIT: u16 = 0x8000;

const KIND_ELEMENT: u8 = 1;
const KIND_NEIGHBORS: u8 = 2;
const KIND_DIRECTORY: u8 = 3;
const FLAG_DELETED: u8 = 1;
const FLAG_FREE: u8 = 2;
/// Set on an element item of a multi-column index: its payload area starts
/// with the *key area*: the key blob's length (`u16`), the key area's length
/// (`u16`, a multiple of 4, so the codec payload after it stays aligned),
/// the key blob of [`super::keys`], zero padding; the codec's payload
/// follows.
const FLAG_KEYS: u8 = 4;
/// Bytes of the key area's two lengths.
pub const KEYS_LEN_SIZE: usize = 4;

/// Why a page or item failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageError(pub String);

impl std::fmt::Display for PageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, PageError> {
    Err(PageError(msg.into()))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_ne_bytes());
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

/// `MAXALIGN(len)`.
pub const fn maxalign(len: usize) -> usize {
    (len + MAXIMUM_ALIGNOF - 1) & !(MAXIMUM_ALIGNOF - 1)
}

/// The address of an item: block number and 1-based line pointer offset
/// (the same shape as a heap TID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemPointer {
    /// Block number.
    pub block: u32,
    /// Line pointer number, from 1.
    pub offset: u16,
}

impl ItemPointer {
    /// The empty slot marker.
    pub const INVALID: ItemPointer = ItemPointer { block: u32::MAX, offset: 0 };

    /// Whether this is a real address.
    pub fn is_valid(&self) -> bool {
        self.block != u32::MAX && self.offset != 0
    }

    /// Packs into 48 bits of a `u64` (used as a hash key and for heap TIDs).
    pub fn pack(&self) -> u64 {
        ((self.block as u64) << 16) | self.offset as u64
    }

    /// Inverse of [`ItemPointer::pack`].
    pub fn unpack(v: u64) -> ItemPointer {
        ItemPointer { block: (v >> 16) as u32, offset: (v & 0xFFFF) as u16 }
    }

    fn read(b: &[u8], at: usize) -> ItemPointer {
        ItemPointer { block: u32_at(b, at), offset: u16_at(b, at + 4) }
    }

    fn write(&self, b: &mut [u8], at: usize) {
        put_u32(b, at, self.block);
        put_u16(b, at + 4, self.offset);
    }
}

/// What a page holds, recorded in its special space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageKind {
    /// Block 0.
    Meta = 1,
    /// Element and neighbor items.
    Graph = 2,
}

/// The 8-byte special space: `page_id u16 | kind u8 | flags u8 | next
/// u32`; `flags` is [`DIRECTORY_PAGE`] on a key directory page, whose `next`
/// is the next directory block (0: the last one). Other pages have both 0.
pub struct Special;

/// Special-space flag of a key directory page.
const DIRECTORY_PAGE: u8 = 1;

impl Special {
    fn write(page: &mut [u8], kind: PageKind) {
        put_u16(page, SPECIAL_OFFSET, PAGE_ID);
        page[SPECIAL_OFFSET + 2] = kind as u8;
    }
}

/// Formats `page` (one block) as an empty page of `kind` (`PageInit`).
pub fn init_page(page: &mut [u8], kind: PageKind) {
    assert_eq!(page.len(), BLCKSZ);
    page.fill(0);
    put_u16(page, 12, PAGE_HEADER_SIZE as u16); // pd_lower
    put_u16(page, 14, SPECIAL_OFFSET as u16); // pd_upper
    put_u16(page, 16, SPECIAL_OFFSET as u16); // pd_special
    put_u16(page, 18, BLCKSZ as u16 | PAGE_LAYOUT_VERSION); // pd_pagesize_version
    Special::write(page, kind);
}

/// Whether the page is all zeros (`PageIsNew`): extended but never written,
/// which can happen after a crash.
pub fn page_is_new(page: &[u8]) -> bool {
    u16_at(page, 14) == 0
}

/// Free bytes between the line pointers and the items (`PageGetFreeSpace`,
/// already net of one new line pointer).
pub fn free_space(page: &[u8]) -> usize {
    let (lower, upper) = (u16_at(page, 12) as usize, u16_at(page, 14) as usize);
    upper.saturating_sub(lower).saturating_sub(ITEM_ID_SIZE)
}

/// Whether an item of `len` bytes fits on `page`.
pub fn fits(page: &[u8], len: usize) -> bool {
    free_space(page) >= maxalign(len)
}

/// Bytes an item of `len` bytes takes on a page, line pointer included.
pub const fn item_footprint(len: usize) -> usize {
    maxalign(len) + ITEM_ID_SIZE
}

/// Usable bytes of an empty graph page.
pub const EMPTY_PAGE_SPACE: usize = SPECIAL_OFFSET - PAGE_HEADER_SIZE;

/// Appends an item (`PageAddItem`); returns its offset, or `None` if full.
pub fn add_item(page: &mut [u8], item: &[u8]) -> Option<u16> {
    if !fits(page, item.len()) {
        return None;
    }
    let lower = u16_at(page, 12) as usize;
    let upper = u16_at(page, 14) as usize - maxalign(item.len());
    page[upper..upper + item.len()].copy_from_slice(item);
    page[upper + item.len()..upper + maxalign(item.len())].fill(0);
    // ItemIdData bit fields: lp_off:15, lp_flags:2 (LP_NORMAL = 1), lp_len:15.
    let lp = (upper as u32) | (1 << 15) | ((item.len() as u32) << 17);
    put_u32(page, lower, lp);
    put_u16(page, 12, (lower + ITEM_ID_SIZE) as u16);
    put_u16(page, 14, upper as u16);
    Some(((lower - PAGE_HEADER_SIZE) / ITEM_ID_SIZE + 1) as u16)
}

/// Checks the header of a graph page (its first [`PAGE_HEADER_SIZE`] bytes,
/// copied out by a reader that holds only a pin, since `pd_lower` and
/// `pd_upper` move as items are added) and returns `(number of line
/// pointers, pd_upper)`.
pub fn graph_header_bounds(header: &[u8; PAGE_HEADER_SIZE]) -> Result<(u16, usize), PageError> {
    let (lower, upper, special) =
        (u16_at(header, 12) as usize, u16_at(header, 14) as usize, u16_at(header, 16) as usize);
    if u16_at(header, 18) != BLCKSZ as u16 | PAGE_LAYOUT_VERSION
        || !(PAGE_HEADER_SIZE <= lower && lower <= upper && upper <= special && special == SPECIAL_OFFSET)
    {
        return err(format!("bad page header lower={lower} upper={upper} special={special}"));
    }
    Ok((((lower - PAGE_HEADER_SIZE) / ITEM_ID_SIZE) as u16, upper))
}

/// Byte offset of the line pointer of item `offset` (from 1).
pub const fn line_pointer_at(offset: u16) -> usize {
    PAGE_HEADER_SIZE + (offset as usize).saturating_sub(1) * ITEM_ID_SIZE
}

/// Bounds of item `offset` from its line pointer `lp` on a page whose
/// `pd_upper` is `upper` (both read from the page), validated: a normal line
/// pointer to an aligned item inside the item area.
pub fn line_pointer_range(lp: u32, upper: usize, offset: u16) -> Result<std::ops::Range<usize>, PageError> {
    let (off, flags, len) = ((lp & 0x7FFF) as usize, (lp >> 15) & 3, (lp >> 17) as usize);
    if flags != 1 || off < upper || off + len > SPECIAL_OFFSET || off % MAXIMUM_ALIGNOF != 0 {
        return err(format!("bad line pointer {offset}: off={off} len={len} flags={flags}"));
    }
    Ok(off..off + len)
}

/// A page whose header and special space have been validated.
#[derive(Clone, Copy)]
pub struct PageRef<'a> {
    bytes: &'a [u8],
    max_offset: u16,
}

impl<'a> PageRef<'a> {
    /// Validates the page header and special space of a page read from disk.
    pub fn new(bytes: &'a [u8], kind: PageKind) -> Result<PageRef<'a>, PageError> {
        if bytes.len() != BLCKSZ {
            return err(format!("page of {} bytes", bytes.len()));
        }
        let (lower, upper, special) =
            (u16_at(bytes, 12) as usize, u16_at(bytes, 14) as usize, u16_at(bytes, 16) as usize);
        if u16_at(bytes, 18) != BLCKSZ as u16 | PAGE_LAYOUT_VERSION {
            return err("bad page size or layout version");
        }
        if !(PAGE_HEADER_SIZE <= lower && lower <= upper && upper <= special && special == SPECIAL_OFFSET) {
            return err(format!("bad page bounds lower={lower} upper={upper} special={special}"));
        }
        if u16_at(bytes, SPECIAL_OFFSET) != PAGE_ID {
            return err("page is not an hnsw page");
        }
        if bytes[SPECIAL_OFFSET + 2] != kind as u8 {
            return err(format!("expected page kind {}, found {}", kind as u8, bytes[SPECIAL_OFFSET + 2]));
        }
        let max_offset = if kind == PageKind::Graph { ((lower - PAGE_HEADER_SIZE) / ITEM_ID_SIZE) as u16 } else { 0 };
        Ok(PageRef { bytes, max_offset })
    }

    /// Validates only what item access relies on: the header's size, bounds
    /// and layout version (all in the page's first cache line). Unlike
    /// [`PageRef::new`] it does not read the special space at the end of the
    /// page, saving a cache miss per element on the scan's hot path; every
    /// item read through it is still bounds- and kind-checked.
    pub fn graph_header_only(bytes: &'a [u8]) -> Result<PageRef<'a>, PageError> {
        let Some(header) = bytes.first_chunk::<PAGE_HEADER_SIZE>().filter(|_| bytes.len() == BLCKSZ) else {
            return err(format!("page of {} bytes", bytes.len()));
        };
        let (max_offset, _) = graph_header_bounds(header)?;
        Ok(PageRef { bytes, max_offset })
    }

    /// Number of line pointers.
    pub fn max_offset(&self) -> u16 {
        self.max_offset
    }

    /// Bounds of item `offset` within the page, validated.
    pub fn item_range(&self, offset: u16) -> Result<std::ops::Range<usize>, PageError> {
        if offset == 0 || offset > self.max_offset {
            return err(format!("item {offset} beyond {} line pointers", self.max_offset));
        }
        let lp = u32_at(self.bytes, line_pointer_at(offset));
        line_pointer_range(lp, u16_at(self.bytes, 14) as usize, offset)
    }

    /// The bytes of item `offset`.
    pub fn item(&self, offset: u16) -> Result<&'a [u8], PageError> {
        Ok(&self.bytes[self.item_range(offset)?])
    }
}

/// The meta page's contents, stored right after the page header.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Meta {
    /// How elements are stored and compared: type, metric, dimensions.
    pub codec: Codec,
    /// `M`.
    pub m: u32,
    /// `ef_construction`.
    pub ef_construction: u32,
    /// Entry point element and its level; `None` for an empty graph.
    pub entry: Option<(ItemPointer, u16)>,
    /// First block that may hold free (reusable) elements, set by VACUUM.
    pub free_hint: Option<u32>,
    /// Number of blocks the index had when VACUUM last relinked elements
    /// left without inbound links (0: never). VACUUM without deletions
    /// walks the graph again only once the index has doubled since.
    /// Added after format 3 was released, at the end of the meta data: older
    /// meta pages read 0 (the bytes past their `pd_lower` are zero).
    pub healed_blocks: u32,
    /// First key directory page (an index with filter columns, format 6);
    /// `None`: no directory, an exact pass reads every element page.
    pub keys_head: Option<u32>,
    /// A directory page from which on the chain may have room for a new
    /// entry (set by inserts and VACUUM; a hint, never needed for
    /// correctness).
    pub keys_hint: Option<u32>,
}

/// Bytes of meta data: `magic u32 | version u32 | dims u32 | m u32 |
/// ef_construction u32 | metric u32 | entry ItemPointer (6) | entry level u16
/// | free hint u32 | kind u32 | healed_blocks u32 | keys_head u32 |
/// keys_hint u32 | reserved u32`. `healed_blocks` was added after format 4
/// shipped, the two directory blocks with format 6: meta pages written
/// before have zeros there (past their `pd_lower`).
const META_SIZE: usize = 56;

impl Meta {
    /// Writes the meta page image (`page` is one block).
    pub fn write_page(&self, page: &mut [u8]) {
        init_page(page, PageKind::Meta);
        let b = &mut page[PAGE_HEADER_SIZE..PAGE_HEADER_SIZE + META_SIZE];
        put_u32(b, 0, MAGIC);
        put_u32(b, 4, FORMAT_VERSION);
        put_u32(b, 8, self.codec.dims() as u32);
        put_u32(b, 12, self.m);
        put_u32(b, 16, self.ef_construction);
        put_u32(b, 20, self.codec.metric_code() as u32);
        let (entry, level) = self.entry.unwrap_or((ItemPointer::INVALID, 0));
        entry.write(b, 24);
        put_u16(b, 30, level);
        put_u32(b, 32, self.free_hint.unwrap_or(u32::MAX));
        put_u32(b, 36, self.codec.kind_code() as u32);
        put_u32(b, 40, self.healed_blocks);
        put_u32(b, 44, self.keys_head.unwrap_or(0));
        put_u32(b, 48, self.keys_hint.unwrap_or(0));
        // pd_lower covers the meta data so GenericXLog logs it.
        put_u16(page, 12, (PAGE_HEADER_SIZE + META_SIZE) as u16);
    }

    /// Reads and validates the meta page (magic, version, sane parameters).
    pub fn read_page(page: &[u8]) -> Result<Meta, PageError> {
        PageRef::new(page, PageKind::Meta)?;
        let b = &page[PAGE_HEADER_SIZE..PAGE_HEADER_SIZE + META_SIZE];
        if u32_at(b, 0) != MAGIC {
            return err(format!("bad magic number {:#x}", u32_at(b, 0)));
        }
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&u32_at(b, 4)) {
            return err(format!(
                "unsupported format version {} (this build reads {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION})",
                u32_at(b, 4)
            ));
        }
        let (dims, m, ef_construction) = (u32_at(b, 8), u32_at(b, 12), u32_at(b, 16));
        if !(2..=100).contains(&m) || ef_construction == 0 {
            return err(format!("bad parameters m={m} ef_construction={ef_construction}"));
        }
        let (metric, kind) = (u32_at(b, 20), u32_at(b, 36));
        let codec = match (u8::try_from(kind), u8::try_from(metric)) {
            (Ok(kind), Ok(metric)) => Codec::from_codes(kind, metric, dims as usize).map_err(PageError)?,
            _ => return err(format!("bad element kind {kind} or metric {metric}")),
        };
        let entry = ItemPointer::read(b, 24);
        let level = u16_at(b, 30);
        if entry.is_valid() && level as usize > max_level(m as usize) {
            return err(format!("entry level {level} too high"));
        }
        let entry = entry.is_valid().then_some((entry, level));
        let free_hint = Some(u32_at(b, 32)).filter(|&h| h != u32::MAX && h != 0);
        let healed_blocks = u32_at(b, 40);
        // Block 0 is this page: 0 means none.
        let (keys_head, keys_hint) = (Some(u32_at(b, 44)).filter(|&h| h != 0), Some(u32_at(b, 48)).filter(|&h| h != 0));
        Ok(Meta { codec, m, ef_construction, entry, free_hint, healed_blocks, keys_head, keys_hint })
    }
}

/// Heap TID slots of a new element item holding `ntids` heap TIDs
/// (`1..=MAX_HEAP_TIDS`) and a body (key area and payload) of `body_len`
/// bytes: `ntids`, plus every further slot that fits the padding
/// PostgreSQL adds to align the item (`MAXALIGN`), so a later row with the
/// same vector can often join it for free.
pub const fn tid_slots_for(ntids: usize, body_len: usize) -> usize {
    let mut slots = if ntids == 0 { 1 } else { ntids };
    let aligned = (element_header_size(slots) + body_len).next_multiple_of(MAXIMUM_ALIGNOF);
    while slots < MAX_HEAP_TIDS && element_header_size(slots + 1) + body_len <= aligned {
        slots += 1;
    }
    slots
}

/// Size of a new element item holding `ntids` heap TIDs whose body (key
/// area and payload) has `body_len` bytes (see [`tid_slots_for`]).
pub const fn element_item_size(ntids: usize, body_len: usize) -> usize {
    element_header_size(tid_slots_for(ntids, body_len)) + body_len
}

/// Bytes the key area of a new element item takes: none for a
/// single-column index (an empty blob), else the two lengths and the blob,
/// rounded up to a multiple of 4.
pub const fn keys_size(blob_len: usize) -> usize {
    if blob_len == 0 {
        0
    } else {
        (KEYS_LEN_SIZE + blob_len).div_ceil(4) * 4
    }
}

/// The heap TID slots of an element item from its byte 3 (high nibble; 0,
/// as in formats 4-6, means [`MAX_HEAP_TIDS`]).
fn tid_slots_of(b3: u8) -> usize {
    match (b3 >> 4) as usize {
        0 => MAX_HEAP_TIDS,
        n => n,
    }
}

/// The key blob's range and the codec payload's offset in an element item
/// whose flags are `flags`, whose header has `header` bytes and whose bytes
/// (at least the header) are `b`, checked against its length.
fn body_layout(b: &[u8], flags: u8, header: usize) -> Result<(std::ops::Range<usize>, usize), PageError> {
    if b.len() < header {
        return err(format!("element item of {} bytes, header {header}", b.len()));
    }
    if flags & FLAG_KEYS == 0 {
        return Ok((header..header, header));
    }
    if b.len() < header + KEYS_LEN_SIZE {
        return err(format!("element item of {} bytes with keys", b.len()));
    }
    let (blob, area) = (u16_at(b, header) as usize, u16_at(b, header + 2) as usize);
    let start = header + KEYS_LEN_SIZE;
    let body = header + area;
    if area % 4 != 0 || KEYS_LEN_SIZE + blob > area || body > b.len() {
        return err(format!("bad key area: blob {blob}, area {area}, item {} bytes", b.len()));
    }
    Ok((start..start + blob, body))
}

/// The key blob of element item `b` without validating the rest of it:
/// for an exact pass that tests a filter on every element before reading
/// more (the blob is validated by [`ElementRef::new`] when the element
/// matches, and a malformed one matches no filter). `None` for an item too
/// short to be an element or with a bad key area; empty without keys.
pub fn peek_keys(b: &[u8]) -> Option<&[u8]> {
    let (flags, b3) = (*b.get(2)?, *b.get(3)?);
    body_layout(b, flags, element_header_size(tid_slots_of(b3))).ok().map(|(keys, _)| &b[keys])
}

/// Offset of the codec payload of an element item of `item_len` bytes whose
/// head is `head`, from the 4 bytes after its header (`lens`, ignored
/// without keys; see [`ElementHead::header_size`]): for a scan that reads
/// the item under a pin only (the key area of a reachable element never
/// changes).
pub fn body_offset(head: &ElementHead, lens: [u8; KEYS_LEN_SIZE], item_len: usize) -> Result<usize, PageError> {
    let header = head.header_size();
    if header > item_len {
        return err(format!("element item of {item_len} bytes, header {header}"));
    }
    if !head.has_keys() {
        return Ok(header);
    }
    let area = u16::from_ne_bytes([lens[2], lens[3]]) as usize;
    let blob = u16::from_ne_bytes([lens[0], lens[1]]) as usize;
    if area % 4 != 0 || KEYS_LEN_SIZE + blob > area || header + area > item_len {
        return err(format!("bad key area: blob {blob}, area {area}, item {item_len} bytes"));
    }
    Ok(header + area)
}

/// Writes the key area (`area` bytes, at least [`keys_size`]) for `keys`
/// after the element header (`header` bytes) of `b` and flags the element.
fn write_key_area(b: &mut [u8], header: usize, keys: &[u8], area: usize) {
    b[2] |= FLAG_KEYS;
    put_u16(b, header, keys.len() as u16);
    put_u16(b, header + 2, area as u16);
    let start = header + KEYS_LEN_SIZE;
    b[start..start + keys.len()].copy_from_slice(keys);
}

/// Size of a neighbor item for an element of top layer `level`.
pub const fn neighbor_item_size(m: usize, level: usize) -> usize {
    NEIGHBORS_HEADER_SIZE + SLOT_SIZE * m * (level + 2)
}

/// Highest level whose neighbor item still fits an empty page.
pub fn max_level(m: usize) -> usize {
    let slots = (EMPTY_PAGE_SPACE - ITEM_ID_SIZE - NEIGHBORS_HEADER_SIZE) / SLOT_SIZE;
    (slots / m).saturating_sub(2).min(255)
}

/// Encodes an element item: `kind u8 | level u8 | flags u8 | slots u4 ntids u4 |
/// neighbors ItemPointer (6) | capacity u8 | version u8 | heap_tids [slots × 6] |
/// padding to 4 | [keys_len u16 | area_len u16 | keys | padding] | payload`, the
/// key area only when `keys` is not empty (a multi-column index; flagged by
/// `FLAG_KEYS`). `slots` is [`tid_slots_for`] the TIDs and the body.
/// `capacity` is the level its neighbor item was sized for (a reused
/// element may have a lower level); `version` counts reuses, so a scan that
/// remembered an element across batches can tell it was replaced.
pub fn encode_element(
    level: usize,
    heap_tids: &[ItemPointer],
    neighbors: ItemPointer,
    keys: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let slots = tid_slots_for(heap_tids.len(), keys_size(keys.len()) + payload.len());
    encode_element_with_slots(slots, level, heap_tids, neighbors, keys, payload)
}

/// [`encode_element`] with `slots` heap TID slots (at least the TIDs).
fn encode_element_with_slots(
    slots: usize,
    level: usize,
    heap_tids: &[ItemPointer],
    neighbors: ItemPointer,
    keys: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    assert!(heap_tids.len() <= slots && slots <= MAX_HEAP_TIDS && level <= 255 && keys.len() <= u16::MAX as usize);
    let header = element_header_size(slots);
    let area = keys_size(keys.len());
    let mut b = vec![0u8; header + area + payload.len()];
    b[0] = KIND_ELEMENT;
    b[1] = level as u8;
    // Ten slots are stored as 0, as formats 4-6 wrote them.
    b[3] = (((slots % MAX_HEAP_TIDS) as u8) << 4) | heap_tids.len() as u8;
    neighbors.write(&mut b, 4);
    b[10] = level as u8;
    for (i, t) in heap_tids.iter().enumerate() {
        t.write(&mut b, HEAP_TIDS_AT + SLOT_SIZE * i);
    }
    if area > 0 {
        write_key_area(&mut b, header, keys, area);
    }
    b[header + area..].copy_from_slice(payload);
    b
}

/// Whether an item (already bounds-checked by [`PageRef::item`]) is an
/// element item rather than a neighbor item.
pub fn is_element_item(bytes: &[u8]) -> bool {
    bytes.first() == Some(&KIND_ELEMENT)
}

/// The first [`ELEMENT_HEAD_SIZE`] bytes of an element item, decoded and
/// checked. A scan copies them out of a pinned page: level, neighbor item
/// and capacity never change while the element is reachable; the flags and
/// the heap TID count may, and are read again under the content lock before
/// a result is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElementHead {
    /// Top layer.
    pub level: u8,
    /// Deleted / free flags.
    flags: u8,
    /// Number of heap TIDs.
    pub heap_tids: u8,
    /// Heap TID slots in its header (`heap_tids..=MAX_HEAP_TIDS`).
    pub tid_slots: u8,
    /// Where its neighbor item is.
    pub neighbors: ItemPointer,
    /// The level its neighbor item has room for.
    pub capacity: u8,
    /// How many times the element was reused (wrapping).
    pub version: u8,
}

impl ElementHead {
    /// Decodes and checks the head of an element item of an index with `M = m`.
    pub fn parse(b: &[u8; ELEMENT_HEAD_SIZE], m: usize) -> Result<ElementHead, PageError> {
        if b[0] != KIND_ELEMENT {
            return err(format!("not an element item (kind {})", b[0]));
        }
        let (ntids, slots) = ((b[3] & 0x0F) as usize, tid_slots_of(b[3]));
        if b[1] as usize > max_level(m) || b[1] > b[10] || ntids > slots || slots > MAX_HEAP_TIDS {
            return err(format!("bad element header level={} capacity={} ntids={ntids} slots={slots}", b[1], b[10]));
        }
        Ok(ElementHead {
            level: b[1],
            flags: b[2],
            heap_tids: ntids as u8,
            tid_slots: slots as u8,
            neighbors: ItemPointer::read(b, 4),
            capacity: b[10],
            version: b[11],
        })
    }

    /// Whether VACUUM removed all its heap TIDs.
    pub fn is_deleted(&self) -> bool {
        self.flags & FLAG_DELETED != 0
    }

    /// Whether VACUUM freed it for reuse.
    pub fn is_free(&self) -> bool {
        self.flags & FLAG_FREE != 0
    }

    /// Whether the item holds filter keys before its payload.
    pub fn has_keys(&self) -> bool {
        self.flags & FLAG_KEYS != 0
    }

    /// Bytes of the item's header (its key area or payload follows).
    pub fn header_size(&self) -> usize {
        element_header_size(self.tid_slots as usize)
    }
}

/// A validated element item, read under the content lock.
#[derive(Clone, Copy)]
pub struct ElementRef<'a> {
    bytes: &'a [u8],
    head: ElementHead,
    /// Where the key blob is, `start..end` (empty without keys).
    keys: (usize, usize),
    /// Where the codec payload starts.
    body: usize,
}

impl<'a> ElementRef<'a> {
    /// Validates an element item of an index with element codec `codec` and
    /// `M = m`.
    pub fn new(bytes: &'a [u8], codec: &Codec, m: usize) -> Result<ElementRef<'a>, PageError> {
        let Some(head) = bytes.first_chunk::<ELEMENT_HEAD_SIZE>() else {
            return err(format!("element item of {} bytes", bytes.len()));
        };
        let head = ElementHead::parse(head, m)?;
        let (keys, body) = body_layout(bytes, head.flags, head.header_size())?;
        crate::hnsw::keys::validate(&bytes[keys.clone()]).map_err(PageError)?;
        let payload = &bytes[body..];
        codec.validate(payload.len(), payload).map_err(|e| PageError(format!("{e:?}")))?;
        Ok(ElementRef { bytes, head, keys: (keys.start, keys.end), body })
    }

    /// The decoded head.
    pub fn head(&self) -> ElementHead {
        self.head
    }

    /// Top layer of the element.
    pub fn level(&self) -> usize {
        self.head.level as usize
    }

    /// Whether VACUUM removed all its heap TIDs.
    pub fn is_deleted(&self) -> bool {
        self.head.is_deleted()
    }

    /// Where its neighbor item is.
    pub fn neighbors(&self) -> ItemPointer {
        self.head.neighbors
    }

    /// Whether VACUUM freed it for reuse (no live link points to it).
    pub fn is_free(&self) -> bool {
        self.head.is_free()
    }

    /// The level its neighbor item has room for.
    pub fn capacity(&self) -> usize {
        self.head.capacity as usize
    }

    /// Number of heap TIDs.
    pub fn heap_tid_count(&self) -> usize {
        self.head.heap_tids as usize
    }

    /// Heap TID `i` (`i < heap_tid_count()`).
    pub fn heap_tid(&self, i: usize) -> ItemPointer {
        ItemPointer::read(self.bytes, HEAP_TIDS_AT + SLOT_SIZE * i)
    }

    /// The payload (validated by the codec).
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes[self.body..]
    }

    /// The filter keys ([`super::keys`]; validated), empty in a
    /// single-column index.
    pub fn keys(&self) -> &'a [u8] {
        &self.bytes[self.keys.0..self.keys.1]
    }
}

/// In-place edits of an element item (the bytes were validated as an
/// [`ElementRef`] first).
pub struct ElementMut<'a> {
    bytes: &'a mut [u8],
    /// Bytes of its header.
    header: usize,
    /// Heap TID slots in its header.
    slots: usize,
    /// Where the codec payload starts.
    body: usize,
}

impl<'a> ElementMut<'a> {
    /// Validates and wraps an element item for writing.
    pub fn new(bytes: &'a mut [u8], codec: &Codec, m: usize) -> Result<ElementMut<'a>, PageError> {
        let e = ElementRef::new(bytes, codec, m)?;
        let (header, slots, body) = (e.head.header_size(), e.head.tid_slots as usize, e.body);
        Ok(ElementMut { bytes, header, slots, body })
    }

    /// Whether VACUUM removed all its heap TIDs.
    pub fn is_deleted(&self) -> bool {
        self.bytes[2] & FLAG_DELETED != 0
    }

    /// Number of heap TIDs.
    pub fn heap_tid_count(&self) -> usize {
        (self.bytes[3] & 0x0F) as usize
    }

    /// Sets the heap TID count, keeping the slot count beside it.
    fn set_heap_tid_count(&mut self, n: usize) {
        self.bytes[3] = (self.bytes[3] & 0xF0) | n as u8;
    }

    /// Appends a heap TID; `false` if all its slots are used.
    pub fn push_heap_tid(&mut self, tid: ItemPointer) -> bool {
        let n = self.heap_tid_count();
        if n >= self.slots {
            return false;
        }
        tid.write(self.bytes, HEAP_TIDS_AT + SLOT_SIZE * n);
        self.set_heap_tid_count(n + 1);
        true
    }

    /// Keeps only the heap TIDs for which `keep` is true; returns how many
    /// were removed.
    pub fn retain_heap_tids(&mut self, mut keep: impl FnMut(ItemPointer) -> bool) -> usize {
        let n = self.heap_tid_count();
        let tids: Vec<ItemPointer> =
            (0..n).map(|i| ItemPointer::read(self.bytes, HEAP_TIDS_AT + SLOT_SIZE * i)).collect();
        let kept: Vec<ItemPointer> = tids.into_iter().filter(|t| keep(*t)).collect();
        for (i, t) in kept.iter().enumerate() {
            t.write(self.bytes, HEAP_TIDS_AT + SLOT_SIZE * i);
        }
        for i in kept.len()..n {
            ItemPointer::INVALID.write(self.bytes, HEAP_TIDS_AT + SLOT_SIZE * i);
        }
        self.set_heap_tid_count(kept.len());
        n - kept.len()
    }

    /// Marks the element deleted (it stays a graph node until freed).
    pub fn set_deleted(&mut self) {
        self.bytes[2] |= FLAG_DELETED;
    }

    /// Whether VACUUM freed it for reuse.
    pub fn is_free(&self) -> bool {
        self.bytes[2] & FLAG_FREE != 0
    }

    /// The level its neighbor item has room for.
    pub fn capacity(&self) -> usize {
        self.bytes[10] as usize
    }

    /// Bytes available for the keys and the payload together (the item's
    /// size is fixed; see [`keys_size`]).
    pub fn payload_capacity(&self) -> usize {
        self.bytes.len() - self.header
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.bytes[self.body..]
    }

    /// The filter keys (empty in a single-column index).
    pub fn keys(&self) -> &[u8] {
        match body_layout(self.bytes, self.bytes[2], self.header) {
            Ok((keys, _)) => &self.bytes[keys],
            Err(_) => &[],
        }
    }

    /// Where its neighbor item is.
    pub fn neighbors(&self) -> ItemPointer {
        ItemPointer::read(self.bytes, 4)
    }

    /// Marks a deleted element free for reuse (no live link points to it).
    pub fn set_free(&mut self) {
        self.bytes[2] |= FLAG_DELETED | FLAG_FREE;
        self.set_heap_tid_count(0);
    }

    /// Adds heap row `heap_tid`, whose payload `payload` holds the same
    /// vector ([`Codec::same_vector`]), folding it in with
    /// [`Codec::merge_duplicate`]; `false` if all heap-TID slots are used.
    pub fn push_duplicate(&mut self, heap_tid: ItemPointer, codec: &Codec, payload: &[u8]) -> bool {
        if !self.push_heap_tid(heap_tid) {
            return false;
        }
        codec.merge_duplicate(&mut self.bytes[self.body..], payload);
        true
    }

    /// Whether a free element has room for filter keys of `keys_len` bytes
    /// and a payload of `payload_len` bytes (see [`ElementMut::reuse`]).
    pub fn fits(&self, keys_len: usize, payload_len: usize) -> bool {
        let room = self.payload_capacity();
        if keys_len == 0 {
            return payload_len <= room;
        }
        room >= keys_size(keys_len) + payload_len && (room - payload_len) % 4 == 0
    }

    /// Rewrites a free element for a new vector at `level`, which must not
    /// exceed [`ElementMut::capacity`] (the neighbor item keeps its size),
    /// with filter keys `keys`; they must [fit](ElementMut::fits). Without
    /// keys the payload starts after the header and zeros pad it to the
    /// item's end; with keys it ends at the item's end and the key area takes
    /// the room before it (so a payload of fixed length keeps its length).
    pub fn reuse(&mut self, level: usize, heap_tid: ItemPointer, keys: &[u8], payload: &[u8]) {
        assert!(level <= self.capacity(), "reused element level above its capacity");
        assert!(self.fits(keys.len(), payload.len()), "reused element payload too large");
        let (neighbors, capacity, version) = (ItemPointer::read(self.bytes, 4), self.bytes[10], self.bytes[11]);
        let (slots, header) = (self.slots, self.header);
        let fresh = if keys.is_empty() {
            let mut padded = payload.to_vec();
            padded.resize(self.payload_capacity(), 0);
            encode_element_with_slots(slots, level, &[heap_tid], neighbors, &[], &padded)
        } else {
            let area = self.payload_capacity() - payload.len();
            let mut b =
                encode_element_with_slots(slots, level, &[heap_tid], neighbors, &[], &vec![0; self.payload_capacity()]);
            write_key_area(&mut b, header, keys, area);
            b[header + area..].copy_from_slice(payload);
            b
        };
        self.bytes.copy_from_slice(&fresh);
        self.body = self.bytes.len() - if keys.is_empty() { self.payload_capacity() } else { payload.len() };
        self.bytes[10] = capacity;
        self.bytes[11] = version.wrapping_add(1);
    }
}

/// Encodes a neighbor item with `lists[layer]` for layers `0..=level`
/// (`kind u8 | level u8 | m u16 | slots`, empty slots invalid), the last
/// `spare0` links of layer 0 spare links.
pub fn encode_neighbors(m: usize, level: usize, lists: &[Vec<ItemPointer>], spare0: usize) -> Vec<u8> {
    let mut b = vec![0u8; neighbor_item_size(m, level)];
    b[0] = KIND_NEIGHBORS;
    b[1] = level as u8;
    put_u16(&mut b, 2, m as u16);
    for layer in 0..=level {
        let empty: Vec<ItemPointer> = Vec::new();
        write_layer(&mut b, m, layer, lists.get(layer).unwrap_or(&empty), if layer == 0 { spare0 } else { 0 });
    }
    b
}

/// First slot and slot count of `layer` in a neighbor item.
fn layer_slots(m: usize, layer: usize) -> (usize, usize) {
    if layer == 0 {
        (0, 2 * m)
    } else {
        (2 * m + (layer - 1) * m, m)
    }
}

/// Writes `list` into `layer`'s slots, its last `spare` links marked spare.
fn write_layer(b: &mut [u8], m: usize, layer: usize, list: &[ItemPointer], spare: usize) {
    let (first, count) = layer_slots(m, layer);
    let selected = list.len().saturating_sub(spare);
    for i in 0..count {
        let mut t = list.get(i).copied().unwrap_or(ItemPointer::INVALID);
        if i >= selected && t.is_valid() {
            t.offset |= SPARE_BIT;
        }
        t.write(b, NEIGHBORS_HEADER_SIZE + SLOT_SIZE * (first + i));
    }
}

/// A validated neighbor item.
#[derive(Clone, Copy)]
pub struct NeighborsRef<'a> {
    bytes: &'a [u8],
    m: usize,
}

impl<'a> NeighborsRef<'a> {
    /// Validates a neighbor item of an index with `M = m`.
    pub fn new(bytes: &'a [u8], m: usize) -> Result<NeighborsRef<'a>, PageError> {
        if bytes.len() < NEIGHBORS_HEADER_SIZE || bytes[0] != KIND_NEIGHBORS {
            return err("not a neighbor item");
        }
        let level = bytes[1] as usize;
        if u16_at(bytes, 2) as usize != m || level > max_level(m) || bytes.len() != neighbor_item_size(m, level) {
            return err(format!("bad neighbor item level={level} len={}", bytes.len()));
        }
        Ok(NeighborsRef { bytes, m })
    }

    /// Top layer these lists cover.
    pub fn level(&self) -> usize {
        self.bytes[1] as usize
    }

    /// Appends the valid neighbors on `layer` to `out`, selected links
    /// first, then spare ones (nothing above `level`). Returns how many of
    /// them are spare links: those from the first slot marked spare on.
    pub fn read_layer(&self, layer: usize, out: &mut Vec<ItemPointer>) -> usize {
        if layer > self.level() {
            return 0;
        }
        let (first, count) = layer_slots(self.m, layer);
        let mut spare = 0;
        for i in 0..count {
            let mut t = ItemPointer::read(self.bytes, NEIGHBORS_HEADER_SIZE + SLOT_SIZE * (first + i));
            let marked = t.offset & SPARE_BIT != 0;
            t.offset &= !SPARE_BIT;
            if !t.is_valid() {
                break;
            }
            if marked || spare > 0 {
                spare += 1;
            }
            out.push(t);
        }
        spare
    }
}

/// One layer's list as read from a neighbor item: its links, selected first,
/// and how many of them, at the end, are spare links.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerList {
    /// Selected links, then spare links.
    pub links: Vec<ItemPointer>,
    /// Spare links at the end of `links`.
    pub spare: usize,
}

impl LayerList {
    /// The selected links.
    pub fn selected(&self) -> &[ItemPointer] {
        &self.links[..self.links.len() - self.spare]
    }

    /// Appends selected link `to` to a list of `max` slots
    /// ([`append_selected`](crate::hnsw::graph::append_selected): a spare
    /// link gives up its slot if none is free). Fewer than `max` links must
    /// be selected.
    pub fn append(&mut self, to: ItemPointer, max: usize) {
        let selected = self.links.len() - self.spare;
        self.links.resize(max, ItemPointer::INVALID);
        let (count, spare) = crate::hnsw::graph::append_selected(&mut self.links, selected, self.spare, to);
        self.links.truncate(count + spare);
        self.spare = spare;
    }
}

/// Replaces the list of `layer` in a neighbor item in place (validated
/// first), its last `spare` links spare links.
pub fn set_layer(
    bytes: &mut [u8],
    m: usize,
    layer: usize,
    list: &[ItemPointer],
    spare: usize,
) -> Result<(), PageError> {
    let level = NeighborsRef::new(bytes, m)?.level();
    if layer > level || list.len() > layer_slots(m, layer).1 || spare > list.len() {
        return err(format!("layer {layer} with {} links ({spare} spare) does not fit level {level}", list.len()));
    }
    write_layer(bytes, m, layer, list, spare);
    Ok(())
}

/// Empties every list of a neighbor item in place (validated first).
pub fn clear_neighbors(bytes: &mut [u8], m: usize) -> Result<(), PageError> {
    let level = NeighborsRef::new(bytes, m)?.level();
    for layer in 0..=level {
        write_layer(bytes, m, layer, &[], 0);
    }
    Ok(())
}

/// Formats `page` as an empty key directory page (a graph page flagged
/// [`DIRECTORY_PAGE`], no next page).
pub fn init_directory_page(page: &mut [u8]) {
    init_page(page, PageKind::Graph);
    page[SPECIAL_OFFSET + 3] = DIRECTORY_PAGE;
}

/// Whether a graph page (already validated by [`PageRef::new`]) is a key
/// directory page: it holds directory entries only, and no element or
/// neighbor item is ever put on it.
pub fn is_directory_page(page: &[u8]) -> bool {
    page.len() == BLCKSZ && page[SPECIAL_OFFSET + 3] == DIRECTORY_PAGE
}

/// The next page of the directory chain after directory page `page`
/// (`None`: it is the last).
pub fn directory_next(page: &[u8]) -> Option<u32> {
    Some(u32_at(page, SPECIAL_OFFSET + 4)).filter(|&b| b != 0)
}

/// Links directory page `page` to `next`.
pub fn set_directory_next(page: &mut [u8], next: u32) {
    put_u32(page, SPECIAL_OFFSET + 4, next);
}

/// Bytes of a directory entry before its key blob.
pub const DIRECTORY_ENTRY_HEADER: usize = 10;

/// One entry of the key directory: the element at `element`, stored with
/// reuse count `version`, has key blob `keys`. An entry is a hint that the
/// element may match: a reader checks the element itself (live, same
/// version, keys that match) before using it, so entries left behind by a
/// freed or reused element only cost a read until VACUUM drops them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectoryEntry<'a> {
    /// The element item's address.
    pub element: ItemPointer,
    /// Its version (reuse count) when the entry was written.
    pub version: u8,
    /// Its key blob ([`super::keys`]).
    pub keys: &'a [u8],
}

impl<'a> DirectoryEntry<'a> {
    /// Encodes the entry as an item: `kind u8 | version u8 | keys_len u16 |
    /// element ItemPointer (6) | keys`.
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.keys.len() <= u16::MAX as usize);
        let mut b = vec![0u8; DIRECTORY_ENTRY_HEADER + self.keys.len()];
        b[0] = KIND_DIRECTORY;
        b[1] = self.version;
        put_u16(&mut b, 2, self.keys.len() as u16);
        self.element.write(&mut b, 4);
        b[DIRECTORY_ENTRY_HEADER..].copy_from_slice(self.keys);
        b
    }

    /// Decodes and checks a directory entry item (bytes bounds-checked by
    /// [`PageRef::item`]).
    pub fn read(item: &'a [u8]) -> Result<DirectoryEntry<'a>, PageError> {
        if item.len() < DIRECTORY_ENTRY_HEADER || item[0] != KIND_DIRECTORY {
            return err(format!("not a directory entry ({} bytes)", item.len()));
        }
        let len = u16_at(item, 2) as usize;
        if DIRECTORY_ENTRY_HEADER + len != item.len() {
            return err(format!("directory entry of {} bytes with {len} key bytes", item.len()));
        }
        let element = ItemPointer::read(item, 4);
        if !element.is_valid() || element.block == META_BLOCK {
            return err(format!("directory entry for element ({},{})", element.block, element.offset));
        }
        Ok(DirectoryEntry { element, version: item[1], keys: &item[DIRECTORY_ENTRY_HEADER..] })
    }
}

/// Whether an item is a directory entry.
pub fn is_directory_item(bytes: &[u8]) -> bool {
    bytes.first() == Some(&KIND_DIRECTORY)
}

/// Rewrites directory page `page` keeping only the entries `keep` accepts
/// (in their order; the page's chain link stays). Returns how many it
/// dropped. Only directory pages may be rewritten this way: nothing keeps
/// the address of a directory entry.
pub fn compact_directory_page(
    page: &mut [u8],
    mut keep: impl FnMut(&DirectoryEntry<'_>) -> bool,
) -> Result<usize, PageError> {
    let r = PageRef::new(page, PageKind::Graph)?;
    if !is_directory_page(page) {
        return err("not a directory page");
    }
    let mut kept: Vec<Vec<u8>> = Vec::new();
    let mut dropped = 0;
    for offset in 1..=r.max_offset() {
        let item = r.item(offset)?;
        let entry = DirectoryEntry::read(item)?;
        if keep(&entry) {
            kept.push(item.to_vec());
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        let next = directory_next(page);
        init_directory_page(page);
        set_directory_next(page, next.unwrap_or(0));
        for item in &kept {
            add_item(page, item).expect("kept entries fit the page they came from");
        }
    }
    Ok(dropped)
}

/// One block's worth of bytes, aligned like a shared buffer so items can be
/// read in place.
#[repr(C, align(8))]
#[derive(Clone)]
pub struct PageImage(pub [u8; BLCKSZ]);

impl PageImage {
    /// An initialized empty page of `kind`.
    pub fn new(kind: PageKind) -> Box<PageImage> {
        let mut p = Box::new(PageImage([0; BLCKSZ]));
        init_page(&mut p.0, kind);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::Metric;

    fn tid(block: u32, offset: u16) -> ItemPointer {
        ItemPointer { block, offset }
    }

    fn dense(metric: Metric, dims: usize) -> Codec {
        Codec::Vector { metric, dims, codes: crate::hnsw::codec::VectorCodes::Half }
    }

    fn payload(codec: &Codec, v: &[f32]) -> Vec<u8> {
        codec.encode(&codec.prepare_dense(v).unwrap().unwrap())
    }

    /// The invariant that lets scans read element items under a pin only
    /// (`pinned_item_range` in storage.rs, instead of pgvector's share lock
    /// to locate an item): on a graph page, items never move. Every edit
    /// the access method makes to one (adding items; heap TIDs, the deleted
    /// and free flags and reuse of an element; rewriting and clearing
    /// neighbor lists) leaves every existing line pointer as it was, and
    /// reuse keeps an element's length. Only key directory pages are
    /// compacted, and scans read those under the share lock.
    #[test]
    fn graph_page_items_never_move() {
        let codec = dense(Metric::L2, 8);
        let m = 4;
        let mut page = PageImage::new(PageKind::Graph);
        let p = payload(&codec, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        for i in 0..6u16 {
            let element = encode_element(0, &[tid(100 + i as u32, 1)], tid(1, 2 * i + 2), &[], &p);
            assert_eq!(add_item(&mut page.0, &element), Some(2 * i + 1));
            let neighbors = encode_neighbors(m, 1, &[vec![tid(1, 1)], vec![]], 0);
            assert_eq!(add_item(&mut page.0, &neighbors), Some(2 * i + 2));
        }
        let line_pointers = |page: &PageImage| -> Vec<u32> {
            let n = PageRef::new(&page.0, PageKind::Graph).unwrap().max_offset();
            (1..=n).map(|o| u32_at(&page.0, line_pointer_at(o))).collect()
        };
        let range =
            |page: &PageImage, offset: u16| PageRef::new(&page.0, PageKind::Graph).unwrap().item_range(offset).unwrap();
        let before = line_pointers(&page);
        let payload_at = |page: &PageImage, offset: u16| {
            ElementRef::new(&page.0[range(page, offset)], &codec, m).unwrap().payload().to_vec()
        };
        let stable = payload_at(&page, 3);
        // Edits of elements: heap TIDs, deleted, free, reuse.
        let r = range(&page, 1);
        let mut e = ElementMut::new(&mut page.0[r.clone()], &codec, m).unwrap();
        assert!(e.push_heap_tid(tid(200, 2)));
        e.retain_heap_tids(|t| t.block == 200);
        e.set_deleted();
        e.set_free();
        let len = r.len();
        e.reuse(0, tid(300, 3), &[], &payload(&codec, &[8.0; 8]));
        assert_eq!(range(&page, 1).len(), len, "reuse keeps the element's length");
        let r = range(&page, 5);
        ElementMut::new(&mut page.0[r], &codec, m).unwrap().set_deleted();
        // Edits of neighbor lists.
        let r = range(&page, 2);
        set_layer(&mut page.0[r.clone()], m, 0, &[tid(1, 3), tid(1, 5), tid(1, 7)], 1).unwrap();
        set_layer(&mut page.0[r.clone()], m, 1, &[tid(1, 9)], 0).unwrap();
        let r = range(&page, 4);
        clear_neighbors(&mut page.0[r], m).unwrap();
        // More items after them.
        let element = encode_element(0, &[tid(400, 1)], tid(1, 14), &[], &p);
        assert_eq!(add_item(&mut page.0, &element), Some(13));
        let after = line_pointers(&page);
        assert_eq!(after[..before.len()], before[..], "existing line pointers unchanged");
        assert_eq!(payload_at(&page, 3), stable, "an untouched element's bytes unchanged");
        assert!(compact_directory_page(&mut page.0, |_| false).is_err(), "graph pages are never compacted");
    }

    #[test]
    fn directory_pages_chain_and_compact() {
        let mut page = PageImage::new(PageKind::Graph);
        init_directory_page(&mut page.0);
        assert!(is_directory_page(&page.0));
        assert!(!is_directory_page(&PageImage::new(PageKind::Graph).0));
        assert_eq!(directory_next(&page.0), None);
        set_directory_next(&mut page.0, 9);
        assert_eq!(directory_next(&page.0), Some(9));
        let keys: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; (i % 7) as usize]).collect();
        for (i, k) in keys.iter().enumerate() {
            let e = DirectoryEntry { element: tid(i as u32 + 1, 3), version: i as u8, keys: k };
            assert_eq!(add_item(&mut page.0, &e.encode()), Some(i as u16 + 1));
        }
        let r = PageRef::new(&page.0, PageKind::Graph).unwrap();
        let e = DirectoryEntry::read(r.item(5).unwrap()).unwrap();
        assert_eq!((e.element, e.version, e.keys), (tid(5, 3), 4, &keys[4][..]));
        assert!(is_directory_item(r.item(5).unwrap()) && !is_element_item(r.item(5).unwrap()));
        // Dropping the odd versions keeps the even ones in order, and the link.
        let dropped = compact_directory_page(&mut page.0, |e| e.version % 2 == 0).unwrap();
        assert_eq!(dropped, 25);
        let r = PageRef::new(&page.0, PageKind::Graph).unwrap();
        assert_eq!(r.max_offset(), 25);
        let versions: Vec<u8> = (1..=25).map(|o| DirectoryEntry::read(r.item(o).unwrap()).unwrap().version).collect();
        assert_eq!(versions, (0..50).step_by(2).collect::<Vec<u8>>());
        assert_eq!(directory_next(&page.0), Some(9));
        assert!(is_directory_page(&page.0));
        // Damaged entries are errors, not panics.
        let good = DirectoryEntry { element: tid(2, 1), version: 0, keys: &[1, 2, 3] }.encode();
        assert!(DirectoryEntry::read(&good[..good.len() - 1]).is_err());
        assert!(DirectoryEntry::read(&good[..4]).is_err());
        let mut meta_tid = good.clone();
        meta_tid[4..8].fill(0);
        assert!(DirectoryEntry::read(&meta_tid).is_err());
        // Only directory pages are compacted.
        let mut graph = PageImage::new(PageKind::Graph);
        assert!(compact_directory_page(&mut graph.0, |_| false).is_err());
    }

    #[test]
    fn meta_round_trips_and_rejects_damage() {
        let meta = Meta {
            codec: dense(Metric::Cosine, 384),
            m: 16,
            ef_construction: 64,
            entry: Some((tid(3, 2), 4)),
            free_hint: Some(7),
            healed_blocks: 12,
            keys_head: Some(40),
            keys_hint: Some(41),
        };
        let mut page = PageImage::new(PageKind::Meta);
        meta.write_page(&mut page.0);
        assert_eq!(Meta::read_page(&page.0).unwrap(), meta);
        for codec in [
            Codec::HalfVec { metric: Metric::L1, dims: 4000 },
            Codec::Bit { metric: crate::hnsw::codec::BitMetric::Jaccard, bits: 64000 },
            Codec::SparseVec { metric: Metric::InnerProduct, dims: 1_000_000_000 },
            Codec::Vector { metric: Metric::L2, dims: 7, codes: crate::hnsw::codec::VectorCodes::Int8 },
        ] {
            let m = Meta { codec, ..meta };
            m.write_page(&mut page.0);
            assert_eq!(Meta::read_page(&page.0).unwrap(), m);
        }

        let empty = Meta { entry: None, free_hint: None, ..meta };
        empty.write_page(&mut page.0);
        assert_eq!(Meta::read_page(&page.0).unwrap().entry, None);

        // A meta page written before `healed_blocks` existed (pd_lower at
        // 40 bytes of meta data, zeros after) reads 0.
        let mut old = page.clone();
        meta.write_page(&mut old.0);
        old.0[PAGE_HEADER_SIZE + 40..PAGE_HEADER_SIZE + 56].fill(0);
        put_u16(&mut old.0, 12, (PAGE_HEADER_SIZE + 40) as u16);
        assert_eq!(
            Meta::read_page(&old.0).unwrap(),
            Meta { healed_blocks: 0, keys_head: None, keys_hint: None, ..meta }
        );
        // Format 5 (no key directory) reads with no directory.
        let mut v5 = page.clone();
        Meta { keys_head: None, keys_hint: None, ..meta }.write_page(&mut v5.0);
        put_u32(&mut v5.0, PAGE_HEADER_SIZE + 4, 5);
        assert_eq!(Meta::read_page(&v5.0).unwrap().keys_head, None);

        // Format 4 (no spare links) reads as it is; 3 does not.
        let mut v4 = page.clone();
        put_u32(&mut v4.0, PAGE_HEADER_SIZE + 4, 4);
        assert_eq!(Meta::read_page(&v4.0).unwrap(), Meta::read_page(&page.0).unwrap());
        put_u32(&mut v4.0, PAGE_HEADER_SIZE + 4, 3);
        assert!(Meta::read_page(&v4.0).unwrap_err().0.contains("version 3"));

        let mut bad = page.clone();
        bad.0[PAGE_HEADER_SIZE] ^= 0xFF;
        assert!(Meta::read_page(&bad.0).unwrap_err().0.contains("magic"));
        let mut bad = page.clone();
        bad.0[PAGE_HEADER_SIZE + 4] = 9;
        assert!(Meta::read_page(&bad.0).unwrap_err().0.contains("version"));
        let mut bad = page.clone();
        bad.0[PAGE_HEADER_SIZE + 36] = 9;
        assert!(Meta::read_page(&bad.0).is_err(), "unknown element kind");
        let mut bad = page.clone();
        put_u32(&mut bad.0, PAGE_HEADER_SIZE + 8, 5000);
        assert!(Meta::read_page(&bad.0).is_err(), "too many dimensions for vector");
        let mut bad = page.clone();
        bad.0[SPECIAL_OFFSET] = 0;
        assert!(Meta::read_page(&bad.0).is_err());
        assert!(Meta::read_page(&[0u8; BLCKSZ]).is_err(), "zeroed page");
    }

    #[test]
    fn items_are_added_until_full_and_read_back() {
        let codec = dense(Metric::L2, 384);
        let mut page = PageImage::new(PageKind::Graph);
        let vector: Vec<f32> = (0..384).map(|i| i as f32 * 0.5).collect();
        let item = encode_element(1, &[tid(7, 1)], tid(1, 2), &[], &payload(&codec, &vector));
        assert_eq!(item.len(), 808, "24 (two heap TID slots) + 4 + 2·384 + 12");
        let mut offsets = Vec::new();
        while let Some(off) = add_item(&mut page.0, &item) {
            offsets.push(off);
        }
        assert_eq!(offsets, (1..=10).collect::<Vec<u16>>(), "10 elements of 808 bytes fit an 8 KB page");
        let p = PageRef::new(&page.0, PageKind::Graph).unwrap();
        let e = ElementRef::new(p.item(3).unwrap(), &codec, 16).unwrap();
        assert_eq!(e.level(), 1);
        assert_eq!(e.heap_tid(0), tid(7, 1));
        assert_eq!(e.neighbors(), tid(1, 2));
        let mut decoded = Vec::new();
        codec.decode(e.payload(), &mut decoded);
        let decoded: Vec<f32> = decoded.into_iter().map(f32::from_bits).collect();
        assert_eq!(decoded, vector, "i/2 for i < 384 is exact in half precision with scale 128");
        assert!(p.item(11).is_err());
        assert!(p.item(0).is_err());
        assert!(ElementRef::new(p.item(1).unwrap(), &dense(Metric::L2, 382), 16).is_err(), "wrong dims");
    }

    #[test]
    fn element_head_is_what_a_scan_copies_out() {
        let codec = dense(Metric::L2, 2);
        let mut item = encode_element(2, &[tid(1, 1), tid(1, 2)], tid(5, 6), &[], &payload(&codec, &[1.0, 2.0]));
        let head = ElementHead::parse(item.first_chunk().unwrap(), 16).unwrap();
        assert_eq!((head.level, head.heap_tids, head.neighbors, head.capacity), (2, 2, tid(5, 6), 2));
        assert!(!head.is_deleted() && !head.is_free());
        ElementMut::new(&mut item, &codec, 16).unwrap().set_deleted();
        assert!(ElementHead::parse(item.first_chunk().unwrap(), 16).unwrap().is_deleted());
        item[1] = 3;
        assert!(ElementHead::parse(item.first_chunk().unwrap(), 16).is_err(), "level above capacity");
    }

    #[test]
    fn neighbor_lists_update_in_place_per_layer() {
        let m = 4;
        let lists = vec![vec![tid(1, 1), tid(1, 2)], vec![tid(2, 1)]];
        let mut item = encode_neighbors(m, 1, &lists, 1);
        assert_eq!(item.len(), neighbor_item_size(m, 1));
        let mut out = Vec::new();
        let n = NeighborsRef::new(&item, m).unwrap();
        assert_eq!(n.read_layer(0, &mut out), 1, "the last layer-0 link is spare");
        assert_eq!(out, vec![tid(1, 1), tid(1, 2)], "spare links read unmarked");
        out.clear();
        set_layer(&mut item, m, 0, &[tid(5, 5)], 0).unwrap();
        let n = NeighborsRef::new(&item, m).unwrap();
        assert_eq!(n.read_layer(0, &mut out), 0);
        assert_eq!(out, vec![tid(5, 5)]);
        out.clear();
        assert_eq!(n.read_layer(1, &mut out), 0);
        assert_eq!(out, vec![tid(2, 1)]);
        out.clear();
        n.read_layer(2, &mut out);
        assert!(out.is_empty());
        assert!(set_layer(&mut item, m, 2, &[tid(1, 1)], 0).is_err(), "no layer 2");
        assert!(set_layer(&mut item, m, 1, &[tid(1, 1); 5], 0).is_err(), "over M");
        assert!(set_layer(&mut item, m, 0, &[tid(1, 1)], 2).is_err(), "more spare links than links");
        // A full layer 0: six selected links and two spare ones.
        let full: Vec<ItemPointer> = (1..=8).map(|i| tid(9, i)).collect();
        set_layer(&mut item, m, 0, &full, 2).unwrap();
        out.clear();
        assert_eq!(NeighborsRef::new(&item, m).unwrap().read_layer(0, &mut out), 2);
        assert_eq!(out, full);
        let marked = |i: usize| u16_at(&item, NEIGHBORS_HEADER_SIZE + SLOT_SIZE * i + 4) & SPARE_BIT != 0;
        assert_eq!((0..8).map(marked).collect::<Vec<_>>(), [false, false, false, false, false, false, true, true]);
    }

    #[test]
    fn corrupt_line_pointers_and_items_are_errors_not_panics() {
        let codec = dense(Metric::L2, 2);
        let mut page = PageImage::new(PageKind::Graph);
        let item = encode_element(0, &[tid(1, 1)], tid(1, 2), &[], &payload(&codec, &[1.0, 2.0]));
        add_item(&mut page.0, &item).unwrap();
        // Line pointer pointing past the special space.
        let mut bad = page.clone();
        put_u32(&mut bad.0, PAGE_HEADER_SIZE, (8190u32) | (1 << 15) | (100 << 17));
        assert!(PageRef::new(&bad.0, PageKind::Graph).unwrap().item(1).is_err());
        // pd_lower beyond pd_upper.
        let mut bad = page.clone();
        put_u16(&mut bad.0, 12, 9000);
        assert!(PageRef::new(&bad.0, PageKind::Graph).is_err());
        // Element claiming too many heap TIDs.
        let mut raw = item.clone();
        raw[3] = 11;
        assert!(ElementRef::new(&raw, &codec, 16).is_err());
        // Neighbor item whose length does not match its level.
        let mut n = encode_neighbors(4, 0, &[], 0);
        n[1] = 3;
        assert!(NeighborsRef::new(&n, 4).is_err());
        // Random garbage never panics, for every codec.
        let codecs = [
            codec,
            Codec::HalfVec { metric: Metric::Cosine, dims: 2 },
            Codec::Bit { metric: crate::hnsw::codec::BitMetric::Hamming, bits: 70 },
            Codec::SparseVec { metric: Metric::L2, dims: 100 },
        ];
        let query = |c: &Codec| -> Vec<u32> {
            match c {
                Codec::Bit { .. } => c.prepare_bits(70, &[0xAB; 9]).unwrap().unwrap(),
                Codec::SparseVec { .. } => c.prepare_sparse(100, &[3, 50], &[1.0, -2.0]).unwrap().unwrap(),
                _ => c.prepare_dense(&[1.0, 2.0]).unwrap().unwrap(),
            }
        };
        let mut seed = 12345u64;
        for round in 0..2000 {
            let mut junk = [0u8; BLCKSZ];
            for b in junk.iter_mut() {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                *b = (seed >> 56) as u8;
            }
            junk[18..20].copy_from_slice(&((BLCKSZ as u16) | 4).to_ne_bytes());
            junk[SPECIAL_OFFSET..SPECIAL_OFFSET + 2].copy_from_slice(&PAGE_ID.to_ne_bytes());
            junk[SPECIAL_OFFSET + 2] = PageKind::Graph as u8;
            let codec = &codecs[round % codecs.len()];
            let q = query(codec);
            if let Ok(p) = PageRef::new(&junk, PageKind::Graph) {
                for off in 0..=p.max_offset().min(50) {
                    if let Ok(bytes) = p.item(off) {
                        let _ = ElementRef::new(bytes, codec, 16).map(|e| {
                            let mut out = Vec::new();
                            codec.decode(e.payload(), &mut out);
                            (
                                codec.distance_to_payload(&q, e.payload()),
                                codec.order_value(1.0, codec.query_norms(&q), e.payload()),
                            )
                        });
                        let _ = NeighborsRef::new(bytes, 16);
                    }
                }
            }
            let _ = Meta::read_page(&junk);
        }
    }

    #[test]
    fn heap_tids_push_retain_and_reuse() {
        let codec = dense(Metric::L2, 1);
        let ten: Vec<ItemPointer> = (1..=10).map(|i| tid(1, i)).collect();
        let mut item = encode_element(0, &ten[..4], tid(9, 9), &[], &payload(&codec, &[1.0]));
        let head = ElementRef::new(&item, &codec, 16).unwrap().head();
        assert_eq!((head.heap_tids, head.tid_slots), (4, 4), "no padding to fill: as many slots as TIDs");
        let mut e = ElementMut::new(&mut item, &codec, 16).unwrap();
        assert!(!e.push_heap_tid(tid(1, 5)), "full at its slots");
        assert_eq!(e.retain_heap_tids(|t| t.offset % 2 == 0), 2);
        e.set_deleted();
        let r = ElementRef::new(&item, &codec, 16).unwrap();
        assert_eq!(r.heap_tid_count(), 2);
        assert!(r.is_deleted() && !r.is_free());
        let mut e = ElementMut::new(&mut item, &codec, 16).unwrap();
        assert!(e.push_heap_tid(tid(1, 11)));
        e.set_free();
        assert!(ElementRef::new(&item, &codec, 16).unwrap().is_free());
        let mut e = ElementMut::new(&mut item, &codec, 16).unwrap();
        e.reuse(0, tid(4, 4), &[], &payload(&codec, &[2.0]));
        let r = ElementRef::new(&item, &codec, 16).unwrap();
        assert_eq!(r.head().tid_slots, 4, "a reused element keeps its slots");
        assert!(!r.is_deleted() && !r.is_free());
        let mut decoded = Vec::new();
        codec.decode(r.payload(), &mut decoded);
        assert_eq!((r.heap_tid_count(), r.heap_tid(0), r.neighbors()), (1, tid(4, 4), tid(9, 9)));
        assert_eq!(r.head().version, 1, "reuse bumps the version");
        assert_eq!(decoded, vec![2.0f32.to_bits()]);
    }

    #[test]
    fn element_headers_are_sized_to_their_heap_tids() {
        let codec = dense(Metric::L2, 1);
        let p = payload(&codec, &[1.0]);
        for n in 1..=MAX_HEAP_TIDS {
            let tids: Vec<ItemPointer> = (1..=n as u16).map(|i| tid(1, i)).collect();
            let item = encode_element(0, &tids, tid(9, 9), &[], &p);
            let head = ElementRef::new(&item, &codec, 16).unwrap().head();
            let slots = head.tid_slots as usize;
            assert!(slots >= n && item.len() == element_header_size(slots) + p.len());
            // Only slots the alignment padding pays for are added.
            assert_eq!(item.len().next_multiple_of(8), (element_header_size(n) + p.len()).next_multiple_of(8));
            assert!(
                slots == MAX_HEAP_TIDS || element_header_size(slots + 1) + p.len() > item.len().next_multiple_of(8)
            );
        }
        assert_eq!((element_header_size(1), element_header_size(2), element_header_size(MAX_HEAP_TIDS)), (20, 24, 72));
        // A 384-dimension half-precision payload (16 + 768 bytes): the padding
        // of a one-slot header pays for a second slot.
        assert_eq!((tid_slots_for(1, 784), element_item_size(1, 784)), (2, 808));
        // Formats 4-6: ten slots, stored as a zero nibble; still read.
        let mut legacy = vec![0u8; 72 + p.len()];
        legacy[0] = KIND_ELEMENT;
        legacy[3] = 3;
        tid(9, 9).write(&mut legacy, 4);
        for i in 0..3 {
            tid(2, i as u16 + 1).write(&mut legacy, HEAP_TIDS_AT + SLOT_SIZE * i);
        }
        legacy[72..].copy_from_slice(&p);
        let r = ElementRef::new(&legacy, &codec, 16).unwrap();
        assert_eq!((r.heap_tid_count(), r.head().tid_slots, r.heap_tid(2), r.payload()), (3, 10, tid(2, 3), &p[..]));
        let mut e = ElementMut::new(&mut legacy, &codec, 16).unwrap();
        for i in 4..=10 {
            assert!(e.push_heap_tid(tid(2, i)));
        }
        assert!(!e.push_heap_tid(tid(2, 11)));
        // More TIDs than slots, or more than ten slots, is corrupt.
        let mut bad = encode_element(0, &[tid(1, 1)], tid(9, 9), &[], &p);
        bad[3] = (1 << 4) | 2;
        assert!(ElementRef::new(&bad, &codec, 16).is_err());
        bad[3] = (11 << 4) | 1;
        assert!(ElementRef::new(&bad, &codec, 16).is_err());
    }

    #[test]
    fn keyed_elements_keep_keys_apart_from_the_payload() {
        use crate::hnsw::keys::{encode, KeyValue};
        let codec = dense(Metric::L2, 2);
        let keys = encode(&[KeyValue::int(7), KeyValue::set(vec![1, 2])]).unwrap();
        let p = payload(&codec, &[1.0, 2.0]);
        let mut item = encode_element(0, &[tid(1, 1)], tid(9, 9), &keys, &p);
        assert_eq!(item.len(), element_item_size(1, keys_size(keys.len()) + p.len()));
        let header = ElementRef::new(&item, &codec, 16).unwrap().head().header_size();
        assert_eq!(item.len(), header + keys_size(keys.len()) + p.len());
        assert_eq!(keys_size(keys.len()) % 4, 0);
        let r = ElementRef::new(&item, &codec, 16).unwrap();
        assert!(r.head().has_keys());
        assert_eq!((r.keys(), r.payload()), (&keys[..], &p[..]));
        let mut e = ElementMut::new(&mut item, &codec, 16).unwrap();
        assert_eq!(e.keys(), &keys[..]);
        let slots = ElementRef::new(e.bytes, &codec, 16).unwrap().head().tid_slots;
        assert_eq!(e.push_duplicate(tid(1, 2), &codec, &p), slots > 1);
        e.set_free();
        // Reused with a shorter blob: the payload moves up, zero padding after it.
        let short = encode(&[KeyValue::Null, KeyValue::Null]).unwrap();
        let q = payload(&codec, &[3.0, 4.0]);
        assert!(e.fits(short.len(), q.len()) && !e.fits(keys.len() + 64, q.len()));
        e.reuse(0, tid(2, 2), &short, &q);
        let r = ElementRef::new(&item, &codec, 16).unwrap();
        assert_eq!(r.payload().len(), q.len(), "a dense payload keeps its length");
        assert_eq!(r.keys(), &short[..]);
        assert!(codec.same_vector(r.payload(), &q));
        // A key length beyond the item is corrupt, not a panic.
        let mut bad = encode_element(0, &[tid(1, 1)], tid(9, 9), &keys, &p);
        bad[header + 2] = 0xfc;
        assert!(ElementRef::new(&bad, &codec, 16).is_err());
        bad[header + 2] = 6;
        assert!(ElementRef::new(&bad, &codec, 16).is_err(), "unaligned area");
        bad.truncate(header + 1);
        assert!(ElementRef::new(&bad, &codec, 16).is_err());
    }

    #[test]
    fn sparse_elements_reuse_larger_items() {
        let codec = Codec::SparseVec { metric: Metric::L2, dims: 10 };
        let big = codec.encode(&codec.prepare_sparse(10, &[1, 2, 3], &[1.0, 2.0, 3.0]).unwrap().unwrap());
        let small = codec.encode(&codec.prepare_sparse(10, &[7], &[5.0]).unwrap().unwrap());
        let mut item = encode_element(0, &[tid(1, 1)], tid(9, 9), &[], &big);
        let mut e = ElementMut::new(&mut item, &codec, 16).unwrap();
        e.set_free();
        e.reuse(0, tid(2, 2), &[], &small);
        let r = ElementRef::new(&item, &codec, 16).unwrap();
        let q = codec.prepare_sparse(10, &[7], &[5.0]).unwrap().unwrap();
        assert_eq!(codec.distance_to_payload(&q, r.payload()), 0.0, "padding after the pairs is ignored");
        assert!(codec.same_vector(r.payload(), &small));
    }

    #[test]
    fn duplicates_widen_the_error_bounds() {
        let codec = dense(Metric::L2, 3);
        let x = [0.1f32, 0.2, 0.3];
        let near = [0.1f32 + 1e-6, 0.2, 0.3];
        let (px, pn) = (payload(&codec, &x), payload(&codec, &near));
        let mut item = encode_element(0, &[tid(1, 1)], tid(9, 9), &[], &px);
        assert!(codec.same_vector(ElementRef::new(&item, &codec, 16).unwrap().payload(), &pn), "same codes");
        let q = codec.prepare_dense(&near).unwrap().unwrap();
        let norms = codec.query_norms(&codec.prepare_dense(&near).unwrap().unwrap());
        let before = codec.order_value(0.0, norms, &px);
        let mut e = ElementMut::new(&mut item, &codec, 16).unwrap();
        assert!(e.push_duplicate(tid(1, 2), &codec, &pn));
        let r = ElementRef::new(&item, &codec, 16).unwrap();
        assert_eq!(r.heap_tid_count(), 2);
        let after = codec.order_value(0.0, norms, r.payload());
        assert!(after <= before, "wider error bounds give a lower (still valid) bound");
        assert!(codec.distance_to_payload(&q, r.payload()) >= 0.0);
        assert!(!codec.same_vector(r.payload(), &payload(&codec, &[0.1, 0.2, 0.31])));
    }

    #[test]
    fn limits_fit_a_page() {
        use crate::hnsw::codec::{BitMetric, MAX_BITS, MAX_DENSE_DIMS, MAX_SPARSE_NNZ};
        for codec in [
            dense(Metric::L2, MAX_DENSE_DIMS),
            Codec::HalfVec { metric: Metric::L2, dims: MAX_DENSE_DIMS },
            Codec::Bit { metric: BitMetric::Hamming, bits: MAX_BITS },
            Codec::SparseVec { metric: Metric::L2, dims: 100_000 },
        ] {
            let size = element_item_size(MAX_HEAP_TIDS, codec.max_payload_len());
            assert!(item_footprint(size) <= EMPTY_PAGE_SPACE, "{codec:?}: {size} bytes");
        }
        assert_eq!(Codec::SparseVec { metric: Metric::L2, dims: 100_000 }.max_payload_len(), 4 + 8 * MAX_SPARSE_NNZ);
        for m in [2, 16, 48, 100] {
            assert!(item_footprint(neighbor_item_size(m, max_level(m))) <= EMPTY_PAGE_SPACE, "m={m}");
        }
    }
}
