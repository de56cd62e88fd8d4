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
fn loads_quantized_and_interleaved() {
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
    // Q8_0 / Q4_1 rows are repacked eight at a time for the integer kernels (a copy, so no
    // longer borrowed from the map); SmolLM2's row counts are multiples of 8, so nothing is left
    // row-major.
    let interleaved = |mat: &quill::kernels::Matrix| match &mat.data {
        quill::kernels::WeightData::Quant(q) => q.parts.iter().all(|p| p.is_interleaved()),
        _ => false,
    };
    assert!(interleaved(&w.tok_emb));
    assert!(w
        .blocks
        .iter()
        .all(|b| interleaved(&b.qkv.w) && interleaved(&b.down.w)));
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
fn compare(model: &quill::Model, reference: &serde_json::Value) -> Vec<(f32, f32, f32)> {
    let mut out = Vec::new();
    for p in reference["prompts"].as_array().unwrap() {
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

/// The weights stay quantized (Q4_1 / Q8_0 blocks, memory-mapped) and quill's integer kernels
/// quantize each activation row to 8 bits per 32 values before the block dot products, as
/// llama.cpp does. The `q8act` reference is the same numpy forward pass with exactly that
/// activation quantization (bit for bit) before every matmul, in float64 over the dequantized
/// weights. The residual stream after block 0 agrees to f32 rounding (max |Δ| 6e-6 on values up
/// to 31) except where one activation landed on the other side of a rounding step because an
/// f32 sum before it differs in its last bits: such a flip moves every output of that token's
/// next product a little (observed: one token row off by up to 0.0023, 17% of the values). From
/// then on SmolLM2's residual stream (values up to 22,000) carries the flips on: after block 1
/// max |Δ| is 0.026 on values up to 183, and by the logits the two runs differ by about a tenth
/// of a standard deviation (observed 0.35 to 0.53, std 2.9 to 4.1), the same order as the
/// activation quantization itself. The argmax and top 3 agree on
/// every prompt (`compare`), and so do the 32 greedy tokens (`greedy_tokens_match_reference`).
#[test]
fn matches_reference_with_quantized_activations() {
    let Some(m) = load() else { return };
    let r = &reference()["q8act"];
    let prompt = ids(&r["prompts"][0]["ids"]);
    let mut cache = m.model.new_cache(64);
    let mut scratch = Default::default();
    let mut hidden = Vec::new();
    let mut tr = |name: &str, v: &[f32]| {
        if name == "hidden.1" || name == "hidden.2" {
            hidden.push(v.to_vec());
        }
    };
    m.model
        .forward(
            &prompt,
            &mut cache,
            &mut scratch,
            Logits::All,
            Some(&mut tr),
        )
        .unwrap();
    // (block, max |Δ| bound, share of values allowed to differ by more than 1e-4)
    for (got, key, tol, share) in [
        (&hidden[0], "hidden_1", 0.01f32, 0.4f32),
        (&hidden[1], "hidden_2", 0.05, 0.8),
    ] {
        let want = f32s(&r[key]);
        assert_eq!(got.len(), want.len());
        let diffs: Vec<f32> = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).collect();
        let max = diffs.iter().copied().fold(0.0f32, f32::max);
        let off = diffs.iter().filter(|&&d| d > 1e-4).count() as f32 / diffs.len() as f32;
        eprintln!(
            "{key}: max |Δ| {max}, {:.2}% of values off by > 1e-4",
            100.0 * off
        );
        assert!(
            max < tol && off <= share,
            "{key}: max |Δ| {max}, share off {off}"
        );
    }
    for (max, mean, std) in compare(&m.model, r) {
        assert!(
            max < 0.25 * std && mean < 0.1 * std,
            "max |Δ| {max}, mean {mean} (std {std})"
        );
    }
}

/// Against the exact float32 forward pass over the same dequantized weights, the activation
/// quantization costs a visible but small error (observed max |Δ| 0.37 to 0.48, about a tenth
/// of a standard deviation), with the same argmax and top 3 (checked in `compare`).
#[test]
fn logits_stay_close_to_the_float32_reference() {
    let Some(m) = load() else { return };
    for (max, mean, std) in compare(&m.model, &reference()) {
        assert!(
            max < 0.25 * std && mean < 0.1 * std,
            "max |Δ| {max}, mean {mean} (std {std})"
        );
    }
}

/// The integer kernel on a real layer stays within 2% of the exact product with f32 activations.
#[test]
fn integer_kernel_stays_close_to_exact_on_a_real_layer() {
    let Some(m) = load() else { return };
    let b = &m.model.weights().blocks[0];
    assert!(b.up.w.is_quantized(), "ffn weights are quantized");
    let exact_w = b.up.w.to_f32();
    let x: Vec<f32> = (0..2 * 576)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
        .collect();
    let mut exact = vec![0.0; 2 * exact_w.rows];
    let mut approx = vec![0.0; 2 * exact_w.rows];
    quill::kernels::matmul(&x, &exact_w, None, &mut exact);
    quill::kernels::matmul(&x, &b.up.w, None, &mut approx);
    let scale = exact.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    let max = exact
        .iter()
        .zip(&approx)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max < 0.02 * scale, "max |Δ| {max} vs scale {scale}");
}

/// quill's forward pass over the quantized weights picks the `q8act` reference's greedy tokens,
/// checked teacher-forced over the reference's whole 32-token continuation (every step sees the
/// reference's context, so one near-tie cannot hide the 26 steps after it). Where quill's
/// choice differs, the reference's token must be a near-tie in quill's own logits: within 0.2 of
/// the maximum, below the 0.35-0.53 by which the logits are documented to differ from this
/// reference (`matches_reference_with_quantized_activations`). f32 against float64 flips such
/// ties either way: observed, one at step 5 (gap 0.098) with the interleaved kernels' summation
/// order, none with the earlier row-major one. At most 2 of 32 may be ties; the greedy
/// continuation itself is also run end to end and must agree up to the first tie.
#[test]
fn greedy_tokens_match_reference() {
    let Some(m) = load() else { return };
    let r = &reference()["q8act"];
    let want = ids(&r["greedy_32"]);
    let prompt = ids(&r["prompts"][0]["ids"]);
    let mut toks = prompt.clone();
    toks.extend(&want);
    let mut cache = m.model.new_cache(toks.len());
    let mut scratch = Default::default();
    let logits = m
        .model
        .forward(&toks, &mut cache, &mut scratch, Logits::All, None)
        .unwrap();
    let v = m.model.config().vocab_size;
    let mut ties = Vec::new();
    for (i, &w) in want.iter().enumerate() {
        let row = &logits[(prompt.len() - 1 + i) * v..][..v];
        let (arg, max) =
            row.iter()
                .enumerate()
                .fold((0, f32::MIN), |a, (j, &x)| if x > a.1 { (j, x) } else { a });
        if arg != w as usize {
            let gap = max - row[w as usize];
            assert!(
                gap < 0.2,
                "step {i}: quill picks {arg}, reference {w} ({gap} lower)"
            );
            ties.push(i);
        }
    }
    assert!(ties.len() <= 2, "near-ties at steps {ties:?}");
    let params = GenerateParams {
        max_new_tokens: 32,
        sampler: SamplerConfig::greedy(),
        eos_ids: Vec::new(),
        ..GenerateParams::default()
    };
    let gen = Generation::new(&m.model, m.tokenizer.as_ref(), prompt, params).unwrap();
    let got = gen.run().unwrap().0;
    let agree = ties.first().copied().unwrap_or(want.len());
    let tok = m.tokenizer.as_ref().unwrap();
    assert_eq!(
        got[..agree],
        want[..agree],
        "quill: {:?}\nreference: {:?}",
        tok.decode(&got).unwrap(),
        tok.decode(&want).unwrap()
    );
}

/// `generate` stops where `chat` does: the end-of-turn ids from the file's metadata are part of
/// the model's end-of-sequence set, along with the tokenizer's own.
#[test]
fn end_of_turn_ids_from_metadata_end_generation() {
    let Some(m) = load() else { return };
    let eos = m.eos_ids();
    let chat = m.chat.as_ref().expect("SmolLM2 ships a chat template");
    assert!(!chat.stop_ids().is_empty());
    for id in chat.stop_ids() {
        assert!(eos.contains(id), "{id} missing from {eos:?}");
    }
    let tok = m.tokenizer.as_ref().unwrap();
    let im_end = tok.encode("<|im_end|>", false).unwrap();
    assert_eq!(im_end.len(), 1);
    assert!(eos.contains(&im_end[0]));
}
