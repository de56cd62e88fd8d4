//! Beam search: keep the `num_beams` most likely partial continuations, extend each by every
//! token, and keep the best again. Each beam owns its KV cache (copied when a beam forks).
//!
//! Scoring follows Hugging Face's `BeamSearchScorer`: a finished hypothesis scores
//! `sum of token log-probabilities / length^length_penalty` (length = generated tokens, EOS
//! included). A step considers the `2·num_beams` best extensions; one that ends in EOS becomes
//! a finished hypothesis if it ranks among the first `num_beams`. Search ends when
//! `max_new_tokens` is reached, the context is full, or `num_beams` hypotheses are finished and
//! either `early_stopping` is set or no running beam can still beat the worst finished one.

use crate::error::{Error, Result};
use crate::model::{BatchInput, KvCache, KvDtype, Logits, Model, Scratch};

/// Settings of a beam search.
#[derive(Debug, Clone, PartialEq)]
pub struct BeamParams {
    pub num_beams: usize,
    pub max_new_tokens: usize,
    /// Exponent of the length normalisation (0 = plain sum of log-probabilities; > 0 favours
    /// longer sequences).
    pub length_penalty: f32,
    pub early_stopping: bool,
    pub eos_ids: Vec<u32>,
    /// How many of the best hypotheses to return (at most `num_beams`).
    pub num_return_sequences: usize,
    /// How the beams' KV caches store keys and values.
    pub kv_cache: KvDtype,
}

impl Default for BeamParams {
    fn default() -> Self {
        BeamParams {
            num_beams: 4,
            max_new_tokens: 64,
            length_penalty: 1.0,
            early_stopping: false,
            eos_ids: Vec::new(),
            num_return_sequences: 1,
            kv_cache: KvDtype::F32,
        }
    }
}

/// A finished (or, at the end, still running) beam.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// Generated tokens (EOS included when it ended the hypothesis).
    pub tokens: Vec<u32>,
    /// Sum of the tokens' log-probabilities.
    pub logprob: f64,
    /// The length-normalised score the search ranks by.
    pub score: f64,
}

struct Beam {
    tokens: Vec<u32>,
    logprob: f64,
    cache: KvCache,
    logits: Vec<f32>,
}

fn normalised(logprob: f64, len: usize, lp: f32) -> f64 {
    logprob / (len.max(1) as f64).powf(lp as f64)
}

