//! SmolLM2-135M-Instruct (Q4_1 GGUF, fetched by `fixtures/gguf/fetch_smollm2.sh`) against a
//! float32 numpy reference over the same weights dequantized by llama.cpp's `gguf` package
//! (`fixtures/gguf/make_reference.py`; see `fixtures/gguf/README.md`).
//!
//! Skipped, with a message, when the model file is absent.

use std::path::PathBuf;

use quill::load::LoadOptions;
use quill::{GenerateParams, Generation, Logits, ModelSource, SamplerConfig};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gguf")
}

/// The model file: `$QUILL_SMOLLM2`, else `$QUILL_MODELS_DIR/…`, else `target/models/…`.
fn model_path() -> Option<PathBuf> {
    const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
    let p = std::env::var_os("QUILL_SMOLLM2")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("QUILL_MODELS_DIR").map(|d| PathBuf::from(d).join(FILE)))
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/models")
                .join(FILE)
        });
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: {} not found; run fixtures/gguf/fetch_smollm2.sh (or set QUILL_SMOLLM2)",
            p.display()
        );
        None
    }
}

fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("smollm2_reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn load() -> Option<quill::LoadedModel> {
    let p = model_path()?;
    Some(quill::load(&ModelSource::Path(p), &LoadOptions::default()).unwrap())
}

#[test]
fn loads_quantized_and_memory_mapped() {
    let Some(m) = load() else { return };
    let cfg = m.model.config();
    assert_eq!(
        (
            cfg.n_layer,
            cfg.d_model,
            cfg.n_head,
            cfg.n_kv_head,
            cfg.d_ff
        ),
        (30, 576, 9, 3, 1536)
    );
    assert_eq!(cfg.vocab_size, 49152);
    assert!(cfg.tied_head);
    let w = m.model.weights();
    assert!(w.tok_emb.is_quantized(), "token_embd stays Q8_0");
    assert!(w
        .blocks
        .iter()
        .all(|b| b.qkv.w.is_quantized() && b.down.w.is_quantized()));
    assert!(m.info.memory_mapped);
    // Quantized bytes, not f32: about 4.5 bits per weight for Q4_1.
    let b0 = &w.blocks[0];
    assert_eq!(b0.up.w.weight_bytes(), 2 * 1536 * 576 / 32 * 20);
    assert!(m.chat.is_some());
}

#[test]
fn tokenizes_prompts_as_recorded() {
    let Some(m) = load() else { return };
    let tok = m.tokenizer.as_ref().unwrap();
    for p in reference()["prompts"].as_array().unwrap() {
        let got = tok.encode(p["text"].as_str().unwrap(), true).unwrap();
        assert_eq!(got, ids(&p["ids"]), "{}", p["text"]);
    }
}

/// Compares last-position logits with the reference at the top-64 ids and ~50 sampled ids.
/// Returns (max |Δ|, mean |Δ|, std of the reference logits) per prompt after checking that the
/// argmax is the same and the reference's top 3 are in quill's top 5.
fn compare(model: &quill::Model) -> Vec<(f32, f32, f32)> {
    let mut out = Vec::new();
    for p in reference()["prompts"].as_array().unwrap() {
        let prompt = ids(&p["ids"]);
        let mut cache = model.new_cache(64);
        let mut scratch = Default::default();
        let logits = model
            .forward(&prompt, &mut cache, &mut scratch, Logits::Last, None)
            .unwrap();
        let std = p["std"].as_f64().unwrap() as f32;
        let mut diffs = Vec::new();
        for (key_ids, key_vals) in [
            ("top_ids", "top_logits"),
            ("logits_sample_ids", "logits_sample"),
        ] {
            for (&i, r) in ids(&p[key_ids]).iter().zip(f32s(&p[key_vals])) {
                diffs.push((logits[i as usize] - r).abs());
            }
        }
        let max = diffs.iter().copied().fold(0.0f32, f32::max);
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        eprintln!(
            "{:?}: max |Δ| {max:.5}, mean |Δ| {mean:.5}, std {std:.3}",
            p["text"]
        );
        let top = ids(&p["top_ids"]);
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        assert_eq!(order[0] as u32, top[0], "argmax for {}", p["text"]);
        let mine: Vec<u32> = order[..5].iter().map(|&i| i as u32).collect();
        for t in &top[..3] {
            assert!(
                mine.contains(t),
                "reference top-3 {:?} vs quill top-5 {mine:?}",
                &top[..3]
            );
        }
        out.push((max, mean, std));
    }
    out
}

