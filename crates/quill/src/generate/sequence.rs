//! One sequence being generated: the per-sequence state and the step logic, separated from the
//! model call so that a [`super::Batch`] can run many sequences through one forward pass and a
//! lone [`Generation`] runs the very same code with a batch of one.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{ContextPolicy, Event, FinishReason, GenerateParams, Stats, StopMatcher};
use crate::error::{Error, Result};
use crate::model::{BatchInput, KvCache, Logits, Model, Scratch};
use crate::sampling::{History, Sampler};
use crate::tokenizer::{TextStream, Tokenizer};

/// What the model must run before the sequence can go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// The prompt (its last `context_length` tokens).
    Prefill,
    /// The newest token.
    Decode,
    /// The context is full: clear the cache and re-encode the last `keep` tokens.
    Shift(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Model(Need),
    Sample,
    Done,
}

/// One sequence being generated. Iterate it to drive generation alone, or add it to a
/// [`super::Batch`].
pub struct Generation<'a> {
    model: &'a Model,
    stream: Option<TextStream<'a>>,
    stops: StopMatcher,
    started: Instant,
    params: GenerateParams,
    sampler: Sampler,
    cache: KvCache,
    scratch: Scratch,
    /// Prompt and generated tokens so far.
    tokens: Vec<u32>,
    /// Index in `tokens` of the first position held by the cache.
    window_start: usize,
    prompt_len: usize,
    /// Ids the sampler may choose (the tokenizer's vocabulary, without embedding padding).
    allowed: usize,
    /// The last pass's logits when this sequence ran alone ([vocab]); in a batch they stay in
    /// the batch's buffer and this is empty.
    logits: Vec<f32>,
    status: Status,
    events: VecDeque<Event>,
    stats: Stats,
}

impl<'a> Generation<'a> {
    /// Prepares a generation from prompt ids. `tokenizer` is used for text and to bound the ids
    /// the sampler may produce; without it only ids are reported.
    pub fn new(
        model: &'a Model,
        tokenizer: Option<&'a Tokenizer>,
        prompt: Vec<u32>,
        params: GenerateParams,
    ) -> Result<Self> {
        let cfg = model.config();
        if prompt.is_empty() {
            return Err(Error::Request(
                "the prompt is empty: give at least one token of text".into(),
            ));
        }
        let ctx = cfg.context_length;
        if prompt.len() > ctx && !params.truncate_prompt {
            return Err(Error::Request(format!(
                "the prompt is {} tokens but the model's context holds {ctx}; shorten it or \
                 allow truncation to keep its last {ctx} tokens",
                prompt.len()
            )));
        }
        let sampler = Sampler::new(params.sampler.clone())?;
        if !params.stop.is_empty() && tokenizer.is_none() {
            return Err(Error::Request("stop strings need a tokenizer".into()));
        }
        if params.min_new_tokens > params.max_new_tokens {
            return Err(Error::config(
                "min_new_tokens",
                format!(
                    "{} is more than max_new_tokens {}",
                    params.min_new_tokens, params.max_new_tokens
                ),
            ));
        }
        let allowed = tokenizer.map_or(cfg.vocab_size, |t| t.vocab_size().min(cfg.vocab_size));
        let prompt_len = prompt.len();
        let status = if params.max_new_tokens == 0 {
            Status::Sample
        } else {
            Status::Model(Need::Prefill)
        };
        let mut cache = model.new_cache_with(ctx, params.kv_cache);
        cache.reserve(prompt_len.saturating_add(params.max_new_tokens));
        Ok(Generation {
            model,
            stream: tokenizer.map(Tokenizer::stream),
            stops: StopMatcher::new(params.stop.clone()),
            started: Instant::now(),
            sampler,
            cache,
            scratch: Scratch::default(),
            tokens: prompt,
            window_start: prompt_len.saturating_sub(ctx),
            prompt_len,
            allowed,
            logits: Vec::new(),
            status,
            events: VecDeque::new(),
            stats: Stats::default(),
            params,
        })
    }

    /// Every token so far, prompt included.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Tokens generated so far.
    pub fn generated(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }

    /// Whether the sequence has finished (its last events may still be queued).
    pub fn is_finished(&self) -> bool {
        self.status == Status::Done
    }

    /// Runs to the end and returns the generated ids and the finish reason.
    pub fn run(mut self) -> Result<(Vec<u32>, FinishReason)> {
        let mut reason = FinishReason::Length;
        for ev in self.by_ref() {
            if let Event::Finished { reason: r, .. } = ev? {
                reason = r;
            }
        }
        Ok((self.generated().to_vec(), reason))
    }

