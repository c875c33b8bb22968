//! The on-disk format of an `hnsw` index, encoded and decoded in pure Rust.
//!
//! Every page is a standard PostgreSQL page (24-byte header, line pointers
//! growing down from the header, items growing up from the special space), so
//! checksums, `GenericXLog` deltas and `pageinspect` work unchanged; an 8-byte
//! special space ([`Special`]) marks it as ours.
//!
//! - Block 0 is the **meta page** ([`Meta`]): magic number, format version,
//!   dimensions, `M`, `ef_construction`, metric and the entry point.
//! - Other blocks are **graph pages** holding two kinds of items:
//!   - an **element item**: level, deleted flag, up to
//!     [`MAX_HEAP_TIDS`] heap TIDs, the address of its neighbor item and the
//!     vector in half precision with its scale and rounding error
//!     ([`HalfVector`], `88 + 2·dims` bytes);
//!   - a **neighbor item**: `2·M` slots for layer 0 and `M` for each layer
//!     above (`4 + 6·M·(level + 2)` bytes), updated in place so a new link
//!     never rewrites the vector.
//!
//! Bytes read from disk are checked ([`PageRef::new`], [`ElementRef::new`],
//! [`NeighborsRef::new`]) before any field is used; a bad page is a
//! [`PageError`], never a panic or an out-of-bounds read.

use crate::distance::{HalfVector, Metric};
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
/// Version of this format, checked on every open.
pub const FORMAT_VERSION: u32 = 3;
/// Tag in every page's special space identifying an `hnsw` page.
pub const PAGE_ID: u16 = 0xFF91;
/// Most dimensions an indexed vector may have: an element item must fit a page.
pub const MAX_INDEX_DIMS: usize = 2000;

/// Bytes of an element item before its vector.
pub const ELEMENT_HEADER_SIZE: usize = 88;
/// Where the element header's vector fields begin (after the heap TIDs).
const VECTOR_FIELDS: usize = 72;
/// Bytes of a neighbor item before its slots.
pub const NEIGHBORS_HEADER_SIZE: usize = 4;
/// Bytes per neighbor slot (block u32, offset u16).
pub const SLOT_SIZE: usize = 6;

const KIND_ELEMENT: u8 = 1;
const KIND_NEIGHBORS: u8 = 2;
const FLAG_DELETED: u8 = 1;
const FLAG_FREE: u8 = 2;

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

/// The 8-byte special space: `page_id u16 | kind u8 | reserved u8 | reserved u32`.
pub struct Special;

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
        if bytes.len() != BLCKSZ {
            return err(format!("page of {} bytes", bytes.len()));
        }
        let (lower, upper, special) =
            (u16_at(bytes, 12) as usize, u16_at(bytes, 14) as usize, u16_at(bytes, 16) as usize);
        if u16_at(bytes, 18) != BLCKSZ as u16 | PAGE_LAYOUT_VERSION
            || !(PAGE_HEADER_SIZE <= lower && lower <= upper && upper <= special && special == SPECIAL_OFFSET)
        {
            return err(format!("bad page header lower={lower} upper={upper} special={special}"));
        }
        Ok(PageRef { bytes, max_offset: ((lower - PAGE_HEADER_SIZE) / ITEM_ID_SIZE) as u16 })
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
        let lp = u32_at(self.bytes, PAGE_HEADER_SIZE + (offset as usize - 1) * ITEM_ID_SIZE);
        let (off, flags, len) = ((lp & 0x7FFF) as usize, (lp >> 15) & 3, (lp >> 17) as usize);
        let upper = u16_at(self.bytes, 14) as usize;
        if flags != 1 || off < upper || off + len > SPECIAL_OFFSET || off % MAXIMUM_ALIGNOF != 0 {
            return err(format!("bad line pointer {offset}: off={off} len={len} flags={flags}"));
        }
        Ok(off..off + len)
    }

    /// The bytes of item `offset`.
    pub fn item(&self, offset: u16) -> Result<&'a [u8], PageError> {
        Ok(&self.bytes[self.item_range(offset)?])
    }
}

