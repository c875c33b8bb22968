//! Pure parsing of the text forms of `vector` / `halfvec` (`[1, 2.5, -3e-2]`)
//! and `sparsevec` (`{1:1.5,3:2}/5`).
//!
//! No Postgres here: errors are values ([`ParseError`]) that the SQL layer
//! turns into `ERROR`s with pgvector's wording and SQLSTATEs. The scanners
//! follow the C library's `strtof` / `strtol` grammar (what pgvector's input
//! functions call), so the same strings are accepted, and problems are found
//! in the same order (left to right, element checks as each element is read).

use half::f16;

/// Most dimensions a `vector` may have (pgvector's `VECTOR_MAX_DIM`).
pub const VECTOR_MAX_DIM: usize = 16_000;

/// Why a text value was rejected.
#[derive(Debug, Clone, PartialEq)]
pub enum ParseError {
    /// Malformed text, with pgvector's `DETAIL` where it gives one (SQLSTATE 22P02).
    Syntax(Option<&'static str>),
    /// No elements (`[]`) or a sparse dimension count below 1 (SQLSTATE 22000).
    Empty,
    /// More dimensions than the type allows (SQLSTATE 54000).
    TooManyDimensions,
    /// More than 16,000 elements in a `sparsevec` literal (SQLSTATE 54000).
    TooManyElements,
    /// An element overflows `float4` (or, for `halfvec`, binary16), or, for
    /// `sparsevec`, underflows to zero; carries the element's text (SQLSTATE 22003).
    OutOfRange(String),
    /// `NaN` element (SQLSTATE 22000).
    NaN,
    /// `Infinity` element (SQLSTATE 22000).
    Infinite,
    /// The type modifier asks for another dimension count (SQLSTATE 22000).
    ExpectedDim { expected: i32, got: usize },
    /// A sparse index outside `1..=dim` (SQLSTATE 22000).
    IndexOutOfBounds,
    /// The same sparse index twice (SQLSTATE 22000).
    DuplicateIndex,
}

/// pgvector's notion of white space (that of C's `isspace` in the C locale).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn skip_space(s: &[u8], mut pos: usize) -> usize {
    while pos < s.len() && is_space(s[pos]) {
        pos += 1;
    }
    pos
}

/// A number read by [`scan_float`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Number<'a> {
    /// The value, correctly rounded to `f32` (`±∞` on overflow, `0` on full underflow).
    pub value: f32,
    /// The characters that make up the number.
    pub text: &'a str,
    /// The value was finite in the text but overflowed `f32` (`strtof`'s `ERANGE` with `±HUGE_VALF`).
    pub overflow: bool,
    /// The text had a non-zero value that rounded to zero (`strtof`'s `ERANGE` with `0`).
    pub underflow: bool,
}

fn count_digits(s: &[u8], pos: usize, radix: u32) -> usize {
    s[pos..].iter().take_while(|b| (**b as char).is_digit(radix)).count()
}

