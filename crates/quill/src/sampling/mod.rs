//! Turning logits into the next token: a chain of small processors over the candidate set,
//! ended by one selector.
//!
//! Default order ([`Stage::DEFAULT_ORDER`]):
//! `logit-bias → repetition → presence-frequency → no-repeat-ngram → temperature → top-k → top-p
//! → min-p → typical-p`, then the selector. Stages whose setting is off are skipped; the order
//! can be changed ([`SamplerConfig::order`], `--sampler-order`).
//!
//! `temperature == 0` selects greedily: the penalties and bias still apply, the distribution
//! shapers (temperature, top-k, top-p, min-p, typical-p) are skipped because they cannot change
//! the argmax (typical-p could, and Hugging Face skips all of them without sampling too), and
//! the highest logit wins, the lowest id on ties (as `torch.argmax`).
//!
//! Randomness: ChaCha20 (`rand_chacha`) seeded per sequence from the request's seed; one `f64`
//! in [0, 1) (`rand`'s 53-bit conversion) per sampled token, compared against the cumulative
//! probabilities of the surviving candidates in sorted order (logit descending, id ascending)
//! or, when nothing sorted them, id order. Both algorithms are specified bit for bit, so a seed
//! gives the same tokens on every machine, thread count and batch placement.
//!
//! If the chain masks every token (e.g. every token banned), sampling fails with a clear error
//! rather than picking an arbitrary token.

mod candidates;
pub mod processors;

pub use candidates::{Candidate, Candidates};
pub use processors::{History, Processor};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::error::{Error, Result};
use processors::*;

/// A named stage of the chain (for ordering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    LogitBias,
    Repetition,
    PresenceFrequency,
    NoRepeatNgram,
    Temperature,
    TopK,
    TopP,
    MinP,
    TypicalP,
}

impl Stage {
    pub const DEFAULT_ORDER: [Stage; 9] = [
        Stage::LogitBias,
        Stage::Repetition,
        Stage::PresenceFrequency,
        Stage::NoRepeatNgram,
        Stage::Temperature,
        Stage::TopK,
        Stage::TopP,
        Stage::MinP,
        Stage::TypicalP,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::LogitBias => "logit-bias",
            Stage::Repetition => "repetition",
            Stage::PresenceFrequency => "presence-frequency",
            Stage::NoRepeatNgram => "no-repeat-ngram",
            Stage::Temperature => "temperature",
            Stage::TopK => "top-k",
            Stage::TopP => "top-p",
            Stage::MinP => "min-p",
            Stage::TypicalP => "typical-p",
        }
    }

    /// Parses a stage name as [`Stage::name`] writes it.
    pub fn parse(s: &str) -> Result<Stage> {
        Stage::DEFAULT_ORDER
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Stage::DEFAULT_ORDER.iter().map(|s| s.name()).collect();
                Error::config(
                    "sampler order",
                    format!("unknown stage `{s}` (known: {})", names.join(", ")),
                )
            })
    }

    /// Whether the stage reshapes the distribution (skipped under greedy selection).
    fn is_shaper(self) -> bool {
        matches!(
            self,
            Stage::Temperature | Stage::TopK | Stage::TopP | Stage::MinP | Stage::TypicalP
        )
    }
}

