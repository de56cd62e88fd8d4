//! Generation-level behaviour: stop strings spanning tokens, several EOS ids, minimum length,
//! the time limit, log-probabilities, beam search, and streaming equal to batch decoding.

mod common;

use std::time::Duration;

use common::fixtures;
use quill::generate::{beam_search, BeamParams, FinishReason, StopMatcher};
use quill::load::LoadOptions;
use quill::model::Scratch;
use quill::sampling::LogprobSource;
use quill::{
    Event, GenerateParams, Generation, KvDtype, Logits, ModelSource, SamplerConfig, Tokenizer,
};

fn char_model() -> quill::LoadedModel {
    let p = fixtures().join("models/nanogpt-bias-f32/ckpt.pt");
    quill::load(&ModelSource::Path(p), &LoadOptions::default()).unwrap()
}

fn greedy_params(n: usize) -> GenerateParams {
    GenerateParams {
        max_new_tokens: n,
        sampler: SamplerConfig::greedy(),
        ..GenerateParams::default()
    }
}

/// Runs to the end; returns (streamed text, generated ids, finish reason).
fn collect(g: Generation<'_>) -> (String, Vec<u32>, FinishReason) {
    let (mut text, mut ids, mut reason) = (String::new(), Vec::new(), None);
    for ev in g {
        match ev.unwrap() {
            Event::Token { id, text: t, .. } => {
                ids.push(id);
                text.push_str(&t);
            }
            Event::Finished {
                reason: r, text: t, ..
            } => {
                text.push_str(&t);
                reason = Some(r);
            }
            _ => {}
        }
    }
    (text, ids, reason.expect("finished"))
}

#[test]
fn stop_string_spanning_tokens_ends_generation_without_leaking() {
    let m = char_model();
    let tok = m.tokenizer.as_ref().unwrap();
    let prompt = tok.encode("ROMEO:", false).unwrap();
    let (full, _, _) =
        collect(Generation::new(&m.model, Some(tok), prompt.clone(), greedy_params(60)).unwrap());
    // A 3-character stop string (3 tokens) from the middle of the greedy text.
    let chars: Vec<char> = full.chars().collect();
    let stop: String = chars[20..23].iter().collect();
    let cut = full.find(&stop).unwrap();
    let params = GenerateParams {
        stop: vec!["never appears \u{1F980}".into(), stop.clone()],
        ..greedy_params(60)
    };
    let (text, _, reason) = collect(Generation::new(&m.model, Some(tok), prompt, params).unwrap());
    assert_eq!(reason, FinishReason::Stop(1));
    assert_eq!(text, full[..cut], "stop string {stop:?}");
}

#[test]
fn several_eos_ids_min_tokens_and_time_limit() {
    let m = char_model();
    let tok = m.tokenizer.as_ref().unwrap();
    let prompt = tok.encode("ROMEO:", false).unwrap();
    let (_, ids, _) =
        collect(Generation::new(&m.model, Some(tok), prompt.clone(), greedy_params(12)).unwrap());
    // Stop at whichever of two ids comes first; the third greedy token is one of them.
    let params = GenerateParams {
        eos_ids: vec![60, ids[2]]
            .into_iter()
            .filter(|&x| !ids[..2].contains(&x))
            .collect(),
        ..greedy_params(12)
    };
    let (_, got, reason) =
        collect(Generation::new(&m.model, Some(tok), prompt.clone(), params).unwrap());
    assert_eq!(reason, FinishReason::Eos);
    assert_eq!(got, ids[..3]);
    // With min_new_tokens the first token cannot be an EOS, so generation goes on.
    let params = GenerateParams {
        eos_ids: vec![ids[0]],
        min_new_tokens: 4,
        ..greedy_params(12)
    };
    let (_, got, _) =
        collect(Generation::new(&m.model, Some(tok), prompt.clone(), params).unwrap());
    assert!(got.len() >= 4 && got[0] != ids[0], "{got:?}");
    assert!(got[..4].iter().all(|&t| t != ids[0]));
    let params = GenerateParams {
        max_time: Some(Duration::ZERO),
        ..greedy_params(12)
    };
    let (_, got, reason) = collect(Generation::new(&m.model, Some(tok), prompt, params).unwrap());
    assert_eq!((reason, got.len()), (FinishReason::Time, 0));
}

