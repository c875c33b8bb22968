//! The in-process embedding (candle BERT + tokenizers) against the dataset:
//! the ten sample questions, embedded from their text, must match the
//! vectors stored in `sample_queries.fvecs` (computed with
//! sentence-transformers) within cosine distance 1e-4.
//!
//! Needs the model fetched by `scripts/setup.sh` and the dataset folder.

use pg_hnsw_bench::embed::{cosine_distance, model_dir, read_sample_questions, Embedder, DIMS};
use pg_hnsw_cluster_tests::{dataset_dir, read_fvecs};

fn embedder() -> Embedder {
    Embedder::load_default().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn sample_questions_match_the_stored_embeddings() {
    let e = embedder();
    let dir = dataset_dir();
    let questions = read_sample_questions(&dir.join("sample_queries.tsv")).unwrap();
    let stored = read_fvecs(&dir.join("sample_queries.fvecs"), usize::MAX);
    assert_eq!(questions.len(), 10, "ten sample questions");
    assert_eq!(stored.len(), questions.len());
    let mut worst = 0.0f64;
    for (q, s) in questions.iter().zip(&stored) {
        let v = e.embed(q).unwrap();
        assert_eq!(v.len(), DIMS);
        let norm: f64 = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{q:?}: norm {norm}");
        let d = cosine_distance(&v, s);
        eprintln!("{d:.3e}  {q}");
        assert!(d < 1e-4, "{q:?}: cosine distance {d:e} to the stored embedding");
        worst = worst.max(d);
    }
    eprintln!("max cosine distance {worst:.3e} (model from {})", model_dir().display());
}

/// The check above can fail: a slightly different text (or a wrong pooling,
/// or a missing normalisation) lands well beyond 1e-4 from the stored vector.
#[test]
fn a_different_text_is_beyond_the_tolerance() {
    let e = embedder();
    let dir = dataset_dir();
    let questions = read_sample_questions(&dir.join("sample_queries.tsv")).unwrap();
    let stored = read_fvecs(&dir.join("sample_queries.fvecs"), usize::MAX);
    let v = e.embed(&format!("{} please", questions[0])).unwrap();
    let d = cosine_distance(&v, &stored[0]);
    assert!(d > 1e-3, "cosine distance {d:e}");
    // Unrelated questions are far apart.
    assert!(cosine_distance(&e.embed(&questions[1]).unwrap(), &stored[0]) > 0.3);
}

/// Texts longer than 256 word pieces are cut, as sentence-transformers cuts
/// them: the embedding depends only on the first 256 pieces.
#[test]
fn long_texts_are_cut_at_256_word_pieces() {
    let e = embedder();
    let long: String = (0..400).map(|i| format!("word{i} ")).collect();
    let longer = format!("{long} and then something completely different about databases");
    let (a, b) = (e.embed(&long).unwrap(), e.embed(&longer).unwrap());
    assert!(cosine_distance(&a, &b) < 1e-6, "{}", cosine_distance(&a, &b));
    assert!(cosine_distance(&e.embed("word0 word1").unwrap(), &a) > 1e-3);
}