/// Sampling settings of one request. `Default` holds quill's defaults, in this one place.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// 0 = greedy; otherwise logits are divided by it.
    pub temperature: f32,
    /// Keep only the k most likely tokens (ties with the k-th kept).
    pub top_k: Option<usize>,
    /// Keep the most likely tokens until their probability reaches p.
    pub top_p: Option<f32>,
    /// Drop tokens less likely than `min_p` × the most likely one.
    pub min_p: Option<f32>,
    /// Locally typical sampling mass.
    pub typical_p: Option<f32>,
    /// CTRL repetition penalty (> 0; 1 = off).
    pub repetition_penalty: Option<f32>,
    /// Look-back window of the repetition penalty in tokens (None = the whole sequence).
    pub repeat_last_n: Option<usize>,
    /// OpenAI presence penalty (subtracted once per generated token kind).
    pub presence_penalty: f32,
    /// OpenAI frequency penalty (subtracted per occurrence in the generated text).
    pub frequency_penalty: f32,
    /// Ban tokens that would repeat an n-gram of this size.
    pub no_repeat_ngram: Option<usize>,
    /// Added to the logits of these tokens.
    pub logit_bias: Vec<(u32, f32)>,
    /// Never chosen.
    pub banned: Vec<u32>,
    /// Stage order.
    pub order: Vec<Stage>,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: Some(200),
            top_p: None,
            min_p: None,
            typical_p: None,
            repetition_penalty: None,
            repeat_last_n: None,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            no_repeat_ngram: None,
            logit_bias: Vec::new(),
            banned: Vec::new(),
            order: Stage::DEFAULT_ORDER.to_vec(),
            seed: 1337,
        }
    }
}

impl SamplerConfig {
    /// Greedy decoding with nothing else on.
    pub fn greedy() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: None,
            ..SamplerConfig::default()
        }
    }

    /// Rejects values that have no meaning (never clamps).
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, detail: String| Err(Error::config(field, detail));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(
                "temperature",
                format!(
                    "{} (must be a finite number >= 0; 0 means greedy)",
                    self.temperature
                ),
            );
        }
        if self.top_k == Some(0) {
            return bad("top_k", "0 (must be >= 1, or unset to disable)".into());
        }
        for (field, v) in [
            ("top_p", self.top_p),
            ("min_p", self.min_p),
            ("typical_p", self.typical_p),
        ] {
            if let Some(p) = v {
                if !(p > 0.0 && p <= 1.0) {
                    return bad(field, format!("{p} (must be in (0, 1])"));
                }
            }
        }
        if let Some(r) = self.repetition_penalty {
            if !(r.is_finite() && r > 0.0) {
                return bad("repetition_penalty", format!("{r} (must be > 0; 1 is off)"));
            }
        }
        if self.repeat_last_n == Some(0) {
            return bad(
                "repeat_last_n",
                "0 (must be >= 1, or unset for the whole sequence)".into(),
            );
        }
        for (field, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !v.is_finite() {
                return bad(field, format!("{v} (must be finite)"));
            }
        }
        if self.no_repeat_ngram == Some(0) {
            return bad("no_repeat_ngram", "0 (must be >= 1, or unset)".into());
        }
        if let Some((t, b)) = self.logit_bias.iter().find(|(_, b)| !b.is_finite()) {
            return bad("logit_bias", format!("{b} for token {t} (must be finite)"));
        }
        let mut seen = Vec::new();
        for s in &self.order {
            if seen.contains(s) {
                return bad("sampler order", format!("`{}` appears twice", s.name()));
            }
            seen.push(*s);
        }
        Ok(())
    }

    /// The processors this configuration turns on, in order.
    fn chain(&self) -> Vec<(Stage, Box<dyn Processor>)> {
        let mut out: Vec<(Stage, Box<dyn Processor>)> = Vec::new();
        for &st in &self.order {
            let p: Option<Box<dyn Processor>> = match st {
                Stage::LogitBias if !self.logit_bias.is_empty() || !self.banned.is_empty() => {
                    Some(Box::new(LogitBias {
                        bias: self.logit_bias.clone(),
                        banned: self.banned.clone(),
                    }))
                }
                Stage::Repetition => self
                    .repetition_penalty
                    .filter(|&r| r != 1.0)
                    .map(|r| Box::new(RepetitionPenalty::new(r, self.repeat_last_n)) as _),
                Stage::PresenceFrequency
                    if self.presence_penalty != 0.0 || self.frequency_penalty != 0.0 =>
                {
                    Some(Box::new(PresenceFrequency::new(
                        self.presence_penalty,
                        self.frequency_penalty,
                    )))
                }
                Stage::NoRepeatNgram => self
                    .no_repeat_ngram
                    .map(|n| Box::new(NoRepeatNgram::new(n)) as _),
                Stage::Temperature if self.temperature != 1.0 && self.temperature > 0.0 => {
                    Some(Box::new(Temperature(self.temperature)))
                }
                Stage::TopK => self.top_k.map(|k| Box::new(TopK(k)) as _),
                Stage::TopP => self.top_p.map(|p| Box::new(TopP::new(p)) as _),
                Stage::MinP => self.min_p.map(|p| Box::new(MinP::new(p)) as _),
                Stage::TypicalP => self.typical_p.map(|p| Box::new(TypicalP::new(p)) as _),
                _ => None,
            };
            if let Some(p) = p {
                out.push((st, p));
            }
        }
        out
    }
}

