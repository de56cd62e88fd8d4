//! Batched generation gives every sequence exactly the tokens it gets alone: mixed prompt
//! lengths, different settings and seeds per sequence, sequences that finish early, and context
//! shifts in the middle of a batch.

mod common;

use common::fixtures;
use quill::generate::{Batch, ContextPolicy};
use quill::load::LoadOptions;
use quill::model::{BatchInput, KvCache, Scratch};
use quill::{GenerateParams, Generation, KvDtype, Logits, ModelSource, SamplerConfig};

fn load(rel: &str) -> quill::LoadedModel {
    quill::load(
        &ModelSource::Path(fixtures().join(rel)),
        &LoadOptions::default(),
    )
    .unwrap()
}

/// A GPT-2-style and a Llama-style (grouped KV heads) fixture, and prompts of mixed lengths.
const BATCH_MODELS: [&str; 2] = [
    "models/nanogpt-bias-f32/ckpt.pt",
    "models/llama-gqa-tied/hf-safetensors",
];
const BATCH_PROMPTS: [&[u32]; 3] = [&[5, 9, 2, 7, 1], &[3], &[8, 8, 4]];

/// One batch input per prompt, each with its cache.
fn batch_inputs<'a>(prompts: &[&'a [u32]], caches: &'a mut [KvCache]) -> Vec<BatchInput<'a>> {
    prompts
        .iter()
        .zip(caches.iter_mut())
        .map(|(p, c)| BatchInput {
            tokens: p,
            cache: c,
        })
        .collect()
}

#[test]
fn batched_forward_equals_single_forward_bit_for_bit() {
    for rel in BATCH_MODELS {
        let m = load(rel).model;
        let prompts = BATCH_PROMPTS;
        let singles: Vec<Vec<f32>> = prompts
            .iter()
            .map(|p| {
                let mut c = m.new_cache(16);
                m.forward(p, &mut c, &mut Scratch::default(), Logits::All, None)
                    .unwrap()
            })
            .collect();
        let mut caches: Vec<_> = prompts.iter().map(|_| m.new_cache(16)).collect();
        let mut inputs = batch_inputs(&prompts, &mut caches);
        let batched = m
            .forward_batch(&mut inputs, &mut Scratch::default(), Logits::All, None)
            .unwrap();
        assert_eq!(batched, singles, "{rel}");
        assert_eq!(
            caches.iter().map(|c| c.len()).collect::<Vec<_>>(),
            vec![5, 1, 3]
        );
    }
}

/// One more decode step (token 6) on every cache: its logits show what the cache holds.
fn next_steps(m: &quill::Model, caches: &mut [KvCache], scratch: &mut Scratch) -> Vec<Vec<f32>> {
    caches
        .iter_mut()
        .map(|c| m.forward(&[6], c, scratch, Logits::Last, None).unwrap())
        .collect()
}

/// Asking for the last rows' logits only (the last block then carries on with those rows alone)
/// gives exactly the last rows of the full logits, and caches every row's keys and values: the
/// next decode step is the same bits either way.
#[test]
fn last_row_logits_are_the_last_rows_of_all_logits() {
    for rel in BATCH_MODELS {
        let m = load(rel).model;
        let vocab = m.config().vocab_size;
        let prompts = BATCH_PROMPTS;
        let run = |want: Logits| {
            let mut caches: Vec<_> = prompts.iter().map(|_| m.new_cache(16)).collect();
            let mut scratch = Scratch::default();
            let mut inputs = batch_inputs(&prompts, &mut caches);
            let first = m
                .forward_batch(&mut inputs, &mut scratch, want, None)
                .unwrap();
            (first, next_steps(&m, &mut caches, &mut scratch))
        };
        let (all, next_all) = run(Logits::All);
        let (last, next_last) = run(Logits::Last);
        for (i, (a, l)) in all.iter().zip(&last).enumerate() {
            assert_eq!(l.len(), vocab);
            let want = &a[a.len() - vocab..];
            let same = want.iter().zip(l).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{rel}: sequence {i}");
        }
        assert_eq!(next_last, next_all, "{rel}: the step after");
        // And a single sequence alone.
        let mut c = m.new_cache(16);
        let alone = m
            .forward(
                prompts[0],
                &mut c,
                &mut Scratch::default(),
                Logits::Last,
                None,
            )
            .unwrap();
        assert_eq!(alone, last[0], "{rel}: alone");
    }
}

