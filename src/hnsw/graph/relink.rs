//! The relink policy: how the graph keeps an element reachable when a
//! reverse link pushes it out of a full neighbor list, one rule for the
//! in-memory graph of `CREATE INDEX` ([`MemoryGraph`]), the page graph of
//! `INSERT` (`hnsw::insert`) and VACUUM's healing (`hnsw::vacuum`).
//!
//! Pruning a full list with the heuristic (Algorithm 4 of Malkov &
//! Yashunin, arXiv:1603.09320) can drop an element's last inbound link; the
//! paper ignores it, and on real data a few percent of the elements of an
//! hnswlib graph become unreachable. The policy:
//!
//! 1. An element dropped from `owner`'s list for `new` is offered to `new`'s
//!    list ([`relink`]): appended when there is room.
//! 2. When `new`'s list is full, the dropped element displaces an entry only
//!    if it may have lost its last inbound link: fewer than
//!    [`MIN_BACK_LINKS`] of its own layer-0 neighbors link back to it
//!    ([`linked_back`]). Two, not one, because a concurrent insert may be
//!    pruning the other one right now.
//! 3. The entry given up is the farthest one that is itself linked back,
//!    else the farthest ([`displaceable`]); a displaced entry is relinked the
//!    same way from the element that took its slot, at most
//!    [`MAX_RELINK_DEPTH`] displacements in a row.
//! 4. A new element that no neighbor kept a link to is linked from its
//!    nearest neighbor by the same steps, without the test of 2
//!    ([`force_link`]); so is the old entry point from a new one.
//!
//! VACUUM uses [`linked_back`] to find the elements to heal, and step 3's
//! rule with its exact inbound counts instead of the local test.
//!
//! Deleted elements are never relinked (VACUUM relies on inserts not adding
//! links to elements they read as deleted), and only selected links count
//! as inbound links: a spare link's slot may be taken by the next append.

/// How many of an element's own layer-0 neighbors must link back to it for
/// it to count as safely linked ([`linked_back`]).
pub const MIN_BACK_LINKS: usize = 2;

/// How many displacements in a row [`relink`] follows (each moves the
/// question "does it still have an inbound link?" to the element it
/// displaced).
pub const MAX_RELINK_DEPTH: usize = 4;

/// How many times a list that changed between reading and writing it is
/// read again before giving up.
const ATTEMPTS: usize = 3;

/// A graph's neighbor lists as the relink policy reads and edits them.
/// Implementations take whatever locks their storage needs inside each call;
/// [`LinkLists::replace`] is a compare-and-set, so nothing is held between
/// calls.
pub trait LinkLists {
    /// What lists hold (an element id, or a page address).
    type Key: Copy + Eq;

    /// The element's top layer.
    fn level(&mut self, k: Self::Key) -> usize;

    /// Whether the element was deleted (by VACUUM).
    fn is_deleted(&mut self, k: Self::Key) -> bool;

    /// Replaces `out` with `k`'s selected layer-0 links (not the spare
    /// ones: in the in-memory graph spare links must not change the
    /// graph a build makes, see `Tuning::spare_links`).
    fn own_neighbors(&mut self, k: Self::Key, out: &mut Vec<Self::Key>);

    /// Whether live element `from` holds a selected layer-0 link to `to`
    /// (false when `from` is deleted).
    fn links_to(&mut self, from: Self::Key, to: Self::Key) -> bool;

    /// Distances from `owner` to each of `list`, in order (`+∞` where an
    /// element cannot be read).
    fn distances(&mut self, owner: Self::Key, list: &[Self::Key]) -> Vec<f32>;

    /// Makes `owner` link to `k` on `layer` with a selected link if it does
    /// not already and has room (giving up a spare link if need be).
    /// `Ok(())` when `owner` links to `k` afterwards; otherwise the full
    /// selected list, as read.
    fn append(&mut self, owner: Self::Key, layer: usize, k: Self::Key) -> Result<(), Vec<Self::Key>>;

    /// Sets entry `at` of `owner`'s selected list on `layer` to `k` if the
    /// list still equals `expected`. Returns whether it did.
    fn replace(&mut self, owner: Self::Key, layer: usize, expected: &[Self::Key], at: usize, k: Self::Key) -> bool;
}

/// Whether at least [`MIN_BACK_LINKS`] of `k`'s own layer-0 neighbors link
/// back to it with a selected link (a local sign that it keeps an inbound
/// link even if a concurrent insert drops one). A deleted element counts as
/// linked: it needs no link.
pub fn linked_back<L: LinkLists>(lists: &mut L, k: L::Key) -> bool {
    if lists.is_deleted(k) {
        return true;
    }
    let mut own = Vec::new();
    lists.own_neighbors(k, &mut own);
    let mut back = 0;
    for u in own {
        if u != k && lists.links_to(u, k) {
            back += 1;
            if back >= MIN_BACK_LINKS {
                return true;
            }
        }
    }
    false
}

/// Which entry of `owner`'s full `list` to give up for another link: the
/// farthest entry that is [`linked_back`] (a deleted one is), or else the
/// farthest of all (callers relink the entry they displace).
pub fn displaceable<L: LinkLists>(lists: &mut L, owner: L::Key, list: &[L::Key]) -> usize {
    let distances = lists.distances(owner, list);
    let mut far_first: Vec<usize> = (0..list.len()).collect();
    far_first.sort_by(|&a, &b| distances[b].total_cmp(&distances[a]));
    let safe = far_first.iter().copied().find(|&i| linked_back(lists, list[i]));
    safe.or(far_first.first().copied()).unwrap_or(0)
}

/// Keeps `dropped` reachable after it left a list to make room for `new`
/// (steps 1–3 of the policy): links `new -> dropped` on `layer` if `new`'s
/// list has room; otherwise, if `dropped` is not [`linked_back`], replaces
/// the [`displaceable`] entry of `new`'s list with it and relinks the
/// displaced entry from `dropped`.
pub fn relink<L: LinkLists>(lists: &mut L, new: L::Key, dropped: L::Key, layer: usize) {
    relink_at_depth(lists, new, dropped, layer, 0, false);
}

/// Makes `new` reachable from `host` on layer 0 when nothing else links to
/// it (step 4): appends it to `host`'s list, or displaces the
/// [`displaceable`] entry, which is then relinked from `new`.
pub fn force_link<L: LinkLists>(lists: &mut L, host: L::Key, new: L::Key) {
    relink_at_depth(lists, host, new, 0, 0, true);
}

/// [`relink`] at displacement `depth`; with `force`, links `dropped` even
/// when it is [`linked_back`].
fn relink_at_depth<L: LinkLists>(lists: &mut L, new: L::Key, dropped: L::Key, layer: usize, depth: usize, force: bool) {
    if dropped == new || layer > lists.level(new) || lists.is_deleted(dropped) {
        return;
    }
    let mut needs_link = None;
    for _attempt in 0..ATTEMPTS {
        let Err(current) = lists.append(new, layer, dropped) else { return };
        if current.is_empty() {
            return;
        }
        if depth >= MAX_RELINK_DEPTH || !*needs_link.get_or_insert_with(|| force || !linked_back(lists, dropped)) {
            return;
        }
        let at = displaceable(lists, new, &current);
        let displaced = current[at];
        if lists.replace(new, layer, &current, at, dropped) {
            let layer = layer.min(lists.level(dropped));
            relink_at_depth(lists, dropped, displaced, layer, depth + 1, false);
            return;
        }
    }
}