/// Which distribution log-probabilities are reported from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogprobSource {
    /// The model's own distribution: log-softmax of the raw logits (OpenAI's convention).
    #[default]
    Model,
    /// The distribution actually sampled from, after the whole chain.
    Sampled,
}

/// Log-probabilities of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub token: u32,
    pub logprob: f32,
    /// The most likely tokens, most likely first (ties by id).
    pub top: Vec<(u32, f32)>,
}

/// Per-sequence sampler: the chain with its state and the random stream.
#[derive(Debug)]
pub struct Sampler {
    config: SamplerConfig,
    chain: Vec<(Stage, Box<dyn Processor>)>,
    rng: ChaCha20Rng,
    cand: Candidates,
    /// The unprocessed logits as candidates, for model log-probabilities.
    raw: Candidates,
    probs: Vec<f64>,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Result<Self> {
        config.validate()?;
        Ok(Sampler {
            chain: config.chain(),
            rng: ChaCha20Rng::seed_from_u64(config.seed),
            config,
            cand: Candidates::default(),
            raw: Candidates::default(),
            probs: Vec::new(),
        })
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Names of the active stages, in order.
    pub fn stages(&self) -> Vec<&'static str> {
        self.chain.iter().map(|(_, p)| p.name()).collect()
    }

    /// Chooses the next token from `logits` [vocab]; ids at or above `allowed` (embedding
    /// padding) are never chosen. Call [`Sampler::accept`] with the token that is kept.
    pub fn sample(&mut self, logits: &[f32], allowed: usize, history: &History<'_>) -> Result<u32> {
        if self.config.temperature == 0.0 && self.chain.iter().all(|(s, _)| s.is_shaper()) {
            // Greedy with no stage that edits logits: the arg-max straight from the logits, with
            // no candidate list (a 50,257-entry copy per step, 0.4 MB held per sequence).
            return argmax(&logits[..allowed.min(logits.len())]);
        }
        self.run_chain(logits, allowed, history)?;
        self.select()
    }

    /// Like [`Sampler::sample`], also returning log-probabilities of the chosen token and the
    /// `n_top` most likely ones from `source`.
    pub fn sample_with_logprobs(
        &mut self,
        logits: &[f32],
        allowed: usize,
        history: &History<'_>,
        n_top: usize,
        source: LogprobSource,
    ) -> Result<(u32, TokenLogprobs)> {
        self.run_chain(logits, allowed, history)?;
        let token = self.select()?;
        let lp = match source {
            LogprobSource::Model => {
                self.raw.reset_from(&logits[..allowed.min(logits.len())]);
                logprobs_of(&mut self.raw, token, n_top)
            }
            LogprobSource::Sampled => {
                let mut c = std::mem::take(&mut self.cand);
                if self.config.temperature == 0.0 {
                    // Greedy picks with certainty; report the processed logits' softmax.
                    c.drop_masked();
                }
                let lp = logprobs_of(&mut c, token, n_top);
                self.cand = c;
                lp
            }
        };
        Ok((token, lp))
    }

