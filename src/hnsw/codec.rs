//! Element payloads: how each indexed type is held in the graph and on pages.
//!
//! This is the one seam through which a new element type enters the index.
//! The access-method callbacks (`build`, `insert`, `scan`, `vacuum`) and the
//! graph never look at a type: they move two things around, both defined
//! here by a [`Codec`] chosen from the operator class:
//!
//! - the **working form** of a vector: a slice of 32-bit words (`[u32]`), what
//!   queries and the build's in-memory graph hold. Dense types keep `f32`
//!   bits; `bit` keeps its bytes packed four to a word; `sparsevec` keeps
//!   `[nnz, indices…, value bits…]`. Cosine vectors are normalised on the way
//!   in ([`Codec::prepare_dense`] and friends); a `vector` under cosine also
//!   carries its original norm in one trailing word (the index's lower bounds
//!   need it, see [`distance::lower_bound`]);
//! - the **payload**: the bytes an element item carries after its common
//!   header (see [`super::page`]), read in place from pinned pages. A payload
//!   starts with a *stable* part that never changes while the element is
//!   reachable ([`Codec::stable_len`]: all of it, except the error bounds of a
//!   `vector`, which widen when a duplicate joins); a scan reads an element
//!   under a pin only, and only that part.
//!
//! | codec | payload | distance on pages | ORDER BY |
//! |---|---|---|---|
//! | `vector` | scale, binary16 codes, then error bounds and norm (`16 + 2·dims` B, rounded up to 4) | approximate | rechecked from the heap with a lower bound |
//! | `vector`, `quantization = 'int8'` | scale, signed 8-bit codes, error bounds and norm (`16 + dims` B, rounded up to 4) | approximate | rechecked from the heap with a lower bound |
//! | `halfvec` | norm, binary16 codes (`8 + 2·dims` B) | exact | index order |
//! | `bit` | the bits (`4·⌈bits/32⌉` B) | exact | index order |
//! | `sparsevec` | nnz, indices, values (`4 + 8·nnz` B) | exact | index order |
//!
//! Distances inside the graph are monotone forms of the SQL operators:
//! squared L2 for `<->`, negative inner product for `<#>` and `<=>` (on
//! normalised vectors), L1 for `<+>`, Hamming for `<~>` and Jaccard for `<%>`;
//! [`Codec::sql_distance`] maps them back.

use crate::distance::{self, HalfVector, Int8Vector, Metric, QueryNorms};
use crate::hnsw::graph::Space;

/// The element type of an index (stored in its meta page).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// `vector`: `f32` values, stored in half precision with error bounds.
    Vector = 1,
    /// `halfvec`: binary16 values, stored exactly.
    HalfVec = 2,
    /// PostgreSQL's `bit`: a bit string.
    Bit = 3,
    /// `sparsevec`: non-zero (index, value) pairs.
    SparseVec = 4,
}

impl Kind {
    /// Decodes the number stored in the meta page (`0`, written by format 3
    /// before other kinds existed, means `vector`).
    pub fn from_code(code: u8) -> Option<Kind> {
        match code {
            0 | 1 => Some(Kind::Vector),
            2 => Some(Kind::HalfVec),
            3 => Some(Kind::Bit),
            4 => Some(Kind::SparseVec),
            _ => None,
        }
    }

    /// The SQL type's name, for messages.
    pub fn type_name(self) -> &'static str {
        match self {
            Kind::Vector => "vector",
            Kind::HalfVec => "halfvec",
            Kind::Bit => "bit",
            Kind::SparseVec => "sparsevec",
        }
    }

    /// Most dimensions (bits for `bit`) an indexed column of this kind may
    /// declare: an element item must fit a page (`vector` is stored in half
    /// precision, so it indexes as many dimensions as `halfvec`).
    pub fn max_dims(self) -> usize {
        match self {
            Kind::Vector | Kind::HalfVec => MAX_DENSE_DIMS,
            Kind::Bit => MAX_BITS,
            Kind::SparseVec => MAX_SPARSE_DIMS,
        }
    }
}

/// How an index on `vector` stores each element's values (the index option
/// `quantization`; the meta page records it in the element kind, see
/// [`Codec::kind_code`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VectorCodes {
    /// `'half'` (the default): binary16 codes with a power-of-two scale,
    /// error at most `2^-11` of each component.
    Half,
    /// `'int8'`: signed 8-bit codes with one scale per vector, error at most
    /// `max |x_i| / 254` per component; half the bytes per element.
    Int8,
}

impl VectorCodes {
    /// Bytes per dimension.
    pub const fn width(self) -> usize {
        match self {
            VectorCodes::Half => 2,
            VectorCodes::Int8 => 1,
        }
    }

    /// The option value that selects it, as a C string (for the reloption).
    pub fn c_name(self) -> &'static std::ffi::CStr {
        match self {
            VectorCodes::Half => c"half",
            VectorCodes::Int8 => c"int8",
        }
    }

    /// The option value that selects it.
    pub fn name(self) -> &'static str {
        self.c_name().to_str().unwrap_or("")
    }
}

/// Element kind code in the meta page of a `vector` index with 8-bit codes
/// (after the four [`Kind`]s): builds that predate it refuse such an index
/// as of an unknown kind instead of misreading it.
pub const VECTOR_INT8_CODE: u8 = 5;

/// Most dimensions of an indexed `vector` or `halfvec` (`8 + 16 + 2·4000`
/// bytes of payload fit an 8 kB page beside the element header).
pub const MAX_DENSE_DIMS: usize = 4_000;
/// Most bits of an indexed `bit` column.
pub const MAX_BITS: usize = 64_000;
/// Most dimensions of a `sparsevec` (the type's own limit).
pub const MAX_SPARSE_DIMS: usize = 1_000_000_000;
/// Most non-zero elements of an indexed `sparsevec` row.
pub const MAX_SPARSE_NNZ: usize = 1_000;

/// Why a value cannot enter the index, or a payload read from disk is bad.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodecError {
    /// The value's dimensions differ from the index's: `(index, value)`.
    Dimensions(usize, usize),
    /// A `sparsevec` row with more non-zero elements than the index takes.
    TooManyNonZero(usize),
    /// A damaged payload (the detail says how).
    Corrupt(String),
}