#[test]
fn model_logprobs_are_the_log_softmax_of_the_logits() {
    let m = char_model();
    let prompt = vec![20u32, 30, 40];
    let mut cache = m.model.new_cache(8);
    let logits = m
        .model
        .forward(
            &prompt,
            &mut cache,
            &mut Scratch::default(),
            Logits::Last,
            None,
        )
        .unwrap();
    let max = logits.iter().cloned().fold(f32::MIN, f32::max) as f64;
    let lse = max
        + logits
            .iter()
            .map(|&l| (l as f64 - max).exp())
            .sum::<f64>()
            .ln();
    let params = GenerateParams {
        logprobs: Some(3),
        logprob_source: LogprobSource::Model,
        ..greedy_params(1)
    };
    let mut g = Generation::new(&m.model, None, prompt, params).unwrap();
    g.next(); // prompt
    let Some(Ok(Event::Token {
        id,
        logprobs: Some(lp),
        ..
    })) = g.next()
    else {
        panic!("expected a token with log-probabilities")
    };
    let want = logits[id as usize] as f64 - lse;
    assert!((lp.logprob as f64 - want).abs() < 1e-5);
    assert_eq!(lp.top.len(), 3);
    assert_eq!(lp.top[0].0, id, "greedy picks the top token");
    assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
}

#[test]
fn beam_search_with_one_beam_is_greedy_and_wide_beams_are_exact() {
    let m = char_model();
    let prompt = vec![20u32, 30, 40];
    let greedy = Generation::new(&m.model, None, prompt.clone(), greedy_params(10))
        .unwrap()
        .run()
        .unwrap()
        .0;
    let one = BeamParams {
        num_beams: 1,
        max_new_tokens: 10,
        ..BeamParams::default()
    };
    assert_eq!(
        beam_search(&m.model, &prompt, 65, &one).unwrap()[0].tokens,
        greedy
    );
    // Also over an f16 KV cache (the beams' caches take the requested type).
    let params16 = GenerateParams {
        kv_cache: KvDtype::F16,
        ..greedy_params(10)
    };
    let greedy16 = Generation::new(&m.model, None, prompt.clone(), params16)
        .unwrap()
        .run()
        .unwrap()
        .0;
    let one16 = BeamParams {
        kv_cache: KvDtype::F16,
        ..one.clone()
    };
    assert_eq!(
        beam_search(&m.model, &prompt, 65, &one16).unwrap()[0].tokens,
        greedy16
    );

    // With as many beams as tokens, two steps of beam search see every 2-token continuation.
    let v = m.model.config().vocab_size;
    let wide = BeamParams {
        num_beams: v,
        max_new_tokens: 2,
        length_penalty: 0.0,
        num_return_sequences: 3,
        ..BeamParams::default()
    };
    let hyps = beam_search(&m.model, &prompt, v, &wide).unwrap();
    let log_softmax = |l: &[f32]| -> Vec<f64> {
        let max = l.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let lse = max + l.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
        l.iter().map(|&x| x as f64 - lse).collect()
    };
    let mut cache = m.model.new_cache(8);
    let mut scratch = Scratch::default();
    let first = log_softmax(
        &m.model
            .forward(&prompt, &mut cache, &mut scratch, Logits::Last, None)
            .unwrap(),
    );
    let mut best = (f64::MIN, 0u32, 0u32);
    for a in 0..v as u32 {
        let mut c = cache.clone();
        let second = log_softmax(
            &m.model
                .forward(&[a], &mut c, &mut scratch, Logits::Last, None)
                .unwrap(),
        );
        for (b, &lp) in second.iter().enumerate() {
            if first[a as usize] + lp > best.0 {
                best = (first[a as usize] + lp, a, b as u32);
            }
        }
    }
    assert_eq!(hyps.len(), 3);
    assert_eq!(hyps[0].tokens, vec![best.1, best.2]);
    assert!((hyps[0].logprob - best.0).abs() < 1e-6);
    assert!(hyps.windows(2).all(|w| w[0].score >= w[1].score));
}

