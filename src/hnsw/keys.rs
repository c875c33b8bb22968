//! Filter keys: the scalar columns after the vector in a multi-column
//! `hnsw` index (`CREATE INDEX ... USING hnsw (embedding vector_cosine_ops,
//! category)`), stored with each element and evaluated inside the scan,
//! before any heap access. Pure Rust: the encoding on pages and the
//! evaluation of scan conditions. Reading them from datums and scan keys is
//! in [`super::key_datum`].
//!
//! **Values.** Every key is reduced to 64-bit words: integers (`int2`,
//! `int4`, `int8`) and `bool` exactly (as `i64`), `text`/`varchar` and
//! `uuid` as the FNV-1a hash of their bytes ([`hash_bytes`]); arrays
//! (`int2[]`, `int4[]`, `int8[]`, `bool[]`, `text[]`, `varchar[]`,
//! `uuid[]`) as the sorted, deduplicated set of their non-NULL elements'
//! words. Hashed keys make equality lossy (two strings may share a hash), so
//! a scan with a condition on a hashed column asks the executor to recheck
//! its conditions on the heap row ([`Filter::lossy`]); integer and boolean
//! conditions are exact.
//!
//! **Encoding** (the *key blob* of an element item, see
//! [`super::page::encode_element`]): for each key column in index order a
//! tag byte, then `0`: NULL; `1`: one word (8 bytes, little-endian);
//! `2`: a set, `u16` count then that many words, ascending.
//!
//! **Conditions** ([`Cond`]): `=`, `= ANY(array)` / `IN (...)`, `<`, `<=`,
//! `>`, `>=` (integers), `&&` and `@>` (arrays). A NULL key never matches
//! anything, as in SQL; a condition whose argument is NULL matches nothing.

/// Most bytes of an element's key blob: keys must fit an element item on an
/// 8 kB page with its vector.
pub const MAX_KEY_BLOB: usize = 2048;

/// Tag of a NULL key.
const TAG_NULL: u8 = 0;
/// Tag of a one-word key.
const TAG_WORD: u8 = 1;
/// Tag of a set of words.
const TAG_SET: u8 = 2;

/// What a key column holds, fixed by its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// `int2`, `int4`, `int8`: the value as `i64`.
    Int,
    /// `bool`: 0 or 1.
    Bool,
    /// `text`, `varchar`: hash of the bytes (deterministic collations only).
    Text,
    /// `uuid`: hash of the 16 bytes.
    Uuid,
    /// An array of one of the above: the set of its elements' words.
    Array(ElemKind),
}

/// The element type of an array key column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElemKind {
    Int,
    Bool,
    Text,
    Uuid,
}

impl KeyKind {
    /// Whether equality on this kind compares hashes (so matches need a
    /// recheck on the heap row).
    pub fn hashed(self) -> bool {
        matches!(self, KeyKind::Text | KeyKind::Uuid | KeyKind::Array(ElemKind::Text | ElemKind::Uuid))
    }
}

/// One key of one row, reduced to words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyValue {
    /// SQL NULL.
    Null,
    /// A scalar.
    Word(u64),
    /// An array's non-NULL elements, sorted and deduplicated (see
    /// [`KeyValue::set`]).
    Set(Vec<u64>),
}

impl KeyValue {
    /// A set key from words in any order, with duplicates.
    pub fn set(words: Vec<u64>) -> KeyValue {
        KeyValue::Set(sorted_set(words))
    }

    /// An integer key.
    pub fn int(v: i64) -> KeyValue {
        KeyValue::Word(v as u64)
    }
}

/// `words` ascending and deduplicated: the form of set keys and of the
/// `IN`, `&&` and `@>` arguments.
pub fn sorted_set(mut words: Vec<u64>) -> Vec<u64> {
    words.sort_unstable();
    words.dedup();
    words
}

/// FNV-1a, 64 bits: the hash of `text` and `uuid` keys. Part of the page
/// format (it must never change), hence written out here rather than taken
/// from a hasher whose algorithm may change between versions.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Why a row's keys cannot be stored.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge(pub usize);

/// Encodes one row's keys (see the module docs). Fails when the blob would
/// exceed [`MAX_KEY_BLOB`] bytes (a very long array), returning its size.
pub fn encode(values: &[KeyValue]) -> Result<Vec<u8>, TooLarge> {
    let mut b = Vec::new();
    for v in values {
        match v {
            KeyValue::Null => b.push(TAG_NULL),
            KeyValue::Word(w) => {
                b.push(TAG_WORD);
                b.extend_from_slice(&w.to_le_bytes());
            }
            KeyValue::Set(words) => {
                b.push(TAG_SET);
                let n = u16::try_from(words.len()).map_err(|_| TooLarge(3 + 8 * words.len()))?;
                b.extend_from_slice(&n.to_le_bytes());
                for w in words {
                    b.extend_from_slice(&w.to_le_bytes());
                }
            }
        }
        if b.len() > MAX_KEY_BLOB {
            return Err(TooLarge(b.len()));
        }
    }
    Ok(b)
}