    /// Runs the chain without selecting: the candidates as the selector would see them.
    pub fn process(
        &mut self,
        logits: &[f32],
        allowed: usize,
        history: &History<'_>,
    ) -> Result<&Candidates> {
        self.run_chain(logits, allowed, history)?;
        Ok(&self.cand)
    }

    /// Records the chosen token in every stateful stage.
    pub fn accept(&mut self, token: u32) {
        for (_, p) in &mut self.chain {
            p.accept(token);
        }
    }

    /// Forgets all per-sequence state and restarts the random stream from the seed.
    pub fn reset(&mut self) {
        for (_, p) in &mut self.chain {
            p.reset();
        }
        self.rng = ChaCha20Rng::seed_from_u64(self.config.seed);
    }

    fn run_chain(&mut self, logits: &[f32], allowed: usize, history: &History<'_>) -> Result<()> {
        let logits = &logits[..allowed.min(logits.len())];
        if logits.is_empty() {
            return Err(Error::Request("no tokens to sample from".into()));
        }
        self.cand.reset_from(logits);
        let greedy = self.config.temperature == 0.0;
        for (stage, p) in &mut self.chain {
            if greedy && stage.is_shaper() {
                continue;
            }
            p.apply(&mut self.cand, history);
        }
        if self.cand.all_masked() {
            return Err(Error::Request(ALL_MASKED.into()));
        }
        Ok(())
    }

    fn select(&mut self) -> Result<u32> {
        if self.config.temperature == 0.0 {
            return self
                .cand
                .best()
                .map(|c| c.id)
                .ok_or_else(|| Error::Request("no candidates left".into()));
        }
        self.cand.probs(&mut self.probs);
        let u: f64 = self.rng.gen::<f64>();
        let mut cum = 0.0f64;
        let items = self.cand.items();
        let mut last = None;
        for (c, &p) in items.iter().zip(&self.probs) {
            if p > 0.0 {
                cum += p;
                last = Some(c.id);
                if u < cum {
                    return Ok(c.id);
                }
            }
        }
        // u fell in the rounding gap at the top of the cumulative sum.
        last.ok_or_else(|| Error::Request("no candidates left".into()))
    }
}

/// The highest logit's id, the lowest id on ties, NaN counting as masked: what running an empty
/// chain and selecting greedily gives, with the same errors.
fn argmax(logits: &[f32]) -> Result<u32> {
    if logits.is_empty() {
        return Err(Error::Request("no tokens to sample from".into()));
    }
    let mut best: Option<(usize, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        // NaN and -inf never beat anything (a NaN compares false).
        if l > best.map_or(f32::NEG_INFINITY, |b| b.1) {
            best = Some((i, l));
        }
    }
    best.map(|(i, _)| i as u32)
        .ok_or_else(|| Error::Request(ALL_MASKED.into()))
}

const ALL_MASKED: &str = "the sampler chain masked every token (banned tokens, biases or n-gram \
                          bans leave nothing to choose)";

/// Log-probabilities over the candidates `c` (log-softmax of their logits, in f64).
fn logprobs_of(c: &mut Candidates, token: u32, n_top: usize) -> TokenLogprobs {
    c.sort();
    let max = c.items().first().map_or(f32::NEG_INFINITY, |x| x.logit) as f64;
    let lse = if max == f64::NEG_INFINITY {
        f64::INFINITY
    } else {
        max + c
            .items()
            .iter()
            .map(|x| (x.logit as f64 - max).exp())
            .sum::<f64>()
            .ln()
    };
    let lp = |l: f32| (l as f64 - lse) as f32;
    let logprob = c
        .items()
        .iter()
        .find(|x| x.id == token)
        .map_or(f32::NEG_INFINITY, |x| lp(x.logit));
    let top = c
        .items()
        .iter()
        .take(n_top)
        .map(|x| (x.id, lp(x.logit)))
        .collect();
    TokenLogprobs {
        token,
        logprob,
        top,
    }
}

#[cfg(test)]
mod tests;