/// Reads the longest prefix of `s` (after leading white space) that C's
/// `strtof` accepts: decimal (`1`, `-2.5`, `.5`, `3e-2`, `1.`), hexadecimal
/// (`0x1.8p3`), `inf`/`infinity`/`nan` in any case, each with an optional
/// sign. Returns the number and the bytes consumed, or `None` when no number
/// starts there.
pub fn scan_float(s: &str) -> Option<(Number<'_>, usize)> {
    let b = s.as_bytes();
    let start = skip_space(b, 0);
    let mut pos = start;
    let negative = pos < b.len() && b[pos] == b'-';
    if pos < b.len() && (b[pos] == b'+' || b[pos] == b'-') {
        pos += 1;
    }
    let rest = &s[pos..];
    let word = |w: &str| rest.len() >= w.len() && rest.as_bytes()[..w.len()].eq_ignore_ascii_case(w.as_bytes());
    let signed = |v: f32| if negative { -v } else { v };
    let special = if word("infinity") {
        Some((f32::INFINITY, 8))
    } else if word("inf") {
        Some((f32::INFINITY, 3))
    } else if word("nan") {
        Some((f32::NAN, 3))
    } else {
        None
    };
    if let Some((v, n)) = special {
        let end = pos + n;
        let number = Number { value: signed(v), text: &s[start..end], overflow: false, underflow: false };
        return Some((number, end));
    }
    let hex = rest.len() > 2 && (rest.starts_with("0x") || rest.starts_with("0X")) && {
        let after = pos + 2;
        let int = count_digits(b, after, 16);
        int > 0 || (after < b.len() && b[after] == b'.' && count_digits(b, after + 1, 16) > 0)
    };
    if hex {
        return Some(scan_hex(s, start, pos + 2, negative));
    }
    let int_digits = count_digits(b, pos, 10);
    let mut end = pos + int_digits;
    let mut frac_digits = 0;
    if end < b.len() && b[end] == b'.' {
        frac_digits = count_digits(b, end + 1, 10);
        if int_digits > 0 || frac_digits > 0 {
            end += 1 + frac_digits;
        }
    }
    if int_digits == 0 && frac_digits == 0 {
        return None;
    }
    let mantissa_end = end;
    if end < b.len() && (b[end] == b'e' || b[end] == b'E') {
        let mut e = end + 1;
        if e < b.len() && (b[e] == b'+' || b[e] == b'-') {
            e += 1;
        }
        let exp_digits = count_digits(b, e, 10);
        if exp_digits > 0 {
            end = e + exp_digits;
        }
    }
    let text = &s[start..end];
    // Rust's parser is correctly rounded like strtof and accepts exactly this
    // grammar (sign, digits, optional point, optional exponent).
    let value: f32 = text.parse().ok()?;
    let nonzero = b[pos..mantissa_end].iter().any(|c| (b'1'..=b'9').contains(c));
    let number = Number { value, text, overflow: value.is_infinite(), underflow: value == 0.0 && nonzero };
    Some((number, end))
}

/// Reads a hexadecimal float whose digits start at `digits` (after `0x`).
fn scan_hex(s: &str, start: usize, digits: usize, negative: bool) -> (Number<'_>, usize) {
    let b = s.as_bytes();
    let mut mantissa = 0f64;
    let mut exponent: i64 = 0;
    let mut end = digits;
    let mut nonzero = false;
    let mut seen_point = false;
    while end < b.len() {
        let c = b[end];
        if c == b'.' && !seen_point {
            seen_point = true;
        } else if let Some(d) = (c as char).to_digit(16) {
            nonzero |= d != 0;
            mantissa = mantissa * 16.0 + d as f64;
            if seen_point {
                exponent -= 4;
            }
        } else {
            break;
        }
        end += 1;
    }
    if end < b.len() && (b[end] == b'p' || b[end] == b'P') {
        let mut e = end + 1;
        let exp_negative = e < b.len() && b[e] == b'-';
        if e < b.len() && (b[e] == b'+' || b[e] == b'-') {
            e += 1;
        }
        let n = count_digits(b, e, 10);
        if n > 0 {
            let p: i64 = s[e..e + n].parse().unwrap_or(i64::MAX / 4).min(100_000);
            exponent += if exp_negative { -p } else { p };
            end = e + n;
        }
    }
    let magnitude = mantissa * 2f64.powi(exponent.clamp(-100_000, 100_000) as i32);
    let value = if negative { -magnitude } else { magnitude } as f32;
    let number =
        Number { value, text: &s[start..end], overflow: value.is_infinite(), underflow: value == 0.0 && nonzero };
    (number, end)
}

/// Reads the longest prefix of `s` (after leading white space) that C's
/// `strtol` accepts in base 10, saturating at the `i64` range as `strtol`
/// does on a 64-bit `long`. `None` when no digits start there.
pub fn scan_long(s: &str) -> Option<(i64, usize)> {
    let b = s.as_bytes();
    let mut pos = skip_space(b, 0);
    let negative = pos < b.len() && b[pos] == b'-';
    if pos < b.len() && (b[pos] == b'+' || b[pos] == b'-') {
        pos += 1;
    }
    let n = count_digits(b, pos, 10);
    if n == 0 {
        return None;
    }
    let mut v: i64 = 0;
    for &c in &b[pos..pos + n] {
        let d = (c - b'0') as i64;
        v = if negative { v.saturating_mul(10).saturating_sub(d) } else { v.saturating_mul(10).saturating_add(d) };
    }
    Some((v, pos + n))
}

