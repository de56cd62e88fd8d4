//! The generation loop: prefill the prompt in one forward call, then one token per step through
//! the KV cache, sampling each token and streaming its text. A [`Generation`] is an iterator of
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

mod batch;
mod beam;
mod sequence;
mod stop;

pub use batch::Batch;
pub use beam::{beam_search, BeamParams, Hypothesis};
pub use sequence::Generation;
pub use stop::StopMatcher;

use std::time::Duration;

use crate::model::KvDtype;
use crate::sampling::{LogprobSource, SamplerConfig, TokenLogprobs};

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
    /// How this sequence's KV cache stores keys and values.
    pub kv_cache: KvDtype,
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
            kv_cache: KvDtype::F32,
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
