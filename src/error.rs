//! Raising Postgres `ERROR`s with a SQLSTATE from Rust.
//!
//! Each helper unwinds through pgrx's `#[pg_guard]` boundary, which turns it
//! into an ordinary `ERROR`: the transaction aborts, the backend survives.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// Raises `ERROR` with SQLSTATE `code` and message `message`.
pub fn raise(code: PgSqlErrorCode, message: impl Into<String>) -> ! {
    ErrorReport::new(code, message.into(), "pg_hnsw").report(PgLogLevel::ERROR);
    unreachable!("ERROR returned")
}

/// Raises `ERROR` with a `DETAIL` line.
pub fn raise_detail(code: PgSqlErrorCode, message: impl Into<String>, detail: impl Into<String>) -> ! {
    ErrorReport::new(code, message.into(), "pg_hnsw").set_detail(detail.into()).report(PgLogLevel::ERROR);
    unreachable!("ERROR returned")
}

/// Raises `ERROR` with `DETAIL` and `HINT` lines.
pub fn raise_hint(
    code: PgSqlErrorCode,
    message: impl Into<String>,
    detail: impl Into<String>,
    hint: impl Into<String>,
) -> ! {
    ErrorReport::new(code, message.into(), "pg_hnsw")
        .set_detail(detail.into())
        .set_hint(hint.into())
        .report(PgLogLevel::ERROR);
    unreachable!("ERROR returned")
}
