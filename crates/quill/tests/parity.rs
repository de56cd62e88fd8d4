//! Every fixture model, in every format it ships in, against the PyTorch reference outputs made
//! by `fixtures/make_fixtures.py` (float64 forward, stored as float32):
//! full logits for each prompt, per-layer hidden states, cached == uncached, and 64-token greedy
//! continuations under both context policies.
//!
//! Tolerance: |quill − reference| ≤ TOL · (1 + |reference|) elementwise, TOL = 5e-5 (quill
//! computes in float32 with f64 norm statistics; observed errors are printed with
//! `--nocapture`, 1e-6 to 1.1e-5).

mod common;

use common::{fixtures, index, load_refs, max_rel_err};
use quill::generate::ContextPolicy;
use quill::load::LoadOptions;
use quill::model::Scratch;
use quill::{GenerateParams, Generation, Logits, ModelSource, SamplerConfig};

const TOL: f64 = 5e-5;

fn models() -> Vec<serde_json::Value> {
    let mut all = index()["models"].as_array().expect("models array").clone();
    // The seed systems' own formats (HipGPT run, llm.c .bin), made by
    // fixtures/factory/seed_formats.py with the same reference conventions.
    let seed = fixtures().join("seed/index.json");
    if let Ok(text) = std::fs::read_to_string(&seed) {
        let v: serde_json::Value = serde_json::from_str(&text).expect("seed/index.json parses");
        for m in v["models"].as_array().expect("seed models array") {
            if !all.iter().any(|a| a["name"] == m["name"]) {
                all.push(m.clone());
            }
        }
    }
    all
}

fn load(rel: &str) -> quill::LoadedModel {
    let p = fixtures().join(rel);
    quill::load(&ModelSource::Path(p.clone()), &LoadOptions::default())
        .unwrap_or_else(|e| panic!("loading {}: {e}", p.display()))
}

fn greedy(model: &quill::Model, prompt: Vec<u32>, policy: ContextPolicy) -> Vec<u32> {
    let params = GenerateParams {
        max_new_tokens: 64,
        sampler: SamplerConfig::greedy(),
        context: policy,
        ..GenerateParams::default()
    };
    Generation::new(model, None, prompt, params)
        .expect("generation starts")
        .run()
        .expect("generation runs")
        .0
}

#[test]
fn every_format_matches_pytorch() {
    let mut checked = 0;
    for m in models() {
        let name = m["name"].as_str().unwrap();
        let refs = load_refs(m["reference"].as_str().unwrap());
        let n_prompts = m["prompts"].as_u64().unwrap() as usize;
        for f in m["formats"].as_array().unwrap() {
            let kind = f["kind"].as_str().unwrap();
            let loaded = load(f["path"].as_str().unwrap());
            let model = &loaded.model;
            let ctx = model.config().context_length;
            let mut worst = 0.0f64;
            for i in 0..n_prompts {
                let prompt = refs[&format!("prompt.{i}")].ids();
                let window = &prompt[prompt.len().saturating_sub(ctx)..];
                let mut cache = model.new_cache(ctx);
                let logits = model
                    .forward(
                        window,
                        &mut cache,
                        &mut Scratch::default(),
                        Logits::All,
                        None,
                    )
                    .unwrap();
                let (shape, want) = refs[&format!("logits.{i}")].f32();
                assert_eq!(shape, [window.len(), model.config().vocab_size]);
                let err = max_rel_err(&logits, want);
                assert!(
                    err < TOL,
                    "{name} [{kind}] prompt {i}: logits error {err:e}"
                );
                worst = worst.max(err);
            }
            println!("{name:>24} [{kind:>24}]: max logits error {worst:.2e}");
            checked += 1;
        }
    }
    assert!(
        checked >= 10 || std::env::var_os("QUILL_FIXTURE_INDEX").is_some(),
        "only {checked} model formats checked"
    );
}

#[test]
fn hidden_states_match_layer_by_layer() {
    for m in models() {
        let name = m["name"].as_str().unwrap();
        let refs = load_refs(m["reference"].as_str().unwrap());
        let f = &m["formats"][0];
        let loaded = load(f["path"].as_str().unwrap());
        let model = &loaded.model;
        let prompt = refs["prompt.0"].ids();
        let mut got: Vec<(String, Vec<f32>)> = Vec::new();
        let mut trace = |n: &str, x: &[f32]| got.push((n.to_string(), x.to_vec()));
        let mut cache = model.new_cache(prompt.len());
        model
            .forward(
                &prompt,
                &mut cache,
                &mut Scratch::default(),
                Logits::All,
                Some(&mut trace),
            )
            .unwrap();
        let n_layer = model.config().n_layer;
        assert_eq!(
            got.len(),
            n_layer + 2,
            "{name}: hidden.0..=L and hidden.final"
        );
        for (tname, x) in &got {
            let (_, want) = refs[tname].f32();
            let err = max_rel_err(x, want);
            assert!(err < TOL, "{name}: {tname} error {err:e}");
        }
    }
}

#[test]
fn cached_decode_equals_full_prefill() {
    for m in models() {
        let name = m["name"].as_str().unwrap();
        let refs = load_refs(m["reference"].as_str().unwrap());
        let loaded = load(m["formats"][0]["path"].as_str().unwrap());
        let model = &loaded.model;
        let prompt = refs["prompt.0"].ids();
        let v = model.config().vocab_size;
        let mut cache = model.new_cache(prompt.len());
        let full = model
            .forward(
                &prompt,
                &mut cache,
                &mut Scratch::default(),
                Logits::All,
                None,
            )
            .unwrap();
        // Prefill a first chunk, then one token at a time through the cache.
        let split = prompt.len() / 2;
        let mut cache = model.new_cache(prompt.len());
        let mut scratch = Scratch::default();
        let mut stepwise = model
            .forward(
                &prompt[..split.max(1)],
                &mut cache,
                &mut scratch,
                Logits::All,
                None,
            )
            .unwrap();
        for t in split.max(1)..prompt.len() {
            let l = model
                .forward(
                    &prompt[t..t + 1],
                    &mut cache,
                    &mut scratch,
                    Logits::Last,
                    None,
                )
                .unwrap();
            stepwise.extend_from_slice(&l);
        }
        assert_eq!(stepwise.len(), prompt.len() * v);
        let err = max_rel_err(&stepwise, &full);
        assert!(err < 1e-5, "{name}: cached vs uncached error {err:e}");
    }
}

#[test]
fn greedy_continuations_are_identical() {
    for m in models() {
        let name = m["name"].as_str().unwrap();
        let refs = load_refs(m["reference"].as_str().unwrap());
        for f in m["formats"].as_array().unwrap() {
            let kind = f["kind"].as_str().unwrap();
            let loaded = load(f["path"].as_str().unwrap());
            let prompt = refs["prompt.0"].ids();
            for (policy, key) in [
                (ContextPolicy::Crop, "greedy.crop"),
                (ContextPolicy::Shift, "greedy.shift"),
            ] {
                let got = greedy(&loaded.model, prompt.clone(), policy);
                assert_eq!(got, refs[key].ids(), "{name} [{kind}] {key}");
            }
        }
    }
}
