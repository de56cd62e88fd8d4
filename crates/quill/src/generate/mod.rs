//! The generation loop: prefill the prompt in one pass, then one token per step through the KV
//! cache, sampling each token and streaming its text. A [`Generation`] is an iterator of
//! [`Event`]s; it borrows the shared model and tokenizer and owns everything per-sequence
//! (cache, scratch, sampler, detokenizer), so many can run side by side.
//!
//! # Past the context window
//! Models with learned absolute positions (GPT-2) cannot attend past `context_length`, and
//! positions cannot be shifted inside their cache. When the cache is full, quill applies the
//! request's [`ContextPolicy`]:
//! - [`ContextPolicy::Shift`] (default): drop the oldest tokens, keep the most recent
//!   `context_length / 2` (the new token included) and re-encode them in one prefill at
//!   positions `0..`; decoding then continues through the cache until it is full again. This is
//!   nanoGPT's crop semantics (attend to the most recent tokens with positions from 0) at the cost
//!   of one half-window prefill every half window, instead of a full forward every step.
//! - [`ContextPolicy::Crop`]: exactly nanoGPT's `generate`: once full, every step re-runs the
//!   last `context_length` tokens. Bit-compatible with `sample.py`, quadratic cost.
//! - [`ContextPolicy::Stop`]: finish with [`FinishReason::ContextFull`].
//!
//! The same policies apply to RoPE models.

mod beam;
mod stop;

pub use beam::{beam_search, BeamParams, Hypothesis};
pub use stop::StopMatcher;

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::model::{KvCache, Logits, Model, Scratch};
use crate::sampling::{History, LogprobSource, Sampler, SamplerConfig, TokenLogprobs};
use crate::tokenizer::{TextStream, Tokenizer};

/// What to do when the sequence outgrows the model's context window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContextPolicy {
    #[default]
    Shift,
    Crop,
    Stop,
}

/// Parameters of one generation request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    pub max_new_tokens: usize,
    /// End-of-sequence ids cannot be sampled before this many tokens were generated.
    pub min_new_tokens: usize,
    pub sampler: SamplerConfig,
    /// Generation ends when one of these ids is sampled (the id itself is not printed).
    pub eos_ids: Vec<u32>,
    /// Generation ends when the text contains one of these; the stop string and anything after
    /// it are not emitted (needs a tokenizer).
    pub stop: Vec<String>,
    /// Generation ends after this much wall-clock time (checked between tokens).
    pub max_time: Option<Duration>,
    /// Report log-probabilities of each chosen token and of this many alternatives.
    pub logprobs: Option<usize>,
    /// Which distribution the log-probabilities come from.
    pub logprob_source: LogprobSource,
    pub context: ContextPolicy,
    /// A prompt longer than the context is an error unless this is set, in which case only its
    /// last `context_length` tokens are kept (reported by [`Event::Prompt`]).
    pub truncate_prompt: bool,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_new_tokens: 256,
            min_new_tokens: 0,
            sampler: SamplerConfig::default(),
            eos_ids: Vec::new(),
            stop: Vec::new(),
            max_time: None,
            logprobs: None,
            logprob_source: LogprobSource::Model,
            context: ContextPolicy::Shift,
            truncate_prompt: false,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// `max_new_tokens` were generated.
    Length,
    /// An end-of-sequence token was sampled.
    Eos,
    /// A stop string appeared (its index in [`GenerateParams::stop`]).
    Stop(usize),
    /// `max_time` ran out.
    Time,
    /// The context filled up under [`ContextPolicy::Stop`].
    ContextFull,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Length => "length",
            FinishReason::Eos => "eos",
            FinishReason::Stop(_) => "stop",
            FinishReason::Time => "time",
            FinishReason::ContextFull => "context_full",
        }
    }
}

/// Counters and timings of one generation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_time: Duration,
    pub decode_time: Duration,
    /// Times the context window was re-encoded.
    pub context_shifts: usize,
}

/// Progress of a generation.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The prompt was processed. `dropped` tokens were cut from its start to fit the context.
    Prompt { tokens: usize, dropped: usize },
    /// A token was sampled; `text` is the newly complete text (may be empty while a multi-byte
    /// character is incomplete or text is held back as a possible stop string).
    Token {
        id: u32,
        text: String,
        logprobs: Option<TokenLogprobs>,
    },
    /// The context window was re-encoded; `kept` tokens remain in it.
    ContextShift { kept: usize },
    /// Generation ended. `text` is whatever the detokenizer still held.
    Finished {
        reason: FinishReason,
        text: String,
        stats: Stats,
    },
}

enum Phase {
    Start,
    Running,
    Done,
}