#[test]
fn sampled_text_is_identical_for_a_seed_and_independent_of_other_sequences() {
    let m = char_model();
    let tok = m.tokenizer.as_ref().unwrap();
    let prompt = tok.encode("KING:", false).unwrap();
    let run = |seed: u64| {
        let params = GenerateParams {
            max_new_tokens: 40,
            sampler: SamplerConfig {
                seed,
                temperature: 0.9,
                top_p: Some(0.95),
                ..SamplerConfig::default()
            },
            ..GenerateParams::default()
        };
        collect(Generation::new(&m.model, Some(tok), prompt.clone(), params).unwrap()).1
    };
    let a = run(11);
    // Interleave another sequence's work between two runs of the same seed.
    let _ = run(12);
    assert_eq!(run(11), a);
    assert_ne!(run(12), a);
}

/// Streams `text`'s tokens through the detokenizer and a stop matcher, checking at every step
/// that no emitted piece holds a broken character.
fn stream_with_stop(tok: &Tokenizer, text: &str, stop: &str) -> (String, bool) {
    let ids = tok.encode(text, false).unwrap();
    let mut stream = tok.stream();
    let mut m = StopMatcher::new(vec![stop.to_string()]);
    let mut out = String::new();
    for id in ids {
        let piece = stream.push(id).unwrap();
        let (emit, hit) = m.push(&piece);
        assert!(!emit.contains('\u{FFFD}'));
        out.push_str(&emit);
        if hit.is_some() {
            return (out, true);
        }
    }
    out.push_str(&m.push(&stream.finish()).0);
    out.push_str(&m.finish());
    (out, false)
}

#[test]
fn utf8_streaming_with_emoji_cjk_and_split_stop_strings() {
    let tok = Tokenizer::gpt2().unwrap();
    let text = "Hello 🦀 crab, 你好世界 and more 🎉 text";
    // Stop strings that start inside multi-byte characters' token runs.
    assert_eq!(
        stream_with_stop(&tok, text, "世界 and"),
        ("Hello 🦀 crab, 你好".into(), true)
    );
    assert_eq!(
        stream_with_stop(&tok, text, "🎉"),
        ("Hello 🦀 crab, 你好世界 and more ".into(), true)
    );
    assert_eq!(stream_with_stop(&tok, text, "🦀🦀"), (text.into(), false));
    assert_eq!(stream_with_stop(&tok, text, "  "), (text.into(), false));
}

#[test]
fn streamed_text_equals_batch_decoding() {
    // A random-weight GPT-2 BPE model emits arbitrary byte tokens, many of them partial UTF-8.
    let p = fixtures().join("models/gpt2-bpe-padded/ckpt.pt");
    let m = quill::load(&ModelSource::Path(p), &LoadOptions::default()).unwrap();
    let tok = m.tokenizer.as_ref().unwrap();
    let params = GenerateParams {
        max_new_tokens: 150,
        sampler: SamplerConfig {
            temperature: 1.0,
            top_k: None,
            seed: 3,
            ..SamplerConfig::default()
        },
        ..GenerateParams::default()
    };
    let prompt = tok.encode("Hi", false).unwrap();
    let (text, ids, _) = collect(Generation::new(&m.model, Some(tok), prompt, params).unwrap());
    assert!(
        ids.iter().all(|&t| (t as usize) < 50257),
        "padding ids never sampled"
    );
    let body: Vec<u32> = ids.into_iter().filter(|&t| t != 50256).collect();
    assert_eq!(text, tok.decode(&body).unwrap());
}
