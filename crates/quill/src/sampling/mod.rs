//! Turning logits into the next token: temperature, top-k, top-p and a seeded draw, or greedy.
//!
//! Order: mask ids the tokenizer cannot produce → temperature → top-k → top-p → draw.
//! `temperature == 0` means greedy (argmax, lowest id on ties, as `torch.argmax`).
//!
//! Randomness: ChaCha20 (`rand_chacha`), seeded per request, one `f64` in [0, 1) per drawn token
//! (`rand`'s 53-bit conversion). Both are specified bit-for-bit and portable, so a seed gives the
//! same tokens on every machine and thread count.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::error::{Error, Result};

/// Sampling settings of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// 0 = greedy; otherwise logits are divided by it.
    pub temperature: f32,
    /// Keep only the k most likely tokens (ties with the k-th kept, as nanoGPT does).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches p.
    pub top_p: Option<f32>,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: Some(200),
            top_p: None,
            seed: 1337,
        }
    }
}

impl SamplerConfig {
    /// Rejects values that have no meaning (never clamps).
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::config(
                "temperature",
                format!(
                    "{} (must be a finite number >= 0; 0 means greedy)",
                    self.temperature
                ),
            ));
        }
        if self.top_k == Some(0) {
            return Err(Error::config(
                "top_k",
                "0 (must be >= 1, or unset to disable)",
            ));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::config("top_p", format!("{p} (must be in (0, 1])")));
            }
        }
        Ok(())
    }
}

/// Per-sequence sampler state: the settings and the random stream.
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplerConfig,
    rng: ChaCha20Rng,
    probs: Vec<(f32, u32)>,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Result<Self> {
        config.validate()?;
        let rng = ChaCha20Rng::seed_from_u64(config.seed);
        Ok(Sampler {
            config,
            rng,
            probs: Vec::new(),
        })
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Picks the next token from `logits` [vocab]; ids at or above `allowed` (padding rows of
    /// the embedding) are never chosen.
    pub fn sample(&mut self, logits: &[f32], allowed: usize) -> Result<u32> {
        let logits = &logits[..allowed.min(logits.len())];
        if logits.is_empty() {
            return Err(Error::Request("no tokens to sample from".into()));
        }
        if self.config.temperature == 0.0 {
            return Ok(argmax(logits));
        }
        let inv_t = 1.0 / self.config.temperature;
        let probs = &mut self.probs;
        probs.clear();
        probs.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| !l.is_nan())
                .map(|(i, &l)| (l * inv_t, i as u32)),
        );
        if probs.is_empty() {
            return Err(Error::Request("every logit is NaN".into()));
        }
        // Sort by logit, descending; equal logits keep id order (stable sort).
        probs.sort_by(|a, b| b.0.total_cmp(&a.0));
        if let Some(k) = self.config.top_k {
            if k < probs.len() {
                let kth = probs[k - 1].0;
                let keep = probs.iter().take_while(|p| p.0 >= kth).count();
                probs.truncate(keep);
            }
        }
        // Softmax over the survivors (in f64 for a stable cumulative sum).
        let max = probs[0].0;
        let mut total = 0.0f64;
        for p in probs.iter_mut() {
            p.0 = (p.0 - max).exp();
            total += p.0 as f64;
        }
        if let Some(top_p) = self.config.top_p {
            let mut cum = 0.0f64;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                cum += p.0 as f64 / total;
                if cum >= top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            total = probs.iter().map(|p| p.0 as f64).sum();
        }
        let u: f64 = self.rng.gen::<f64>() * total;
        let mut cum = 0.0f64;
        for p in probs.iter() {
            cum += p.0 as f64;
            if u < cum {
                return Ok(p.1);
            }
        }
        Ok(probs[probs.len() - 1].1)
    }
}

/// Index of the largest value; the lowest index wins ties; NaN never wins.
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in x.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(temperature: f32, top_k: Option<usize>, top_p: Option<f32>) -> SamplerConfig {
        SamplerConfig {
            temperature,
            top_k,
            top_p,
            seed: 7,
        }
    }

    #[test]
    fn temperature_zero_is_greedy_with_lowest_id_on_ties() {
        let mut s = Sampler::new(cfg(0.0, None, None)).unwrap();
        assert_eq!(s.sample(&[1.0, 3.0, 3.0, -1.0], 4).unwrap(), 1);
    }

    #[test]
    fn padded_ids_are_never_sampled() {
        let mut s = Sampler::new(cfg(0.0, None, None)).unwrap();
        assert_eq!(s.sample(&[1.0, 2.0, 9.0], 2).unwrap(), 1);
        let mut s = Sampler::new(cfg(1.0, None, None)).unwrap();
        for _ in 0..200 {
            assert!(s.sample(&[0.0, 0.0, 50.0], 2).unwrap() < 2);
        }
    }

    #[test]
    fn top_k_one_is_greedy_and_keeps_ties() {
        let mut s = Sampler::new(cfg(1.0, Some(1), None)).unwrap();
        for _ in 0..50 {
            assert_eq!(s.sample(&[0.5, 2.0, 1.0], 3).unwrap(), 1);
        }
        // Two tokens tie at the k-th value: both stay, the third never appears.
        let mut s = Sampler::new(cfg(1.0, Some(1), None)).unwrap();
        let mut seen = [0usize; 3];
        for _ in 0..400 {
            seen[s.sample(&[2.0, 2.0, 1.9], 3).unwrap() as usize] += 1;
        }
        assert!(seen[0] > 100 && seen[1] > 100 && seen[2] == 0, "{seen:?}");
    }

    #[test]
    fn top_p_keeps_the_boundary_token() {
        // probs ≈ [0.5, 0.3, 0.2]: p = 0.6 needs the first two.
        let l = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let mut s = Sampler::new(cfg(1.0, None, Some(0.6))).unwrap();
        let mut seen = [0usize; 3];
        for _ in 0..600 {
            seen[s.sample(&l, 3).unwrap() as usize] += 1;
        }
        assert!(seen[0] > 0 && seen[1] > 0 && seen[2] == 0, "{seen:?}");
    }

    #[test]
    fn same_seed_same_draws() {
        let l: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let run = || {
            let mut s = Sampler::new(cfg(1.0, Some(20), Some(0.9))).unwrap();
            (0..30)
                .map(|_| s.sample(&l, 50).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn invalid_values_are_rejected() {
        assert!(Sampler::new(cfg(-1.0, None, None)).is_err());
        assert!(Sampler::new(cfg(f32::NAN, None, None)).is_err());
        assert!(Sampler::new(cfg(1.0, Some(0), None)).is_err());
        assert!(Sampler::new(cfg(1.0, None, Some(0.0))).is_err());
        assert!(Sampler::new(cfg(1.0, None, Some(1.5))).is_err());
    }
}