/// Parses a dense literal `[x1, x2, ...]` of at most `max_dim` elements,
/// converting each element with `convert` as soon as it is read (so element
/// errors come in the order pgvector reports them).
pub fn parse_dense<T>(
    input: &str,
    max_dim: usize,
    mut convert: impl FnMut(Number<'_>) -> Result<T, ParseError>,
) -> Result<Vec<T>, ParseError> {
    let b = input.as_bytes();
    let mut pos = skip_space(b, 0);
    if pos >= b.len() || b[pos] != b'[' {
        return Err(ParseError::Syntax(Some("Vector contents must start with \"[\".")));
    }
    pos = skip_space(b, pos + 1);
    if pos < b.len() && b[pos] == b']' {
        return Err(ParseError::Empty);
    }
    let mut out = Vec::new();
    loop {
        if out.len() == max_dim {
            return Err(ParseError::TooManyDimensions);
        }
        pos = skip_space(b, pos);
        let Some((number, used)) = scan_float(&input[pos..]) else {
            return Err(ParseError::Syntax(None));
        };
        out.push(convert(number)?);
        pos = skip_space(b, pos + used);
        match b.get(pos) {
            Some(b',') => pos += 1,
            Some(b']') => {
                pos += 1;
                break;
            }
            _ => return Err(ParseError::Syntax(None)),
        }
    }
    if skip_space(b, pos) != b.len() {
        return Err(ParseError::Syntax(Some("Junk after closing right brace.")));
    }
    Ok(out)
}

/// The element rules of `vector`: overflow is an error, NaN and infinities
/// are rejected, values that underflow become zero (as `strtof` gives them).
pub fn vector_element(n: Number<'_>) -> Result<f32, ParseError> {
    if n.overflow {
        return Err(ParseError::OutOfRange(n.text.to_string()));
    }
    finite(n.value)
}

/// The element rules of `halfvec`: as [`vector_element`], then rounded to the
/// nearest binary16; a finite value that rounds past ±65504 is out of range.
pub fn halfvec_element(n: Number<'_>) -> Result<f16, ParseError> {
    let h = f16::from_f32(n.value);
    if n.overflow || (h.is_infinite() && n.value.is_finite()) {
        return Err(ParseError::OutOfRange(n.text.to_string()));
    }
    finite(n.value)?;
    Ok(h)
}

/// The element rules of `sparsevec`: overflow and underflow to zero are both
/// out of range; NaN and infinities are rejected.
pub fn sparsevec_element(n: Number<'_>) -> Result<f32, ParseError> {
    if n.overflow || n.underflow {
        return Err(ParseError::OutOfRange(n.text.to_string()));
    }
    finite(n.value)
}

/// Rejects NaN and infinities.
pub fn finite(x: f32) -> Result<f32, ParseError> {
    if x.is_nan() {
        Err(ParseError::NaN)
    } else if x.is_infinite() {
        Err(ParseError::Infinite)
    } else {
        Ok(x)
    }
}

/// Parses a `vector` literal (at most 16,000 elements).
pub fn parse_vector(input: &str) -> Result<Vec<f32>, ParseError> {
    parse_dense(input, VECTOR_MAX_DIM, vector_element)
}

/// Parses a `halfvec` literal (at most 16,000 elements).
pub fn parse_halfvec(input: &str) -> Result<Vec<f16>, ParseError> {
    parse_dense(input, crate::vector::halfvec::HALFVEC_MAX_DIM, halfvec_element)
}

/// A parsed `sparsevec`: dimensions, 0-based strictly increasing indices and
/// their non-zero values.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseText {
    pub dim: usize,
    pub indices: Vec<i32>,
    pub values: Vec<f32>,
}