/// Runs beam search from `prompt`; returns the best hypotheses, best first. `allowed` bounds
/// the token ids (the tokenizer's vocabulary).
pub fn beam_search(
    model: &Model,
    prompt: &[u32],
    allowed: usize,
    p: &BeamParams,
) -> Result<Vec<Hypothesis>> {
    if p.num_beams == 0 {
        return Err(Error::config("num_beams", "0 (must be >= 1)"));
    }
    if p.num_return_sequences == 0 || p.num_return_sequences > p.num_beams {
        return Err(Error::config(
            "num_return_sequences",
            format!(
                "{} (must be between 1 and num_beams = {})",
                p.num_return_sequences, p.num_beams
            ),
        ));
    }
    if !p.length_penalty.is_finite() {
        return Err(Error::config("length_penalty", "must be finite"));
    }
    if prompt.is_empty() {
        return Err(Error::Request("the prompt is empty".into()));
    }
    let ctx = model.config().context_length;
    if prompt.len() > ctx {
        return Err(Error::Request(format!(
            "the prompt is {} tokens but the model's context holds {ctx}",
            prompt.len()
        )));
    }
    let allowed = allowed.min(model.config().vocab_size);
    let mut scratch = Scratch::default();
    let mut cache = model.new_cache_with(ctx, p.kv_cache);
    // Every beam's cache (clones keep the reserve) holds the whole search without regrowing.
    cache.reserve(prompt.len() + p.max_new_tokens);
    let logits = model.forward(prompt, &mut cache, &mut scratch, Logits::Last, None)?;
    let mut beams = vec![Beam {
        tokens: Vec::new(),
        logprob: 0.0,
        cache,
        logits,
    }];
    let mut finished: Vec<Hypothesis> = Vec::new();
    let worst_finished = |f: &[Hypothesis]| f.iter().map(|h| h.score).fold(f64::INFINITY, f64::min);

    for step in 0..p.max_new_tokens {
        // Every (beam, token) extension with its cumulative log-probability.
        let mut ext: Vec<(f64, usize, u32)> = Vec::with_capacity(beams.len() * allowed);
        for (b, beam) in beams.iter().enumerate() {
            let l = &beam.logits[..allowed];
            let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max + l.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
            ext.extend(
                l.iter()
                    .enumerate()
                    .map(|(t, &x)| (beam.logprob + x as f64 - lse, b, t as u32)),
            );
        }
        let take = (2 * p.num_beams).min(ext.len());
        ext.select_nth_unstable_by(take - 1, |a, b| {
            b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2))
        });
        ext.truncate(take);
        ext.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));

        let mut next: Vec<(f64, usize, u32)> = Vec::with_capacity(p.num_beams);
        for (rank, &(lp, b, t)) in ext.iter().enumerate() {
            if p.eos_ids.contains(&t) {
                if rank < p.num_beams {
                    let mut tokens = beams[b].tokens.clone();
                    tokens.push(t);
                    let score = normalised(lp, tokens.len(), p.length_penalty);
                    finished.push(Hypothesis {
                        tokens,
                        logprob: lp,
                        score,
                    });
                }
            } else if next.len() < p.num_beams {
                next.push((lp, b, t));
            }
            if next.len() == p.num_beams {
                break;
            }
        }
        finished.sort_by(|a, b| b.score.total_cmp(&a.score));
        finished.truncate(p.num_beams);

        let cur_len = step + 1;
        let done = finished.len() >= p.num_beams
            && (p.early_stopping || {
                let best_running = next.first().map_or(f64::NEG_INFINITY, |n| n.0);
                normalised(best_running, cur_len, p.length_penalty) <= worst_finished(&finished)
            });
        if done || next.is_empty() {
            beams.clear();
            break;
        }
        // Fork: the last child of a parent takes its cache, earlier children copy it.
        let mut children = vec![0usize; beams.len()];
        for &(_, b, _) in &next {
            children[b] += 1;
        }
        let mut old: Vec<Option<Beam>> = beams.drain(..).map(Some).collect();
        // Parents without children lend their caches' buffers to the copies.
        let mut spare: Vec<KvCache> = old
            .iter_mut()
            .zip(&children)
            .filter(|(_, &n)| n == 0)
            .filter_map(|(b, _)| b.take().map(|b| b.cache))
            .collect();
        let mut grown = Vec::with_capacity(next.len());
        for &(lp, b, t) in &next {
            children[b] -= 1;
            let (mut tokens, cache) = if children[b] == 0 {
                let parent = old[b]
                    .take()
                    .ok_or_else(|| Error::Request("beam reused".into()))?;
                (parent.tokens, parent.cache)
            } else {
                let parent = old[b]
                    .as_ref()
                    .ok_or_else(|| Error::Request("beam reused".into()))?;
                let cache = match spare.pop() {
                    Some(mut c) => {
                        c.clone_from(&parent.cache);
                        c
                    }
                    None => parent.cache.clone(),
                };
                (parent.tokens.clone(), cache)
            };
            tokens.push(t);
            grown.push(Beam {
                tokens,
                logprob: lp,
                cache,
                logits: Vec::new(),
            });
        }
        // Every beam has the same length, so all of them continue or none does; those that
        // continue take their next step together, one batch sharing each weight read (a
        // sequence's logits do not depend on the batch).
        let full = step + 1 == p.max_new_tokens || grown.iter().any(|b| b.cache.remaining() == 0);
        if !full {
            let last: Vec<u32> = grown
                .iter()
                .filter_map(|b| b.tokens.last().copied())
                .collect();
            let mut inputs: Vec<BatchInput<'_>> = grown
                .iter_mut()
                .zip(&last)
                .map(|(b, t)| BatchInput {
                    tokens: std::slice::from_ref(t),
                    cache: &mut b.cache,
                })
                .collect();
            let logits = model.forward_batch(&mut inputs, &mut scratch, Logits::Last, None)?;
            for (b, l) in grown.iter_mut().zip(logits) {
                b.logits = l;
            }
        }
        beams = grown;
        if beams.iter().any(|b| b.logits.is_empty()) {
            break;
        }
    }
    // Beams still running when the search ends compete with the finished ones.
    for b in beams {
        let score = normalised(b.logprob, b.tokens.len(), p.length_penalty);
        finished.push(Hypothesis {
            tokens: b.tokens,
            logprob: b.logprob,
            score,
        });
    }
    finished.sort_by(|a, b| b.score.total_cmp(&a.score));
    finished.truncate(p.num_return_sequences);
    Ok(finished)
}