/// The meta page's contents, stored right after the page header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Dimensions of every vector in the index.
    pub dims: u32,
    /// `M`.
    pub m: u32,
    /// `ef_construction`.
    pub ef_construction: u32,
    /// Distance the graph is built for.
    pub metric: Metric,
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
}

const META_SIZE: usize = 48;

impl Meta {
    /// Writes the meta page image (`page` is one block).
    pub fn write_page(&self, page: &mut [u8]) {
        init_page(page, PageKind::Meta);
        let b = &mut page[PAGE_HEADER_SIZE..PAGE_HEADER_SIZE + META_SIZE];
        put_u32(b, 0, MAGIC);
        put_u32(b, 4, FORMAT_VERSION);
        put_u32(b, 8, self.dims);
        put_u32(b, 12, self.m);
        put_u32(b, 16, self.ef_construction);
        put_u32(b, 20, self.metric as u32);
        let (entry, level) = self.entry.unwrap_or((ItemPointer::INVALID, 0));
        entry.write(b, 24);
        put_u16(b, 30, level);
        put_u32(b, 32, self.free_hint.unwrap_or(u32::MAX));
        put_u32(b, 40, self.healed_blocks);
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
        if u32_at(b, 4) != FORMAT_VERSION {
            return err(format!("unsupported format version {}", u32_at(b, 4)));
        }
        let (dims, m, ef_construction) = (u32_at(b, 8), u32_at(b, 12), u32_at(b, 16));
        if dims == 0 || dims as usize > MAX_INDEX_DIMS || !(2..=100).contains(&m) || ef_construction == 0 {
            return err(format!("bad parameters dims={dims} m={m} ef_construction={ef_construction}"));
        }
        let metric = u8::try_from(u32_at(b, 20)).ok().and_then(Metric::from_code);
        let Some(metric) = metric else {
            return err(format!("bad metric {}", u32_at(b, 20)));
        };
        let entry = ItemPointer::read(b, 24);
        let level = u16_at(b, 30);
        if entry.is_valid() && level as usize > max_level(m as usize) {
            return err(format!("entry level {level} too high"));
        }
        let entry = entry.is_valid().then_some((entry, level));
        let free_hint = Some(u32_at(b, 32)).filter(|&h| h != u32::MAX && h != 0);
        let healed_blocks = u32_at(b, 40);
        Ok(Meta { dims, m, ef_construction, metric, entry, free_hint, healed_blocks })
    }
}

/// Size of an element item for `dims`-dimensional vectors.
pub const fn element_item_size(dims: usize) -> usize {
    ELEMENT_HEADER_SIZE + 2 * dims
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

/// Encodes an element item: `kind u8 | level u8 | flags u8 | ntids u8 |
/// neighbors ItemPointer (6) | capacity u8 | reserved u8 | heap_tids [10 × 6] |
/// scale f32 | err_l2 f32 | err_l1 f32 | norm f32 | half codes u16[dims]`.
/// `capacity` is the level its neighbor item was sized for (a reused element
/// may have a lower level).
pub fn encode_element(level: usize, heap_tids: &[ItemPointer], neighbors: ItemPointer, vector: &HalfVector) -> Vec<u8> {
    assert!(heap_tids.len() <= MAX_HEAP_TIDS && level <= 255);
    let mut b = vec![0u8; element_item_size(vector.codes.len())];
    b[0] = KIND_ELEMENT;
    b[1] = level as u8;
    b[3] = heap_tids.len() as u8;
    neighbors.write(&mut b, 4);
    b[10] = level as u8;
    for (i, t) in heap_tids.iter().enumerate() {
        t.write(&mut b, 12 + SLOT_SIZE * i);
    }
    put_vector_fields(&mut b, vector.scale, vector.err_l2, vector.err_l1, vector.norm);
    for (i, c) in vector.codes.iter().enumerate() {
        put_u16(&mut b, ELEMENT_HEADER_SIZE + 2 * i, *c);
    }
    b
}

fn put_vector_fields(b: &mut [u8], scale: f32, err_l2: f32, err_l1: f32, norm: f32) {
    for (i, v) in [scale, err_l2, err_l1, norm].into_iter().enumerate() {
        put_u32(b, VECTOR_FIELDS + 4 * i, v.to_bits());
    }
}

fn f32_at(b: &[u8], at: usize) -> f32 {
    f32::from_bits(u32_at(b, at))
}

/// Whether an item (already bounds-checked by [`PageRef::item`]) is an
/// element item rather than a neighbor item.
pub fn is_element_item(bytes: &[u8]) -> bool {
    bytes.first() == Some(&KIND_ELEMENT)
}

/// A validated element item.
#[derive(Clone, Copy)]
pub struct ElementRef<'a> {
    bytes: &'a [u8],
}

