//! `LoadOptions::dtype`: converting a model's weight matrices on load, checked against models
//! stored in the target precision and against the f32 model.
//!
//! Tolerances, with about 2× margin over what was measured:
//! - q8_0 vs the f32 shakespeare-char checkpoint (logits over `common::SHAKESPEARE`'s first 128
//!   characters): max |Δlogit| ≤ 1.0 (measured 0.587; logits span ±14), mean |Δlogit| ≤ 0.1
//!   (0.068), max |Δ softmax probability| ≤ 0.1 (0.063). This includes the integer kernels'
//!   8-bit activations (weights alone: 0.255 / 0.032 / 0.028). Storing the same weights as bf16
//!   moves them by up to 0.074.
//! - 16-bit conversions of the same weights are compared bit for bit.
//! - An f16 KV cache vs the f32 one (shakespeare-char, a 48-character prompt and 72
//!   teacher-forced decode steps): max |Δlogit| ≤ 0.05 (measured 0.026).

mod common;

use common::{fixtures, max_rel_err, SHAKESPEARE};
use quill::kernels::WeightData;
use quill::load::{dtype::convert_weights, LoadOptions};
use quill::model::Scratch;
use quill::{Logits, Model, ModelSource, WeightDtype};

const SHAKESPEARE_F32: &str = "models/shakespeare-char/hf";
const NANOGPT_F16: &str = "models/nanogpt-nobias-f16/ckpt.pt";

fn load(rel: &str, dtype: Option<WeightDtype>) -> quill::Result<quill::LoadedModel> {
    let opts = LoadOptions {
        dtype,
        ..LoadOptions::default()
    };
    quill::load(&ModelSource::Path(fixtures().join(rel)), &opts)
}

fn logits(l: &quill::LoadedModel, text: &str) -> Vec<f32> {
    logits_of(&l.model, l, text)
}

fn logits_of(model: &Model, l: &quill::LoadedModel, text: &str) -> Vec<f32> {
    let tok = l.tokenizer.as_ref().expect("a tokenizer");
    let ids = tok.encode(text, false).expect("encodes");
    let mut cache = model.new_cache(ids.len());
    model
        .forward(&ids, &mut cache, &mut Scratch::default(), Logits::All, None)
        .expect("forward")
}

/// Largest |a − b|.
fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

/// The f32 values of every weight matrix, in order.
fn matrices(m: &Model) -> Vec<Vec<f32>> {
    let w = m.weights();
    let mut v = vec![w.tok_emb.to_f32().as_slice().to_vec()];
    for b in &w.blocks {
        for l in [&b.qkv, &b.attn_out, &b.up, &b.down] {
            v.push(l.w.to_f32().as_slice().to_vec());
        }
    }
    v
}

#[test]
fn bf16_conversion_of_the_f32_checkpoint_equals_the_bf16_stored_one() {
    // fixtures/models/shakespeare-char/hf-bf16 (the embedded model) is the f32 checkpoint
    // rounded by PyTorch's `.to(torch.bfloat16)`: round to nearest even, as quill's conversion.
    let converted = load(SHAKESPEARE_F32, Some(WeightDtype::Bf16)).expect("loads");
    let stored = quill::load(&ModelSource::Embedded, &LoadOptions::default()).expect("loads");
    assert_eq!(converted.info.stored_dtype, "f32");
    assert_eq!(converted.info.run_dtype, "bf16");
    assert_eq!(matrices(&converted.model), matrices(&stored.model));
    // Only the norms and position table differ: bf16 in the file, f32 (not rounded) here.
    let text = &SHAKESPEARE[..128];
    let err = max_abs(&logits(&converted, text), &logits(&stored, text));
    println!("bf16 converted vs stored: max |Δlogit| {err:.3e}");
    assert!(err > 0.0 && err < 0.1, "{err}");
}

#[test]
fn f16_conversion_equals_the_f16_stored_checkpoint() {
    // Widen the f16 checkpoint to f32, convert back to f16: the same values, the same logits.
    let stored = load(NANOGPT_F16, None).expect("loads");
    let widened = load(NANOGPT_F16, Some(WeightDtype::F32)).expect("loads");
    assert_eq!(widened.info.run_dtype, "f32");
    let mut w = widened.model.weights().clone();
    convert_weights(&mut w, WeightDtype::F16, std::path::Path::new("f16 again")).expect("converts");
    let back = Model::new(widened.model.config().clone(), w).expect("model");
    let text = "ROMEO:\nWhat light through yonder window breaks?";
    let want = logits(&stored, text);
    assert_eq!(logits_of(&back, &stored, text), want);
    // f32 widening is exact too.
    assert_eq!(logits(&widened, text), want);
}