/// Bit-string distances (`bit_hamming_ops`, `bit_jaccard_ops`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitMetric {
    /// `<~>`: number of differing bits.
    Hamming,
    /// `<%>`: `1 − |a ∧ b| / |a ∨ b|`.
    Jaccard,
}

/// Metric code of `bit_hamming_ops` in the meta page (after the four dense
/// metrics of [`Metric`]).
pub const HAMMING_CODE: u8 = 5;
/// Metric code of `bit_jaccard_ops`.
pub const JACCARD_CODE: u8 = 6;

/// How one index holds its elements: the type, the distance and the declared
/// dimensions (bits for `bit`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Codec {
    /// `vector` under a dense metric, stored as `codes`.
    Vector { metric: Metric, dims: usize, codes: VectorCodes },
    /// `halfvec` under a dense metric.
    HalfVec { metric: Metric, dims: usize },
    /// `bit` under Hamming or Jaccard distance.
    Bit { metric: BitMetric, bits: usize },
    /// `sparsevec` under a dense metric (`dims` is the declared dimension).
    SparseVec { metric: Metric, dims: usize },
}

/// Offset of the codes in a `vector` payload (after the scale).
const VECTOR_CODES: usize = 4;
/// Offset of the error bounds and norm in a `vector` payload of `dims`
/// dimensions stored as `codes` (after the codes, rounded up to 4 bytes).
const fn vector_bounds_at(dims: usize, codes: VectorCodes) -> usize {
    (VECTOR_CODES + codes.width() * dims).div_ceil(4) * 4
}
/// Bytes of the `halfvec` payload before its codes.
const HALF_FIELDS: usize = 8;

