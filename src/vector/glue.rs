//! pgrx glue shared by the varlena wrappers of `halfvec`, `sparsevec` and
//! `bit` ([`super::halfvec::HalfVec`], [`super::sparsevec::SparseVec`],
//! [`super::bit::VarBit`]).
//!
//! Each wrapper has `unsafe fn from_raw_datum(pg_sys::Datum) -> Self` (detoast
//! and validate) and `fn into_raw_datum(self) -> pg_sys::Datum`; the macro
//! derives the conversions pgrx needs to pass it as an argument or return it,
//! and its SQL spelling for generated `CREATE FUNCTION` statements.

/// Implements `FromDatum`, `IntoDatum`, `ArgAbi`, `BoxRet` and
/// `SqlTranslatable` for the varlena wrapper `$ty` spelled `$sql` in SQL.
/// `$origin` is `ThisExtension` (the type is created by this extension) or
/// `External` (a PostgreSQL type); `$oid` is the expression giving its type
/// OID.
macro_rules! varlena_glue {
    ($ty:ident, $sql:literal, $origin:ident, $oid:expr) => {
        impl pgrx::FromDatum for $ty {
            unsafe fn from_polymorphic_datum(
                datum: pgrx::pg_sys::Datum,
                is_null: bool,
                _typoid: pgrx::pg_sys::Oid,
            ) -> Option<Self> {
                if is_null || datum.is_null() {
                    None
                } else {
                    // SAFETY: Postgres hands us a non-null datum of this type.
                    Some(unsafe { $ty::from_raw_datum(datum) })
                }
            }
        }

        impl pgrx::IntoDatum for $ty {
            fn into_datum(self) -> Option<pgrx::pg_sys::Datum> {
                Some(self.into_raw_datum())
            }

            fn type_oid() -> pgrx::pg_sys::Oid {
                $oid
            }
        }

        // SAFETY: arguments of this type are varlena datums, which
        // `FromDatum` detoasts and validates.
        unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for $ty {
            unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
                let index = arg.index();
                // SAFETY: forwarded from the caller's contract.
                unsafe { arg.unbox_arg_using_from_datum() }
                    .unwrap_or_else(|| panic!("argument {index} must not be null"))
            }
        }

        // SAFETY: the datum returned points at a varlena in the current
        // memory context.
        unsafe impl pgrx::callconv::BoxRet for $ty {
            unsafe fn box_into<'fcx>(self, fcinfo: &mut pgrx::callconv::FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
                // SAFETY: returning a valid pointer datum to the caller.
                unsafe { fcinfo.return_raw_datum(self.into_raw_datum()) }
            }
        }

        // SAFETY: the Rust type maps to the SQL type spelled `$sql`.
        unsafe impl pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable for $ty {
            const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!($ty);
            const TYPE_ORIGIN: pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin =
                pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin::$origin;
            const ARGUMENT_SQL: Result<
                pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef,
                pgrx::pgrx_sql_entity_graph::metadata::ArgumentError,
            > = Ok(pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef::literal($sql));
            const RETURN_SQL: Result<
                pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef,
                pgrx::pgrx_sql_entity_graph::metadata::ReturnsError,
            > = Ok(pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef::One(
                pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef::literal($sql),
            ));
        }
    };
}

pub(crate) use varlena_glue;

/// Detoasts a varlena datum (a copy only when it was compressed, stored out
/// of line or has a short header) and returns its pointer and total size.
///
/// # Safety
/// `datum` must be a non-null varlena datum from Postgres.
pub unsafe fn detoast(datum: pgrx::pg_sys::Datum) -> (*mut u8, usize) {
    // SAFETY: the caller promises a valid varlena datum; detoasting returns a
    // 4-byte-header varlena in the current memory context.
    let p = unsafe { pgrx::pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) } as *mut u8;
    if p.is_null() {
        return (p, 0);
    }
    // SAFETY: a detoasted varlena has a readable 4-byte header.
    let total = unsafe { pgrx::varsize_any(p as *const pgrx::pg_sys::varlena) };
    (p, total)
}

/// Allocates a zeroed varlena of `size` bytes (header included) in the
/// current memory context and sets its 4-byte header. `size` must be at
/// least 4 and below 1 GB (callers bound it by the types' limits).
pub fn alloc_varlena(size: usize) -> std::ptr::NonNull<u8> {
    assert!((4..0x3FFF_FFFF).contains(&size));
    // SAFETY: palloc0 returns MAXALIGNed zeroed memory of `size` bytes or
    // raises an ERROR; the header write stays inside it.
    unsafe {
        let p = pgrx::pg_sys::palloc0(size) as *mut u8;
        pgrx::set_varsize_4b(p as *mut pgrx::pg_sys::varlena, size as i32);
        std::ptr::NonNull::new_unchecked(p)
    }
}
