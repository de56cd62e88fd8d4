//! The processors of the sampler chain. Each one sees the candidate set and the token history,
//! changes logits or drops candidates, and may keep state (`accept` is told every token that is
//! chosen; `reset` forgets everything). Semantics follow Hugging Face transformers' logits
//! processors (checked against them on recorded logits) unless a doc comment says otherwise.

use std::collections::HashMap;

use super::candidates::Candidates;

/// The tokens of a sequence so far.
#[derive(Debug, Clone, Copy)]
pub struct History<'a> {
    pub prompt: &'a [u32],
    pub generated: &'a [u32],
}

impl History<'_> {
    /// The last `n` tokens of prompt + generated (all of them when `n` is `None`).
    fn tail(&self, n: Option<usize>) -> impl Iterator<Item = u32> + '_ {
        let total = self.prompt.len() + self.generated.len();
        let skip = n.map_or(0, |n| total.saturating_sub(n));
        self.prompt.iter().chain(self.generated).skip(skip).copied()
    }
}

/// A stage of the sampler chain.
pub trait Processor: std::fmt::Debug + Send {
    /// The name used in `--sampler-order`.
    fn name(&self) -> &'static str;
    /// Adjusts the candidates for the next token.
    fn apply(&mut self, c: &mut Candidates, history: &History<'_>);
    /// Told the token that was chosen.
    fn accept(&mut self, _token: u32) {}
    /// Forgets all state (a new sequence).
    fn reset(&mut self) {}
}

/// CTRL-style repetition penalty (Keskar et al. 2019; HF `RepetitionPenaltyLogitsProcessor`):
/// every distinct token among the last `window` tokens (prompt included; all when `None`) has
/// its logit divided by `penalty` if positive, multiplied if negative. Each token once.
#[derive(Debug, Clone)]
pub struct RepetitionPenalty {
    pub penalty: f32,
    pub window: Option<usize>,
    seen: Vec<u32>,
}

impl RepetitionPenalty {
    pub fn new(penalty: f32, window: Option<usize>) -> Self {
        RepetitionPenalty {
            penalty,
            window,
            seen: Vec::new(),
        }
    }
}

impl Processor for RepetitionPenalty {
    fn name(&self) -> &'static str {
        "repetition"
    }
    fn apply(&mut self, c: &mut Candidates, h: &History<'_>) {
        self.seen.clear();
        self.seen.extend(h.tail(self.window));
        self.seen.sort_unstable();
        self.seen.dedup();
        for &t in &self.seen {
            if let Some(l) = c.logit_mut(t) {
                *l = if *l < 0.0 {
                    *l * self.penalty
                } else {
                    *l / self.penalty
                };
            }
        }
    }
}

/// OpenAI-style presence and frequency penalties over the generated tokens:
/// `logit[t] -= frequency · count(t) + presence · [count(t) > 0]`.
#[derive(Debug, Clone)]
pub struct PresenceFrequency {
    pub presence: f32,
    pub frequency: f32,
    counts: HashMap<u32, u32>,
}

impl PresenceFrequency {
    pub fn new(presence: f32, frequency: f32) -> Self {
        PresenceFrequency {
            presence,
            frequency,
            counts: HashMap::new(),
        }
    }
}

impl Processor for PresenceFrequency {
    fn name(&self) -> &'static str {
        "presence-frequency"
    }
    fn apply(&mut self, c: &mut Candidates, _h: &History<'_>) {
        for (&t, &n) in &self.counts {
            if let Some(l) = c.logit_mut(t) {
                *l -= self.frequency * n as f32 + self.presence;
            }
        }
    }
    fn accept(&mut self, token: u32) {
        *self.counts.entry(token).or_insert(0) += 1;
    }
    fn reset(&mut self) {
        self.counts.clear();
    }
}

/// Bans every token that would complete an n-gram already present in the sequence (prompt
/// included), as HF `NoRepeatNGramLogitsProcessor`.
#[derive(Debug, Clone)]
pub struct NoRepeatNgram {
    pub n: usize,
    seq: Vec<u32>,
}

impl NoRepeatNgram {
    pub fn new(n: usize) -> Self {
        NoRepeatNgram { n, seq: Vec::new() }
    }
}

impl Processor for NoRepeatNgram {
    fn name(&self) -> &'static str {
        "no-repeat-ngram"
    }
    fn apply(&mut self, c: &mut Candidates, h: &History<'_>) {
        let n = self.n;
        self.seq.clear();
        self.seq.extend(h.tail(None));
        let seq = &self.seq;
        if n == 0 || seq.len() + 1 < n {
            return;
        }
        let prefix = &seq[seq.len() + 1 - n..];
        for w in seq.windows(n) {
            if &w[..n - 1] == prefix {
                if let Some(l) = c.logit_mut(w[n - 1]) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
    }
}

/// Adds a bias to chosen tokens' logits (OpenAI `logit_bias`); banned tokens are masked.
#[derive(Debug, Clone)]
pub struct LogitBias {
    pub bias: Vec<(u32, f32)>,
    pub banned: Vec<u32>,
}

impl Processor for LogitBias {
    fn name(&self) -> &'static str {
        "logit-bias"
    }
    fn apply(&mut self, c: &mut Candidates, _h: &History<'_>) {
        for &(t, b) in &self.bias {
            if let Some(l) = c.logit_mut(t) {
                *l += b;
            }
        }
        for &t in &self.banned {
            if let Some(l) = c.logit_mut(t) {
                *l = f32::NEG_INFINITY;
            }
        }
    }
}