    /// The model input this sequence is waiting for, if any. For a context shift this clears
    /// the cache and moves the window, so call it once per forward pass.
    pub(super) fn model_input(&mut self) -> Option<BatchInput<'_>> {
        let Status::Model(need) = self.status else {
            return None;
        };
        let from = match need {
            Need::Prefill => self.window_start,
            Need::Decode => self.tokens.len() - 1,
            Need::Shift(keep) => {
                self.window_start = self.tokens.len() - keep;
                self.cache.clear();
                self.stats.context_shifts += 1;
                self.window_start
            }
        };
        Some(BatchInput {
            tokens: &self.tokens[from..],
            cache: &mut self.cache,
        })
    }

    /// Moves on once the pass that ran the model input has produced this sequence's logits (in
    /// `self.logits` when it ran alone, in a [`super::Batch`]'s buffer when batched).
    pub(super) fn logits_ready(&mut self, elapsed: Duration) {
        match self.status {
            Status::Model(Need::Prefill) => {
                let tokens = self.tokens.len() - self.window_start;
                self.stats.prompt_tokens = tokens;
                self.stats.prefill_time += elapsed;
                self.events.push_back(Event::Prompt {
                    tokens,
                    dropped: self.window_start,
                });
            }
            Status::Model(Need::Shift(keep)) => {
                self.stats.decode_time += elapsed;
                self.events.push_back(Event::ContextShift { kept: keep });
            }
            _ => self.stats.decode_time += elapsed,
        }
        self.status = Status::Sample;
    }

    /// Takes the events produced so far.
    pub(super) fn drain_events(&mut self) -> impl Iterator<Item = Event> + '_ {
        self.events.drain(..)
    }

    /// Samples the next token from this sequence's own logits (it ran alone).
    fn sample_step(&mut self) -> Result<()> {
        let mut logits = std::mem::take(&mut self.logits);
        let result = self.sample_from(&mut logits);
        self.logits = logits;
        result
    }

    /// Samples the next token from `logits` (this sequence's row of the last pass, edited in
    /// place) and decides what comes next. A no-op unless the sequence is waiting to sample.
    pub(super) fn sample_from(&mut self, logits: &mut [f32]) -> Result<()> {
        if self.status != Status::Sample {
            return Ok(());
        }
        if self.stats.generated_tokens >= self.params.max_new_tokens {
            self.finish(FinishReason::Length);
            return Ok(());
        }
        if self
            .params
            .max_time
            .is_some_and(|limit| self.started.elapsed() >= limit)
        {
            self.finish(FinishReason::Time);
            return Ok(());
        }
        let t0 = Instant::now();
        if self.stats.generated_tokens < self.params.min_new_tokens {
            for &e in &self.params.eos_ids {
                if let Some(l) = logits.get_mut(e as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        let history = History {
            prompt: &self.tokens[..self.prompt_len],
            generated: &self.tokens[self.prompt_len..],
        };
        let (id, logprobs) = match self.params.logprobs {
            None => (self.sampler.sample(logits, self.allowed, &history)?, None),
            Some(n) => {
                let (id, lp) = self.sampler.sample_with_logprobs(
                    logits,
                    self.allowed,
                    &history,
                    n,
                    self.params.logprob_source,
                )?;
                (id, Some(lp))
            }
        };
        self.sampler.accept(id);
        self.tokens.push(id);
        self.stats.generated_tokens += 1;
        let is_eos = self.params.eos_ids.contains(&id);
        let (text, hit) = if is_eos {
            (String::new(), None)
        } else {
            let piece = match self.stream.as_mut() {
                Some(s) => s.push(id)?,
                None => String::new(),
            };
            self.stops.push(&piece)
        };
        self.events.push_back(Event::Token { id, text, logprobs });
        self.stats.decode_time += t0.elapsed();
        if is_eos {
            self.finish(FinishReason::Eos);
        } else if let Some(i) = hit {
            self.finish(FinishReason::Stop(i));
        } else if self.stats.generated_tokens >= self.params.max_new_tokens {
            self.finish(FinishReason::Length);
        } else if self.cache.remaining() == 0 {
            let ctx = self.model.config().context_length;
            match self.params.context {
                ContextPolicy::Stop => self.finish(FinishReason::ContextFull),
                ContextPolicy::Shift => self.status = Status::Model(Need::Shift((ctx / 2).max(1))),
                ContextPolicy::Crop => self.status = Status::Model(Need::Shift(ctx)),
            }
        } else {
            self.status = Status::Model(Need::Decode);
        }
        Ok(())
    }

    fn finish(&mut self, mut reason: FinishReason) {
        self.status = Status::Done;
        let mut text = String::new();
        if !matches!(reason, FinishReason::Stop(_)) {
            let tail = self
                .stream
                .as_mut()
                .map(TextStream::finish)
                .unwrap_or_default();
            let (t, hit) = self.stops.push(&tail);
            text = t;
            match hit {
                Some(i) => reason = FinishReason::Stop(i),
                None => text.push_str(&self.stops.finish()),
            }
        }
        self.events.push_back(Event::Finished {
            reason,
            text,
            stats: self.stats.clone(),
        });
    }

    /// Runs this sequence's pending model input alone, into its own logits buffer.
    fn run_model(&mut self) -> Result<()> {
        let t0 = Instant::now();
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut logits = std::mem::take(&mut self.logits);
        let model = self.model;
        let result = match self.model_input() {
            Some(mut input) => model.forward_into(
                std::slice::from_mut(&mut input),
                &mut scratch,
                Logits::Last,
                &mut logits,
            ),
            None => {
                logits.clear();
                Ok(())
            }
        };
        self.scratch = scratch;
        self.logits = logits;
        result?;
        self.logits_ready(t0.elapsed());
        Ok(())
    }
}

impl Iterator for Generation<'_> {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(ev) = self.events.pop_front() {
                return Some(Ok(ev));
            }
            let step = match self.status {
                Status::Done => return None,
                Status::Sample => self.sample_step(),
                Status::Model(_) => self.run_model(),
            };
            if let Err(e) = step {
                self.status = Status::Done;
                return Some(Err(e));
            }
        }
    }
}
