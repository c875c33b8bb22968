//! Filter keys from PostgreSQL values: the key columns of a multi-column
//! index ([`key_columns`], which also rejects unsupported columns), a row's
//! keys from its datums ([`row_keys`], for the build and inserts), and a
//! scan's conditions from its scan keys ([`scan_filter`]). The encoding and
//! the evaluation are pure Rust, in [`super::keys`].
//!
//! The operator classes of key columns (sql/hnsw.sql) number their
//! operators as the `STRATEGY_*` constants below.

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use super::keys::{self, Cond, ElemKind, Filter, KeyKind, KeyValue};
use crate::error::{raise, raise_detail, raise_hint};

/// `<` (integers).
pub const STRATEGY_LT: u16 = 1;
/// `<=` (integers).
pub const STRATEGY_LE: u16 = 2;
/// `=` (every scalar key type; `= ANY(...)` and `IN` too).
pub const STRATEGY_EQ: u16 = 3;
/// `>=` (integers).
pub const STRATEGY_GE: u16 = 4;
/// `>` (integers).
pub const STRATEGY_GT: u16 = 5;
/// `&&` (arrays).
pub const STRATEGY_OVERLAP: u16 = 6;
/// `@>` (arrays).
pub const STRATEGY_CONTAINS: u16 = 7;

/// The types a filter column may have, as listed in errors.
pub const SUPPORTED_TYPES: &str = "smallint, integer, bigint, boolean, text, varchar, uuid, or arrays of these";

/// The scalar kind of a type, if it can be a key.
fn scalar_kind(typoid: pg_sys::Oid) -> Option<ElemKind> {
    Some(match typoid {
        pg_sys::INT2OID | pg_sys::INT4OID | pg_sys::INT8OID => ElemKind::Int,
        pg_sys::BOOLOID => ElemKind::Bool,
        pg_sys::TEXTOID | pg_sys::VARCHAROID => ElemKind::Text,
        pg_sys::UUIDOID => ElemKind::Uuid,
        _ => return None,
    })
}

/// The key kind of a column type, if it can be a key.
fn kind_of(typoid: pg_sys::Oid) -> Option<KeyKind> {
    let scalar = |k: ElemKind| match k {
        ElemKind::Int => KeyKind::Int,
        ElemKind::Bool => KeyKind::Bool,
        ElemKind::Text => KeyKind::Text,
        ElemKind::Uuid => KeyKind::Uuid,
    };
    if let Some(k) = scalar_kind(typoid) {
        return Some(scalar(k));
    }
    let elem = match typoid {
        pg_sys::INT2ARRAYOID | pg_sys::INT4ARRAYOID | pg_sys::INT8ARRAYOID => ElemKind::Int,
        pg_sys::BOOLARRAYOID => ElemKind::Bool,
        pg_sys::TEXTARRAYOID | pg_sys::VARCHARARRAYOID => ElemKind::Text,
        pg_sys::UUIDARRAYOID => ElemKind::Uuid,
        _ => return None,
    };
    Some(KeyKind::Array(elem))
}

/// `format_type_be`: a type's SQL name.
fn type_name(typoid: pg_sys::Oid) -> String {
    // SAFETY: format_type_be returns a palloc'd C string for any OID (or
    // "???"), through pgrx's guarded binding.
    unsafe { std::ffi::CStr::from_ptr(pg_sys::format_type_be(typoid)).to_string_lossy().into_owned() }
}

/// The key columns of `index` (its columns after the first), as checked
/// by [`check_columns`] when the index was built. Empty for a single-column
/// index.
pub fn key_columns(index: pg_sys::Relation) -> Vec<KeyColumn> {
    // SAFETY: an open index relation: its tuple descriptor has natts
    // attributes.
    unsafe {
        let desc = (*index).rd_att;
        (1..(*desc).natts as usize)
            .map(|i| {
                let typoid = crate::compat::tuple_desc_attr(desc, i).atttypid;
                let kind = kind_of(typoid).unwrap_or_else(|| {
                    raise(
                        PgSqlErrorCode::ERRCODE_INDEX_CORRUPTED,
                        format!("hnsw filter column {} has unsupported type {}", i + 1, type_name(typoid)),
                    )
                });
                KeyColumn { kind, typoid }
            })
            .collect()
    }
}

