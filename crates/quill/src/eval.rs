//! Scoring text: perplexity with a sliding window (as in Hugging Face's "Perplexity of
//! fixed-length models" guide), the number `quill perplexity` reports to compare precisions
//! (`--dtype`) and models on the same text.
//!
//! For tokens `t[0..n]`, every token but the first is scored exactly once, by the model's
//! log-probability of it given the tokens before it inside a window of at most `window` tokens:
//! windows start at `0, stride, 2·stride, ...`; each is one [`Model::forward`] pass with
//! [`Logits::All`] over `t[begin..end]` (`end = min(begin + window, n)`) and scores the tokens
//! `t[j]`, `j` in `[previous end, end)`, from the logits row `j − 1 − begin`. So a token scored
//! in a later window sees at least `window − stride` tokens of context; `stride < window` keeps
//! that at least one (and no token unscored). Log-softmax and sums are in f64.
//!
//! `perplexity = exp(mean negative log-likelihood)` in nats per token.

use crate::error::{Error, Result};
use crate::model::{KvDtype, Logits, Model, Scratch};

/// The result of [`perplexity`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerplexityReport {
    /// Tokens whose probability was scored: all but the first (`n − 1`).
    pub tokens_scored: usize,
    /// Mean negative log-likelihood per scored token, in nats.
    pub nll_mean: f64,
    /// `exp(nll_mean)`.
    pub ppl: f64,
    /// Forward passes made (windows).
    pub windows: usize,
}

/// The perplexity of `model` on `tokens` with windows of `window` tokens moved by `stride`
/// (see the module docs). Needs `2 ≤ window ≤` the model's context, `1 ≤ stride < window`, and
/// at least 2 tokens; ids outside the vocabulary are an error from the forward pass.
pub fn perplexity(
    model: &Model,
    tokens: &[u32],
    window: usize,
    stride: usize,
) -> Result<PerplexityReport> {
    perplexity_with(model, tokens, window, stride, KvDtype::F32)
}

/// [`perplexity`] with a KV cache storing keys and values as `kv`: the quality cost of an f16
/// cache, measured.
pub fn perplexity_with(
    model: &Model,
    tokens: &[u32],
    window: usize,
    stride: usize,
    kv: KvDtype,
) -> Result<PerplexityReport> {
    let ctx = model.config().context_length;
    if window < 2 || window > ctx {
        return Err(Error::config(
            "context",
            format!(
                "a window of {window} tokens: must be between 2 and the model's context \
                 length {ctx}"
            ),
        ));
    }
    if stride == 0 || stride >= window {
        return Err(Error::config(
            "stride",
            format!(
                "{stride}: must be between 1 and {} (below the window of {window} tokens, so \
                 every window but the first keeps context for its first scored token)",
                window - 1
            ),
        ));
    }
    let n = tokens.len();
    if n < 2 {
        return Err(Error::Request(format!(
            "the text is {n} token{} long; perplexity needs at least 2 (the first token only \
             gives context)",
            if n == 1 { "" } else { "s" }
        )));
    }
    let vocab = model.config().vocab_size;
    let mut scratch = Scratch::default();
    let mut cache = model.new_cache_with(window, kv);
    let (mut nll, mut scored, mut windows) = (0.0f64, 0usize, 0usize);
    // The first token not yet scored; `stride < window` keeps it past each window's start.
    let mut next = 1;
    let mut begin = 0;
    loop {
        let end = (begin + window).min(n);
        cache.clear();
        let logits = model.forward(
            &tokens[begin..end],
            &mut cache,
            &mut scratch,
            Logits::All,
            None,
        )?;
        windows += 1;
        for j in next..end {
            let row = &logits[(j - 1 - begin) * vocab..][..vocab];
            nll += neg_log_softmax(row, tokens[j] as usize);
            scored += 1;
        }
        next = end;
        if end == n {
            break;
        }
        begin += stride;
    }
    let nll_mean = nll / scored as f64;
    Ok(PerplexityReport {
        tokens_scored: scored,
        nll_mean,
        ppl: nll_mean.exp(),
        windows,
    })
}

/// `−log softmax(row)[target]` in f64: `logsumexp(row) − row[target]`.
pub fn neg_log_softmax(row: &[f32], target: usize) -> f64 {
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    max + sum.ln() - row[target] as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neg_log_softmax_of_uniform_logits_is_log_vocab() {
        let row = [3.0f32; 8];
        assert!((neg_log_softmax(&row, 5) - 8f64.ln()).abs() < 1e-12);
        // Shift invariance, and large logits do not overflow.
        let row = [1000.0f32, 1001.0, 999.0];
        let want = {
            let z: f64 = [0.0f64, 1.0, -1.0].iter().map(|v| v.exp()).sum();
            z.ln() - 1.0
        };
        assert!((neg_log_softmax(&row, 1) - want).abs() < 1e-12);
    }
}
