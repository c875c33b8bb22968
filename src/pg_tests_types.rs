//! In-database tests of the `halfvec`, `sparsevec` and `bit` surfaces and of
//! the `vector` compatibility fixes, run by `cargo pgrx test` inside a
//! backend (through SPI). The expected values are worked out by hand from
//! the definitions (binary16 rounding, 1-based sparse indices, bit counts).

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// The text form of a one-value query.
    fn text(expr: &str) -> String {
        Spi::get_one::<String>(&format!("SELECT ({expr})::text"))
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
            .unwrap_or_else(|| "NULL".into())
    }

    fn float(expr: &str) -> f64 {
        Spi::get_one::<f64>(&format!("SELECT ({expr})::float8")).unwrap().unwrap()
    }

    fn boolean(expr: &str) -> bool {
        Spi::get_one::<bool>(&format!("SELECT {expr}")).unwrap().unwrap()
    }

    #[pg_test]
    fn halfvec_text_rounds_to_binary16() {
        assert_eq!(text("'[1.23456]'::halfvec"), "[1.234375]");
        assert_eq!(text("' [ 1,  2 , 3 ] '::halfvec(3)"), "[1,2,3]");
        assert_eq!(text("'[65519,-65519]'::halfvec"), "[65504,-65504]");
        assert_eq!(text("'[1e-8,-1e-8]'::halfvec"), "[0,-0]");
        // 6e-8 rounds to 2^-24, the smallest subnormal binary16, which
        // prints as the shortest decimal of that value as a `real`.
        assert_eq!(text("'[6e-8]'::halfvec"), "[5.9604645e-08]");
        assert_eq!(text("'{\"[1,2]\",\"[3,4]\"}'::halfvec[]"), "{\"[1,2]\",\"[3,4]\"}");
        assert_eq!(text("format_type('halfvec'::regtype, 5)"), "halfvec(5)");
    }

    #[pg_test(error = "\"65520\" is out of range for type halfvec")]
    fn halfvec_text_overflow_is_an_error() {
        text("'[65520]'::halfvec");
    }

    #[pg_test]
    fn halfvec_distances_and_norms() {
        assert_eq!(float("'[0,0]'::halfvec <-> '[3,4]'"), 5.0);
        assert_eq!(float("'[1,2]'::halfvec <#> '[3,4]'"), -11.0);
        assert_eq!(float("inner_product('[65504]'::halfvec, '[65504]')"), 65504.0 * 65504.0);
        assert_eq!(float("'[1,0]'::halfvec <=> '[0,2]'"), 1.0);
        assert_eq!(float("'[1,1]'::halfvec <=> '[-1,-1]'"), 2.0);
        assert!(float("cosine_distance('[1,2]'::halfvec, '[0,0]')").is_nan());
        assert_eq!(float("'[0,0]'::halfvec <+> '[3,-4]'"), 7.0);
        assert_eq!(float("l2_norm('[3,4]'::halfvec)"), 5.0);
        assert_eq!(float("halfvec_l2_squared_distance('[0,0]', '[3,4]')"), 25.0);
        assert_eq!(float("halfvec_negative_inner_product('[1,2]', '[3,4]')"), -11.0);
        assert_eq!(Spi::get_one::<i32>("SELECT vector_dims('[1,2,3]'::halfvec)").unwrap(), Some(3));
        // 0.6 and 0.8 are not binary16 values: the nearest ones print.
        assert_eq!(text("l2_normalize('[3,4]'::halfvec)"), "[0.60009766,0.7998047]");
        assert_eq!(text("l2_normalize('[0,0]'::halfvec)"), "[0,0]");
    }

    #[pg_test(error = "different halfvec dimensions 2 and 1")]
    fn halfvec_dimension_mismatch() {
        float("'[1,2]'::halfvec <-> '[3]'");
    }

    #[pg_test]
    fn halfvec_arithmetic_comparison_and_aggregates() {
        assert_eq!(text("'[1,2,3]'::halfvec + '[4,5,6]'"), "[5,7,9]");
        assert_eq!(text("'[1,2,3]'::halfvec - '[4,5,6]'"), "[-3,-3,-3]");
        assert_eq!(text("'[1,2,3]'::halfvec * '[4,5,6]'"), "[4,10,18]");
        assert_eq!(text("'[1,2]'::halfvec || '[3]'"), "[1,2,3]");
        assert_eq!(text("subvector('[1,2,3,4,5]'::halfvec, 2, 3)"), "[2,3,4]");
        assert_eq!(text("subvector('[1,2,3,4,5]'::halfvec, -1, 3)"), "[1]");
        assert!(boolean("'[1,2]'::halfvec < '[1,3]' AND '[1,2]'::halfvec < '[1,2,0]'"));
        assert!(boolean("'[0]'::halfvec = '[-0]'"));
        assert_eq!(Spi::get_one::<i32>("SELECT halfvec_cmp('[2,3]', '[1,2,3]')").unwrap(), Some(1));
        let avg = "SELECT avg(v) FROM (VALUES ('[1,2,3]'::halfvec), ('[3,5,7]'), (NULL)) t(v)";
        assert_eq!(text(&format!("({avg})")), "[2,3.5,5]");
        let sum = "SELECT sum(v) FROM (VALUES ('[1,2,3]'::halfvec), ('[3,5,7]')) t(v)";
        assert_eq!(text(&format!("({sum})")), "[4,7,10]");
        assert_eq!(text("(SELECT avg(v) FROM (VALUES ('[65504]'::halfvec), ('[65504]')) t(v))"), "[65504]");
        assert_eq!(text("halfvec_accum('{0,0,0,0}', '[1,2,3]')"), "{1,1,2,3}");
        assert_eq!(text("halfvec_avg('{2,2,4,6}')"), "[1,2,3]");
        assert_eq!(text("halfvec_avg('{0}')"), "NULL");
    }

    #[pg_test(error = "value out of range: overflow")]
    fn halfvec_sum_overflow() {
        text("(SELECT sum(v) FROM (VALUES ('[65504]'::halfvec), ('[65504]')) t(v))");
    }

    #[pg_test(error = "value out of range: underflow")]
    fn halfvec_product_underflow() {
        text("'[1e-7]'::halfvec * '[1e-7]'");
    }

    #[pg_test(error = "halfvec_avg: expected state array")]
    fn halfvec_avg_rejects_malformed_state() {
        text("halfvec_avg('{{2,2,4,6}}')");
    }

    #[pg_test]
    fn halfvec_casts() {
        assert_eq!(text("'[1,2,3]'::vector::halfvec(3)"), "[1,2,3]");
        assert_eq!(text("'[1.5,2]'::halfvec::vector"), "[1.5,2]");
        assert_eq!(text("'[1.5,2]'::halfvec::real[]"), "{1.5,2}");
        assert_eq!(text("ARRAY[1,2,3]::halfvec"), "[1,2,3]");
        assert_eq!(text("ARRAY[1.5,2]::real[]::halfvec"), "[1.5,2]");
        assert_eq!(text("ARRAY[1.5,2]::float8[]::halfvec"), "[1.5,2]");
        assert_eq!(text("ARRAY[1.5,2]::numeric[]::halfvec"), "[1.5,2]");
        assert_eq!(text("'{1e-46,-1e-46}'::float8[]::halfvec"), "[0,-0]");
        // vector -> halfvec is implicit: a halfvec-only operator takes a vector.
        assert_eq!(text("'[1,2]'::halfvec + '[3,4]'::vector"), "[4,6]");
        assert_eq!(text("binary_quantize('[1,0,-1,2]'::halfvec)"), "1001");
        // Assignment casts into a halfvec(n) column.
        Spi::run("CREATE TABLE hv (v halfvec(2)); INSERT INTO hv VALUES (ARRAY[1,2]), ('[3,4]'::vector)").unwrap();
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM hv").unwrap(), Some(2));
    }

    #[pg_test(error = "\"65520\" is out of range for type halfvec")]
    fn vector_to_halfvec_overflow() {
        text("'[65520]'::vector::halfvec");
    }

    #[pg_test(error = "array must be 1-D")]
    fn halfvec_from_multidimensional_array() {
        text("'{{1}}'::real[]::halfvec");
    }

    #[pg_test]
    fn halfvec_btree_index() {
        Spi::run(
            "CREATE TABLE hb (v halfvec(3));
             INSERT INTO hb VALUES ('[0,0,0]'), ('[1,2,3]'), ('[1,1,1]'), (NULL);
             CREATE INDEX ON hb (v);
             SET enable_seqscan = off;",
        )
        .unwrap();
        let ordered = Spi::get_one::<String>("SELECT string_agg(v::text, ' ' ORDER BY v) FROM hb").unwrap();
        assert_eq!(ordered.as_deref(), Some("[0,0,0] [1,1,1] [1,2,3]"));
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM hb WHERE v = '[1,2,3]'").unwrap(), Some(1));
    }

    #[pg_test]
    fn sparsevec_text_and_casts() {
        assert_eq!(text("' { 3 : 3.5 ,  1  :  1.5  } / 5 '::sparsevec"), "{1:1.5,3:3.5}/5");
        assert_eq!(text("'{1:0,2:1,3:0}/3'::sparsevec"), "{2:1}/3");
        assert_eq!(text("'{}/1000000000'::sparsevec"), "{}/1000000000");
        assert_eq!(text("'[0,1.5,0,3.5,0]'::vector::sparsevec(5)"), "{2:1.5,4:3.5}/5");
        assert_eq!(text("'[0,1.5,0,3.5,0]'::halfvec::sparsevec"), "{2:1.5,4:3.5}/5");
        assert_eq!(text("'{2:1.5,4:3.5}/5'::sparsevec::vector"), "[0,1.5,0,3.5,0]");
        assert_eq!(text("'{2:1.5,4:3.5}/5'::sparsevec::halfvec(5)"), "[0,1.5,0,3.5,0]");
        assert_eq!(text("ARRAY[1,0,2,0,3,0]::sparsevec"), "{1:1,3:2,5:3}/6");
        assert_eq!(text("ARRAY[1,0,2]::numeric[]::sparsevec"), "{1:1,3:2}/3");
        assert_eq!(text("'{1e-46,-1e-46}'::float8[]::sparsevec"), "{}/2");
        assert_eq!(text("format_type('sparsevec'::regtype, 7)"), "sparsevec(7)");
    }

    #[pg_test(error = "sparsevec indices must not contain duplicates")]
    fn sparsevec_duplicate_index() {
        text("'{1:1,2:1,1:1}/2'::sparsevec");
    }

    #[pg_test(error = "sparsevec index out of bounds")]
    fn sparsevec_index_out_of_bounds() {
        text("'{2:1}/1'::sparsevec");
    }

    #[pg_test(error = "vector cannot have more than 16000 dimensions")]
    fn sparsevec_to_vector_too_large() {
        text("'{}/16001'::sparsevec::vector");
    }

    #[pg_test]
    fn sparsevec_distances_norms_and_order() {
        assert_eq!(float("'{1:3}/2'::sparsevec <-> '{2:4}/2'"), 5.0);
        assert_eq!(float("'{1:1,3:3,5:5}/5'::sparsevec <#> '{2:4,3:6,4:8}/5'"), -18.0);
        assert_eq!(float("'{1:1}/2'::sparsevec <=> '{2:2}/2'"), 1.0);
        assert!(float("'{}/1'::sparsevec <=> '{}/1'").is_nan());
        assert_eq!(float("'{1:1,3:3,5:5,7:7}/8'::sparsevec <+> '{2:2,4:4,6:6,8:8}/8'"), 36.0);
        assert_eq!(float("inner_product('{1:3e38}/1'::sparsevec, '{1:3e38}/1')"), f64::INFINITY);
        assert_eq!(float("l2_norm('{1:3,2:4}/2'::sparsevec)"), 5.0);
        assert_eq!(float("sparsevec_l2_squared_distance('{1:3}/2', '{2:4}/2')"), 25.0);
        assert_eq!(text("l2_normalize('{2:3e37,4:3e-37,6:4e37,8:4e-37}/9'::sparsevec)"), "{2:0.6,6:0.8}/9");
        assert_eq!(Spi::get_one::<i32>("SELECT sparsevec_cmp('{1:1,2:2}/2', '{1:2,2:3,3:4}/3')").unwrap(), Some(-1));
        assert!(boolean("'{1:1,2:2,3:3}/3'::sparsevec > '{1:1,2:2}/2'"));
        assert!(boolean("'{1:-1}/2'::sparsevec < '{}/2' AND '{}/2'::sparsevec < '{2:1}/2'"));
        Spi::run(
            "CREATE TABLE sb (v sparsevec(3));
             INSERT INTO sb VALUES ('{}/3'), ('{1:1,2:2,3:3}/3'), ('{1:1,2:1,3:1}/3'), (NULL);
             CREATE INDEX ON sb (v); SET enable_seqscan = off;",
        )
        .unwrap();
        let ordered = Spi::get_one::<String>("SELECT string_agg(v::text, ' ' ORDER BY v) FROM sb").unwrap();
        assert_eq!(ordered.as_deref(), Some("{}/3 {1:1,2:1,3:1}/3 {1:1,2:2,3:3}/3"));
    }

    #[pg_test(error = "different sparsevec dimensions 2 and 1")]
    fn sparsevec_dimension_mismatch() {
        float("'{1:1,2:2}/2'::sparsevec <#> '{1:3}/1'");
    }

    #[pg_test]
    fn bit_distances_and_quantization() {
        assert_eq!(float("hamming_distance('111', '100')"), 2.0);
        assert_eq!(float("B'10101010101010101010' <~> B'01010101010101010101'"), 20.0);
        assert_eq!(float("'1111'::bit(4) <%> '1100'::bit(4)"), 0.5);
        assert_eq!(float("jaccard_distance('0000', '0000')"), 1.0);
        assert_eq!(float("hamming_distance('', '')"), 0.0);
        assert_eq!(float("hamming_distance('111', '000'::varbit(4))"), 3.0);
        assert_eq!(text("binary_quantize('[1,0,-1]'::vector)"), "100");
        assert_eq!(
            text("binary_quantize('[1,2,3,-4,5,6,-7,8,1,-2,-3,4,5,-6,7,8,-1,2,3]'::vector)"),
            "1110110110011011011"
        );
        // Long strings: the 64-bit word loop and the tail agree.
        let ones = "repeat('1', 1000)::varbit";
        let alternate = "repeat('10', 500)::varbit";
        assert_eq!(float(&format!("{ones} <~> {alternate}")), 500.0);
        assert_eq!(float(&format!("{ones} <%> {alternate}")), 0.5);
    }

    #[pg_test(error = "different bit lengths 3 and 2")]
    fn bit_length_mismatch() {
        float("hamming_distance('111', '00')");
    }

    #[pg_test]
    fn vector_compatibility_fixes() {
        // Underflow to zero is accepted, as strtof and pgvector do.
        assert_eq!(text("'[1e-46,1]'::vector"), "[0,1]");
        assert_eq!(text("'[-1e-46,1]'::vector"), "[-0,1]");
        assert_eq!(text("'{1e-46,-1e-46}'::float8[]::vector"), "[0,-0]");
        assert_eq!(text("vector_accum('{0,0,0,0}', '[1,2,3]')"), "{1,1,2,3}");
        assert_eq!(text("vector_combine('{1,2}', '{3,4}')"), "{4,6}");
        assert_eq!(text("vector_combine('{0}', '{0}')"), "{0}");
        assert_eq!(text("vector_avg('{0}')"), "NULL");
    }

    #[pg_test(error = "array must be 1-D")]
    fn vector_from_multidimensional_array() {
        text("ARRAY[[1,2],[3,4]]::int[]::vector");
    }

    #[pg_test(error = "infinite value not allowed in vector")]
    fn vector_from_huge_double() {
        text("'{4e38,-4e38}'::float8[]::vector");
    }

    #[pg_test(error = "vector_avg: expected state array")]
    fn vector_avg_rejects_state_with_null() {
        text("vector_avg('{NULL,2,4,6}')");
    }

    #[pg_test(error = "vector_combine: expected state array")]
    fn vector_combine_rejects_empty_state() {
        text("vector_combine('{}', '{0}')");
    }

    #[pg_test(error = "vector cannot have more than 16000 dimensions")]
    fn vector_avg_of_too_many_dimensions() {
        text("(SELECT vector_avg(array_agg(n)) FROM generate_series(1, 16002) n)");
    }
}