/// Checks the columns of an index being built: the first must be the
/// vector with one of our vector operator classes; the others must have a
/// supported type (the catch-all operator class `hnsw_unsupported_ops`
/// lets `CREATE INDEX` reach us for the rest, so the error can list what is
/// supported) and, for text, a deterministic collation.
///
/// Errors: 42704 for a vector type without an operator class (as
/// PostgreSQL words a missing default class) or another first column;
/// 0A000 for a second vector column, an unsupported key type or a
/// nondeterministic collation.
pub fn check_columns(index: pg_sys::Relation) {
    // SAFETY: an open index relation: its tuple descriptor has natts
    // attributes and rd_opcintype/rd_indcollation one entry per key column.
    let (types, opcin, colls) = unsafe {
        let desc = (*index).rd_att;
        let natts = (*desc).natts as usize;
        let types: Vec<pg_sys::Oid> = (0..natts).map(|i| crate::compat::tuple_desc_attr(desc, i).atttypid).collect();
        let nkeys = ((*(*index).rd_index).indnkeyatts as usize).min(natts);
        let opcin: Vec<pg_sys::Oid> = (0..nkeys).map(|i| *(*index).rd_opcintype.add(i)).collect();
        let colls: Vec<pg_sys::Oid> = (0..nkeys).map(|i| *(*index).rd_indcollation.add(i)).collect();
        (types, opcin, colls)
    };
    // SAFETY: support procedure lookups on an open index (InvalidOid if none).
    let is_vector_column =
        |i: usize| unsafe { pg_sys::index_getprocid(index, (i + 1) as i16, 1) } != pg_sys::InvalidOid;
    if !is_vector_column(0) {
        let name = type_name(types[0]);
        // PostgreSQL 17+ builds indexes under a restricted search_path, so
        // the name may come schema-qualified.
        let bare = name.rsplit('.').next().unwrap_or(&name).trim_matches('"').to_string();
        if matches!(bare.as_str(), "vector" | "halfvec" | "sparsevec" | "bit") {
            let name = bare;
            raise_hint(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("data type {name} has no default operator class for access method \"hnsw\""),
                "",
                format!("Name an operator class for the column, e.g. {name}_l2_ops or {name}_cosine_ops."),
            );
        }
        // 42704 as for a type without an operator class (what pgvector,
        // which has no filter columns, reports here).
        raise_detail(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("the first column of an hnsw index must be a vector column, not {name}"),
            "Put the vector (vector, halfvec, sparsevec or bit) first and filter columns after it.",
        );
    }
    for i in 1..opcin.len() {
        if is_vector_column(i) {
            raise(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!(
                    "an hnsw index has one vector column, its first; column {} ({}) is another",
                    i + 1,
                    type_name(types[i])
                ),
            );
        }
        let Some(kind) = kind_of(types[i]).filter(|_| opcin[i] != pg_sys::ANYELEMENTOID) else {
            raise_detail(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!("data type {} is not supported for an hnsw filter column", type_name(types[i])),
                format!("Filter columns may be {SUPPORTED_TYPES}."),
            );
        };
        // SAFETY: a plain catalog lookup of a valid collation.
        if kind.hashed()
            && colls[i] != pg_sys::InvalidOid
            && !unsafe { pg_sys::get_collation_isdeterministic(colls[i]) }
        {
            raise(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!(
                    "nondeterministic collations are not supported for hnsw filter column {} ({})",
                    i + 1,
                    type_name(types[i])
                ),
            );
        }
    }
}

/// A key column: its kind and its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyColumn {
    /// How its values are reduced to words.
    pub kind: KeyKind,
    /// Its type (`int2`, `text[]`, ...).
    pub typoid: pg_sys::Oid,
}