/// A key of a stored blob, borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRef<'a> {
    Null,
    Word(u64),
    /// `8·n` bytes: `n` words, ascending.
    Set(&'a [u8]),
}

impl KeyRef<'_> {
    /// Word `i` of a set.
    fn set_word(bytes: &[u8], i: usize) -> u64 {
        u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().expect("8 bytes"))
    }

    /// Whether a set holds `w` (binary search: sets are ascending).
    fn set_contains(bytes: &[u8], w: u64) -> bool {
        let (mut lo, mut hi) = (0, bytes.len() / 8);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match KeyRef::set_word(bytes, mid).cmp(&w) {
                std::cmp::Ordering::Equal => return true,
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        false
    }
}

/// Reads key `column` of a blob; `None` if the blob is malformed or has
/// fewer columns.
pub fn key_at(blob: &[u8], column: usize) -> Option<KeyRef<'_>> {
    let mut at = 0;
    for c in 0..=column {
        let tag = *blob.get(at)?;
        at += 1;
        let key = match tag {
            TAG_NULL => KeyRef::Null,
            TAG_WORD => {
                let w = u64::from_le_bytes(blob.get(at..at + 8)?.try_into().ok()?);
                at += 8;
                KeyRef::Word(w)
            }
            TAG_SET => {
                let n = u16::from_le_bytes(blob.get(at..at + 2)?.try_into().ok()?) as usize;
                at += 2;
                let words = blob.get(at..at + 8 * n)?;
                at += 8 * n;
                KeyRef::Set(words)
            }
            _ => return None,
        };
        if c == column {
            return Some(key);
        }
    }
    None
}

/// Checks a blob read from disk: well-formed tags and lengths, sets
/// ascending, nothing after the last key. Returns the number of keys.
pub fn validate(blob: &[u8]) -> Result<usize, String> {
    let mut at = 0;
    let mut n = 0;
    while at < blob.len() {
        let tag = blob[at];
        at += 1;
        match tag {
            TAG_NULL => {}
            TAG_WORD => at += 8,
            TAG_SET => {
                let count = blob.get(at..at + 2).ok_or("truncated key set")?;
                let count = u16::from_le_bytes([count[0], count[1]]) as usize;
                at += 2;
                let words = blob.get(at..at + 8 * count).ok_or("truncated key set")?;
                if (1..count).any(|i| KeyRef::set_word(words, i - 1) >= KeyRef::set_word(words, i)) {
                    return Err("key set not ascending".into());
                }
                at += 8 * count;
            }
            t => return Err(format!("bad key tag {t}")),
        }
        if at > blob.len() {
            return Err("truncated key".into());
        }
        n += 1;
    }
    Ok(n)
}

/// A condition on one key column, from one scan key.
#[derive(Clone, Debug, PartialEq)]
pub enum Cond {
    /// `key = w`.
    Eq(u64),
    /// `key = ANY(set)`: the set ascending, deduplicated.
    In(Vec<u64>),
    /// `key < v`, `key <= v`, `key > v`, `key >= v` on integers.
    Lt(i64),
    Le(i64),
    Gt(i64),
    Ge(i64),
    /// `array && set`.
    Overlaps(Vec<u64>),
    /// `array @> set`.
    Contains(Vec<u64>),
    /// Matches nothing (a NULL argument, or an empty `IN` list).
    Never,
}

impl Cond {
    /// Whether `key` satisfies the condition.
    pub fn matches(&self, key: KeyRef<'_>) -> bool {
        match (self, key) {
            (Cond::Never, _) | (_, KeyRef::Null) => false,
            (Cond::Eq(w), KeyRef::Word(k)) => k == *w,
            (Cond::In(ws), KeyRef::Word(k)) => ws.binary_search(&k).is_ok(),
            (Cond::Lt(v), KeyRef::Word(k)) => (k as i64) < *v,
            (Cond::Le(v), KeyRef::Word(k)) => (k as i64) <= *v,
            (Cond::Gt(v), KeyRef::Word(k)) => (k as i64) > *v,
            (Cond::Ge(v), KeyRef::Word(k)) => (k as i64) >= *v,
            (Cond::Overlaps(ws), KeyRef::Set(s)) => ws.iter().any(|w| KeyRef::set_contains(s, *w)),
            (Cond::Contains(ws), KeyRef::Set(s)) => ws.iter().all(|w| KeyRef::set_contains(s, *w)),
            _ => false,
        }
    }
}

/// The conditions of a scan on its key columns (all must hold).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    /// `(key column, condition)`: column 0 is the index's second column.
    pub conds: Vec<(usize, Cond)>,
    /// Whether a condition compares hashes, so the executor must recheck.
    pub lossy: bool,
}

impl Filter {
    /// Whether the filter can match no element at all.
    pub fn is_never(&self) -> bool {
        self.conds.iter().any(|(_, c)| *c == Cond::Never)
    }