/// One sequence being generated. Iterate it to drive generation.
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
    logits: Vec<f32>,
    phase: Phase,
    pending_shift: Option<usize>,
    stop_reason: Option<FinishReason>,
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
        Ok(Generation {
            model,
            stream: tokenizer.map(Tokenizer::stream),
            stops: StopMatcher::new(params.stop.clone()),
            started: Instant::now(),
            sampler,
            cache: model.new_cache(ctx),
            scratch: Scratch::default(),
            tokens: prompt,
            window_start: prompt_len.saturating_sub(ctx),
            prompt_len,
            allowed,
            logits: Vec::new(),
            phase: Phase::Start,
            pending_shift: None,
            stop_reason: None,
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

    fn prefill(&mut self) -> Result<Event> {
        let t0 = Instant::now();
        let window = &self.tokens[self.window_start..];
        self.logits = self.model.forward(
            window,
            &mut self.cache,
            &mut self.scratch,
            Logits::Last,
            None,
        )?;
        self.stats.prompt_tokens = window.len();
        self.stats.prefill_time = t0.elapsed();
        Ok(Event::Prompt {
            tokens: window.len(),
            dropped: self.window_start,
        })
    }

    fn finish(&mut self, reason: FinishReason) -> Event {
        self.phase = Phase::Done;
        let text = self
            .stream
            .as_mut()
            .map(TextStream::finish)
            .unwrap_or_default();
        Event::Finished {
            reason,
            text,
            stats: self.stats.clone(),
        }
    }

    /// Feeds the newest token, re-encoding the window first if the cache is full.
    fn advance(&mut self) -> Result<Option<FinishReason>> {
        let ctx = self.model.config().context_length;
        let last = self.tokens.len() - 1;
        if self.cache.remaining() == 0 {
            let keep = match self.params.context {
                ContextPolicy::Stop => return Ok(Some(FinishReason::ContextFull)),
                ContextPolicy::Shift => (ctx / 2).max(1),
                ContextPolicy::Crop => ctx,
            };
            self.window_start = self.tokens.len() - keep;
            self.cache.clear();
            self.logits = self.model.forward(
                &self.tokens[self.window_start..],
                &mut self.cache,
                &mut self.scratch,
                Logits::Last,
                None,
            )?;
            self.stats.context_shifts += 1;
            self.pending_shift = Some(keep);
            return Ok(None);
        }
        self.logits = self.model.forward(
            &self.tokens[last..],
            &mut self.cache,
            &mut self.scratch,
            Logits::Last,
            None,
        )?;
        Ok(None)
    }

    fn step(&mut self) -> Result<Event> {
        if let Some(kept) = self.pending_shift.take() {
            return Ok(Event::ContextShift { kept });
        }
        if let Some(reason) = self.stop_reason.take() {
            return Ok(self.finish(reason));
        }
        if self.stats.generated_tokens >= self.params.max_new_tokens {
            return Ok(self.finish(FinishReason::Length));
        }
        if self
            .params
            .max_time
            .is_some_and(|limit| self.started.elapsed() >= limit)
        {
            return Ok(self.finish(FinishReason::Time));
        }
        let t0 = Instant::now();
        if self.stats.generated_tokens < self.params.min_new_tokens {
            for &e in &self.params.eos_ids {
                if let Some(l) = self.logits.get_mut(e as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        let history = History {
            prompt: &self.tokens[..self.prompt_len],
            generated: &self.tokens[self.prompt_len..],
        };
        let (id, logprobs) = match self.params.logprobs {
            None => (
                self.sampler.sample(&self.logits, self.allowed, &history)?,
                None,
            ),
            Some(n) => {
                let (id, lp) = self.sampler.sample_with_logprobs(
                    &self.logits,
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
        if self.params.eos_ids.contains(&id) {
            self.stats.decode_time += t0.elapsed();
            self.stop_reason = Some(FinishReason::Eos);
            return Ok(Event::Token {
                id,
                text: String::new(),
                logprobs,
            });
        }
        let piece = match self.stream.as_mut() {
            Some(s) => s.push(id)?,
            None => String::new(),
        };
        let (text, hit) = self.stops.push(&piece);
        if let Some(i) = hit {
            self.stop_reason = Some(FinishReason::Stop(i));
        } else if self.stats.generated_tokens < self.params.max_new_tokens {
            // Run the model only if another token will be sampled from its output; report this
            // token now and finish on the next call if the context is full.
            self.stop_reason = self.advance()?;
        }
        self.stats.decode_time += t0.elapsed();
        Ok(Event::Token { id, text, logprobs })
    }
}

impl Iterator for Generation<'_> {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Self::Item> {
        let ev = match self.phase {
            Phase::Done => return None,
            Phase::Start => {
                self.phase = Phase::Running;
                if self.params.max_new_tokens == 0 {
                    return Some(Ok(self.finish(FinishReason::Length)));
                }
                self.prefill()
            }
            Phase::Running => self.step(),
        };
        if ev.is_err() {
            self.phase = Phase::Done;
        }
        Some(ev)
    }
}
