//! `quill::perplexity`: the sliding-window definition checked against direct computation, its
//! errors, and the quality cost of each `LoadOptions::dtype` on the embedded model.
//!
//! Measured on `common::SHAKESPEARE` (999 characters, 998 scored; window 128, stride 64) with
//! the embedded model (a bf16 file; as loaded, every matrix stays bf16, regrouped into the
//! float kernels' panels):
//!
//! | dtype | perplexity | vs stored |
//! |---|---|---|
//! | as loaded, f32, bf16, f16 | 3.4629 | 0 |
//! | q8_0 | 3.4716 | +0.3% |
//! | q4_1 | 3.6682 | +5.9% |
//! | q4_0 | 3.7309 | +7.7% |
//!
//! Bounds asserted (with margin): stored < 4.0; f32 and bf16 identical to stored (exact
//! widening), f16 within 1e-4 relative; q8_0 within ±1%; q4_0 and q4_1 below +10%.

mod common;

use common::SHAKESPEARE;
use quill::load::LoadOptions;
use quill::model::Scratch;
use quill::{perplexity, Logits, Model, ModelSource, WeightDtype};

fn embedded(dtype: Option<WeightDtype>) -> quill::LoadedModel {
    let opts = LoadOptions {
        dtype,
        ..LoadOptions::default()
    };
    quill::load(&ModelSource::Embedded, &opts).expect("the embedded model loads")
}

fn ids(l: &quill::LoadedModel, text: &str) -> Vec<u32> {
    let tok = l.tokenizer.as_ref().expect("a tokenizer");
    tok.encode(text, true).expect("encodes")
}

/// −log p(tokens[j] | row) computed independently of `quill::eval`: f64 softmax.
fn nll(row: &[f32], target: u32) -> f64 {
    let z: f64 = row.iter().map(|&v| (v as f64).exp()).sum();
    -((row[target as usize] as f64).exp() / z).ln()
}

/// Logits of every position of `tokens` in one forward pass from an empty cache.
fn logits_all(model: &Model, tokens: &[u32]) -> Vec<f32> {
    let mut cache = model.new_cache(tokens.len());
    model
        .forward(
            tokens,
            &mut cache,
            &mut Scratch::default(),
            Logits::All,
            None,
        )
        .expect("forward")
}

#[test]
fn one_window_is_exp_of_the_mean_nll_of_one_forward_pass() {
    let l = embedded(None);
    let t = ids(&l, &SHAKESPEARE[..120]);
    let v = l.model.config().vocab_size;
    let logits = logits_all(&l.model, &t);
    let total: f64 = (1..t.len())
        .map(|j| nll(&logits[(j - 1) * v..j * v], t[j]))
        .sum();
    let want = (total / (t.len() - 1) as f64).exp();
    let r = perplexity(&l.model, &t, 128, 64).expect("scores");
    assert_eq!((r.tokens_scored, r.windows), (119, 1));
    assert!((r.ppl - want).abs() <= 1e-9 * want, "{} vs {want}", r.ppl);
    assert!((r.nll_mean.exp() - r.ppl).abs() <= 1e-12 * r.ppl);
}

#[test]
fn each_token_is_scored_once_with_the_windows_context() {
    // Brute force: token j is scored by the first window [begin, begin + window) that reaches
    // past it, from a pass over exactly tokens[begin..=j] (the model is causal).
    let l = embedded(None);
    let t = ids(&l, &SHAKESPEARE[..300]);
    let v = l.model.config().vocab_size;
    for (window, stride) in [(64, 32), (50, 49), (40, 1), (128, 100)] {
        let mut total = 0.0;
        for j in 1..t.len() {
            let begin = (0..)
                .map(|k| k * stride)
                .find(|&b| (b + window).min(t.len()) > j)
                .expect("a window reaches every token");
            let logits = logits_all(&l.model, &t[begin..j]);
            total += nll(&logits[logits.len() - v..], t[j]);
        }
        let want = total / (t.len() - 1) as f64;
        let r = perplexity(&l.model, &t, window, stride).expect("scores");
        assert_eq!(r.tokens_scored, t.len() - 1);
        let windows = (t.len() - window).div_ceil(stride) + 1;
        assert_eq!(r.windows, windows, "window {window} stride {stride}");
        assert!(
            (r.nll_mean - want).abs() < 1e-5 * want,
            "window {window} stride {stride}: {} vs {want}",
            r.nll_mean
        );
    }
}

#[test]
fn bad_windows_strides_and_short_texts_are_errors() {
    let l = embedded(None);
    let t = ids(&l, "ROMEO:\nWhat light");
    let m = &l.model;
    let err = |w, s, t: &[u32]| perplexity(m, t, w, s).expect_err("invalid").to_string();
    assert!(err(0, 1, &t).contains("context"), "{}", err(0, 1, &t));
    assert!(err(1, 1, &t).contains("between 2 and"));
    let e = err(129, 64, &t);
    assert!(e.contains("129") && e.contains("128"), "{e}");
    assert!(err(64, 0, &t).contains("stride"));
    let e = err(64, 64, &t);
    assert!(
        e.contains("stride") && e.contains("between 1 and 63"),
        "{e}"
    );
    let e = err(64, 32, &t[..1]);
    assert!(
        e.contains("1 token long") && e.contains("at least 2"),
        "{e}"
    );
    assert!(err(64, 32, &[]).contains("0 tokens"));
    // The smallest valid case: two tokens, one scored.
    let r = perplexity(m, &t[..2], 2, 1).expect("two tokens");
    assert_eq!((r.tokens_scored, r.windows), (1, 1));
    // An id outside the vocabulary is the forward pass's error, not a panic.
    assert!(perplexity(m, &[1, 999], 2, 1).is_err());
}

#[test]
fn the_embedded_model_knows_its_shakespeare_and_quantization_costs_little() {
    let ppl = |d: Option<WeightDtype>| {
        let l = embedded(d);
        let r = perplexity(&l.model, &ids(&l, SHAKESPEARE), 128, 64).expect("scores");
        assert_eq!(r.tokens_scored, SHAKESPEARE.chars().count() - 1);
        println!(
            "{:>9}: perplexity {:.4} ({} windows)",
            d.map_or("stored", |d| d.name()),
            r.ppl,
            r.windows
        );
        r.ppl
    };
    let base = ppl(None);
    assert!(base < 4.0, "embedded model perplexity {base}");
    let rel = |d| (ppl(Some(d)) - base) / base;
    assert_eq!(rel(WeightDtype::F32), 0.0, "widening bf16 is exact");
    assert_eq!(rel(WeightDtype::Bf16), 0.0, "already bf16: unchanged");
    assert!(rel(WeightDtype::F16).abs() < 1e-4);
    let q8 = rel(WeightDtype::Q8_0);
    assert!(q8.abs() < 0.01, "q8_0 changes perplexity by {q8:+.4}");
    for d in [WeightDtype::Q4_0, WeightDtype::Q4_1] {
        let r = rel(d);
        assert!(r < 0.10, "{d} raises perplexity by {r:+.4}");
    }
}