/// The word of a non-NULL scalar datum of type `typoid`, or `None` for a
/// type that cannot be a key.
///
/// # Safety
/// `datum` must be a non-NULL datum of type `typoid`.
unsafe fn word_of(typoid: pg_sys::Oid, datum: pg_sys::Datum) -> Option<u64> {
    // SAFETY: the caller's contract; varlena values are detoasted first.
    unsafe {
        Some(match typoid {
            pg_sys::INT2OID => datum.value() as i16 as i64 as u64,
            pg_sys::INT4OID => datum.value() as i32 as i64 as u64,
            pg_sys::INT8OID => datum.value() as i64 as u64,
            pg_sys::BOOLOID => (datum.value() & 0xff != 0) as u64,
            pg_sys::TEXTOID | pg_sys::VARCHAROID => {
                let v = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
                let bytes = std::slice::from_raw_parts(
                    pgrx::varlena::vardata_any(v) as *const u8,
                    pgrx::varlena::varsize_any_exhdr(v),
                );
                keys::hash_bytes(bytes)
            }
            pg_sys::UUIDOID => keys::hash_bytes(std::slice::from_raw_parts(datum.cast_mut_ptr::<u8>(), 16)),
            _ => return None,
        })
    }
}

/// The elements of a non-NULL array datum as words, with whether any
/// element was NULL (NULL elements are left out).
///
/// # Safety
/// `datum` must be a non-NULL array datum.
unsafe fn array_words(datum: pg_sys::Datum) -> (Vec<u64>, bool) {
    // SAFETY: detoasting gives an array header; deconstruct_array (guarded)
    // fills the palloc'd element arrays with `n` entries of its element type.
    unsafe {
        let arr = pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) as *mut pg_sys::ArrayType;
        let elemtype = (*arr).elemtype;
        if scalar_kind(elemtype).is_none() {
            raise_detail(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!("array of {} is not supported for an hnsw filter column", type_name(elemtype)),
                format!("Filter columns may be {SUPPORTED_TYPES}."),
            );
        }
        let (mut len, mut byval, mut align) = (0i16, false, 0 as std::ffi::c_char);
        pg_sys::get_typlenbyvalalign(elemtype, &mut len, &mut byval, &mut align);
        let mut elems: *mut pg_sys::Datum = std::ptr::null_mut();
        let mut nulls: *mut bool = std::ptr::null_mut();
        let mut n = 0i32;
        pg_sys::deconstruct_array(arr, elemtype, len as i32, byval, align, &mut elems, &mut nulls, &mut n);
        let mut words = Vec::with_capacity(n.max(0) as usize);
        let mut any_null = false;
        for i in 0..n.max(0) as usize {
            if !nulls.is_null() && *nulls.add(i) {
                any_null = true;
                continue;
            }
            words.extend(word_of(elemtype, *elems.add(i)));
        }
        (words, any_null)
    }
}

/// A row's key blob from the index tuple's `values`/`isnull` (all columns;
/// the first, the vector, is skipped). Empty for a single-column index.
/// Errors with 54000 when an array key is too long to store.
///
/// # Safety
/// `values` and `isnull` must have one entry per index column, of the
/// columns' types.
pub unsafe fn row_keys(columns: &[KeyColumn], values: *const pg_sys::Datum, isnull: *const bool) -> Vec<u8> {
    if columns.is_empty() {
        return Vec::new();
    }
    let mut row = Vec::with_capacity(columns.len());
    for (i, column) in columns.iter().enumerate() {
        // SAFETY: the caller's contract: entry i + 1 is key column i.
        let (datum, null) = unsafe { (*values.add(i + 1), *isnull.add(i + 1)) };
        row.push(if null {
            KeyValue::Null
        } else {
            // SAFETY: a non-NULL datum of the column's type.
            unsafe {
                match column.kind {
                    KeyKind::Array(_) => KeyValue::set(array_words(datum).0),
                    _ => word_of(column.typoid, datum).map_or(KeyValue::Null, KeyValue::Word),
                }
            }
        });
    }
    keys::encode(&row).unwrap_or_else(|keys::TooLarge(n)| {
        raise_detail(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("hnsw filter keys of {n} bytes exceed the limit of {}", keys::MAX_KEY_BLOB),
            "An array filter column holds at most about 250 elements per row.",
        )
    })
}

