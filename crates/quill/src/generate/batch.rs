//! Many sequences generated together: each step samples every sequence that has logits, then
//! runs one batched forward pass for all sequences that need the model (prompts of different
//! lengths, single decode tokens and context re-encodes alike). Each sequence keeps its own
//! positions, KV cache, sampler and seed, so its tokens are exactly those it would produce
//! alone; batching only shares the weight reads.

use std::time::Instant;

use super::{Event, FinishReason, GenerateParams, Generation};
use crate::error::Result;
use crate::model::{Logits, Model, Scratch};
use crate::tokenizer::Tokenizer;

/// A set of sequences generated in lockstep.
pub struct Batch<'a> {
    model: &'a Model,
    tokenizer: Option<&'a Tokenizer>,
    seqs: Vec<Generation<'a>>,
    scratch: Scratch,
    /// The last pass's logits, [sequences that ran, vocab].
    logits: Vec<f32>,
}

impl<'a> Batch<'a> {
    pub fn new(model: &'a Model, tokenizer: Option<&'a Tokenizer>) -> Self {
        Batch {
            model,
            tokenizer,
            seqs: Vec::new(),
            scratch: Scratch::default(),
            logits: Vec::new(),
        }
    }

    /// Adds a sequence; returns its index (the index its events carry).
    pub fn add(&mut self, prompt: Vec<u32>, params: GenerateParams) -> Result<usize> {
        self.seqs
            .push(Generation::new(self.model, self.tokenizer, prompt, params)?);
        Ok(self.seqs.len() - 1)
    }

    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Whether every sequence has finished.
    pub fn is_done(&self) -> bool {
        self.seqs.iter().all(Generation::is_finished)
    }

    /// The sequence at `index` (its tokens so far).
    pub fn sequence(&self, index: usize) -> Option<&Generation<'a>> {
        self.seqs.get(index)
    }

    /// One round: sample every sequence that can, then run the model once for every sequence
    /// that needs it. Returns the events of the round, tagged with sequence indices.
    pub fn step(&mut self) -> Result<Vec<(usize, Event)>> {
        // Sequences sample independently (each its own sampler, RNG and logits), so a batch
        // samples on the pool; the first error in sequence order is the one reported.
        if self.seqs.len() > 1 && rayon::current_num_threads() > 1 {
            use rayon::prelude::*;
            let results: Vec<Result<()>> =
                self.seqs.par_iter_mut().map(|s| s.sample_step()).collect();
            results.into_iter().collect::<Result<()>>()?;
        } else {
            for s in &mut self.seqs {
                s.sample_step()?;
            }
        }
        let t0 = Instant::now();
        let mut who = Vec::new();
        let mut inputs = Vec::new();
        for (i, s) in self.seqs.iter_mut().enumerate() {
            if let Some(input) = s.model_input() {
                who.push(i);
                inputs.push(input);
            }
        }
        if inputs.is_empty() {
            self.logits.clear();
        } else {
            self.model.forward_into(
                &mut inputs,
                &mut self.scratch,
                Logits::Last,
                &mut self.logits,
            )?;
        }
        drop(inputs);
        let elapsed = t0.elapsed();
        let vocab = self.model.config().vocab_size;
        for (i, l) in who.into_iter().zip(self.logits.chunks_exact(vocab.max(1))) {
            self.seqs[i].accept_logits(l, elapsed);
        }
        let mut events = Vec::new();
        for (i, s) in self.seqs.iter_mut().enumerate() {
            events.extend(s.drain_events().map(|e| (i, e)));
        }
        Ok(events)
    }

    /// Runs every sequence to the end; returns each one's generated ids and finish reason.
    pub fn run(mut self) -> Result<Vec<(Vec<u32>, FinishReason)>> {
        let mut reasons = vec![FinishReason::Length; self.seqs.len()];
        while !self.is_done() {
            for (i, ev) in self.step()? {
                if let Event::Finished { reason, .. } = ev {
                    reasons[i] = reason;
                }
            }
        }
        Ok(self
            .seqs
            .iter()
            .zip(reasons)
            .map(|(s, r)| (s.generated().to_vec(), r))
            .collect())
    }
}
