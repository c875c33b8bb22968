//! The `vector` SQL type: I/O, typmod, operators, casts and aggregates.
//!
//! The type is defined with our own input/output/typmod/send/recv functions
//! (not pgrx's serde-backed `PostgresType`), so a `vector` datum is a plain
//! varlena that distance functions read in place. See [`datum::Vector`].

pub mod aggregates;
pub mod arrays;
pub mod bit;
pub mod casts;
pub mod datum;
pub(crate) mod glue;
pub mod halfvec;
pub mod ops;
pub mod sparsevec;
pub mod text;

use pgrx::datum::Internal;
use pgrx::prelude::*;
use pgrx::{pg_sys, PgSqlErrorCode};
use std::ffi::{CStr, CString};

pub use datum::Vector;
use text::{ParseError, VECTOR_MAX_DIM};

use crate::error::{raise, raise_detail};

extension_sql!(
    r#"
CREATE TYPE vector;

CREATE FUNCTION vector_in(cstring, oid, integer) RETURNS vector
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE C AS 'MODULE_PATHNAME', 'vector_in_wrapper';
CREATE FUNCTION vector_out(vector) RETURNS cstring
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE C AS 'MODULE_PATHNAME', 'vector_out_wrapper';
CREATE FUNCTION vector_typmod_in(cstring[]) RETURNS integer
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE C AS 'MODULE_PATHNAME', 'vector_typmod_in_wrapper';
CREATE FUNCTION vector_recv(internal, oid, integer) RETURNS vector
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE C AS 'MODULE_PATHNAME', 'vector_recv_wrapper';
CREATE FUNCTION vector_send(vector) RETURNS bytea
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE C AS 'MODULE_PATHNAME', 'vector_send_wrapper';

CREATE TYPE vector (
    INPUT     = vector_in,
    OUTPUT    = vector_out,
    TYPMOD_IN = vector_typmod_in,
    RECEIVE   = vector_recv,
    SEND      = vector_send,
    STORAGE   = external
);
"#,
    name = "vector_type",
    creates = [Type(Vector)],
);

/// Raises the error pgvector gives when a value does not match the column's
/// `vector(n)` / `halfvec(n)` / `sparsevec(n)` (SQLSTATE 22000).
pub fn check_expected_dim(typmod: i32, dim: usize) {
    if typmod != -1 && typmod as i64 != dim as i64 {
        raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, format!("expected {typmod} dimensions, not {dim}"));
    }
}

/// Raises pgvector's error for operands of different lengths (SQLSTATE 22000).
pub fn check_same_dims(a: &Vector, b: &Vector) {
    check_same_dims_of("vector", a.dim(), b.dim());
}

/// Raises `different <type> dimensions A and B` (SQLSTATE 22000) unless `a == b`.
pub fn check_same_dims_of(type_name: &str, a: usize, b: usize) {
    if a != b {
        raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, format!("different {type_name} dimensions {a} and {b}"));
    }
}

/// Checks a dimension count built from user input (`1..=16000`).
pub fn check_dim(dim: usize) {
    check_dim_of("vector", dim, VECTOR_MAX_DIM);
}

/// Checks a dimension count of type `type_name` against `1..=max`: below is
/// SQLSTATE 22000, above 54000, with pgvector's wording.
pub fn check_dim_of(type_name: &str, dim: usize, max: usize) {
    if dim < 1 {
        raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, format!("{type_name} must have at least 1 dimension"))
    }
    if dim > max {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("{type_name} cannot have more than {max} dimensions"),
        )
    }
}

/// Checks one element produced by input, arithmetic or a cast (finite, not NaN).
pub fn check_element(x: f32) {
    check_element_of("vector", x);
}

/// Raises `NaN not allowed in <type>` / `infinite value not allowed in
/// <type>` (SQLSTATE 22000) for a non-finite element.
pub fn check_element_of(type_name: &str, x: f32) {
    if x.is_nan() {
        raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, format!("NaN not allowed in {type_name}"))
    }
    if x.is_infinite() {
        raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, format!("infinite value not allowed in {type_name}"))
    }
}

/// Raises the `ERROR` for text `input` of type `type_name` (at most `max_dim`
/// dimensions) that the parser rejected with `err`, with pgvector's wording
/// and SQLSTATE for each case.
pub fn raise_parse_error(type_name: &str, input: &str, max_dim: usize, err: ParseError) -> ! {
    use PgSqlErrorCode::*;
    let syntax = format!("invalid input syntax for type {type_name}: \"{input}\"");
    match err {
        ParseError::Syntax(None) => raise(ERRCODE_INVALID_TEXT_REPRESENTATION, syntax),
        ParseError::Syntax(Some(detail)) => raise_detail(ERRCODE_INVALID_TEXT_REPRESENTATION, syntax, detail),
        ParseError::Empty => raise(ERRCODE_DATA_EXCEPTION, format!("{type_name} must have at least 1 dimension")),
        ParseError::TooManyDimensions => {
            raise(ERRCODE_PROGRAM_LIMIT_EXCEEDED, format!("{type_name} cannot have more than {max_dim} dimensions"))
        }
        ParseError::TooManyElements => raise(
            ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("{type_name} cannot have more than {} non-zero elements", sparsevec::SPARSEVEC_MAX_NNZ),
        ),
        ParseError::OutOfRange(t) => {
            raise(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, format!("\"{t}\" is out of range for type {type_name}"))
        }
        ParseError::NaN => check_element_of(type_name, f32::NAN),
        ParseError::Infinite => check_element_of(type_name, f32::INFINITY),
        ParseError::ExpectedDim { expected, got } => check_expected_dim(expected, got),
        ParseError::IndexOutOfBounds => raise(ERRCODE_DATA_EXCEPTION, format!("{type_name} index out of bounds")),
        ParseError::DuplicateIndex => {
            raise(ERRCODE_DATA_EXCEPTION, format!("{type_name} indices must not contain duplicates"))
        }
    }
    unreachable!("every parse error raises")
}