/// Parses a `sparsevec` literal `{i1:v1, i2:v2, ...}/dim` (1-based indices,
/// any order), checking it as pgvector does: at most 16,000 elements (by
/// counting commas first), element rules of [`sparsevec_element`], zero
/// values dropped, `dim` in `1..=max_dim`, then `typmod` (`-1` for none),
/// then each index in `1..=dim` and no index twice.
pub fn parse_sparsevec(input: &str, max_dim: usize, max_nnz: usize, typmod: i32) -> Result<SparseText, ParseError> {
    let b = input.as_bytes();
    if b.iter().filter(|&&c| c == b',').count() + 1 > max_nnz {
        return Err(ParseError::TooManyElements);
    }
    let mut pos = skip_space(b, 0);
    if pos >= b.len() || b[pos] != b'{' {
        return Err(ParseError::Syntax(Some("Vector contents must start with \"{\".")));
    }
    pos = skip_space(b, pos + 1);
    let mut elements: Vec<(i64, f32)> = Vec::new();
    if pos < b.len() && b[pos] == b'}' {
        pos += 1;
    } else {
        loop {
            let Some((index, used)) = scan_long(&input[pos..]) else {
                return Err(ParseError::Syntax(None));
            };
            // Kept inside the int32 range, like pgvector, so that every
            // out-of-range index gets the same error later.
            let index = index.clamp(i32::MIN as i64 + 1, i32::MAX as i64);
            pos = skip_space(b, pos + used);
            if b.get(pos) != Some(&b':') {
                return Err(ParseError::Syntax(None));
            }
            pos = skip_space(b, pos + 1);
            let Some((number, used)) = scan_float(&input[pos..]) else {
                return Err(ParseError::Syntax(None));
            };
            let value = sparsevec_element(number)?;
            if value != 0.0 {
                elements.push((index - 1, value));
            }
            pos = skip_space(b, pos + used);
            match b.get(pos) {
                Some(b',') => pos += 1,
                Some(b'}') => {
                    pos += 1;
                    break;
                }
                _ => return Err(ParseError::Syntax(None)),
            }
        }
    }
    pos = skip_space(b, pos);
    if b.get(pos) != Some(&b'/') {
        return Err(ParseError::Syntax(Some("Unexpected end of input.")));
    }
    pos = skip_space(b, pos + 1);
    let Some((dim, used)) = scan_long(&input[pos..]) else {
        return Err(ParseError::Syntax(None));
    };
    if skip_space(b, pos + used) != b.len() {
        return Err(ParseError::Syntax(Some("Junk after closing.")));
    }
    if dim < 1 {
        return Err(ParseError::Empty);
    }
    if dim as u64 > max_dim as u64 {
        return Err(ParseError::TooManyDimensions);
    }
    let dim = dim as usize;
    if typmod != -1 && typmod as i64 != dim as i64 {
        return Err(ParseError::ExpectedDim { expected: typmod, got: dim });
    }
    elements.sort_by_key(|&(i, _)| i);
    let mut previous = -1i64;
    for &(i, _) in &elements {
        if i < 0 || i >= dim as i64 {
            return Err(ParseError::IndexOutOfBounds);
        }
        if i == previous {
            return Err(ParseError::DuplicateIndex);
        }
        previous = i;
    }
    Ok(SparseText {
        dim,
        indices: elements.iter().map(|&(i, _)| i as i32).collect(),
        values: elements.iter().map(|&(_, v)| v).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_spaced_and_scientific() {
        assert_eq!(parse_vector("[1,2,3]").unwrap(), vec![1.0, 2.0, 3.0]);
        assert_eq!(parse_vector("  [ 1 , -2.5 ,3e-2 ]  ").unwrap(), vec![1.0, -2.5, 0.03]);
        assert_eq!(parse_vector("[.5,+1,1E2,1.,1e+2]").unwrap(), vec![0.5, 1.0, 100.0, 1.0, 100.0]);
        assert_eq!(parse_vector("[0x10,-0x1.8p1,0X.8]").unwrap(), vec![16.0, -3.0, 0.5]);
    }

    #[test]
    fn rejects_malformed_text_with_pgvector_details() {
        for bad in ["[1,2", "[1,,2]", "[a]", "[1 2]", "[", "[ ", "[,", "[,]", "[1,]", "[1a]", "[1, ,3]", "[1e]"] {
            assert_eq!(parse_vector(bad), Err(ParseError::Syntax(None)), "{bad:?}");
        }
        let start = Err(ParseError::Syntax(Some("Vector contents must start with \"[\".")));
        assert_eq!(parse_vector(""), start);
        assert_eq!(parse_vector("1,2]"), start);
        assert_eq!(parse_vector("[1,2]x"), Err(ParseError::Syntax(Some("Junk after closing right brace."))));
        assert_eq!(parse_vector("[]"), Err(ParseError::Empty));
        assert_eq!(parse_vector("[ ]"), Err(ParseError::Empty));
    }

    #[test]
    fn nan_infinity_overflow_and_underflow() {
        assert_eq!(parse_vector("[NaN]"), Err(ParseError::NaN));
        assert_eq!(parse_vector("[1,-Infinity]"), Err(ParseError::Infinite));
        assert_eq!(parse_vector("[inf]"), Err(ParseError::Infinite));
        assert_eq!(parse_vector("[1e39]"), Err(ParseError::OutOfRange("1e39".into())));
        assert_eq!(parse_vector("[-4e38,1]"), Err(ParseError::OutOfRange("-4e38".into())));
        // Underflow gives zero (of the right sign), as strtof and pgvector do.
        let v = parse_vector("[1e-46,-1e-46,1.5e-38]").unwrap();
        assert_eq!((v[0], v[1].to_bits(), v[2]), (0.0, (-0.0f32).to_bits(), 1.5e-38));
        // Element errors come in order: the NaN before the missing bracket.
        assert_eq!(parse_vector("[NaN,1"), Err(ParseError::NaN));
    }

    #[test]
    fn enforces_dimension_limit() {
        let ok = format!("[{}]", vec!["1"; VECTOR_MAX_DIM].join(","));
        assert_eq!(parse_vector(&ok).unwrap().len(), VECTOR_MAX_DIM);
        let too_many = format!("[{}]", vec!["1"; VECTOR_MAX_DIM + 1].join(","));
        assert_eq!(parse_vector(&too_many), Err(ParseError::TooManyDimensions));
    }

    #[test]
    fn halfvec_elements_round_to_binary16() {
        let v = parse_halfvec("[1.23456,65519,-65519,1e-8,-1e-8,6e-8,1e-46]").unwrap();
        let f: Vec<f32> = v.iter().map(|h| h.to_f32()).collect();
        assert_eq!(&f[..4], &[1.234375, 65504.0, -65504.0, 0.0]);
        assert_eq!(f[4].to_bits(), (-0.0f32).to_bits());
        assert_eq!(f[5], f16::from_bits(1).to_f32(), "smallest subnormal half");
        assert_eq!(f[6], 0.0);
        assert_eq!(parse_halfvec("[65520,-65520]"), Err(ParseError::OutOfRange("65520".into())));
        assert_eq!(parse_halfvec("[4e38,1]"), Err(ParseError::OutOfRange("4e38".into())));
        assert_eq!(parse_halfvec("[-Infinity]"), Err(ParseError::Infinite));
        assert_eq!(parse_halfvec("[NaN]"), Err(ParseError::NaN));
    }

    #[test]
    fn scanners_follow_strtof_and_strtol() {
        let (n, used) = scan_float("  -1.5e3xyz").unwrap();
        assert_eq!((n.value, n.text, used), (-1500.0, "-1.5e3", 8));
        assert_eq!(scan_float("1e+").unwrap().1, 1, "a bare exponent marker is not consumed");
        assert_eq!(scan_float("infinityx").unwrap().1, 8);
        assert_eq!(scan_float("infinit").unwrap().1, 3);
        assert!(scan_float("-").is_none() && scan_float(".").is_none() && scan_float("e5").is_none());
        assert_eq!(scan_float("0x").unwrap().1, 1, "\"0x\" without digits reads as 0");
        assert!(scan_float("1e-50").unwrap().0.underflow);
        assert!(!scan_float("0e-50").unwrap().0.underflow);
        assert!(scan_float("1e39").unwrap().0.overflow);
        assert_eq!(scan_long(" +42:"), Some((42, 4)));
        assert_eq!(scan_long("-9223372036854775809"), Some((i64::MIN, 20)));
        assert_eq!(scan_long("99999999999999999999"), Some((i64::MAX, 20)));
        assert_eq!(scan_long("-x"), None);
    }

    fn sparse(input: &str) -> Result<SparseText, ParseError> {
        parse_sparsevec(input, 1_000_000_000, 16_000, -1)
    }

    #[test]
    fn sparse_literals_parse_sort_and_drop_zeros() {
        let s = sparse(" { 3 : 3.5 ,  1  :  1.5  } / 5 ").unwrap();
        assert_eq!(s, SparseText { dim: 5, indices: vec![0, 2], values: vec![1.5, 3.5] });
        assert_eq!(sparse("{1:0,2:1,3:0}/3").unwrap().indices, vec![1]);
        assert_eq!(sparse("{}/1").unwrap(), SparseText { dim: 1, indices: vec![], values: vec![] });
        assert_eq!(sparse("{ }/1000000000").unwrap().dim, 1_000_000_000);
        // A zero value is dropped before its index is checked.
        assert!(sparse("{0:0}/1").is_ok());
    }

    #[test]
    fn sparse_literal_errors_match_pgvector() {
        let syntax = Err(ParseError::Syntax(None));
        for bad in [
            "{",
            "{ ",
            "{:",
            "{,",
            "{}/",
            "{:}/1",
            "{,}/1",
            "{1,}/1",
            "{:1}/1",
            "{1:}/1",
            "{1a:1}/1",
            "{1:1a}/1",
            "{1:1,}/1",
            "{1:hello,2:1}/2",
        ] {
            assert_eq!(sparse(bad), syntax, "{bad:?}");
        }
        assert_eq!(sparse(""), Err(ParseError::Syntax(Some("Vector contents must start with \"{\"."))));
        assert_eq!(sparse("{}"), Err(ParseError::Syntax(Some("Unexpected end of input."))));
        assert_eq!(sparse("{}/1a"), Err(ParseError::Syntax(Some("Junk after closing."))));
        assert_eq!(sparse("{1:NaN,2:1}/2"), Err(ParseError::NaN));
        assert_eq!(sparse("{1:-Infinity}/2"), Err(ParseError::Infinite));
        assert_eq!(sparse("{1:4e38}/2"), Err(ParseError::OutOfRange("4e38".into())));
        assert_eq!(sparse("{1:-1e-46,2:1}/2"), Err(ParseError::OutOfRange("-1e-46".into())));
        assert_eq!(sparse("{1:1,1:1}/2"), Err(ParseError::DuplicateIndex));
        assert_eq!(sparse("{1:1,2:1,1:1}/2"), Err(ParseError::DuplicateIndex));
        for bad in ["{0:1}/1", "{2:1}/1", "{2147483647:1}/1", "{2147483648:1}/1", "{-2147483649:1}/1"] {
            assert_eq!(sparse(bad), Err(ParseError::IndexOutOfBounds), "{bad:?}");
        }
        for bad in ["{}/-1", "{}/0", "{}/-2147483649", "{}/-9223372036854775809"] {
            assert_eq!(sparse(bad), Err(ParseError::Empty), "{bad:?}");
        }
        for bad in ["{}/1000000001", "{}/2147483648", "{}/9223372036854775808"] {
            assert_eq!(sparse(bad), Err(ParseError::TooManyDimensions), "{bad:?}");
        }
        assert_eq!(
            parse_sparsevec("{}/3", 1_000_000_000, 16_000, 2),
            Err(ParseError::ExpectedDim { expected: 2, got: 3 })
        );
        let many = format!("{{{}}}/20000", (1..=16_001).map(|i| format!("{i}:1")).collect::<Vec<_>>().join(","));
        assert_eq!(sparse(&many), Err(ParseError::TooManyElements));
        let max = format!("{{{}}}/20000", (1..=16_000).map(|i| format!("{i}:1")).collect::<Vec<_>>().join(","));
        assert_eq!(sparse(&max).unwrap().indices.len(), 16_000);
    }
}