fn f32_at(b: &[u8], at: usize) -> f32 {
    f32::from_bits(u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

fn put_f32(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 4].copy_from_slice(&v.to_bits().to_ne_bytes());
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// `bytes` as `T`s; `None` unless the address and length fit `T`.
fn cast<T: bytemuck::Pod>(bytes: &[u8]) -> Option<&[T]> {
    bytemuck::try_cast_slice(bytes).ok()
}

impl Codec {
    /// The codec of an index, from the codes in its meta page (or its
    /// operator class): `kind`, metric code, declared dimensions.
    pub fn from_codes(kind: u8, metric: u8, dims: usize) -> Result<Codec, String> {
        if kind == VECTOR_INT8_CODE {
            return match Codec::from_codes(Kind::Vector as u8, metric, dims)? {
                Codec::Vector { metric, dims, .. } => Ok(Codec::Vector { metric, dims, codes: VectorCodes::Int8 }),
                other => Ok(other),
            };
        }
        let kind = Kind::from_code(kind).ok_or_else(|| format!("unknown element kind {kind}"))?;
        if dims == 0 || dims > kind.max_dims() {
            return Err(format!("{dims} dimensions out of range for {}", kind.type_name()));
        }
        let dense = || Metric::from_code(metric).ok_or_else(|| format!("bad metric {metric} for {}", kind.type_name()));
        Ok(match kind {
            Kind::Vector => Codec::Vector { metric: dense()?, dims, codes: VectorCodes::Half },
            Kind::HalfVec => Codec::HalfVec { metric: dense()?, dims },
            Kind::SparseVec => Codec::SparseVec { metric: dense()?, dims },
            Kind::Bit => Codec::Bit {
                metric: match metric {
                    HAMMING_CODE => BitMetric::Hamming,
                    JACCARD_CODE => BitMetric::Jaccard,
                    _ => return Err(format!("bad metric {metric} for bit")),
                },
                bits: dims,
            },
        })
    }

    /// The element kind.
    pub fn kind(&self) -> Kind {
        match self {
            Codec::Vector { .. } => Kind::Vector,
            Codec::HalfVec { .. } => Kind::HalfVec,
            Codec::Bit { .. } => Kind::Bit,
            Codec::SparseVec { .. } => Kind::SparseVec,
        }
    }

    /// The element kind's code for the meta page: the [`Kind`]'s, or
    /// [`VECTOR_INT8_CODE`] for a `vector` with 8-bit codes.
    pub fn kind_code(&self) -> u8 {
        match self {
            Codec::Vector { codes: VectorCodes::Int8, .. } => VECTOR_INT8_CODE,
            _ => self.kind() as u8,
        }
    }

    /// This codec with `vector` values stored as `codes` (other kinds are
    /// returned unchanged: the option applies to `vector` only).
    pub fn with_vector_codes(self, codes: VectorCodes) -> Codec {
        match self {
            Codec::Vector { metric, dims, .. } => Codec::Vector { metric, dims, codes },
            other => other,
        }
    }

    /// The metric's code for the meta page.
    pub fn metric_code(&self) -> u8 {
        match self {
            Codec::Vector { metric, .. } | Codec::HalfVec { metric, .. } | Codec::SparseVec { metric, .. } => {
                *metric as u8
            }
            Codec::Bit { metric: BitMetric::Hamming, .. } => HAMMING_CODE,
            Codec::Bit { metric: BitMetric::Jaccard, .. } => JACCARD_CODE,
        }
    }

    /// Declared dimensions (bits for `bit`).
    pub fn dims(&self) -> usize {
        match self {
            Codec::Vector { dims, .. } | Codec::HalfVec { dims, .. } | Codec::SparseVec { dims, .. } => *dims,
            Codec::Bit { bits, .. } => *bits,
        }
    }

    /// The dense metric, if the codec has one.
    fn dense_metric(&self) -> Option<Metric> {
        match self {
            Codec::Vector { metric, .. } | Codec::HalfVec { metric, .. } | Codec::SparseVec { metric, .. } => {
                Some(*metric)
            }
            Codec::Bit { .. } => None,
        }
    }

    /// Whether vectors are normalised on the way in (cosine distance): zero
    /// vectors are then not indexed.
    pub fn normalizes(&self) -> bool {
        self.dense_metric().is_some_and(Metric::normalizes)
    }

    /// Whether the index returns lower bounds that the executor must recheck
    /// against the heap row (`xs_recheckorderby`): only the lossy `vector`
    /// payload.
    pub fn rechecks(&self) -> bool {
        matches!(self, Codec::Vector { .. })
    }

    // ----- working form ---------------------------------------------------

    /// Working form of dense `values` (a `vector`, or a `halfvec` converted
    /// to `f32`): the values, normalised for cosine. `Ok(None)` for a zero
    /// vector under cosine, which has no direction and is not indexed.
    pub fn prepare_dense(&self, values: &[f32]) -> Result<Option<Vec<u32>>, CodecError> {
        if values.len() != self.dims() {
            return Err(CodecError::Dimensions(self.dims(), values.len()));
        }
        let mut v = values.to_vec();
        if self.normalizes() {
            let original = distance::norm(values) as f32;
            if !distance::normalize_in_place(&mut v) {
                return Ok(None);
            }
            if let Codec::Vector { .. } = self {
                v.push(original);
            }
        }
        Ok(Some(v.into_iter().map(f32::to_bits).collect()))
    }

    /// Working form of a bit string of `bits` bits held in `bytes` (most
    /// significant bit first, as PostgreSQL stores `bit`).
    pub fn prepare_bits(&self, bits: usize, bytes: &[u8]) -> Result<Option<Vec<u32>>, CodecError> {
        if bits != self.dims() {
            return Err(CodecError::Dimensions(self.dims(), bits));
        }
        let nbytes = bits.div_ceil(8);
        let mut words = vec![0u32; bits.div_ceil(32)];
        let out: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
        out[..nbytes].copy_from_slice(&bytes[..nbytes.min(bytes.len())]);
        // Pad bits past the end are zero in a valid datum; make sure.
        if bits % 8 != 0 {
            out[nbytes - 1] &= 0xFFu8 << (8 - bits % 8);
        }
        Ok(Some(words))
    }

    /// Working form of a sparse vector of dimension `dim` with 0-based
    /// `indices` (strictly increasing) and non-zero `values`, normalised for
    /// cosine.
    pub fn prepare_sparse(&self, dim: usize, indices: &[i32], values: &[f32]) -> Result<Option<Vec<u32>>, CodecError> {
        if dim != self.dims() {
            return Err(CodecError::Dimensions(self.dims(), dim));
        }
        let nnz = indices.len().min(values.len());
        if nnz > MAX_SPARSE_NNZ {
            return Err(CodecError::TooManyNonZero(nnz));
        }
        let mut values = values[..nnz].to_vec();
        if self.dense_metric().is_some_and(Metric::normalizes) && !distance::normalize_in_place(&mut values) {
            return Ok(None);
        }
        let mut words = Vec::with_capacity(1 + 2 * nnz);
        words.push(nnz as u32);
        words.extend(indices[..nnz].iter().map(|&i| i as u32));
        words.extend(values.iter().map(|v| v.to_bits()));
        Ok(Some(words))
    }

    // ----- payload ----------------------------------------------------------

    /// Bytes of the payload of working-form vector `v`.
    pub fn payload_len(&self, v: &[u32]) -> usize {
        match self {
            Codec::Vector { dims, codes, .. } => vector_bounds_at(*dims, *codes) + 12,
            Codec::HalfVec { dims, .. } => HALF_FIELDS + 2 * dims,
            Codec::Bit { bits, .. } => 4 * bits.div_ceil(32),
            Codec::SparseVec { .. } => 4 + 8 * sparse_nnz(v),
        }
    }

    /// Fewest payload bytes any element of this index can have (a sparse
    /// vector with no nonzero entry; the fixed length otherwise).
    pub fn min_payload_len(&self) -> usize {
        match self {
            Codec::SparseVec { .. } => 4,
            _ => self.payload_len(&[]),
        }
    }

    /// Most payload bytes any element of this index can have.
    pub fn max_payload_len(&self) -> usize {
        match self {
            Codec::SparseVec { dims, .. } => 4 + 8 * MAX_SPARSE_NNZ.min(*dims),
            _ => self.payload_len(&[]),
        }
    }

    /// Bytes at the start of a payload of `payload_len` bytes that never
    /// change while the element is reachable (what a scan may read under a
    /// pin alone).
    pub fn stable_len(&self, payload_len: usize) -> usize {
        match self {
            Codec::Vector { dims, codes, .. } => (VECTOR_CODES + codes.width() * dims).min(payload_len),
            _ => payload_len,
        }
    }

    /// Encodes working-form vector `v` as its payload.
    pub fn encode(&self, v: &[u32]) -> Vec<u8> {
        let mut out = vec![0u8; self.payload_len(v)];
        match self {
            Codec::Vector { metric, dims, codes } => {
                let values: &[f32] = bytemuck::cast_slice(&v[..*dims]);
                // The norm of the vector as given, which the lower bound
                // needs (for cosine the stored one is unit).
                let given = |norm: f32| match metric {
                    Metric::Cosine => v.get(*dims).map_or(1.0, |&n| f32::from_bits(n)),
                    _ => norm,
                };
                match codes {
                    VectorCodes::Half => {
                        let mut h = HalfVector::encode(values);
                        h.norm = given(h.norm);
                        write_vector_payload(&mut out, &h, *dims);
                    }
                    VectorCodes::Int8 => {
                        let mut h = Int8Vector::encode(values);
                        h.norm = given(h.norm);
                        write_int8_payload(&mut out, &h, *dims);
                    }
                }
            }
            Codec::HalfVec { metric, .. } => {
                let x: &[f32] = bytemuck::cast_slice(v);
                // Other metrics' values came from a halfvec and round-trip
                // exactly; cosine vectors arrive normalised, so their codes
                // are rounded, and the norm of the rounded vector is kept to
                // divide by (its direction is exact to half precision).
                let codes: Vec<u16> = x.iter().map(|&value| half::f16::from_f32(value).to_bits()).collect();
                let rounded: Vec<f32> = codes.iter().map(|&c| distance::half_to_f32(c)).collect();
                let norm = if *metric == Metric::Cosine { distance::norm(&rounded) as f32 } else { 1.0 };
                put_f32(&mut out, 0, if norm > 0.0 { norm } else { 1.0 });
                for (i, code) in codes.iter().enumerate() {
                    out[HALF_FIELDS + 2 * i..HALF_FIELDS + 2 * i + 2].copy_from_slice(&code.to_ne_bytes());
                }
            }
            Codec::Bit { .. } | Codec::SparseVec { .. } => {
                let n = out.len();
                out.copy_from_slice(&bytemuck::cast_slice::<u32, u8>(v)[..n]);
            }
        }
        out
    }

    // ----- build form -------------------------------------------------------

    /// What the build's in-memory graph holds for working-form vector `v`
    /// (and compares in [`BuildSpace`]): a `vector` element as its
    /// payload (half-precision codes, scale, error bounds and norm, packed in
    /// words), which halves the bytes the build reads per distance; every
    /// other type its working form.
    pub fn build_form(&self, v: &[u32]) -> Vec<u32> {
        match self {
            Codec::Vector { metric, dims, .. } => {
                let half = Codec::Vector { metric: *metric, dims: *dims, codes: VectorCodes::Half };
                let payload = half.encode(v);
                // A `vector` payload is a whole number of words
                // (`vector_bounds_at` rounds up, three f32 fields follow).
                payload.chunks_exact(4).map(|w| u32::from_ne_bytes([w[0], w[1], w[2], w[3]])).collect()
            }
            _ => v.to_vec(),
        }
    }

    /// The payload of an element held in [`Codec::build_form`].
    ///
    /// With 8-bit codes the build still holds (and compares) half-precision
    /// payloads; the page gets 8-bit codes of that half-precision vector,
    /// whose error bounds add the two roundings' (triangle inequality), so
    /// they bound the distance to the row's own value.
    pub fn build_payload(&self, form: &[u32]) -> Vec<u8> {
        match self {
            Codec::Vector { codes: VectorCodes::Half, .. } => bytemuck::cast_slice::<u32, u8>(form).to_vec(),
            Codec::Vector { dims, codes: VectorCodes::Int8, .. } => {
                let half = bytemuck::cast_slice::<u32, u8>(form);
                let (codes, scale) = form_codes(form, *dims);
                let mut values = Vec::with_capacity(*dims);
                HalfVector::decode(codes, scale, &mut values);
                let mut h = Int8Vector::encode(&values);
                let b = vector_bounds_at(*dims, VectorCodes::Half);
                h.err_l2 = distance::add_bounds(h.err_l2, f32_at(half, b));
                h.err_l1 = distance::add_bounds(h.err_l1, f32_at(half, b + 4));
                h.norm = f32_at(half, b + 8);
                let mut out = vec![0u8; self.payload_len(&[])];
                write_int8_payload(&mut out, &h, *dims);
                out
            }
            _ => self.encode(form),
        }
    }

    /// Checks a payload read from disk just enough that every accessor and
    /// kernel stays in bounds: `payload_len` is the payload's size from the
    /// item's line pointer, `stable` its first [`Codec::stable_len`] bytes
    /// (or more). Cheap enough for every visit; `check.rs` adds
    /// [`Codec::validate_deep`].
    pub fn validate(&self, payload_len: usize, stable: &[u8]) -> Result<(), CodecError> {
        let aligned = (stable.as_ptr() as usize) % 4 == 0 && stable.len() >= self.stable_len(payload_len);
        let ok = aligned
            && match self {
                Codec::Vector { .. } | Codec::HalfVec { .. } | Codec::Bit { .. } => {
                    payload_len == self.payload_len(&[])
                }
                // Whole words: the decoders read the payload as `u32`s.
                Codec::SparseVec { .. } => {
                    payload_len >= 4 && payload_len % 4 == 0 && {
                        let nnz = u32_at(stable, 0) as usize;
                        nnz <= MAX_SPARSE_NNZ && 4 + 8 * nnz <= payload_len
                    }
                }
            };
        if ok {
            Ok(())
        } else {
            Err(CodecError::Corrupt(format!("bad {} payload of {payload_len} bytes", self.kind().type_name())))
        }
    }

    /// [`Codec::validate`] plus the invariants a kernel does not need for
    /// memory safety: finite values, sparse indices strictly increasing and
    /// within the dimensions.
    pub fn validate_deep(&self, payload: &[u8]) -> Result<(), CodecError> {
        self.validate(payload.len(), payload)?;
        let bad = |what: &str| Err(CodecError::Corrupt(format!("{} payload: {what}", self.kind().type_name())));
        match self {
            Codec::Vector { dims, codes, .. } => {
                let at = vector_bounds_at(*dims, *codes);
                let fields: Vec<f32> = [0, at, at + 4, at + 8].iter().map(|&o| f32_at(payload, o)).collect();
                if fields.iter().any(|f| !f.is_finite() || *f < 0.0) || fields[0] == 0.0 {
                    return bad("bad scale or error bounds");
                }
            }
            Codec::HalfVec { .. } => {
                if !f32_at(payload, 0).is_finite() {
                    return bad("bad norm");
                }
            }
            Codec::Bit { .. } => {}
            Codec::SparseVec { dims, .. } => {
                let (indices, values) = sparse_parts(payload);
                if indices.windows(2).any(|w| w[0] >= w[1])
                    || indices.iter().any(|&i| i < 0 || i as usize >= *dims)
                    || values.iter().any(|v| !v.is_finite())
                {
                    return bad("indices not strictly increasing within the dimensions, or values not finite");
                }
            }
        }
        Ok(())
    }

    /// The graph distance from working-form `query` to a validated payload,
    /// of which only the stable part (`stable`) is read.
    #[inline]
    pub fn distance_to_payload(&self, query: &[u32], stable: &[u8]) -> f32 {
        let payload = stable;
        match self {
            Codec::Vector { metric, dims, codes: VectorCodes::Half } => {
                let codes: &[u16] = cast(&payload[VECTOR_CODES..VECTOR_CODES + 2 * dims]).unwrap_or(&[]);
                let q = &query[..(*dims).min(query.len())];
                metric.distance_half(bytemuck::cast_slice(q), codes, f32_at(payload, 0))
            }
            Codec::Vector { metric, dims, codes: VectorCodes::Int8 } => {
                let codes: &[i8] = bytemuck::cast_slice(&payload[VECTOR_CODES..VECTOR_CODES + dims]);
                let q = &query[..(*dims).min(query.len())];
                metric.distance_int8(bytemuck::cast_slice(q), codes, f32_at(payload, 0))
            }
            Codec::HalfVec { metric, .. } => {
                let codes: &[u16] = cast(&payload[HALF_FIELDS..]).unwrap_or(&[]);
                let d = metric.distance_half(bytemuck::cast_slice(query), codes, 1.0);
                match metric {
                    // Stored codes are the normalised vector rounded to half
                    // precision: divide by its stored norm.
                    Metric::Cosine => d / f32_at(payload, 0),
                    _ => d,
                }
            }
            Codec::Bit { metric, .. } => bit_distance(*metric, bytemuck::cast_slice(query), payload),
            Codec::SparseVec { metric, .. } => {
                let (qi, qv) = sparse_words(query);
                let (pi, pv) = sparse_parts(payload);
                sparse_distance(*metric, qi, qv, pi, pv)
            }
        }
    }

    /// The working form of a stored payload (what [`Space::distance`]
    /// compares when the graph relates two stored elements); reads only the
    /// stable part.
    pub fn decode(&self, stable: &[u8], out: &mut Vec<u32>) {
        let payload = stable;
        out.clear();
        match self {
            Codec::Vector { dims, metric, codes } => {
                let scale = f32_at(payload, 0);
                match codes {
                    VectorCodes::Half => {
                        let codes: &[u16] = cast(&payload[VECTOR_CODES..VECTOR_CODES + 2 * dims]).unwrap_or(&[]);
                        out.extend(codes.iter().map(|&c| (distance::half_to_f32(c) * scale).to_bits()));
                    }
                    VectorCodes::Int8 => {
                        let codes: &[i8] = bytemuck::cast_slice(&payload[VECTOR_CODES..VECTOR_CODES + dims]);
                        out.extend(codes.iter().map(|&c| (c as f32 * scale).to_bits()));
                    }
                }
                if *metric == Metric::Cosine {
                    // The original norm is not in the stable part; distances
                    // between stored vectors do not use it.
                    out.push(1.0f32.to_bits());
                }
            }
            Codec::HalfVec { metric, .. } => {
                let codes: &[u16] = cast(&payload[HALF_FIELDS..]).unwrap_or(&[]);
                let norm = if *metric == Metric::Cosine { f32_at(payload, 0) } else { 1.0 };
                out.extend(codes.iter().map(|&c| (distance::half_to_f32(c) / norm).to_bits()));
            }
            Codec::Bit { .. } => out.extend_from_slice(cast(payload).unwrap_or(&[])),
            Codec::SparseVec { .. } => {
                let nnz = u32_at(payload, 0) as usize;
                let words = cast::<u32>(payload).unwrap_or(&[]);
                out.extend_from_slice(&words[..(1 + 2 * nnz).min(words.len())]);
            }
        }
    }

    /// Whether payload `stored` holds the same stored vector as `new` (an
    /// encoded payload of this codec): such rows share one element.
    pub fn same_vector(&self, stored: &[u8], new: &[u8]) -> bool {
        match self {
            // The scale and the codes; error bounds and norm may differ (for
            // cosine, only within the norms whose bounds are computed, as a
            // joined row's bound uses the element's stored norm).
            Codec::Vector { metric, dims, codes } => {
                let n = self.stable_len(new.len());
                let norm_at = vector_bounds_at(*dims, *codes) + 8;
                let safe = |p: &[u8]| distance::cosine_norm_is_safe(f32_at(p, norm_at) as f64);
                stored.len() == new.len()
                    && stored[..n] == new[..n]
                    && (*metric != Metric::Cosine || (safe(stored) && safe(new)))
            }
            Codec::HalfVec { .. } => stored.len() == new.len() && stored[HALF_FIELDS..] == new[HALF_FIELDS..],
            Codec::Bit { .. } => stored == new,
            Codec::SparseVec { .. } => {
                let used = |p: &[u8]| 4 + 8 * u32_at(p, 0) as usize;
                used(stored) == used(new) && stored[..used(stored)] == new[..used(new)]
            }
        }
    }

    /// Folds a duplicate's payload `new` into `stored` (for `vector`: widen
    /// the error bounds and norm so that they cover both rows; under cosine
    /// both norms are in the safe range, see [`Codec::same_vector`]).
    pub fn merge_duplicate(&self, stored: &mut [u8], new: &[u8]) {
        if let Codec::Vector { dims, codes, .. } = self {
            let b = vector_bounds_at(*dims, *codes);
            for at in [b, b + 4, b + 8] {
                put_f32(stored, at, f32_at(stored, at).max(f32_at(new, at)));
            }
        }
    }

    /// The value the scan returns as the ORDER BY distance of an element at
    /// graph distance `approx` from the query: a lower bound of the exact SQL
    /// distance when [`Codec::rechecks`] (from the stored error bounds, see
    /// [`distance::lower_bound`]), otherwise the SQL distance itself.
    /// `query` holds the query's norms ([`Codec::query_norms`]).
    pub fn order_value(&self, approx: f32, query: QueryNorms, payload: &[u8]) -> f64 {
        match self {
            Codec::Vector { metric, dims, codes } => {
                let b = vector_bounds_at(*dims, *codes);
                let (err_l2, err_l1, norm) = (f32_at(payload, b), f32_at(payload, b + 4), f32_at(payload, b + 8));
                distance::lower_bound(*metric, approx, query, err_l2, err_l1, norm)
            }
            _ => self.sql_distance(approx),
        }
    }

    /// The norms of a working-form query that [`Codec::order_value`] needs:
    /// as searched (1 for cosine) and as given (for a `vector` under cosine,
    /// its trailing word). Zero for kinds without lower bounds.
    pub fn query_norms(&self, query: &[u32]) -> QueryNorms {
        match self {
            Codec::Vector { metric, dims, .. } => {
                let searched = distance::norm(bytemuck::cast_slice(&query[..(*dims).min(query.len())]));
                let original = match metric {
                    Metric::Cosine => query.get(*dims).map_or(1.0, |&n| f32::from_bits(n) as f64),
                    _ => searched,
                };
                QueryNorms { searched, original }
            }
            _ => QueryNorms { searched: 0.0, original: 0.0 },
        }
    }

    /// The SQL operator's value for graph distance `d`.
    pub fn sql_distance(&self, d: f32) -> f64 {
        match self.dense_metric() {
            Some(Metric::L2) => (d.max(0.0) as f64).sqrt(),
            Some(Metric::Cosine) => 1.0 + d as f64,
            _ => d as f64,
        }
    }
}

/// Writes the `vector` payload of `h`: `scale f32 | codes u16[dims] | pad to
/// 4 | err_l2 f32 | err_l1 f32 | norm f32` (stable part first).
fn write_vector_payload(out: &mut [u8], h: &HalfVector, dims: usize) {
    put_f32(out, 0, h.scale);
    for (i, c) in h.codes.iter().enumerate() {
        out[VECTOR_CODES + 2 * i..VECTOR_CODES + 2 * i + 2].copy_from_slice(&c.to_ne_bytes());
    }
    let b = vector_bounds_at(dims, VectorCodes::Half);
    for (i, v) in [h.err_l2, h.err_l1, h.norm].into_iter().enumerate() {
        put_f32(out, b + 4 * i, v);
    }
}

/// Writes the `vector` payload of 8-bit `h`: `scale f32 | codes i8[dims] |
/// pad to 4 | err_l2 f32 | err_l1 f32 | norm f32` (stable part first).
fn write_int8_payload(out: &mut [u8], h: &Int8Vector, dims: usize) {
    put_f32(out, 0, h.scale);
    out[VECTOR_CODES..VECTOR_CODES + dims].copy_from_slice(bytemuck::cast_slice(&h.codes));
    let b = vector_bounds_at(dims, VectorCodes::Int8);
    for (i, v) in [h.err_l2, h.err_l1, h.norm].into_iter().enumerate() {
        put_f32(out, b + 4 * i, v);
    }
}

/// Non-zero count of a sparse working-form vector (0 for an empty slice).
fn sparse_nnz(v: &[u32]) -> usize {
    v.first().map_or(0, |&n| (n as usize).min((v.len().saturating_sub(1)) / 2))
}

/// `(indices, values)` of a sparse working-form vector.
fn sparse_words(v: &[u32]) -> (&[i32], &[f32]) {
    let nnz = sparse_nnz(v);
    (bytemuck::cast_slice(&v[1..1 + nnz]), bytemuck::cast_slice(&v[1 + nnz..1 + 2 * nnz]))
}

/// `(indices, values)` of a validated sparse payload.
fn sparse_parts(p: &[u8]) -> (&[i32], &[f32]) {
    let nnz = u32_at(p, 0) as usize;
    (cast(&p[4..4 + 4 * nnz]).unwrap_or(&[]), cast(&p[4 + 4 * nnz..4 + 8 * nnz]).unwrap_or(&[]))
}

fn sparse_distance(metric: Metric, ai: &[i32], av: &[f32], bi: &[i32], bv: &[f32]) -> f32 {
    match metric {
        Metric::L2 => distance::sparse_l2_squared_distance(ai, av, bi, bv),
        Metric::InnerProduct | Metric::Cosine => -distance::sparse_inner_product(ai, av, bi, bv),
        Metric::L1 => distance::sparse_l1_distance(ai, av, bi, bv),
    }
}

fn bit_distance(metric: BitMetric, a: &[u8], b: &[u8]) -> f32 {
    let n = a.len().min(b.len());
    match metric {
        BitMetric::Hamming => distance::hamming_distance(&a[..n], &b[..n]) as f32,
        BitMetric::Jaccard => distance::jaccard_distance(&a[..n], &b[..n]) as f32,
    }
}

/// The codes (`dims` of them) and scale of a `vector` in build form (its
/// payload in words: the scale, then the codes).
#[inline]
fn form_codes(form: &[u32], dims: usize) -> (&[u16], f32) {
    let codes: &[u16] = bytemuck::cast_slice(form.get(1..).unwrap_or(&[]));
    (&codes[..dims.min(codes.len())], form.first().map_or(1.0, |&s| f32::from_bits(s)))
}

/// The build's in-memory graph compares vectors in [`Codec::build_form`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BuildSpace(pub Codec);

impl Space for BuildSpace {
    type Scalar = u32;

    #[inline]
    fn distance(&self, a: &[u32], b: &[u32]) -> f32 {
        match self.0 {
            // Two payloads: the codes after the scale (word 0).
            Codec::Vector { metric, dims, .. } => {
                let ((ca, sa), (cb, sb)) = (form_codes(a, dims), form_codes(b, dims));
                let len = ca.len().min(cb.len());
                metric.distance_half_pair(&ca[..len], sa, &cb[..len], sb)
            }
            codec => codec.distance(a, b),
        }
    }
}

/// Working-form vectors, compared when the graph relates two stored
/// elements of an index on disk ([`Codec::decode`]).
impl Space for Codec {
    type Scalar = u32;

    #[inline]
    fn distance(&self, a: &[u32], b: &[u32]) -> f32 {
        match self {
            // A cosine `vector` carries its original norm after `dims`.
            Codec::Vector { metric, dims, .. } | Codec::HalfVec { metric, dims } => {
                let n = (*dims).min(a.len()).min(b.len());
                metric.distance(bytemuck::cast_slice(&a[..n]), bytemuck::cast_slice(&b[..n]))
            }
            Codec::Bit { metric, .. } => bit_distance(*metric, bytemuck::cast_slice(a), bytemuck::cast_slice(b)),
            Codec::SparseVec { metric, .. } => {
                let ((ai, av), (bi, bv)) = (sparse_words(a), sparse_words(b));
                sparse_distance(*metric, ai, av, bi, bv)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn dense_codecs(dims: usize) -> Vec<Codec> {
        let mut out = Vec::new();
        for metric in [Metric::L2, Metric::InnerProduct, Metric::Cosine, Metric::L1] {
            out.push(Codec::Vector { metric, dims, codes: VectorCodes::Half });
            out.push(Codec::Vector { metric, dims, codes: VectorCodes::Int8 });
            out.push(Codec::HalfVec { metric, dims });
        }
        out
    }

    /// Halfvec inputs are binary16 values; vector inputs any f32.
    fn sample(codec: &Codec, rng: &mut impl Rng, dims: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dims).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
        match codec {
            Codec::HalfVec { .. } => v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
            _ => v,
        }
    }

    #[test]
    fn codes_round_trip_through_the_meta_page_numbers() {
        for codec in dense_codecs(7).into_iter().chain([
            Codec::Bit { metric: BitMetric::Hamming, bits: 9 },
            Codec::Bit { metric: BitMetric::Jaccard, bits: 64_000 },
            Codec::SparseVec { metric: Metric::Cosine, dims: 1_000_000_000 },
        ]) {
            assert_eq!(Codec::from_codes(codec.kind_code(), codec.metric_code(), codec.dims()), Ok(codec));
        }
        assert!(Codec::from_codes(1, 1, 4001).is_err(), "vector above 4,000 dims");
        assert!(Codec::from_codes(3, 1, 8).is_err(), "bit with a dense metric");
        assert!(Codec::from_codes(2, 5, 8).is_err(), "halfvec with hamming");
        assert!(Codec::from_codes(9, 1, 8).is_err());
        assert!(Codec::from_codes(1, 1, 0).is_err());
    }

    /// Calls `f(codec, a, b)` for 20 seeded pairs of prepared (working-form)
    /// vectors per dense codec and dimension count (1, 3, 16, 17, 384).
    fn for_prepared_pairs(seed: u64, mut f: impl FnMut(Codec, Vec<u32>, Vec<u32>)) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for dims in [1usize, 3, 16, 17, 384] {
            for codec in dense_codecs(dims) {
                for _ in 0..20 {
                    let (a, b) = (sample(&codec, &mut rng, dims), sample(&codec, &mut rng, dims));
                    f(codec, codec.prepare_dense(&a).unwrap().unwrap(), codec.prepare_dense(&b).unwrap().unwrap());
                }
            }
        }
    }

    /// The build holds `vector` rows as their half-precision payloads and
    /// compares those: the payload written is the one `encode` makes (with
    /// 8-bit codes: one whose lower bounds still hold for the row's own
    /// value), and distances match the working form's within the rounding.
    #[test]
    fn build_forms_encode_and_compare_like_working_forms() {
        for_prepared_pairs(9, |codec, a, b| {
            let (fa, fb) = (codec.build_form(&a), codec.build_form(&b));
            let written = codec.build_payload(&fa);
            if let Codec::Vector { codes: VectorCodes::Int8, metric, .. } = codec {
                assert_eq!(written.len(), codec.encode(&a).len());
                codec.validate_deep(&written).unwrap();
                // Query `b`, element `a` stored from its build form.
                let approx = codec.distance_to_payload(&b, &written);
                let bound = codec.order_value(approx, codec.query_norms(&b), &written);
                let (x, q): (&[f32], &[f32]) =
                    (bytemuck::cast_slice(&a[..a.len().min(codec.dims())]), bytemuck::cast_slice(&b[..codec.dims()]));
                let exact = match metric {
                    Metric::L2 => distance::l2_distance(q, x),
                    Metric::InnerProduct => distance::negative_inner_product(q, x),
                    Metric::Cosine => distance::cosine_distance(q, x),
                    Metric::L1 => distance::l1_distance(q, x) as f64,
                };
                assert!(bound <= exact, "{codec:?}: bound {bound} above {exact}");
            } else {
                assert_eq!(written, codec.encode(&a), "{codec:?}");
            }
            assert_eq!(codec.payload_len(&fa), codec.payload_len(&a), "{codec:?}");
            let exact = codec.distance(&a, &b) as f64;
            let built = BuildSpace(codec).distance(&fa, &fb) as f64;
            let rounding = if matches!(codec, Codec::Vector { .. }) || codec.normalizes() { 2e-2 } else { 1e-4 };
            assert!((built - exact).abs() <= rounding * (1.0 + exact.abs()), "{codec:?}: {built} vs {exact}");
        });
    }

    /// The distance a scan computes from a payload equals the distance the
    /// build computes between working forms (exact kinds), or is within the
    /// half-precision rounding (vector).
    #[test]
    fn payload_distances_match_working_form_distances() {
        for_prepared_pairs(5, |codec, q, x| {
            let payload = codec.encode(&x);
            assert_eq!(payload.len(), codec.payload_len(&x));
            codec.validate(payload.len(), &payload).unwrap();
            codec.validate_deep(&payload).unwrap();
            let mut decoded = Vec::new();
            codec.decode(&payload, &mut decoded);
            let on_page = codec.distance_to_payload(&q, &payload) as f64;
            let in_memory = codec.distance(&q, &decoded) as f64;
            let exact = codec.distance(&q, &x) as f64;
            let tol = 1e-4 * (1.0 + exact.abs());
            assert!((on_page - in_memory).abs() <= tol, "{codec:?}: {on_page} vs {in_memory}");
            let rounding = match codec {
                Codec::Vector { codes: VectorCodes::Int8, .. } => 6e-2,
                Codec::Vector { .. } => 2e-2,
                _ if codec.normalizes() => 2e-2,
                _ => 0.0,
            };
            // Inner products near zero: 8-bit rounding errs relative to the
            // norms, not to the product.
            let dims = codec.dims().min(q.len()).min(x.len());
            let norms = match codec {
                Codec::Vector { codes: VectorCodes::Int8, .. } => {
                    let n = |v: &[u32]| distance::norm(bytemuck::cast_slice(&v[..dims]));
                    n(&q) * n(&x)
                }
                _ => 0.0,
            };
            let allowed = tol + rounding * (1.0 + exact.abs() + norms);
            assert!((on_page - exact).abs() <= allowed, "{codec:?}: {on_page} vs {exact}");
            if let Codec::HalfVec { metric, .. } = codec {
                if metric != Metric::Cosine {
                    assert_eq!(decoded, x, "halfvec payloads are exact");
                }
            }
        });
    }

    #[test]
    fn bit_payloads_count_bits_exactly() {
        let codec = Codec::Bit { metric: BitMetric::Hamming, bits: 12 };
        let a = codec.prepare_bits(12, &[0b1010_1010, 0b1111_0000]).unwrap().unwrap();
        let b = codec.prepare_bits(12, &[0b1010_1011, 0b0000_1111]).unwrap().unwrap();
        assert_eq!(codec.distance(&a, &b), 5.0, "1 + 4 bits differ; the 4 pad bits are cleared");
        assert_eq!(codec.distance_to_payload(&a, &codec.encode(&b)), 5.0);
        assert_eq!(codec.payload_len(&a), 4);
        let jaccard = Codec::Bit { metric: BitMetric::Jaccard, bits: 12 };
        let d = jaccard.distance_to_payload(&a, &jaccard.encode(&b));
        // |a ∧ b| = 4 (1010_1010 & 1010_1011) + 0; |a ∨ b| = 5 + 4.
        assert!((d - (1.0 - 4.0 / 9.0)).abs() < 1e-6, "{d}");
        assert_eq!(codec.prepare_bits(13, &[0, 0]), Err(CodecError::Dimensions(12, 13)));
    }

    #[test]
    fn sparse_payloads_merge_indices() {
        let codec = Codec::SparseVec { metric: Metric::L2, dims: 100 };
        let a = codec.prepare_sparse(100, &[1, 5, 9], &[1.0, 2.0, 3.0]).unwrap().unwrap();
        let b = codec.prepare_sparse(100, &[5, 50], &[1.0, -1.0]).unwrap().unwrap();
        // (1)² + (2−1)² + (3)² + (−1)² = 12
        assert_eq!(codec.distance(&a, &b), 12.0);
        let pb = codec.encode(&b);
        assert_eq!(pb.len(), 4 + 16);
        assert_eq!(codec.distance_to_payload(&a, &pb), 12.0);
        let ip = Codec::SparseVec { metric: Metric::InnerProduct, dims: 100 };
        assert_eq!(ip.distance_to_payload(&a, &ip.encode(&b)), -2.0);
        let cos = Codec::SparseVec { metric: Metric::Cosine, dims: 100 };
        assert_eq!(cos.prepare_sparse(100, &[], &[]), Ok(None), "zero vector under cosine");
        let many: Vec<i32> = (0..1001).collect();
        assert_eq!(
            codec.prepare_sparse(100, &many, &vec![1.0; 1001]),
            Err(CodecError::TooManyNonZero(1001)),
            "more than 1,000 non-zero elements"
        );
        let mut bad = pb.clone();
        bad[4..8].copy_from_slice(&60i32.to_ne_bytes());
        assert!(codec.validate_deep(&bad).is_err(), "indices out of order");
        assert!(codec.validate(4, &pb[..4]).is_err(), "claims more pairs than it holds");
    }

    /// A corrupt `sparsevec` payload whose length is not a whole number of
    /// words (one pair plus 1–3 stray bytes, or a bare count plus some) is
    /// rejected by `validate`, so the page layer raises XX002; before, it
    /// passed and `decode` panicked (XX000) slicing an empty word slice.
    #[test]
    fn sparse_payload_of_partial_words_is_corrupt() {
        let codec = Codec::SparseVec { metric: Metric::L2, dims: 100 };
        // Word-aligned bytes: nnz = 1, index 3, value 1.0, then zeros.
        let words: Vec<u32> = vec![1, 3, 1.0f32.to_bits(), 0, 0];
        let bytes: &[u8] = bytemuck::cast_slice(&words);
        for len in [13, 14, 15, 17, 19] {
            assert!(codec.validate(len, &bytes[..len]).is_err(), "{len} bytes");
            assert!(codec.validate_deep(&bytes[..len]).is_err(), "{len} bytes");
        }
        let empty: Vec<u32> = vec![0, 0];
        for len in [5, 6, 7] {
            assert!(codec.validate(len, &bytemuck::cast_slice::<u32, u8>(&empty)[..len]).is_err(), "{len} bytes");
        }
        assert!(codec.validate(12, &bytes[..12]).is_ok() && codec.validate(16, &bytes[..16]).is_ok());
        // decode never panics, even on bytes that skipped validation.
        let mut out = Vec::new();
        codec.decode(&bytes[..15], &mut out);
        assert!(out.len() <= 3);
    }

    #[test]
    fn vector_payload_keeps_its_changing_fields_after_the_stable_part() {
        let codec = Codec::Vector { metric: Metric::L2, dims: 5, codes: VectorCodes::Half };
        let x = codec.prepare_dense(&[0.1, 0.2, 0.3, 0.4, 0.5]).unwrap().unwrap();
        let p = codec.encode(&x);
        assert_eq!(codec.stable_len(p.len()), 4 + 10);
        assert_eq!(p.len(), 16 + 12, "codes padded to 4 bytes, then three f32");
        let near = codec.prepare_dense(&[0.1 + 1e-6, 0.2, 0.3, 0.4, 0.5]).unwrap().unwrap();
        let pn = codec.encode(&near);
        assert!(codec.same_vector(&p, &pn));
        let mut merged = p.clone();
        codec.merge_duplicate(&mut merged, &pn);
        assert_eq!(merged[..14], p[..14], "stable part unchanged");
        let q = codec.prepare_dense(&[1.0, 0.0, 0.0, 0.0, 0.0]).unwrap().unwrap();
        let approx = codec.distance_to_payload(&q, &merged);
        let bound = codec.order_value(approx, codec.query_norms(&q), &merged);
        let exact = crate::distance::l2_distance(bytemuck::cast_slice(&q), bytemuck::cast_slice(&near));
        assert!(bound <= exact && exact - bound < 1e-3, "{bound} vs {exact}");
        assert!(codec.rechecks() && !Codec::HalfVec { metric: Metric::L2, dims: 5 }.rechecks());
    }

    #[test]
    fn sql_distances_from_graph_distances() {
        let l2 = Codec::HalfVec { metric: Metric::L2, dims: 2 };
        assert_eq!(l2.sql_distance(9.0), 3.0);
        let cos = Codec::HalfVec { metric: Metric::Cosine, dims: 2 };
        assert!((cos.sql_distance(-0.75) - 0.25).abs() < 1e-12);
        let ip = Codec::SparseVec { metric: Metric::InnerProduct, dims: 2 };
        assert_eq!(ip.sql_distance(-4.0), -4.0);
        assert_eq!(Codec::Bit { metric: BitMetric::Hamming, bits: 8 }.sql_distance(3.0), 3.0);
    }
}