impl<'a> ElementRef<'a> {
    /// Validates an element item of an index with `dims` dimensions and `M = m`.
    pub fn new(bytes: &'a [u8], dims: usize, m: usize) -> Result<ElementRef<'a>, PageError> {
        if bytes.len() != element_item_size(dims) || bytes[0] != KIND_ELEMENT {
            return err(format!(
                "not an element item (len {}, kind {})",
                bytes.len(),
                bytes.first().copied().unwrap_or(0)
            ));
        }
        if bytes[1] as usize > max_level(m) || bytes[1] > bytes[10] || bytes[3] as usize > MAX_HEAP_TIDS {
            return err(format!("bad element header level={} ntids={}", bytes[1], bytes[3]));
        }
        if (bytes.as_ptr() as usize + ELEMENT_HEADER_SIZE) % 2 != 0 {
            return err("misaligned element item");
        }
        Ok(ElementRef { bytes })
    }

    /// Top layer of the element.
    pub fn level(&self) -> usize {
        self.bytes[1] as usize
    }

    /// Whether VACUUM removed all its heap TIDs.
    pub fn is_deleted(&self) -> bool {
        self.bytes[2] & FLAG_DELETED != 0
    }

    /// Where its neighbor item is.
    pub fn neighbors(&self) -> ItemPointer {
        ItemPointer::read(self.bytes, 4)
    }

    /// Whether VACUUM freed it for reuse (no live link points to it).
    pub fn is_free(&self) -> bool {
        self.bytes[2] & FLAG_FREE != 0
    }

    /// The level its neighbor item has room for.
    pub fn capacity(&self) -> usize {
        self.bytes[10] as usize
    }

    /// Number of heap TIDs.
    pub fn heap_tid_count(&self) -> usize {
        self.bytes[3] as usize
    }

    /// Heap TID `i` (`i < heap_tid_count()`).
    pub fn heap_tid(&self, i: usize) -> ItemPointer {
        ItemPointer::read(self.bytes, 12 + SLOT_SIZE * i)
    }

    /// The vector's half-precision codes, read in place (length `dims`).
    pub fn codes(&self) -> &'a [u16] {
        // Alignment was checked in `new`, and the length is even.
        bytemuck::cast_slice(&self.bytes[ELEMENT_HEADER_SIZE..])
    }

    /// The power of two the codes are multiplied by.
    pub fn scale(&self) -> f32 {
        f32_at(self.bytes, VECTOR_FIELDS)
    }

    /// Upper bound of `‖x − stored‖₂` over the element's heap rows.
    pub fn err_l2(&self) -> f32 {
        f32_at(self.bytes, VECTOR_FIELDS + 4)
    }

    /// Upper bound of `‖x − stored‖₁` over the element's heap rows.
    pub fn err_l1(&self) -> f32 {
        f32_at(self.bytes, VECTOR_FIELDS + 8)
    }

    /// Upper bound of `‖x‖₂` over the element's heap rows.
    pub fn norm(&self) -> f32 {
        f32_at(self.bytes, VECTOR_FIELDS + 12)
    }

