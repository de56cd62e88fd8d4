//! Sampling and stopping flags, shared by every command that generates. Raw flag values are
//! validated into the library's typed parameters; nothing is clamped. Defaults live in the
//! library (`SamplerConfig::default`, `GenerateParams::default`), not here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use quill::generate::ContextPolicy;
use quill::sampling::{LogprobSource, Stage};
use quill::{GenerateParams, KvDtype, SamplerConfig};

#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Most tokens to generate.
    #[arg(long, short = 'n', allow_negative_numbers = true)]
    pub max_new_tokens: Option<usize>,
    /// End-of-sequence tokens are not allowed before this many tokens.
    #[arg(long, default_value_t = 0)]
    pub min_new_tokens: usize,
    /// Sampling temperature; 0 = greedy. [default: 0.8]
    #[arg(long, short = 't', allow_negative_numbers = true)]
    pub temperature: Option<f32>,
    /// Keep only the K most likely tokens (ties kept); 0 disables. [default: 200]
    #[arg(long, allow_negative_numbers = true)]
    pub top_k: Option<i64>,
    /// Nucleus sampling: keep the most likely tokens up to this total probability, in (0, 1].
    #[arg(long, allow_negative_numbers = true)]
    pub top_p: Option<f32>,
    /// Drop tokens less likely than MIN_P times the most likely one, in (0, 1].
    #[arg(long, allow_negative_numbers = true)]
    pub min_p: Option<f32>,
    /// Locally typical sampling mass, in (0, 1].
    #[arg(long, allow_negative_numbers = true)]
    pub typical_p: Option<f32>,
    /// CTRL repetition penalty (> 0; 1 = off), applied once per distinct recent token.
    #[arg(long, allow_negative_numbers = true)]
    pub repetition_penalty: Option<f32>,
    /// Look-back window of the repetition penalty in tokens. [default: whole sequence]
    #[arg(long, allow_negative_numbers = true)]
    pub repeat_last_n: Option<i64>,
    /// Subtracted from the logit of every token already generated.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per time it was generated.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub frequency_penalty: f32,
    /// Never repeat an n-gram of this size.
    #[arg(long, allow_negative_numbers = true)]
    pub no_repeat_ngram_size: Option<i64>,
    /// Add BIAS to token ID's logit (repeatable), e.g. `--logit-bias 50256=-100`.
    #[arg(long, value_name = "ID=BIAS", allow_hyphen_values = true)]
    pub logit_bias: Vec<String>,
    /// Never generate token ID (repeatable).
    #[arg(long, value_name = "ID")]
    pub ban: Vec<u32>,
    /// Comma-separated order of the sampler stages.
    /// [default: logit-bias,repetition,presence-frequency,no-repeat-ngram,temperature,top-k,top-p,min-p,typical-p]
    #[arg(long, value_name = "STAGES")]
    pub sampler_order: Option<String>,
    /// Random seed; when absent one is chosen and printed to stderr.
    #[arg(long, short = 's')]
    pub seed: Option<u64>,
    /// Stop when the text contains STRING (repeatable); the stop string is not printed.
    #[arg(long, value_name = "STRING", allow_hyphen_values = true)]
    pub stop: Vec<String>,
    /// Also stop at token ID (repeatable), besides the tokenizer's end-of-sequence tokens.
    #[arg(long, value_name = "ID")]
    pub eos_id: Vec<u32>,
    /// Do not stop at end-of-sequence tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub max_time: Option<f64>,
    /// What to do when the text outgrows the context window.
    #[arg(long, value_enum, default_value_t = Policy::Shift)]
    pub context_policy: Policy,
    /// Keep only the last context-length tokens of a prompt that is too long (instead of failing).
    #[arg(long)]
    pub truncate_prompt: bool,
    /// Report the log-probability of each token and of the N most likely alternatives, as JSON.
    #[arg(long, value_name = "N")]
    pub logprobs: Option<usize>,
    /// Which distribution --logprobs reports: the model's (raw logits) or the sampled one
    /// (after the sampler chain).
    #[arg(long, value_enum, default_value_t = LpSource::Model)]
    pub logprobs_source: LpSource,
    /// How the KV cache stores keys and values: f32 (exact) or f16 (half the cache memory and
    /// attention reads, rounded as llama.cpp's default cache is).
    #[arg(long, value_name = "TYPE", value_parser = crate::kv_cache_parser(), ignore_case = true, default_value = "f32")]
    pub kv_cache: KvDtype,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Policy {
    /// Re-encode the most recent half window when the context is full (fast).
    Shift,
    /// nanoGPT's exact semantics: re-run the last full window every step (slow).
    Crop,
    /// Stop generating when the context is full.
    Stop,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum LpSource {
    Model,
    Sampled,
}

fn positive(name: &str, v: Option<i64>) -> anyhow::Result<Option<usize>> {
    match v {
        None => Ok(None),
        Some(x) if x >= 1 => Ok(Some(x as usize)),
        Some(x) => bail!("invalid --{name} {x}: must be >= 1"),
    }
}

impl SamplingArgs {
    /// The seed to use and whether the user chose it.
    pub fn seed(&self) -> (u64, bool) {
        match self.seed {
            Some(s) => (s, true),
            None => (
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0),
                false,
            ),
        }
    }

    /// Validated sampler settings.
    pub fn sampler(&self, seed: u64) -> anyhow::Result<SamplerConfig> {
        let d = SamplerConfig::default();
        let top_k = match self.top_k {
            None => d.top_k,
            Some(0) => None,
            Some(k) if k > 0 => Some(k as usize),
            Some(k) => bail!("invalid --top-k {k}: must be >= 0 (0 disables)"),
        };
        let mut logit_bias = Vec::new();
        for item in &self.logit_bias {
            let (id, b) = item
                .split_once('=')
                .with_context(|| format!("invalid --logit-bias {item:?}: expected ID=BIAS"))?;
            let id: u32 = id
                .trim()
                .parse()
                .with_context(|| format!("invalid --logit-bias {item:?}: bad token id"))?;
            let b: f32 = b
                .trim()
                .parse()
                .with_context(|| format!("invalid --logit-bias {item:?}: bad bias"))?;
            logit_bias.push((id, b));
        }
        let order = match &self.sampler_order {
            None => d.order.clone(),
            Some(s) => s
                .split(',')
                .map(|x| Stage::parse(x.trim()))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let cfg = SamplerConfig {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            typical_p: self.typical_p,
            repetition_penalty: self.repetition_penalty,
            repeat_last_n: positive("repeat-last-n", self.repeat_last_n)?,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            no_repeat_ngram: positive("no-repeat-ngram-size", self.no_repeat_ngram_size)?,
            logit_bias,
            banned: self.ban.clone(),
            order,
            seed,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Validated generation parameters; `eos` are the tokenizer's end-of-sequence ids.
    pub fn params(&self, sampler: SamplerConfig, eos: Vec<u32>) -> anyhow::Result<GenerateParams> {
        let d = GenerateParams::default();
        let max_time = match self.max_time {
            None => None,
            Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
            Some(s) => bail!("invalid --max-time {s}: must be a positive number of seconds"),
        };
        let mut eos_ids = if self.ignore_eos { Vec::new() } else { eos };
        eos_ids.extend(&self.eos_id);
        Ok(GenerateParams {
            max_new_tokens: self.max_new_tokens.unwrap_or(d.max_new_tokens),
            min_new_tokens: self.min_new_tokens,
            sampler,
            eos_ids,
            stop: self.stop.clone(),
            max_time,
            logprobs: self.logprobs,
            logprob_source: match self.logprobs_source {
                LpSource::Model => LogprobSource::Model,
                LpSource::Sampled => LogprobSource::Sampled,
            },
            context: match self.context_policy {
                Policy::Shift => ContextPolicy::Shift,
                Policy::Crop => ContextPolicy::Crop,
                Policy::Stop => ContextPolicy::Stop,
            },
            truncate_prompt: self.truncate_prompt,
            kv_cache: self.kv_cache,
        })
    }
}