/// Divides logits by the temperature (> 0; temperature 0 is handled as greedy selection).
#[derive(Debug, Clone)]
pub struct Temperature(pub f32);

impl Processor for Temperature {
    fn name(&self) -> &'static str {
        "temperature"
    }
    fn apply(&mut self, c: &mut Candidates, _h: &History<'_>) {
        let t = self.0;
        c.map_logits(|l| l / t);
    }
}

/// Keeps the `k` highest logits and every token tied with the k-th (nanoGPT and HF both keep
/// ties: they drop only logits strictly below the k-th value).
#[derive(Debug, Clone)]
pub struct TopK(pub usize);

impl Processor for TopK {
    fn name(&self) -> &'static str {
        "top-k"
    }
    fn apply(&mut self, c: &mut Candidates, _h: &History<'_>) {
        c.keep_top(self.0);
    }
}

/// Nucleus sampling: keeps the most likely tokens until their probability reaches `p`; the
/// token that crosses the boundary is kept. At least one token always stays.
#[derive(Debug, Clone)]
pub struct TopP {
    pub p: f32,
    probs: Vec<f64>,
}

impl TopP {
    pub fn new(p: f32) -> Self {
        TopP {
            p,
            probs: Vec::new(),
        }
    }
}

impl Processor for TopP {
    fn name(&self) -> &'static str {
        "top-p"
    }
    fn apply(&mut self, c: &mut Candidates, _h: &History<'_>) {
        if self.p >= 1.0 {
            return;
        }
        c.sort();
        c.probs(&mut self.probs);
        let mut cum = 0.0f64;
        let mut keep = c.len();
        for (i, p) in self.probs.iter().enumerate() {
            cum += p;
            // HF drops sorted tokens whose cumulative probability from the bottom is
            // <= 1 - p; equivalently keeps from the top until the cumulative sum reaches p.
            if cum >= self.p as f64 {
                keep = i + 1;
                break;
            }
        }
        c.truncate_sorted(keep.max(1));
    }
}

/// Min-p: drops tokens whose probability is below `p` times the top token's probability.
#[derive(Debug, Clone)]
pub struct MinP {
    pub p: f32,
    probs: Vec<f64>,
}

impl MinP {
    pub fn new(p: f32) -> Self {
        MinP {
            p,
            probs: Vec::new(),
        }
    }
}

impl Processor for MinP {
    fn name(&self) -> &'static str {
        "min-p"
    }
    fn apply(&mut self, c: &mut Candidates, _h: &History<'_>) {
        c.sort();
        c.probs(&mut self.probs);
        let Some(&top) = self.probs.first() else {
            return;
        };
        let min = self.p as f64 * top;
        let probs = &self.probs;
        c.retain_sorted(|i, _| i == 0 || probs[i] >= min);
    }
}

/// Locally typical sampling (Meister et al. 2022; HF `TypicalLogitsWarper`): rank tokens by how
/// far their surprisal is from the distribution's entropy and keep the closest ones until their
/// probability reaches `mass`.
#[derive(Debug, Clone)]
pub struct TypicalP {
    pub mass: f32,
    probs: Vec<f64>,
    /// (distance from the entropy, index in the sorted order)
    order: Vec<(f64, usize)>,
    keep: Vec<bool>,
}

impl TypicalP {
    pub fn new(mass: f32) -> Self {
        TypicalP {
            mass,
            probs: Vec::new(),
            order: Vec::new(),
            keep: Vec::new(),
        }
    }
}

impl Processor for TypicalP {
    fn name(&self) -> &'static str {
        "typical-p"
    }
    fn apply(&mut self, c: &mut Candidates, _h: &History<'_>) {
        if self.mass >= 1.0 || c.len() <= 1 {
            return;
        }
        c.sort();
        c.probs(&mut self.probs);
        let entropy: f64 = self
            .probs
            .iter()
            .filter(|&&p| p > 0.0)
            .map(|&p| -p * p.ln())
            .sum();
        let order = &mut self.order;
        order.clear();
        order.extend(self.probs.iter().enumerate().map(|(i, &p)| {
            let surprisal = if p > 0.0 { -p.ln() } else { f64::INFINITY };
            ((surprisal - entropy).abs(), i)
        }));
        order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        // HF: last_ind = number of tokens whose cumulative probability is < mass (clamped);
        // keep every token whose distance is <= the distance at last_ind.
        let mut cum = 0.0f64;
        let mut last = 0usize;
        for &(_, i) in order.iter() {
            cum += self.probs[i];
            if cum < self.mass as f64 {
                last += 1;
            } else {
                break;
            }
        }
        let last = last.min(order.len() - 1);
        let cutoff = order[last].0;
        let keep = &mut self.keep;
        keep.clear();
        keep.resize(order.len(), false);
        for &(d, i) in order.iter() {
            keep[i] = d <= cutoff;
        }
        keep[order[0].1] = true;
        c.retain_sorted(|i, _| keep[i]);
    }
}