    /// The graph distance from `query` to the stored vector.
    #[inline]
    pub fn distance(&self, metric: Metric, query: &[f32]) -> f32 {
        metric.distance_half(query, self.codes(), self.scale())
    }

    /// The stored vector as `f32`, into `out`.
    pub fn decode(&self, out: &mut Vec<f32>) {
        HalfVector::decode(self.codes(), self.scale(), out)
    }

    /// Whether `v` encodes to exactly the stored codes and scale.
    pub fn same_codes(&self, v: &HalfVector) -> bool {
        self.scale() == v.scale && self.codes() == &v.codes[..]
    }
}

/// In-place edits of an element item (the bytes were validated as an
/// [`ElementRef`] first).
pub struct ElementMut<'a> {
    bytes: &'a mut [u8],
}

impl<'a> ElementMut<'a> {
    /// Validates and wraps an element item for writing.
    pub fn new(bytes: &'a mut [u8], dims: usize, m: usize) -> Result<ElementMut<'a>, PageError> {
        ElementRef::new(bytes, dims, m)?;
        Ok(ElementMut { bytes })
    }

    /// Whether VACUUM removed all its heap TIDs.
    pub fn is_deleted(&self) -> bool {
        self.bytes[2] & FLAG_DELETED != 0
    }

    /// Number of heap TIDs.
    pub fn heap_tid_count(&self) -> usize {
        self.bytes[3] as usize
    }

    /// Appends a heap TID; `false` if all slots are used.
    pub fn push_heap_tid(&mut self, tid: ItemPointer) -> bool {
        let n = self.bytes[3] as usize;
        if n >= MAX_HEAP_TIDS {
            return false;
        }
        tid.write(self.bytes, 12 + SLOT_SIZE * n);
        self.bytes[3] = n as u8 + 1;
        true
    }

    /// Keeps only the heap TIDs for which `keep` is true; returns how many
    /// were removed.
    pub fn retain_heap_tids(&mut self, mut keep: impl FnMut(ItemPointer) -> bool) -> usize {
        let n = self.bytes[3] as usize;
        let tids: Vec<ItemPointer> = (0..n).map(|i| ItemPointer::read(self.bytes, 12 + SLOT_SIZE * i)).collect();
        let kept: Vec<ItemPointer> = tids.into_iter().filter(|t| keep(*t)).collect();
        for (i, t) in kept.iter().enumerate() {
            t.write(self.bytes, 12 + SLOT_SIZE * i);
        }
        for i in kept.len()..n {
            ItemPointer::INVALID.write(self.bytes, 12 + SLOT_SIZE * i);
        }
        self.bytes[3] = kept.len() as u8;
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

    /// Where its neighbor item is.
    pub fn neighbors(&self) -> ItemPointer {
        ItemPointer::read(self.bytes, 4)
    }

    /// Marks a deleted element free for reuse (no live link points to it).
    pub fn set_free(&mut self) {
        self.bytes[2] |= FLAG_DELETED | FLAG_FREE;
        self.bytes[3] = 0;
    }

    /// Adds heap row `heap_tid`, whose vector `v` has the element's codes
    /// ([`ElementRef::same_codes`]), widening the stored error bounds to
    /// cover it; `false` if all heap-TID slots are used.
    pub fn push_duplicate(&mut self, heap_tid: ItemPointer, v: &HalfVector) -> bool {
        if !self.push_heap_tid(heap_tid) {
            return false;
        }
        let old = |i: usize| f32_at(self.bytes, VECTOR_FIELDS + 4 * i);
        let (scale, err_l2, err_l1, norm) = (old(0), old(1).max(v.err_l2), old(2).max(v.err_l1), old(3).max(v.norm));
        put_vector_fields(self.bytes, scale, err_l2, err_l1, norm);
        true
    }

    /// Rewrites a free element for a new vector at `level`, which must not
    /// exceed [`ElementMut::capacity`] (the neighbor item keeps its size).
    pub fn reuse(&mut self, level: usize, heap_tid: ItemPointer, vector: &HalfVector) {
        assert!(level <= self.capacity(), "reused element level above its capacity");
        let (neighbors, capacity) = (ItemPointer::read(self.bytes, 4), self.bytes[10]);
        let fresh = encode_element(level, &[heap_tid], neighbors, vector);
        self.bytes.copy_from_slice(&fresh);
        self.bytes[10] = capacity;
    }
}

/// Encodes a neighbor item with `lists[layer]` for layers `0..=level`
/// (`kind u8 | level u8 | m u16 | slots`, empty slots invalid).
pub fn encode_neighbors(m: usize, level: usize, lists: &[Vec<ItemPointer>]) -> Vec<u8> {
    let mut b = vec![0u8; neighbor_item_size(m, level)];
    b[0] = KIND_NEIGHBORS;
    b[1] = level as u8;
    put_u16(&mut b, 2, m as u16);
    for layer in 0..=level {
        let empty: Vec<ItemPointer> = Vec::new();
        write_layer(&mut b, m, layer, lists.get(layer).unwrap_or(&empty));
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

fn write_layer(b: &mut [u8], m: usize, layer: usize, list: &[ItemPointer]) {
    let (first, count) = layer_slots(m, layer);
    for i in 0..count {
        let t = list.get(i).copied().unwrap_or(ItemPointer::INVALID);
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

    /// Appends the valid neighbors on `layer` to `out` (nothing above `level`).
    pub fn read_layer(&self, layer: usize, out: &mut Vec<ItemPointer>) {
        if layer > self.level() {
            return;
        }
        let (first, count) = layer_slots(self.m, layer);
        for i in 0..count {
            let t = ItemPointer::read(self.bytes, NEIGHBORS_HEADER_SIZE + SLOT_SIZE * (first + i));
            if !t.is_valid() {
                break;
            }
            out.push(t);
        }
    }
}

/// Replaces the list of `layer` in a neighbor item in place (validated first).
pub fn set_layer(bytes: &mut [u8], m: usize, layer: usize, list: &[ItemPointer]) -> Result<(), PageError> {
    let level = NeighborsRef::new(bytes, m)?.level();
    if layer > level || list.len() > layer_slots(m, layer).1 {
        return err(format!("layer {layer} with {} links does not fit level {level}", list.len()));
    }
    write_layer(bytes, m, layer, list);
    Ok(())
}

/// Empties every list of a neighbor item in place (validated first).
pub fn clear_neighbors(bytes: &mut [u8], m: usize) -> Result<(), PageError> {
    let level = NeighborsRef::new(bytes, m)?.level();
    for layer in 0..=level {
        write_layer(bytes, m, layer, &[]);
    }
    Ok(())
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

    fn tid(block: u32, offset: u16) -> ItemPointer {
        ItemPointer { block, offset }
    }

    #[test]
    fn meta_round_trips_and_rejects_damage() {
        let meta = Meta {
            dims: 384,
            m: 16,
            ef_construction: 64,
            metric: Metric::Cosine,
            entry: Some((tid(3, 2), 4)),
            free_hint: Some(7),
            healed_blocks: 12,
        };
        let mut page = PageImage::new(PageKind::Meta);
        meta.write_page(&mut page.0);
        assert_eq!(Meta::read_page(&page.0).unwrap(), meta);

        let empty = Meta { entry: None, free_hint: None, ..meta };
        empty.write_page(&mut page.0);
        assert_eq!(Meta::read_page(&page.0).unwrap().entry, None);

        // A meta page written before `healed_blocks` existed (pd_lower at
        // 40 bytes of meta data, zeros after) reads 0.
        let mut old = page.clone();
        meta.write_page(&mut old.0);
        old.0[PAGE_HEADER_SIZE + 40..PAGE_HEADER_SIZE + 48].fill(0);
        put_u16(&mut old.0, 12, (PAGE_HEADER_SIZE + 40) as u16);
        assert_eq!(Meta::read_page(&old.0).unwrap(), Meta { healed_blocks: 0, ..meta });

        let mut bad = page.clone();
        bad.0[PAGE_HEADER_SIZE] ^= 0xFF;
        assert!(Meta::read_page(&bad.0).unwrap_err().0.contains("magic"));
        let mut bad = page.clone();
        bad.0[PAGE_HEADER_SIZE + 4] = 9;
        assert!(Meta::read_page(&bad.0).unwrap_err().0.contains("version"));
        let mut bad = page.clone();
        bad.0[SPECIAL_OFFSET] = 0;
        assert!(Meta::read_page(&bad.0).is_err());
        assert!(Meta::read_page(&[0u8; BLCKSZ]).is_err(), "zeroed page");
    }

    #[test]
    fn items_are_added_until_full_and_read_back() {
        let mut page = PageImage::new(PageKind::Graph);
        let vector: Vec<f32> = (0..384).map(|i| i as f32 * 0.5).collect();
        let item = encode_element(1, &[tid(7, 1)], tid(1, 2), &HalfVector::encode(&vector));
        let mut offsets = Vec::new();
        while let Some(off) = add_item(&mut page.0, &item) {
            offsets.push(off);
        }
        assert_eq!(offsets, (1..=9).collect::<Vec<u16>>(), "9 elements of 856 bytes fit an 8 KB page");
        let p = PageRef::new(&page.0, PageKind::Graph).unwrap();
        let e = ElementRef::new(p.item(3).unwrap(), 384, 16).unwrap();
        assert_eq!(e.level(), 1);
        assert_eq!(e.heap_tid(0), tid(7, 1));
        assert_eq!(e.neighbors(), tid(1, 2));
        let mut decoded = Vec::new();
        e.decode(&mut decoded);
        assert_eq!(decoded, vector, "i/2 for i < 384 is exact in half precision with scale 128");
        assert_eq!((e.scale(), e.err_l2(), e.err_l1()), (128.0, 0.0, 0.0));
        assert!(p.item(10).is_err());
        assert!(p.item(0).is_err());
        assert!(ElementRef::new(p.item(1).unwrap(), 383, 16).is_err(), "wrong dims");
    }

    #[test]
    fn neighbor_lists_update_in_place_per_layer() {
        let m = 4;
        let lists = vec![vec![tid(1, 1), tid(1, 2)], vec![tid(2, 1)]];
        let mut item = encode_neighbors(m, 1, &lists);
        assert_eq!(item.len(), neighbor_item_size(m, 1));
        set_layer(&mut item, m, 0, &[tid(5, 5)]).unwrap();
        let n = NeighborsRef::new(&item, m).unwrap();
        let mut out = Vec::new();
        n.read_layer(0, &mut out);
        assert_eq!(out, vec![tid(5, 5)]);
        out.clear();
        n.read_layer(1, &mut out);
        assert_eq!(out, vec![tid(2, 1)]);
        out.clear();
        n.read_layer(2, &mut out);
        assert!(out.is_empty());
        assert!(set_layer(&mut item, m, 2, &[tid(1, 1)]).is_err(), "no layer 2");
        assert!(set_layer(&mut item, m, 1, &[tid(1, 1); 5]).is_err(), "over M");
    }

    #[test]
    fn corrupt_line_pointers_and_items_are_errors_not_panics() {
        let mut page = PageImage::new(PageKind::Graph);
        let item = encode_element(0, &[tid(1, 1)], tid(1, 2), &HalfVector::encode(&[1.0, 2.0]));
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
        assert!(ElementRef::new(&raw, 2, 16).is_err());
        // Neighbor item whose length does not match its level.
        let mut n = encode_neighbors(4, 0, &[]);
        n[1] = 3;
        assert!(NeighborsRef::new(&n, 4).is_err());
        // Random garbage never panics.
        let mut seed = 12345u64;
        for _ in 0..2000 {
            let mut junk = [0u8; BLCKSZ];
            for b in junk.iter_mut() {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                *b = (seed >> 56) as u8;
            }
            junk[18..20].copy_from_slice(&((BLCKSZ as u16) | 4).to_ne_bytes());
            junk[SPECIAL_OFFSET..SPECIAL_OFFSET + 2].copy_from_slice(&PAGE_ID.to_ne_bytes());
            junk[SPECIAL_OFFSET + 2] = PageKind::Graph as u8;
            if let Ok(p) = PageRef::new(&junk, PageKind::Graph) {
                for off in 0..=p.max_offset().min(50) {
                    if let Ok(bytes) = p.item(off) {
                        let _ = ElementRef::new(bytes, 2, 16)
                            .map(|e| (e.distance(Metric::L2, &[1.0, 2.0]), e.codes().len(), e.neighbors()));
                        let _ = NeighborsRef::new(bytes, 16);
                    }
                }
            }
            let _ = Meta::read_page(&junk);
        }
    }

    #[test]
    fn heap_tids_push_retain_and_reuse() {
        let mut item = encode_element(0, &[tid(1, 1)], tid(9, 9), &HalfVector::encode(&[1.0]));
        let mut e = ElementMut::new(&mut item, 1, 16).unwrap();
        for i in 2..=10 {
            assert!(e.push_heap_tid(tid(1, i)));
        }
        assert!(!e.push_heap_tid(tid(1, 11)), "full at 10");
        assert_eq!(e.retain_heap_tids(|t| t.offset % 2 == 0), 5);
        e.set_deleted();
        let r = ElementRef::new(&item, 1, 16).unwrap();
        assert_eq!(r.heap_tid_count(), 5);
        assert!(r.is_deleted() && !r.is_free());
        let mut e = ElementMut::new(&mut item, 1, 16).unwrap();
        e.set_free();
        assert!(ElementRef::new(&item, 1, 16).unwrap().is_free());
        let mut e = ElementMut::new(&mut item, 1, 16).unwrap();
        e.reuse(0, tid(4, 4), &HalfVector::encode(&[2.0]));
        let r = ElementRef::new(&item, 1, 16).unwrap();
        assert!(!r.is_deleted() && !r.is_free());
        let mut decoded = Vec::new();
        r.decode(&mut decoded);
        assert_eq!((r.heap_tid_count(), r.heap_tid(0), r.neighbors(), decoded), (1, tid(4, 4), tid(9, 9), vec![2.0]));
    }

    #[test]
    fn duplicates_widen_the_error_bounds() {
        let x = [0.1f32, 0.2, 0.3];
        let near = [0.1f32 + 1e-6, 0.2, 0.3];
        let (hx, hn) = (HalfVector::encode(&x), HalfVector::encode(&near));
        let mut item = encode_element(0, &[tid(1, 1)], tid(9, 9), &hx);
        assert!(ElementRef::new(&item, 3, 16).unwrap().same_codes(&hn), "both round to the same codes");
        assert!(hn.err_l2 > hx.err_l2 || hn.err_l1 > hx.err_l1);
        let mut e = ElementMut::new(&mut item, 3, 16).unwrap();
        assert!(e.push_duplicate(tid(1, 2), &hn));
        let r = ElementRef::new(&item, 3, 16).unwrap();
        assert_eq!(r.heap_tid_count(), 2);
        assert_eq!(r.err_l2(), hx.err_l2.max(hn.err_l2));
        assert_eq!(r.err_l1(), hx.err_l1.max(hn.err_l1));
        assert_eq!(r.norm(), hx.norm.max(hn.norm));
        assert!(!r.same_codes(&HalfVector::encode(&[0.1, 0.2, 0.31])));
    }

    #[test]
    fn limits_fit_a_page() {
        assert!(item_footprint(element_item_size(MAX_INDEX_DIMS)) <= EMPTY_PAGE_SPACE);
        for m in [2, 16, 48, 100] {
            assert!(item_footprint(neighbor_item_size(m, max_level(m))) <= EMPTY_PAGE_SPACE, "m={m}");
        }
    }
}
