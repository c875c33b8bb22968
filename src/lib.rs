//! pg_hnsw: a pgvector-compatible `vector` type and an `hnsw` index access
//! method for PostgreSQL, written with pgrx.
//!
//! Map of the crate:
//! - [`vector`]: the SQL types `vector`, `halfvec`, `sparsevec` and the
//!   distances over PostgreSQL's `bit` (I/O, operators, casts, aggregates).
//! - [`distance`]: distance kernels, pure Rust.
//! - [`hnsw`]: the index access method; [`hnsw::graph`] is the algorithm
//!   (Malkov & Yashunin 2016, arXiv:1603.09320), [`hnsw::page`] the on-disk
//!   format, and `build`/`insert`/`scan`/`vacuum` the AM callbacks;
//!   [`hnsw::check`] is `hnsw_index_check`, the verifier of that format.
//! - [`recall`]: `hnsw_recall` and `hnsw_suggest_ef_search`, the ef_search
//!   tuning sweep in SQL (plain SQL over any `hnsw` index).

use pgrx::prelude::*;

pgrx::pg_module_magic!();

pub mod compat;
pub mod distance;
pub mod error;
pub mod hnsw;
pub mod recall;
pub mod vector;

/// Runs when the library is loaded into a backend: registers the index
/// options, the `hnsw.*` GUCs and VACUUM's test hooks.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    hnsw::options::init();
    hnsw::vacuum::init_test_hooks();
}

extension_sql_file!(
    "../sql/vector.sql",
    name = "vector_sql",
    requires = [
        "vector_type",
        vector_typmod_cast,
        array_to_vector_int4,
        array_to_vector_float4,
        array_to_vector_float8,
        array_to_vector_numeric,
        vector_to_float4,
        vector_to_float8,
        l2_distance,
        vector_negative_inner_product,
        cosine_distance,
        l1_distance,
        vector_add,
        vector_sub,
        vector_mul,
        vector_concat,
        vector_lt,
        vector_le,
        vector_eq,
        vector_ne,
        vector_ge,
        vector_gt,
        vector_cmp,
        vector_accum,
        vector_combine,
        vector_avg,
    ]
);

extension_sql_file!(
    "../sql/halfvec.sql",
    name = "halfvec_sql",
    requires = [
        "vector_sql",
        "halfvec_type",
        halfvec_typmod_cast,
        halfvec_to_vector,
        vector_to_halfvec,
        halfvec_to_float4,
        array_to_halfvec_int4,
        array_to_halfvec_float4,
        array_to_halfvec_float8,
        array_to_halfvec_numeric,
        halfvec_l2_distance,
        halfvec_negative_inner_product,
        halfvec_cosine_distance,
        halfvec_l1_distance,
        halfvec_add,
        halfvec_sub,
        halfvec_mul,
        halfvec_concat,
        halfvec_lt,
        halfvec_le,
        halfvec_eq,
        halfvec_ne,
        halfvec_ge,
        halfvec_gt,
        halfvec_cmp,
        halfvec_accum,
        halfvec_combine,
        halfvec_avg,
    ]
);

extension_sql_file!(
    "../sql/sparsevec.sql",
    name = "sparsevec_sql",
    requires = [
        "halfvec_sql",
        "sparsevec_type",
        sparsevec_typmod_cast,
        sparsevec_to_vector,
        vector_to_sparsevec,
        sparsevec_to_halfvec,
        halfvec_to_sparsevec,
        array_to_sparsevec_int4,
        array_to_sparsevec_float4,
        array_to_sparsevec_float8,
        array_to_sparsevec_numeric,
        sparsevec_l2_distance,
        sparsevec_negative_inner_product,
        sparsevec_cosine_distance,
        sparsevec_l1_distance,
        sparsevec_lt,
        sparsevec_le,
        sparsevec_eq,
        sparsevec_ne,
        sparsevec_ge,
        sparsevec_gt,
        sparsevec_cmp,
    ]
);

extension_sql_file!(
    "../sql/bit.sql",
    name = "bit_sql",
    requires = ["sparsevec_sql", hamming_distance, jaccard_distance]
);

extension_sql_file!("../sql/hnsw.sql", name = "hnsw_sql", finalize);

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;
#[cfg(any(test, feature = "pg_test"))]
mod pg_tests_types;

/// Hooks pgrx's test framework calls before the in-database tests run.
#[cfg(test)]
pub mod pg_test {
    /// Nothing to prepare per test database.
    pub fn setup(_options: Vec<&str>) {}

    /// Extra `postgresql.conf` lines for the test cluster.
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
