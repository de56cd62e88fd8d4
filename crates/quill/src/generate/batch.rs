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
    /// The last pass's logits, [sequences that ran, vocab]. Each sequence samples from its row
    /// in place (no per-sequence copy: 8 GPT-2 rows are 1.6 MB).
    logits: Vec<f32>,
    /// The sequence index of each row of `logits`, ascending.
    rows: Vec<usize>,
}

impl<'a> Batch<'a> {
    pub fn new(model: &'a Model, tokenizer: Option<&'a Tokenizer>) -> Self {
        Batch {
            model,
            tokenizer,
            seqs: Vec::new(),
            scratch: Scratch::default(),
            logits: Vec::new(),
            rows: Vec::new(),
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
        let vocab = self.model.config().vocab_size.max(1);
        // Each sequence with a row in the last pass samples from it; the others (new, or
        // finished) have nothing to sample and get an empty slice.
        let mut rows = self
            .rows
            .iter()
            .copied()
            .zip(self.logits.chunks_exact_mut(vocab))
            .peekable();
        let mut work: Vec<(&mut Generation<'a>, &mut [f32])> = Vec::with_capacity(self.seqs.len());
        for (i, s) in self.seqs.iter_mut().enumerate() {
            let row = match rows.next_if(|(r, _)| *r == i) {
                Some((_, row)) => row,
                None => &mut [],
            };
            work.push((s, row));
        }
        // Sequences sample independently (each its own sampler, RNG and row), so a batch
        // samples on the pool (a kernels team region: its helpers are the ones awake after the
        // forward pass); the first error in sequence order is the one reported.
        if work.len() > 1 && rayon::current_num_threads() > 1 {
            let mut results: Vec<Result<()>> = work.iter().map(|_| Ok(())).collect();
            let n = work.len();
            crate::kernels::team::run_chunks(&mut work, 1, &mut results, 1, n, |_, w, r| {
                let (s, row) = &mut w[0];
                r[0] = s.sample_from(row);
            });
            results.into_iter().collect::<Result<()>>()?;
        } else {
            for (s, row) in &mut work {
                s.sample_from(row)?;
            }
        }
        drop(work);
        let t0 = Instant::now();
        self.rows.clear();
        let mut inputs = Vec::new();
        for (i, s) in self.seqs.iter_mut().enumerate() {
            if let Some(input) = s.model_input() {
                self.rows.push(i);
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
        for &i in &self.rows {
            self.seqs[i].logits_ready(elapsed);
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