/// Parses the type modifier list of `type_name(n)`: exactly one integer in
/// `1..=max` (pgvector's wording and SQLSTATEs otherwise).
pub fn typmod_in(list: Array<&CStr>, type_name: &str, max: usize) -> i32 {
    let items: Vec<Option<&CStr>> = list.iter().collect();
    if items.len() != 1 {
        raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "invalid type modifier");
    }
    let text = items[0].map(|c| c.to_string_lossy().into_owned()).unwrap_or_default();
    let n: i64 = text.trim().parse().unwrap_or_else(|_| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
            format!("invalid input syntax for type integer: \"{text}\""),
        )
    });
    if n < 1 {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("dimensions for type {type_name} must be at least 1"),
        );
    }
    if n > max as i64 {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("dimensions for type {type_name} cannot exceed {max}"),
        );
    }
    n as i32
}

/// Text input: `'[1,2,3]'`, with `vector(n)` enforced when `typmod` is set.
#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn vector_in(input: &CStr, _oid: pg_sys::Oid, typmod: i32) -> Vector {
    let text = input.to_string_lossy();
    let values = text::parse_vector(&text).unwrap_or_else(|e| raise_parse_error("vector", &text, VECTOR_MAX_DIM, e));
    check_expected_dim(typmod, values.len());
    Vector::from_slice(&values)
}

extern "C" {
    /// Postgres's shortest round-trip `float4` formatter (`common/shortest_dec.h`),
    /// the one `float4out` and pgvector use. Writes at most 16 bytes plus NUL
    /// and returns the length. Pure: it never raises an error.
    fn float_to_shortest_decimal_bufn(f: f32, result: *mut std::ffi::c_char) -> std::ffi::c_int;
}

/// Formats one element exactly as `float4out` does (`1.5`, `2`, `1e-07`).
pub fn format_element(x: f32, out: &mut String) {
    let mut buf = [0 as std::ffi::c_char; 32];
    // SAFETY: the buffer is larger than the 17 bytes the function may write.
    let n = unsafe { float_to_shortest_decimal_bufn(x, buf.as_mut_ptr()) };
    let bytes: &[u8] = bytemuck::cast_slice(&buf[..n.clamp(0, 32) as usize]);
    out.push_str(std::str::from_utf8(bytes).unwrap_or("NaN"));
}

/// Text output in shortest round-trip form: `[1.5,2,3]`.
#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn vector_out(v: Vector) -> CString {
    let mut s = String::with_capacity(2 + v.dim() * 12);
    s.push('[');
    for (i, &x) in v.as_slice().iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        format_element(x, &mut s);
    }
    s.push(']');
    CString::new(s).expect("formatted floats contain no NUL")
}

/// Type modifier input: `vector(n)` with `n` in `1..=16000`.
#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn vector_typmod_in(list: Array<&CStr>) -> i32 {
    typmod_in(list, "vector", VECTOR_MAX_DIM)
}

/// Binary input in pgvector's wire format: int16 dim, int16 unused (0),
/// then `dim` big-endian float4.
#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn vector_recv(buf: Internal, _oid: pg_sys::Oid, typmod: i32) -> Vector {
    // SAFETY: Postgres passes a StringInfo as the `internal` argument of a
    // receive function; pq_getmsg* check bounds and raise on short input.
    unsafe {
        let buf = buf.unwrap().expect("recv buffer").cast_mut_ptr::<pg_sys::StringInfoData>();
        // Read as pgvector does: unsigned 16-bit fields.
        let dim = pg_sys::pq_getmsgint(buf, 2) as u16;
        let unused = pg_sys::pq_getmsgint(buf, 2) as u16;
        check_dim(dim as usize);
        check_expected_dim(typmod, dim as usize);
        if unused != 0 {
            raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, format!("expected unused to be 0, not {unused}"));
        }
        let mut v = Vector::zeroed(dim as usize);
        for x in v.as_mut_slice() {
            *x = pg_sys::pq_getmsgfloat4(buf);
            check_element(*x);
        }
        v
    }
}

/// Binary output in pgvector's wire format (see [`vector_recv`]).
#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn vector_send(v: Vector) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 4 * v.dim());
    out.extend_from_slice(&(v.dim() as i16).to_be_bytes());
    out.extend_from_slice(&0i16.to_be_bytes());
    for &x in v.as_slice() {
        out.extend_from_slice(&x.to_be_bytes());
    }
    out
}

/// Typmod coercion `vector -> vector(n)`, used for assignment and casts.
#[pg_extern(immutable, strict, parallel_safe, name = "vector")]
fn vector_typmod_cast(v: Vector, typmod: i32, _explicit: bool) -> Vector {
    check_expected_dim(typmod, v.dim());
    v
}
