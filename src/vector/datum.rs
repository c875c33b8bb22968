//! The `vector` datum: a plain varlena laid out like pgvector's, read in place.
//!
//! Layout (native endian, 4-byte aligned): `varlena header (4 bytes) | int16
//! dim | int16 unused (0) | float4[dim]`. This module is the only place that
//! turns datum pointers into Rust slices; everything above it works on
//! `&[f32]`.

use pgrx::callconv::{Arg, ArgAbi, BoxRet, FcInfo};
use pgrx::datum::Datum;
use pgrx::pg_sys;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::prelude::*;
use std::ptr::NonNull;

use super::text::VECTOR_MAX_DIM;

/// Bytes before the first element: varlena header, dim, unused.
pub const VECTOR_HEADER_SIZE: usize = 8;

/// A detoasted `vector` value in Postgres memory (an argument, or a result
/// palloc'd in the current memory context).
///
/// Holding a `Vector` keeps no Rust ownership: the memory belongs to the
/// Postgres memory context it was allocated or detoasted in.
pub struct Vector {
    ptr: NonNull<u8>,
    dim: usize,
}

/// Raises pgvector's data-corruption error for a datum whose header is wrong.
fn corrupt(detail: String) -> ! {
    crate::error::raise_detail(PgSqlErrorCode::ERRCODE_DATA_CORRUPTED, "invalid vector datum", detail)
}

impl Vector {
    /// Wraps a possibly toasted datum, detoasting it (a copy only when it was
    /// compressed, out of line or short-header) and validating its header.
    ///
    /// # Safety
    /// `datum` must be a non-null `vector` datum from Postgres.
    pub unsafe fn from_raw_datum(datum: pg_sys::Datum) -> Vector {
        // SAFETY: the caller promises a valid varlena datum; detoasting
        // returns a 4-byte-header varlena that lives in the current context.
        let p = unsafe { pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) } as *mut u8;
        let ptr = NonNull::new(p).unwrap_or_else(|| corrupt("null pointer".into()));
        // SAFETY: a detoasted varlena has a readable 4-byte header.
        let total = unsafe { pgrx::varsize_any(p as *const pg_sys::varlena) };
        if total < VECTOR_HEADER_SIZE {
            corrupt(format!("datum of {total} bytes is shorter than the vector header"));
        }
        // SAFETY: at least VECTOR_HEADER_SIZE bytes are readable (checked above).
        let header = unsafe { std::slice::from_raw_parts(p, VECTOR_HEADER_SIZE) };
        let dim = i16::from_ne_bytes([header[4], header[5]]);
        if dim < 1 || dim as usize > VECTOR_MAX_DIM {
            corrupt(format!("dimension count {dim} out of range"));
        }
        let dim = dim as usize;
        if total != VECTOR_HEADER_SIZE + 4 * dim {
            corrupt(format!("{dim} dimensions do not fit a datum of {total} bytes"));
        }
        if (p as usize) % std::mem::align_of::<f32>() != 0 {
            corrupt("misaligned datum".into());
        }
        Vector { ptr, dim }
    }

    /// Allocates a zeroed vector of `dim` elements in the current memory
    /// context. `dim` must be in `1..=16000` (checked by callers).
    pub fn zeroed(dim: usize) -> Vector {
        assert!((1..=VECTOR_MAX_DIM).contains(&dim));
        let size = VECTOR_HEADER_SIZE + 4 * dim;
        // SAFETY: palloc0 returns MAXALIGNed zeroed memory of `size` bytes or
        // raises an ERROR; we then write only inside those bytes.
        unsafe {
            let p = pg_sys::palloc0(size) as *mut u8;
            pgrx::set_varsize_4b(p as *mut pg_sys::varlena, size as i32);
            std::ptr::copy_nonoverlapping((dim as i16).to_ne_bytes().as_ptr(), p.add(4), 2);
            Vector { ptr: NonNull::new_unchecked(p), dim }
        }
    }

    /// Copies `values` into a new vector in the current memory context.
    pub fn from_slice(values: &[f32]) -> Vector {
        let mut v = Vector::zeroed(values.len());
        v.as_mut_slice().copy_from_slice(values);
        v
    }

    /// Number of dimensions.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The elements, read in place.
    pub fn as_slice(&self) -> &[f32] {
        // SAFETY: the constructor validated that `dim` floats follow the
        // 8-byte header inside the datum and that the pointer is 4-aligned.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(VECTOR_HEADER_SIZE) as *const f32, self.dim) }
    }

    /// The elements, mutable (only for vectors this backend just allocated).
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as in `as_slice`; `&mut self` gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(VECTOR_HEADER_SIZE) as *mut f32, self.dim) }
    }

    /// The datum pointing at this vector.
    pub fn into_raw_datum(self) -> pg_sys::Datum {
        pg_sys::Datum::from(self.ptr.as_ptr())
    }
}

impl FromDatum for Vector {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _typoid: pg_sys::Oid) -> Option<Self> {
        if is_null || datum.is_null() {
            None
        } else {
            // SAFETY: Postgres hands us a non-null datum of type vector.
            Some(unsafe { Vector::from_raw_datum(datum) })
        }
    }
}

impl IntoDatum for Vector {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(self.into_raw_datum())
    }

    fn type_oid() -> pg_sys::Oid {
        pgrx::wrappers::rust_regtypein::<Self>()
    }
}

// SAFETY: `vector` arguments are varlena datums, which `FromDatum` detoasts
// and validates.
unsafe impl<'fcx> ArgAbi<'fcx> for Vector {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: forwarded from the caller's contract.
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or_else(|| panic!("argument {index} must not be null"))
    }
}

// SAFETY: the datum returned points at a varlena in the current context.
unsafe impl BoxRet for Vector {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut FcInfo<'fcx>) -> Datum<'fcx> {
        // SAFETY: returning a valid pointer datum to the caller.
        unsafe { fcinfo.return_raw_datum(self.into_raw_datum()) }
    }
}

// SAFETY: Rust `Vector` maps to the SQL type `vector` created by this
// extension in `vector/mod.rs`.
unsafe impl SqlTranslatable for Vector {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(Vector);
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::ThisExtension;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("vector"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> = Ok(ReturnsRef::One(SqlMappingRef::literal("vector")));
}