/// The model itself is exact: with every weight dequantized to f32 up front (test only), quill's
/// forward pass equals the float32 reference to float rounding (30 layers, different summation
/// order): max |Δ| < 2e-3.
/// The same model with every matrix dequantized to f32 up front (test only).
fn dequantized(m: &quill::LoadedModel) -> quill::Model {
    let mut w = m.model.weights().clone();
    w.tok_emb = w.tok_emb.to_f32();
    for b in &mut w.blocks {
        for l in [&mut b.qkv, &mut b.attn_out, &mut b.up, &mut b.down] {
            l.w = l.w.to_f32();
        }
    }
    quill::Model::new(m.model.config().clone(), w).unwrap()
}

#[test]
fn dequantized_forward_matches_reference_exactly() {
    let Some(m) = load() else { return };
    for (max, _, _) in compare(&dequantized(&m)) {
        assert!(max < 2e-3, "max |Δ| {max}");
    }
}

/// The quantized kernels quantize each activation row to 8 bits per 32-value block before the
/// integer dot products (as llama.cpp does), while the reference multiplies in float32: ~0.4%
/// relative error per matmul input, compounded over 30 layers and 7 matmuls each. Measured
/// (see the README): max |Δ| 0.37–0.48 and mean |Δ| 0.11–0.19 on logits whose std is 2.9–4.1,
/// i.e. max ≤ 0.17·std and mean ≤ 0.05·std. We require max |Δ| < 0.25·std and mean
/// |Δ| < 0.08·std, plus the ranking checks in `compare` (the exact-weights test above isolates
/// the model from this kernel error).
#[test]
fn logits_match_float32_reference() {
    let Some(m) = load() else { return };
    for (max, mean, std) in compare(&m.model) {
        assert!(max < 0.25 * std, "max |Δ| {max} (std {std})");
        assert!(mean < 0.08 * std, "mean |Δ| {mean} (std {std})");
    }
}

fn greedy(model: &quill::Model, m: &quill::LoadedModel, prompt: Vec<u32>) -> Vec<u32> {
    let params = GenerateParams {
        max_new_tokens: 32,
        sampler: SamplerConfig::greedy(),
        eos_ids: Vec::new(),
        ..GenerateParams::default()
    };
    let gen = Generation::new(model, m.tokenizer.as_ref(), prompt, params).unwrap();
    gen.run().unwrap().0
}

/// The reference is float32 over the dequantized weights: quill's forward pass over the same
/// weights reproduces its 32-token greedy continuation exactly.
#[test]
fn greedy_32_tokens_match_reference() {
    let Some(m) = load() else { return };
    let r = reference();
    let want = ids(&r["greedy_32"]);
    let got = greedy(&dequantized(&m), &m, ids(&r["prompts"][0]["ids"]));
    let tok = m.tokenizer.as_ref().unwrap();
    assert_eq!(
        got,
        want,
        "quill: {:?}\nreference: {:?}",
        tok.decode(&got).unwrap(),
        tok.decode(&want).unwrap()
    );
}

/// With the quantized kernels (8-bit activations), greedy decoding follows the reference for
/// the first 5 tokens (" Paris.\n\nThe") and then picks " United" where the reference picks
/// " answer" (an earlier build of the shared kernels picked " answer": a close call flipped by
/// activation-quantization noise; the reference's margin there is not recorded).
#[test]
fn greedy_quantized_follows_reference_prefix() {
    let Some(m) = load() else { return };
    let r = reference();
    let want = ids(&r["greedy_32"]);
    let got = greedy(&m.model, &m, ids(&r["prompts"][0]["ids"]));
    let same = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
    eprintln!("quantized greedy: first {same} of 32 tokens equal the reference");
    assert!(same >= 5, "{got:?} vs {want:?}");
}