#[test]
fn a_matrix_already_in_the_requested_storage_is_used_as_stored() {
    // `--dtype f16` on an f16 checkpoint converts nothing: the same storage and the same values
    // as loading it plainly (both regrouped into the float kernels' panels, straight from the
    // file's f16 bytes).
    let l = load(NANOGPT_F16, Some(WeightDtype::F16)).expect("loads");
    let plain = load(NANOGPT_F16, None).expect("loads");
    assert_eq!(l.info.run_dtype, "f16");
    assert_eq!(plain.info.run_dtype, "f16");
    let (w, p) = (l.model.weights(), plain.model.weights());
    let pairs = std::iter::once((&w.tok_emb, &p.tok_emb)).chain(
        w.blocks
            .iter()
            .zip(&p.blocks)
            .map(|(a, b)| (&a.up.w, &b.up.w)),
    );
    for (a, b) in pairs {
        assert!(matches!(a.data, WeightData::Panel(_)), "{:?}", a.data);
        assert_eq!(a.to_f32().as_slice(), b.to_f32().as_slice());
    }
    // Converted matrices are owned; norms and biases stay f32 (they are always f32 vectors).
    let q = load(SHAKESPEARE_F32, Some(WeightDtype::Q8_0)).expect("loads");
    assert!(!q.info.memory_mapped);
    assert!(q.model.weights().tok_emb.is_quantized());
}

#[test]
fn q8_0_logits_stay_close_to_the_f32_models() {
    let text = &SHAKESPEARE[..128];
    let f32_model = load(SHAKESPEARE_F32, None).expect("loads");
    let want = logits(&f32_model, text);
    let l = load(SHAKESPEARE_F32, Some(WeightDtype::Q8_0)).expect("loads");
    assert_eq!(l.info.run_dtype, "q8_0");
    let got = logits(&l, text);
    let (max, mean) = (max_abs(&got, &want), mean_abs(&got, &want));
    let p = max_prob_diff(&got, &want, l.model.config().vocab_size);
    println!("q8_0: max |Δlogit| {max:.3e}, mean {mean:.3e}, max |Δp| {p:.3e}");
    assert!(max > 0.0, "the weights did change");
    // Weights and (in the integer kernels) activations both rounded to 8 bits: observed max
    // 0.587, mean 0.068, max |Δp| 0.063 over 128 positions.
    assert!(max <= 1.0 && mean <= 0.1 && p <= 0.1, "{max} {mean} {p}");
    // For scale: storing the same weights as bf16 moves the logits by up to 0.074 (mean 0.0095).
    let bf16 = logits(
        &load(SHAKESPEARE_F32, Some(WeightDtype::Bf16)).expect("loads"),
        text,
    );
    assert!(max_abs(&bf16, &want) < max);
}

fn mean_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32
}

/// Largest difference between the softmax probabilities of rows of `vocab` logits.
fn max_prob_diff(a: &[f32], b: &[f32], vocab: usize) -> f32 {
    let softmax = |x: &[f32]| {
        let m = x.iter().fold(f32::MIN, |m, &v| m.max(v));
        let z: f32 = x.iter().map(|v| (v - m).exp()).sum();
        x.iter().map(|v| (v - m).exp() / z).collect::<Vec<_>>()
    };
    a.chunks(vocab)
        .zip(b.chunks(vocab))
        .map(|(x, y)| max_abs(&softmax(x), &softmax(y)))
        .fold(0.0, f32::max)
}

#[test]
fn block_formats_refuse_widths_that_are_not_whole_blocks() {
    // nanogpt-nobias-f16 is 48 wide: 1.5 blocks of 32.
    for d in [WeightDtype::Q8_0, WeightDtype::Q4_0, WeightDtype::Q4_1] {
        let e = load(NANOGPT_F16, Some(d)).expect_err("48 columns");
        match &e {
            quill::Error::Tensor { name, detail, .. } => {
                assert_eq!(name, "tok_emb");
                assert!(detail.contains("[65, 48]") && detail.contains("32"), "{e}");
            }
            other => panic!("expected a tensor error, got {other}"),
        }
    }
    // The 16-bit formats and f32 take any width.
    for d in [WeightDtype::F32, WeightDtype::F16, WeightDtype::Bf16] {
        load(NANOGPT_F16, Some(d)).expect("any width");
    }
}