    /// Whether an element whose key blob is `blob` satisfies every condition.
    /// A blob without the column (an element written without keys) does not.
    pub fn matches(&self, blob: &[u8]) -> bool {
        self.conds.iter().all(|(column, cond)| key_at(blob, *column).is_some_and(|k| cond.matches(k)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(values: &[KeyValue]) -> Vec<u8> {
        encode(values).unwrap()
    }

    #[test]
    fn keys_round_trip_and_validate() {
        let b = blob(&[KeyValue::int(-5), KeyValue::Null, KeyValue::set(vec![9, 3, 3, 7])]);
        assert_eq!(validate(&b), Ok(3));
        assert_eq!(key_at(&b, 0), Some(KeyRef::Word(-5i64 as u64)));
        assert_eq!(key_at(&b, 1), Some(KeyRef::Null));
        let Some(KeyRef::Set(s)) = key_at(&b, 2) else { panic!("a set") };
        assert_eq!(s.len(), 24, "deduplicated");
        assert_eq!(key_at(&b, 3), None);
        assert_eq!(validate(&[]), Ok(0));
    }

    #[test]
    fn corrupt_blobs_are_errors_not_panics() {
        let good = blob(&[KeyValue::Word(1), KeyValue::set(vec![1, 2])]);
        for cut in 0..good.len() {
            let r = validate(&good[..cut]);
            assert!(r.is_err() || r == Ok(1) || r == Ok(0), "cut {cut}: {r:?}");
            let _ = key_at(&good[..cut], 1);
        }
        assert!(validate(&[7]).is_err(), "bad tag");
        let mut unsorted = vec![TAG_SET, 2, 0];
        unsorted.extend_from_slice(&5u64.to_le_bytes());
        unsorted.extend_from_slice(&4u64.to_le_bytes());
        assert!(validate(&unsorted).is_err());
    }

    #[test]
    fn long_arrays_are_refused() {
        let words: Vec<u64> = (0..300).collect();
        assert!(matches!(encode(&[KeyValue::set(words)]), Err(TooLarge(_))));
        let words: Vec<u64> = (0..200).collect();
        assert!(encode(&[KeyValue::set(words)]).is_ok());
    }

    #[test]
    fn conditions_follow_sql() {
        let k = |v: i64| blob(&[KeyValue::int(v)]);
        let f = |c: Cond| Filter { conds: vec![(0, c)], lossy: false };
        assert!(f(Cond::Eq(3)).matches(&k(3)));
        assert!(!f(Cond::Eq(3)).matches(&k(4)));
        assert!(f(Cond::In(vec![1, 3, 9])).matches(&k(3)));
        assert!(!f(Cond::In(vec![1, 9])).matches(&k(3)));
        assert!(f(Cond::Lt(0)).matches(&k(-1)), "signed order");
        assert!(!f(Cond::Lt(-1)).matches(&k(-1)));
        assert!(f(Cond::Le(-1)).matches(&k(-1)));
        assert!(f(Cond::Gt(-2)).matches(&k(-1)));
        assert!(f(Cond::Ge(5)).matches(&k(5)) && !f(Cond::Ge(6)).matches(&k(5)));
        let null = blob(&[KeyValue::Null]);
        for c in [Cond::Eq(0), Cond::Lt(i64::MAX), Cond::Ge(i64::MIN), Cond::In(vec![0])] {
            assert!(!f(c).matches(&null), "NULL never matches");
        }
        assert!(!f(Cond::Never).matches(&k(1)));
        let tags = blob(&[KeyValue::set(vec![2, 4, 6])]);
        assert!(f(Cond::Overlaps(vec![1, 6])).matches(&tags));
        assert!(!f(Cond::Overlaps(vec![1, 5])).matches(&tags));
        assert!(!f(Cond::Overlaps(vec![])).matches(&tags));
        assert!(f(Cond::Contains(vec![2, 6])).matches(&tags));
        assert!(!f(Cond::Contains(vec![2, 5])).matches(&tags));
        assert!(f(Cond::Contains(vec![])).matches(&tags), "every array contains the empty one");
        assert!(!f(Cond::Contains(vec![])).matches(&blob(&[KeyValue::Null])));
        let two = blob(&[KeyValue::Word(1), KeyValue::Word(2)]);
        let both = Filter { conds: vec![(0, Cond::Eq(1)), (1, Cond::Eq(2))], lossy: false };
        assert!(both.matches(&two));
        assert!(!Filter { conds: vec![(0, Cond::Eq(1)), (1, Cond::Eq(3))], lossy: false }.matches(&two));
        assert!(!f(Cond::Eq(1)).matches(&[]), "no keys stored");
    }

    #[test]
    fn text_hash_is_fnv1a() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(hash_bytes(b""), 0xcbf29ce484222325);
        assert_eq!(hash_bytes(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(hash_bytes(b"foobar"), 0x85944171f73967e8);
    }
}
