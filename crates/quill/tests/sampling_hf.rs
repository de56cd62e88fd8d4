//! The sampler chain against Hugging Face transformers' logits processors on recorded logits
//! (`fixtures/sampling/`, made by `fixtures/factory/sampling_refs.py`): the same tokens survive
//! and their scores agree.

mod common;

use common::{fixtures, load_refs, Ref};
use quill::sampling::{History, Sampler, SamplerConfig, Stage};

fn config(stages: &[serde_json::Value]) -> SamplerConfig {
    let mut c = SamplerConfig {
        temperature: 1.0,
        top_k: None,
        order: Vec::new(),
        ..SamplerConfig::default()
    };
    for s in stages {
        let name = s["stage"].as_str().unwrap();
        let v = s["value"].as_f64().unwrap();
        let stage = Stage::parse(name).unwrap();
        c.order.push(stage);
        match stage {
            Stage::Repetition => c.repetition_penalty = Some(v as f32),
            Stage::Temperature => c.temperature = v as f32,
            Stage::TopK => c.top_k = Some(v as usize),
            Stage::TopP => c.top_p = Some(v as f32),
            Stage::MinP => c.min_p = Some(v as f32),
            Stage::TypicalP => c.typical_p = Some(v as f32),
            Stage::NoRepeatNgram => c.no_repeat_ngram = Some(v as usize),
            other => panic!("no HF reference for {other:?}"),
        }
    }
    c
}

#[test]
fn chain_matches_hugging_face_processors() {
    let dir = fixtures().join("sampling");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("processors.json")).unwrap())
            .unwrap();
    let refs = load_refs("sampling/processors.safetensors");
    let (shape, logits) = refs["logits"].f32();
    let (rows, vocab) = (shape[0], shape[1]);
    let history: Vec<u32> = refs["history"].ids();
    let hlen = history.len() / rows;
    let cases = index["cases"].as_object().unwrap();
    assert!(cases.len() >= 10);
    for (name, stages) in cases {
        let (_, want) = match &refs[&format!("out.{name}")] {
            r @ Ref::F32(..) => r.f32(),
            _ => unreachable!(),
        };
        for r in 0..rows {
            let mut s = Sampler::new(config(stages.as_array().unwrap())).unwrap();
            let h = History {
                prompt: &history[r * hlen..(r + 1) * hlen],
                generated: &[],
            };
            let c = s
                .process(&logits[r * vocab..(r + 1) * vocab], vocab, &h)
                .unwrap();
            let mut got = vec![f32::NEG_INFINITY; vocab];
            for cand in c.items() {
                got[cand.id as usize] = cand.logit;
            }
            let want = &want[r * vocab..(r + 1) * vocab];
            for t in 0..vocab {
                let (g, w) = (got[t], want[t]);
                if w == f32::NEG_INFINITY || g == f32::NEG_INFINITY {
                    assert_eq!(g, w, "{name} row {r} token {t}: kept/removed differs");
                } else {
                    assert!(
                        (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                        "{name} row {r} token {t}: {g} vs {w}"
                    );
                }
            }
        }
    }
}
