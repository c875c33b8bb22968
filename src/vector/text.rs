//! Pure parsing of the `vector` text form `[1, 2.5, -3e-2]`.
//!
//! No Postgres here: errors are values ([`ParseError`]) that the SQL layer
//! turns into `ERROR`s with pgvector's wording and SQLSTATEs.

/// Most dimensions a `vector` may have (pgvector's `VECTOR_MAX_DIM`).
pub const VECTOR_MAX_DIM: usize = 16_000;

/// Why a text vector was rejected.
#[derive(Debug, Clone, PartialEq)]
pub enum ParseError {
    /// Malformed text; the detail says where (SQLSTATE 22P02).
    Syntax(&'static str),
    /// `[]`: a vector needs at least one element (SQLSTATE 22000).
    Empty,
    /// More than [`VECTOR_MAX_DIM`] elements (SQLSTATE 54000).
    TooManyDimensions,
    /// An element overflows or underflows `float4` (SQLSTATE 22003).
    OutOfRange(String),
    /// `NaN` element (SQLSTATE 22000).
    NaN,
    /// `Infinity` element (SQLSTATE 22000).
    Infinite,
}

fn is_pg_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// Parses `[x1, x2, ...]`, tolerating whitespace around brackets and
/// elements and accepting the number forms of C `strtof` (`1`, `-2.5`,
/// `.5`, `3e-2`, `+1`).
///
/// Returns the elements, or the first problem found.
pub fn parse_vector(input: &str) -> Result<Vec<f32>, ParseError> {
    let s = input.trim_matches(is_pg_space);
    let Some(rest) = s.strip_prefix('[') else {
        return Err(ParseError::Syntax("Vector contents must start with \"[\"."));
    };
    let Some(close) = rest.find(']') else {
        return Err(ParseError::Syntax("Unexpected end of input."));
    };
    if !rest[close + 1..].trim_matches(is_pg_space).is_empty() {
        return Err(ParseError::Syntax("Junk after closing right brace."));
    }
    let body = &rest[..close];
    if body.trim_matches(is_pg_space).is_empty() {
        return Err(ParseError::Empty);
    }
    let mut out = Vec::new();
    for token in body.split(',') {
        let t = token.trim_matches(is_pg_space);
        if t.is_empty() {
            return Err(ParseError::Syntax("Empty element."));
        }
        if out.len() == VECTOR_MAX_DIM {
            return Err(ParseError::TooManyDimensions);
        }
        out.push(parse_element(t)?);
    }
    Ok(out)
}

/// Parses one element the way `strtof` would, then applies pgvector's checks.
pub fn parse_element(t: &str) -> Result<f32, ParseError> {
    let lower = t.to_ascii_lowercase();
    let unsigned = lower.trim_start_matches(['+', '-']);
    if unsigned == "nan" {
        return Err(ParseError::NaN);
    }
    if unsigned == "inf" || unsigned == "infinity" {
        return Err(ParseError::Infinite);
    }
    // Rust's parser also accepts "inf"/"nan" spellings, handled above, and is
    // otherwise the strict decimal grammar strtof accepts (minus hex floats).
    if !t.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E')) {
        return Err(ParseError::Syntax("Invalid element."));
    }
    let v: f32 = t.parse().map_err(|_| ParseError::Syntax("Invalid element."))?;
    if v.is_infinite() {
        return Err(ParseError::OutOfRange(t.to_string()));
    }
    if v == 0.0 && has_nonzero_mantissa(t) {
        return Err(ParseError::OutOfRange(t.to_string()));
    }
    Ok(v)
}

/// True when the digits before the exponent are not all zero (so a parsed
/// zero means the value underflowed `float4`).
fn has_nonzero_mantissa(t: &str) -> bool {
    let mantissa = t.split(['e', 'E']).next().unwrap_or("");
    mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_spaced_and_scientific() {
        assert_eq!(parse_vector("[1,2,3]").unwrap(), vec![1.0, 2.0, 3.0]);
        assert_eq!(parse_vector("  [ 1 , -2.5 ,3e-2 ]  ").unwrap(), vec![1.0, -2.5, 0.03]);
        assert_eq!(parse_vector("[.5,+1,1E2]").unwrap(), vec![0.5, 1.0, 100.0]);
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in ["[1,2", "1,2]", "[1,,2]", "[a]", "[1,2]x", "[1 2]", "", "[", "[1,]"] {
            assert!(matches!(parse_vector(bad), Err(ParseError::Syntax(_))), "{bad:?}");
        }
        assert_eq!(parse_vector("[]"), Err(ParseError::Empty));
        assert_eq!(parse_vector("[ ]"), Err(ParseError::Empty));
    }

    #[test]
    fn rejects_nan_infinity_and_out_of_range() {
        assert_eq!(parse_vector("[NaN]"), Err(ParseError::NaN));
        assert_eq!(parse_vector("[1,-Infinity]"), Err(ParseError::Infinite));
        assert_eq!(parse_vector("[inf]"), Err(ParseError::Infinite));
        assert_eq!(parse_vector("[1e39]"), Err(ParseError::OutOfRange("1e39".into())));
        assert_eq!(parse_vector("[1e-50]"), Err(ParseError::OutOfRange("1e-50".into())));
        assert_eq!(parse_vector("[0e-50]").unwrap(), vec![0.0]);
    }

    #[test]
    fn enforces_dimension_limit() {
        let ok = format!("[{}]", vec!["1"; VECTOR_MAX_DIM].join(","));
        assert_eq!(parse_vector(&ok).unwrap().len(), VECTOR_MAX_DIM);
        let too_many = format!("[{}]", vec!["1"; VECTOR_MAX_DIM + 1].join(","));
        assert_eq!(parse_vector(&too_many), Err(ParseError::TooManyDimensions));
    }
}