/// Inputs longer than one pass (`PASS_ROWS` rows) run in several passes: a long prompt split
/// across passes, short ones sharing a pass with its pieces. Every row computes exactly what it
/// computes in one pass over the whole input (a traced pass is always one pass), for both kinds
/// of logits and both KV cache types, and the caches hold the same keys and values (the next
/// step's logits are the same bits). An invalid sequence anywhere stops everything before any
/// cache changes.
#[test]
fn long_inputs_run_in_passes_with_one_pass_results() {
    use quill::model::PASS_ROWS;
    let sources = [
        ModelSource::Embedded,
        ModelSource::Path(fixtures().join("models/llama-gqa-tied/hf-safetensors")),
    ];
    for src in &sources {
        let m = quill::load(src, &LoadOptions::default()).unwrap().model;
        let (vocab, ctx) = (m.config().vocab_size as u32, m.config().context_length);
        let ids = |n: usize, salt: u32| -> Vec<u32> {
            (0..n as u32)
                .map(|i| (i * 31 + salt * 7 + 3) % vocab)
                .collect()
        };
        // One prompt over a pass and a half, one short, one just under a pass.
        let lens = [PASS_ROWS + PASS_ROWS / 2 + 5, 5, PASS_ROWS - 3];
        assert!(
            lens[0] < ctx,
            "the fixture's context must hold the long prompt"
        );
        let owned: Vec<Vec<u32>> = lens.iter().zip(1..).map(|(&n, s)| ids(n, s)).collect();
        let prompts: Vec<&[u32]> = owned.iter().map(|p| &p[..]).collect();
        for kv in [KvDtype::F32, KvDtype::F16] {
            for want in [Logits::Last, Logits::All] {
                let run = |one_pass: bool| {
                    let mut caches: Vec<_> =
                        prompts.iter().map(|_| m.new_cache_with(ctx, kv)).collect();
                    let mut scratch = Scratch::default();
                    let mut inputs = batch_inputs(&prompts, &mut caches);
                    let mut noop = |_: &str, _: &[f32]| {};
                    let trace: Option<quill::model::Trace<'_>> = one_pass.then_some(&mut noop as _);
                    let first = m
                        .forward_batch(&mut inputs, &mut scratch, want, trace)
                        .unwrap();
                    (first, next_steps(&m, &mut caches, &mut scratch))
                };
                let (one, one_next) = run(true);
                let (passes, passes_next) = run(false);
                let rows = |n: usize| if want == Logits::All { n } else { 1 };
                for (i, (o, p)) in one.iter().zip(&passes).enumerate() {
                    assert_eq!(o.len(), rows(lens[i]) * vocab as usize);
                    let same = o.iter().zip(p).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same && o.len() == p.len(),
                        "{src:?} {kv:?} {want:?}: sequence {i}"
                    );
                }
                assert_eq!(
                    one_next, passes_next,
                    "{src:?} {kv:?} {want:?}: the step after"
                );
            }
        }
        // A bad token in the last sequence: an error, and no cache has moved.
        let mut bad = owned.clone();
        bad[2][1] = vocab;
        let bad_refs: Vec<&[u32]> = bad.iter().map(|p| &p[..]).collect();
        let mut caches: Vec<_> = bad.iter().map(|_| m.new_cache(ctx)).collect();
        let mut inputs = batch_inputs(&bad_refs, &mut caches);
        let err = m.forward_batch(&mut inputs, &mut Scratch::default(), Logits::Last, None);
        assert!(err.is_err(), "{src:?}");
        assert!(caches.iter().all(|c| c.is_empty()), "{src:?}");
    }
}

fn params(seed: u64, n: usize, temperature: f32) -> GenerateParams {
    GenerateParams {
        max_new_tokens: n,
        sampler: SamplerConfig {
            seed,
            temperature,
            top_k: Some(20),
            ..SamplerConfig::default()
        },
        ..GenerateParams::default()
    }
}

#[test]
fn batch_equals_single_for_mixed_prompts_settings_and_lengths() {
    let lm = load("models/nanogpt-bias-f32/ckpt.pt");
    let (m, tok) = (&lm.model, lm.tokenizer.as_ref().unwrap());
    let ctx = m.config().context_length;
    let long: String = "ROMEO:\nBut, soft! what light through yonder window breaks? ".repeat(3);
    let requests: Vec<(String, GenerateParams)> = vec![
        ("ROMEO:".into(), params(1, 40, 0.8)),
        ("K".into(), params(2, 25, 1.2)),
        (long[..ctx - 3].into(), params(3, 2 * ctx, 0.9)), // shifts its window mid-batch
        ("JULIET:\nO".into(), params(4, 5, 0.0)),          // greedy, finishes early
        ("ROMEO:".into(), params(1, 40, 0.8)),             // same request as the first
        (
            "First Citizen:".into(),
            GenerateParams {
                context: ContextPolicy::Crop,
                stop: vec!["\n\n".into()],
                ..params(5, 3 * ctx / 2, 1.0)
            },
        ),
    ];
    let alone: Vec<Vec<u32>> = requests
        .iter()
        .map(|(p, prm)| {
            let ids = tok.encode(p, false).unwrap();
            Generation::new(m, Some(tok), ids, prm.clone())
                .unwrap()
                .run()
                .unwrap()
                .0
        })
        .collect();
    let mut batch = Batch::new(m, Some(tok));
    for (p, prm) in &requests {
        batch
            .add(tok.encode(p, false).unwrap(), prm.clone())
            .unwrap();
    }
    let together: Vec<Vec<u32>> = batch.run().unwrap().into_iter().map(|r| r.0).collect();
    assert_eq!(together, alone);
    assert_eq!(together[0], together[4]);
    assert_eq!(
        together[2].len(),
        2 * ctx,
        "the long one ran past its context"
    );
}