/// The scan's conditions on key columns, from its scan keys (copied into
/// `keyData` by `amrescan`). `None` without key conditions; `columns` are
/// the index's key columns ([`key_columns`]).
///
/// # Safety
/// `keys` must point at `nkeys` scan keys of an index scan on this index.
pub unsafe fn scan_filter(keys: *const pg_sys::ScanKeyData, nkeys: usize, columns: &[KeyColumn]) -> Option<Filter> {
    if nkeys == 0 || keys.is_null() {
        return None;
    }
    let mut filter = Filter::default();
    for i in 0..nkeys {
        // SAFETY: the caller's contract.
        let key = unsafe { &*keys.add(i) };
        let column = key.sk_attno as usize;
        let Some(key_column) = column.checked_sub(2).and_then(|c| columns.get(c)) else {
            continue;
        };
        filter.lossy |= key_column.kind.hashed();
        // SAFETY: the scan key's argument is a datum of its subtype (or an
        // array of it, with SK_SEARCHARRAY), as the executor built it.
        let cond = unsafe { cond_of(key, key_column.typoid) };
        filter.conds.push((column - 2, cond));
    }
    (!filter.conds.is_empty()).then_some(filter)
}

/// The condition of one scan key.
///
/// # Safety
/// As [`scan_filter`].
unsafe fn cond_of(key: &pg_sys::ScanKeyData, column_type: pg_sys::Oid) -> Cond {
    if key.sk_flags & pg_sys::SK_ISNULL as i32 != 0 {
        return Cond::Never;
    }
    let strategy = key.sk_strategy;
    // SAFETY: the caller's contract.
    unsafe {
        if key.sk_flags & pg_sys::SK_SEARCHARRAY as i32 != 0 {
            let (words, _) = array_words(key.sk_argument);
            if words.is_empty() {
                return Cond::Never;
            }
            let ints = words.iter().map(|&w| w as i64);
            return match strategy {
                STRATEGY_EQ => Cond::In(keys::sorted_set(words)),
                // x < ANY(a) holds when it holds for a's largest element.
                STRATEGY_LT => Cond::Lt(ints.max().unwrap_or(i64::MIN)),
                STRATEGY_LE => Cond::Le(ints.max().unwrap_or(i64::MIN)),
                STRATEGY_GT => Cond::Gt(ints.min().unwrap_or(i64::MAX)),
                STRATEGY_GE => Cond::Ge(ints.min().unwrap_or(i64::MAX)),
                _ => Cond::Never,
            };
        }
        match strategy {
            STRATEGY_OVERLAP | STRATEGY_CONTAINS => {
                let (words, any_null) = array_words(key.sk_argument);
                let set = keys::sorted_set(words);
                if strategy == STRATEGY_OVERLAP {
                    Cond::Overlaps(set)
                } else if any_null {
                    // No array contains a NULL element (NULL = NULL is not true).
                    Cond::Never
                } else {
                    Cond::Contains(set)
                }
            }
            _ => {
                // sk_subtype is the operator's right-hand type (int8 in
                // `int4_column = 5::int8`); InvalidOid means the column's.
                let subtype = if key.sk_subtype == pg_sys::InvalidOid { column_type } else { key.sk_subtype };
                let Some(w) = word_of(subtype, key.sk_argument) else {
                    return Cond::Never;
                };
                match strategy {
                    STRATEGY_EQ => Cond::Eq(w),
                    STRATEGY_LT => Cond::Lt(w as i64),
                    STRATEGY_LE => Cond::Le(w as i64),
                    STRATEGY_GT => Cond::Gt(w as i64),
                    STRATEGY_GE => Cond::Ge(w as i64),
                    _ => Cond::Never,
                }
            }
        }
    }
}
