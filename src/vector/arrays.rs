//! Reading SQL arrays: the elements of `integer[]`, `real[]`, `double
//! precision[]` and `numeric[]` for the casts to `vector`, `halfvec` and
//! `sparsevec`, and the `double precision[]` state of the `avg` aggregates.
//!
//! Both follow pgvector's checks and wording: a cast source must be
//! one-dimensional ("array must be 1-D", 22000) without NULLs ("array must
//! not contain nulls", 22004); an aggregate state must be a one-dimensional
//! `float8` array of at least one element without NULLs ("<function>:
//! expected state array", raised like pgvector's `elog(ERROR)`, XX000).

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::error::raise;

/// The element type and element datums of an array (no NULLs: checked by callers).
///
/// # Safety
/// `p` must point at a detoasted array in the current memory context.
unsafe fn deconstruct(p: *mut pg_sys::ArrayType) -> (pg_sys::Oid, Vec<pg_sys::Datum>) {
    // SAFETY: `p` is a valid array (caller's contract); the lookup and
    // deconstruction are Postgres functions guarded by pgrx. The element
    // datums it returns live in the current memory context.
    unsafe {
        let elemtype = (*p).elemtype;
        let (mut len, mut byval, mut align) = (0i16, false, 0 as std::ffi::c_char);
        pg_sys::get_typlenbyvalalign(elemtype, &mut len, &mut byval, &mut align);
        let mut elems: *mut pg_sys::Datum = std::ptr::null_mut();
        let mut n: std::ffi::c_int = 0;
        pg_sys::deconstruct_array(p, elemtype, len as i32, byval, align, &mut elems, std::ptr::null_mut(), &mut n);
        let datums =
            if n > 0 && !elems.is_null() { std::slice::from_raw_parts(elems, n as usize).to_vec() } else { Vec::new() };
        (elemtype, datums)
    }
}

/// The elements of a cast's source array as `f32`, converted as pgvector
/// does (`(float)` of the integer or double, `numeric_float4` for numeric).
/// Raises for a multidimensional array or NULL elements, then calls
/// `check_len` with the element count before converting (so a wrong length
/// is reported before a bad element, as in pgvector).
pub fn array_to_f32<T>(array: Array<'_, T>, check_len: impl FnOnce(usize)) -> Vec<f32> {
    // The element count comes from the array's header: a source far longer
    // than any vector is refused before its elements are copied anywhere.
    let count = array.len();
    let p = array.into_array_type() as *mut pg_sys::ArrayType;
    // SAFETY: pgrx detoasted the argument into the current memory context;
    // `ndim` is its header field, and the Postgres calls are guarded.
    let (elemtype, datums) = unsafe {
        if (*p).ndim > 1 {
            raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, "array must be 1-D");
        }
        if pg_sys::array_contains_nulls(p) {
            raise(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, "array must not contain nulls");
        }
        check_len(count);
        deconstruct(p)
    };
    // SAFETY (all arms): each datum is an element of the array's own type.
    let convert: fn(pg_sys::Datum) -> f32 = if elemtype == pg_sys::INT4OID {
        |d| unsafe { i32::from_datum(d, false) }.unwrap_or(0) as f32
    } else if elemtype == pg_sys::FLOAT4OID {
        |d| unsafe { f32::from_datum(d, false) }.unwrap_or(0.0)
    } else if elemtype == pg_sys::FLOAT8OID {
        |d| unsafe { f64::from_datum(d, false) }.unwrap_or(0.0) as f32
    } else if elemtype == pg_sys::NUMERICOID {
        // `numeric_float4` raises on values outside `real`, as the cast
        // `numeric::real` does.
        |d| unsafe { pgrx::direct_function_call::<f32>(pg_sys::numeric_float4, &[Some(d)]) }.unwrap_or(0.0)
    } else {
        raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, "unsupported array type")
    };
    datums.into_iter().map(convert).collect()
}

/// The values of an aggregate's `double precision[]` state, checked as
/// pgvector checks them (see the module docs); `caller` names the function
/// in the error.
pub fn state_values(state: Array<'_, f64>, caller: &str) -> Vec<f64> {
    let p = state.into_array_type() as *mut pg_sys::ArrayType;
    // SAFETY: as in `array_to_f32`.
    unsafe {
        let ok = (*p).ndim == 1 && (*p).elemtype == pg_sys::FLOAT8OID && !pg_sys::array_contains_nulls(p);
        let values: Vec<f64> = if ok {
            deconstruct(p).1.into_iter().map(|d| f64::from_datum(d, false).unwrap_or(0.0)).collect()
        } else {
            Vec::new()
        };
        if values.is_empty() {
            raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("{caller}: expected state array"));
        }
        values
    }
}