#[test]
fn batch_of_llama_sequences_equals_single() {
    let lm = load("models/llama-gqa-tied/ckpt.pt");
    let m = &lm.model;
    let prompts: Vec<Vec<u32>> = vec![vec![1, 40, 41], vec![1], vec![1, 7, 8, 9, 10, 11, 12]];
    let alone: Vec<Vec<u32>> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Generation::new(m, None, p.clone(), params(i as u64, 30, 1.0))
                .unwrap()
                .run()
                .unwrap()
                .0
        })
        .collect();
    let mut batch = Batch::new(m, None);
    for (i, p) in prompts.iter().enumerate() {
        batch.add(p.clone(), params(i as u64, 30, 1.0)).unwrap();
    }
    let together: Vec<Vec<u32>> = batch.run().unwrap().into_iter().map(|r| r.0).collect();
    assert_eq!(together, alone);
}

/// Token ids and log-probabilities of every token event, per sequence index.
type Traces = Vec<Vec<(u32, Option<quill::sampling::TokenLogprobs>)>>;

fn trace(events: impl IntoIterator<Item = (usize, quill::Event)>, traces: &mut Traces) {
    for (i, e) in events {
        if let quill::Event::Token { id, logprobs, .. } = e {
            traces[i].push((id, logprobs));
        }
    }
}

#[test]
fn sequences_joining_a_running_batch_sample_from_their_own_rows() {
    let lm = load("models/llama-gqa-tied/ckpt.pt");
    let m = &lm.model;
    let greedy = |p: &[u32]| {
        Generation::new(m, None, p.to_vec(), params(0, 1, 0.0))
            .unwrap()
            .run()
            .unwrap()
            .0[0]
    };
    // The end-of-text id is the token greedy decoding picks first, so `min_new_tokens` has to
    // mask it in the sequence's logits row (an in-place edit of the batch's buffer).
    let prompts: Vec<Vec<u32>> = vec![vec![1, 40, 41], vec![1], vec![1, 7, 8, 9]];
    let eos = greedy(&prompts[0]);
    let masked = GenerateParams {
        min_new_tokens: 6,
        eos_ids: vec![eos],
        logprobs: Some(3),
        ..params(1, 12, 0.0)
    };
    let requests = [
        (prompts[0].clone(), masked.clone()),
        (prompts[1].clone(), params(2, 5, 0.7)),
        (
            prompts[2].clone(),
            GenerateParams {
                logprobs: Some(2),
                ..params(3, 9, 1.1)
            },
        ),
    ];
    let alone: Traces = requests
        .iter()
        .map(|(p, prm)| {
            let g = Generation::new(m, None, p.clone(), prm.clone()).unwrap();
            let mut t = vec![Vec::new()];
            trace(g.map(|e| (0, e.unwrap())), &mut t);
            t.pop().unwrap()
        })
        .collect();
    assert_ne!(
        alone[0][0].0, eos,
        "min_new_tokens masked the greedy choice"
    );
    // Sequence 1 joins after two steps, sequence 2 after three more: the rows of the last pass
    // belong to the sequences that ran, not to the ones added since.
    let mut batch = Batch::new(m, None);
    let mut together: Traces = vec![Vec::new(); requests.len()];
    batch
        .add(requests[0].0.clone(), requests[0].1.clone())
        .unwrap();
    for _ in 0..2 {
        trace(batch.step().unwrap(), &mut together);
    }
    batch
        .add(requests[1].0.clone(), requests[1].1.clone())
        .unwrap();
    for _ in 0..3 {
        trace(batch.step().unwrap(), &mut together);
    }
    batch
        .add(requests[2].0.clone(), requests[2].1.clone())
        .unwrap();
    while !batch.is_done() {
        trace(batch.step().unwrap(), &mut together);
    }
    assert_eq!(together, alone);
}