#[test]
fn every_dtype_runs_every_fixture_family_it_fits() {
    // GPT-2 (biases, untied head) and Llama (stacked QKV and gate/up) layouts, 32 wide, with
    // random weights (less forgiving than trained ones): the 4-bit formats move their logits
    // by up to 2.7, so only finiteness is checked for them. Measured max |Δ| / (1 + |ref|):
    // f16 5.5e-3, bf16 2.6e-2, q8_0 up to 0.20.
    for rel in [
        "models/gpt2-untied/hf-safetensors",
        "models/llama-mqa-untied/hf-safetensors",
        "models/nanogpt-bias-f32/ckpt.pt",
    ] {
        let base = load(rel, None).expect("loads");
        let ids: Vec<u32> = (0..8).collect();
        let run = |m: &Model| {
            let mut c = m.new_cache(ids.len());
            m.forward(&ids, &mut c, &mut Scratch::default(), Logits::All, None)
                .expect("forward")
        };
        let want = run(&base.model);
        for d in WeightDtype::ALL {
            let l = load(rel, Some(d)).expect("loads");
            assert_eq!(l.info.run_dtype, d.name(), "{rel}");
            let got = run(&l.model);
            assert!(got.iter().all(|v| v.is_finite()), "{rel} {d}");
            let err = max_rel_err(&got, &want);
            println!("{rel} {d}: max logits error {err:.2e}");
            let tol = match d {
                WeightDtype::F32 => 0.0, // every stored type widens to f32 exactly
                WeightDtype::F16 | WeightDtype::Bf16 => 0.1,
                WeightDtype::Q8_0 => 0.5,
                _ => f64::INFINITY,
            };
            assert!(err <= tol, "{rel} {d}: logits error {err:e} > {tol}");
        }
    }
}

/// An f16 KV cache: half the bytes, logits close to the f32 cache's at every step (prefill and
/// teacher-forced decode over `common::SHAKESPEARE`), and the same greedy text.
#[test]
fn f16_kv_cache_halves_the_cache_and_stays_close() {
    use quill::{Event, GenerateParams, Generation, KvDtype, SamplerConfig};
    let l = load(SHAKESPEARE_F32, None).expect("loads");
    let m = &l.model;
    let tok = l.tokenizer.as_ref().expect("a tokenizer");
    let ids = tok.encode(&SHAKESPEARE[..120], false).expect("encodes");
    let (prompt, rest) = ids.split_at(48);
    let run = |kv: KvDtype| {
        let mut cache = m.new_cache_with(ids.len(), kv);
        let mut scratch = Scratch::default();
        let mut steps = vec![m
            .forward(prompt, &mut cache, &mut scratch, Logits::All, None)
            .expect("prefill")];
        for &t in rest {
            steps.push(
                m.forward(&[t], &mut cache, &mut scratch, Logits::Last, None)
                    .expect("decode"),
            );
        }
        (steps, cache)
    };
    let (exact, c32) = run(KvDtype::F32);
    let (half, c16) = run(KvDtype::F16);
    assert_eq!(c16.dtype(), KvDtype::F16);
    assert_eq!(2 * c16.bytes(), c32.bytes());
    let worst = exact
        .iter()
        .zip(&half)
        .map(|(a, b)| max_abs(a, b))
        .fold(0.0f32, f32::max);
    assert!(worst > 0.0 && worst < 0.05, "max |Δlogit| {worst}");
    let greedy = |kv| {
        let params = GenerateParams {
            max_new_tokens: 60,
            sampler: SamplerConfig::greedy(),
            kv_cache: kv,
            ..GenerateParams::default()
        };
        Generation::new(m, Some(tok), prompt.to_vec(), params)
            .expect("starts")
            .filter_map(|e| match e.expect("runs") {
                Event::Token { id, .. } => Some(id),
                _ => None,
            })
            .collect::<Vec<u32>>()
    };
    assert_eq!(greedy(KvDtype::F16), greedy(KvDtype::F32));
}
