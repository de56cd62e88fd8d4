//! The decoder-only transformer: immutable, shareable weights plus a forward pass over a
//! per-sequence KV cache. The architecture is data ([`ModelConfig`]); this file is the only place
//! the forward pass is written, and it calls only the kernels in [`crate::kernels`].

pub mod kv_cache;
pub mod weights;

pub use kv_cache::{KvCache, KvDtype, Scratch};
pub use weights::{Layout, Weights};

use crate::config::{Activation, ModelConfig, NormKind, Positions};
use crate::error::{Error, Result};
use crate::kernels::{self, Act, AttnSeq, RopeTable, RowNorm};
use kv_cache::sized;
use weights::Norm;

/// The most input rows one forward pass runs at once: a longer input (a long prompt, a batch of
/// prompts) runs in consecutive passes of at most this many rows, with the same results. The
/// activations' memory is then bounded by this many rows whatever the prompt length (GPT-2 124M:
/// a 1000-token prompt peaked 38 MB lower than in one pass), at the cost of streaming the
/// weights once per pass, which prefill, bound by arithmetic, mostly hides (measured 2-6% slower
/// at 512 tokens, no difference at 128).
pub const PASS_ROWS: usize = 64;

/// Which positions' logits a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position: [1, vocab] (generation).
    Last,
    /// Every position fed: [n_tokens, vocab] (scoring, perplexity, tests).
    All,
}

/// Receives named intermediate activations during a forward pass: `hidden.0` (embeddings),
/// `hidden.{l}` (residual stream after block l-1) and `hidden.final` (after the final norm),
/// each [n_tokens, d_model]. Used to diff a model layer by layer against a reference.
pub type Trace<'a> = &'a mut dyn FnMut(&str, &[f32]);

/// One sequence's input to [`Model::forward_batch`].
pub struct BatchInput<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
}

/// A loaded model. `Send + Sync`: share it with `Arc` between threads and sequences.
#[derive(Debug, Clone)]
pub struct Model {
    config: ModelConfig,
    weights: Weights,
    rope: Option<RopeTable>,
}

impl Model {
    /// Assembles a model, checking the configuration against the weights.
    pub fn new(config: ModelConfig, mut weights: Weights) -> Result<Self> {
        config.validate()?;
        // The integer kernels read quantized weights interleaved eight rows at a time.
        weights.interleave();
        // Position rows are added as f32 slices; a 16-bit or quantized table is widened once.
        if let Some(pe) = &mut weights.pos_emb {
            if pe.as_slice().len() != pe.rows * pe.cols {
                *pe = pe.to_f32();
            }
        }
        if weights.blocks.len() != config.n_layer {
            return Err(Error::config(
                "n_layer",
                format!(
                    "{} blocks for n_layer {}",
                    weights.blocks.len(),
                    config.n_layer
                ),
            ));
        }
        let rope = match config.positions {
            Positions::Rope { theta, .. } => Some(RopeTable::new(
                config.head_dim(),
                config.context_length,
                theta,
            )),
            Positions::Learned => None,
        };
        Ok(Model {
            config,
            weights,
            rope,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// A fresh, empty KV cache sized for up to `capacity` positions.
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        KvCache::new(&self.config, capacity)
    }

    /// [`Model::new_cache`] storing keys and values as `dtype`.
    pub fn new_cache_with(&self, capacity: usize, dtype: KvDtype) -> KvCache {
        KvCache::with_dtype(&self.config, capacity, dtype)
    }

    /// Runs `tokens` through the model at positions `cache.len()..`, appending their keys and
    /// values to `cache`, and returns logits ([1, vocab] or [tokens.len(), vocab]).
    ///
    /// Errors (leaving the cache unchanged) if `tokens` is empty, an id is outside the
    /// vocabulary, or the cache has no room for every token.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        scratch: &mut Scratch,
        want: Logits,
        trace: Option<Trace<'_>>,
    ) -> Result<Vec<f32>> {
        let mut seqs = [BatchInput { tokens, cache }];
        let mut logits = Vec::new();
        self.run(&mut seqs, scratch, want, trace, &mut logits)?;
        Ok(logits)
    }

    /// Runs several sequences together (one pass, or passes of [`PASS_ROWS`] rows for long
    /// inputs): their rows share every weight read (the point of batching: decode is bound by
    /// streaming the weights), while positions, attention and KV caches stay per sequence. A sequence's results do not depend on what else is in the
    /// batch: every kernel computes a row the same way whatever the other rows are.
    ///
    /// Returns one logits vector per sequence ([1, vocab] or [tokens, vocab] each). Errors, with
    /// every cache unchanged, if any sequence's input is invalid.
    pub fn forward_batch(
        &self,
        seqs: &mut [BatchInput<'_>],
        scratch: &mut Scratch,
        want: Logits,
        trace: Option<Trace<'_>>,
    ) -> Result<Vec<Vec<f32>>> {
        let mut logits = Vec::new();
        self.run(seqs, scratch, want, trace, &mut logits)?;
        if seqs.len() == 1 {
            return Ok(vec![logits]);
        }
        let vocab = self.config.vocab_size;
        let mut rest = &logits[..];
        let mut out = Vec::with_capacity(seqs.len());
        for s in seqs.iter() {
            let rows = if want == Logits::All {
                s.tokens.len()
            } else {
                1
            };
            let (mine, after) = rest.split_at((rows * vocab).min(rest.len()));
            out.push(mine.to_vec());
            rest = after;
        }
        Ok(out)
    }

    /// [`Self::forward_batch`] into a caller's buffer: `logits` becomes the rows asked for, in
    /// sequence order ([sequences, vocab] for [`Logits::Last`], [Σ tokens, vocab] for
    /// [`Logits::All`]). With `scratch` and `logits` reused, a decode step allocates nothing
    /// once they (and the KV caches) have grown to size.
    pub fn forward_into(
        &self,
        seqs: &mut [BatchInput<'_>],
        scratch: &mut Scratch,
        want: Logits,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        self.run(seqs, scratch, want, None, logits)
    }

    fn run(
        &self,
        seqs: &mut [BatchInput<'_>],
        scratch: &mut Scratch,
        want: Logits,
        trace: Option<Trace<'_>>,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        // Every input is checked before any cache changes (a long input runs in several passes).
        for s in seqs.iter() {
            self.check_input(s.tokens, s.cache)?;
        }
        logits.clear();
        // A traced pass is one pass (the trace names whole-input activations) and stays on the
        // calling thread (a trace callback need not be `Send`).
        if trace.is_some() {
            self.forward_pass(seqs, scratch, want, None, trace, logits);
            return Ok(());
        }
        let n: usize = seqs.iter().map(|s| s.tokens.len()).sum();
        let go = |seqs: &mut [BatchInput<'_>], scratch: &mut Scratch, logits: &mut Vec<f32>| {
            if n <= PASS_ROWS {
                self.forward_pass(seqs, scratch, want, None, None, logits)
            } else {
                self.in_passes(seqs, scratch, want, logits)
            }
        };
        // Run the whole pass on a worker of rayon's pool. The kernels' regions run on their
        // own helper threads (`kernels::crew`) from any thread; but when the crew is busy with
        // another pass, a region falls back to rayon's workers, and from inside the pool it
        // then starts on this thread at once instead of being handed from an outside thread.
        if rayon::current_thread_index().is_none() && rayon::current_num_threads() > 1 {
            rayon::scope(|_| go(seqs, scratch, logits));
        } else {
            go(seqs, scratch, logits);
        }
        Ok(())
    }

    /// Runs inputs longer than [`PASS_ROWS`] rows in order, in passes of at most that many rows
    /// (a sequence's tokens split across consecutive passes, short sequences sharing one):
    /// the activations then take memory for [`PASS_ROWS`] rows, not for the whole prompt. A
    /// later piece of a sequence attends to the keys and values its earlier pieces cached, as
    /// every row attends to cached ones within a pass, so each row computes what it computes in
    /// one pass, bit for bit. With [`Logits::Last`] a piece that does not end its sequence
    /// only fills the cache (no logits, and its last block stops after caching keys and values).
    fn in_passes(
        &self,
        seqs: &mut [BatchInput<'_>],
        scratch: &mut Scratch,
        want: Logits,
        logits: &mut Vec<f32>,
    ) {
        // (Allocates a little per pass: only inputs longer than a pass come here, never decode.)
        let (mut next, mut from) = (0, 0);
        while next < seqs.len() {
            // This pass's pieces: (sequence, its token range), sequences in order.
            let mut pieces = Vec::new();
            let mut rows = 0;
            while rows < PASS_ROWS && next < seqs.len() {
                let len = seqs[next].tokens.len();
                let take = (PASS_ROWS - rows).min(len - from);
                pieces.push((next, from..from + take));
                rows += take;
                from += take;
                if from == len {
                    (next, from) = (next + 1, 0);
                }
            }
            let mut emit = Vec::with_capacity(pieces.len());
            let mut inputs = Vec::with_capacity(pieces.len());
            let mut piece = pieces.iter().peekable();
            for (si, s) in seqs.iter_mut().enumerate() {
                let Some((_, range)) = piece.next_if(|(ps, _)| *ps == si) else {
                    continue;
                };
                emit.push(range.end == s.tokens.len());
                let tokens: &[u32] = s.tokens;
                inputs.push(BatchInput {
                    tokens: &tokens[range.clone()],
                    cache: &mut *s.cache,
                });
            }
            let emit = (want == Logits::Last).then_some(&emit[..]);
            self.forward_pass(&mut inputs, scratch, want, emit, None, logits);
        }
    }

    /// One pass over inputs [`Self::run`] checked (so nothing here can fail), appending the logits asked for to
    /// `logits`. `emit` (with [`Logits::Last`]): which sequences' last rows give logits (`None`:
    /// all of them).
    fn forward_pass(
        &self,
        seqs: &mut [BatchInput<'_>],
        scratch: &mut Scratch,
        want: Logits,
        emit: Option<&[bool]>,
        mut trace: Option<Trace<'_>>,
        logits: &mut Vec<f32>,
    ) {
        let cfg = &self.config;
        let w = &self.weights;
        let emits = |si: usize| emit.is_none_or(|e| e[si]);
        let n: usize = seqs.iter().map(|s| s.tokens.len()).sum();
        if n == 0 {
            return;
        }
        let (c, hd) = (cfg.d_model, cfg.head_dim());
        let (nh, nkv) = (cfg.n_head, cfg.n_kv_head);
        let (qd, kvd) = (nh * hd, nkv * hd);
        // Sequence `si` holds the batch's rows `spans[si]`, at positions from `starts[si]`.
        // (These and every buffer below live in `scratch`: a decode step allocates nothing.)
        let (starts, spans) = (&mut scratch.starts, &mut scratch.spans);
        starts.clear();
        starts.extend(seqs.iter().map(|s| s.cache.len()));
        spans.clear();
        let mut row = 0;
        for s in seqs.iter() {
            spans.push(row..row + s.tokens.len());
            row += s.tokens.len();
        }
        let (starts, spans) = (&scratch.starts, &scratch.spans);

        // Embeddings: x [n, C].
        let x = sized(&mut scratch.x, n * c);
        for (si, s) in seqs.iter().enumerate() {
            for (t, &tok) in s.tokens.iter().enumerate() {
                let row = &mut x[(spans[si].start + t) * c..][..c];
                w.tok_emb.row_into(tok as usize, row);
                if let Some(pe) = &w.pos_emb {
                    kernels::add_in_place(row, pe.row(starts[si] + t));
                }
            }
        }
        if let Some(tr) = trace.as_mut() {
            tr("hidden.0", &scratch.x);
        }

        // Rows still flowing through the blocks. When only each sequence's last row's logits are
        // wanted, the last block caches every row's keys and values, then carries on with the
        // last rows alone (their attention, projection and feed-forward): the other rows' results
        // there would never be read (as llama.cpp skips them). Every kept row computes exactly
        // what it computes with all rows present.
        // (A piece that does not end its sequence keeps no row: its last block only caches.)
        let mut rows_now = n;
        let kept = (0..seqs.len()).filter(|&si| emits(si)).count();
        let skip_unread = want == Logits::Last && trace.is_none() && n > kept;
        let last_block = w.blocks.len().saturating_sub(1);

        for (l, b) in w.blocks.iter().enumerate() {
            // Attention: h = norm(x); qkv = h·Wqkvᵀ [n, qd + 2·kvd].
            let h = sized(&mut scratch.h, n * c);
            kernels::norm_into(&scratch.x, h, self.norm(&b.attn_norm));
            let qkv = sized(&mut scratch.qkv, n * cfg.qkv_dim());
            kernels::matmul(h, &b.qkv.w, b.qkv.b.as_deref(), qkv);
            let q = sized(&mut scratch.q, n * qd);
            let k = sized(&mut scratch.k, n * kvd);
            let v = sized(&mut scratch.v, n * kvd);
            for (r, rowv) in qkv.chunks_exact(qd + 2 * kvd).enumerate() {
                q[r * qd..][..qd].copy_from_slice(&rowv[..qd]);
                k[r * kvd..][..kvd].copy_from_slice(&rowv[qd..qd + kvd]);
                v[r * kvd..][..kvd].copy_from_slice(&rowv[qd + kvd..]);
            }
            for (si, s) in seqs.iter_mut().enumerate() {
                let span = spans[si].clone();
                let start = starts[si];
                let (qs, ks) = (
                    &mut q[span.start * qd..span.end * qd],
                    &mut k[span.start * kvd..span.end * kvd],
                );
                if let (Some(rope), Positions::Rope { style, .. }) = (&self.rope, cfg.positions) {
                    for (t, head_row) in qs.chunks_exact_mut(qd).enumerate() {
                        for head in head_row.chunks_exact_mut(hd) {
                            rope.apply(head, start + t, style);
                        }
                    }
                    for (t, head_row) in ks.chunks_exact_mut(kvd).enumerate() {
                        for head in head_row.chunks_exact_mut(hd) {
                            rope.apply(head, start + t, style);
                        }
                    }
                }
                s.cache.append(l, ks, &v[span.start * kvd..span.end * kvd]);
            }
            let last_rows = skip_unread && l == last_block;
            if last_rows {
                // x keeps the kept sequences' last rows, moved forward in order.
                let kept_spans = spans.iter().enumerate().filter(|&(si, _)| emits(si));
                for (i, (_, sp)) in kept_spans.enumerate() {
                    scratch.x.copy_within((sp.end - 1) * c..sp.end * c, i * c);
                }
                rows_now = kept;
                scratch.x.truncate(rows_now * c);
            }
            let n = rows_now;
            if n == 0 {
                continue;
            }
            let att = sized(&mut scratch.att, n * qd);
            // One attention call for the whole batch: [n, qd].
            let mut parts = recycle(std::mem::take(&mut scratch.attn));
            parts.extend(
                seqs.iter()
                    .zip(spans)
                    .zip(starts)
                    .enumerate()
                    .filter(|&(si, _)| !last_rows || emits(si))
                    .map(|(_, ((s, span), &start))| {
                        let (keys, values) = s.cache.layer(l);
                        // Only the last row: its query, at its position.
                        let first = if last_rows { span.end - 1 } else { span.start };
                        AttnSeq {
                            q: &q[first * qd..span.end * qd],
                            keys,
                            values,
                            start: start + (first - span.start),
                        }
                    }),
            );
            kernels::attention(&parts, nh, hd, &mut scratch.scores, att);
            scratch.attn = recycle(parts);
            // The residual add is fused into the projection: x += att·Woᵀ + b.
            kernels::matmul_add(att, &b.attn_out.w, b.attn_out.b.as_deref(), &mut scratch.x);

            // Feed-forward: x += down(act(up(norm(x)))).
            let h = sized(&mut scratch.h, n * c);
            kernels::norm_into(&scratch.x, h, self.norm(&b.mlp_norm));
            let up = sized(&mut scratch.up, n * b.up.w.rows);
            // Elementwise activations are fused into the product; SwiGLU pairs two halves.
            let fused = match cfg.activation {
                Activation::GeluExact => Act::GeluExact,
                Activation::GeluTanh => Act::GeluTanh,
                Activation::Relu => Act::Relu,
                Activation::SwiGlu => Act::None,
            };
            kernels::matmul_act(h, &b.up.w, b.up.b.as_deref(), up, fused);
            let act: &[f32] = if cfg.activation == Activation::SwiGlu {
                let out = sized(&mut scratch.act, n * cfg.d_ff);
                kernels::swiglu(up, cfg.d_ff, out);
                out
            } else {
                up
            };
            kernels::matmul_add(act, &b.down.w, b.down.b.as_deref(), &mut scratch.x);
            if let Some(tr) = trace.as_mut() {
                tr(&format!("hidden.{}", l + 1), &scratch.x);
            }
        }
        for s in seqs.iter_mut() {
            s.cache.commit(s.tokens.len());
        }

        // Final norm and head, only for the rows asked for: gather them into `h`.
        let picked = &mut scratch.picked;
        picked.clear();
        match want {
            // The last block kept only these rows, in order.
            _ if rows_now < n => picked.extend(0..rows_now),
            Logits::Last => picked.extend(
                spans
                    .iter()
                    .enumerate()
                    .filter(|&(si, _)| emits(si))
                    .map(|(_, sp)| sp.end - 1),
            ),
            Logits::All => picked.extend(0..n),
        }
        if picked.is_empty() {
            return;
        }
        let rows = sized(&mut scratch.h, picked.len() * c);
        for (i, &r) in picked.iter().enumerate() {
            rows[i * c..][..c].copy_from_slice(&scratch.x[r * c..][..c]);
        }
        if let Some(fnorm) = &w.final_norm {
            kernels::norm_in_place(rows, self.norm(fnorm));
        }
        if let Some(tr) = trace.as_mut() {
            if want == Logits::All {
                tr("hidden.final", rows);
            }
        }
        let head = w.head.as_ref().map_or(&w.tok_emb, |h| &h.w);
        let at = logits.len();
        logits.resize(at + picked.len() * cfg.vocab_size, 0.0);
        kernels::matmul(
            rows,
            head,
            w.head.as_ref().and_then(|h| h.b.as_deref()),
            &mut logits[at..],
        );
    }

    /// Checks one sequence's input before anything is changed.
    fn check_input(&self, tokens: &[u32], cache: &KvCache) -> Result<()> {
        let cfg = &self.config;
        if tokens.is_empty() {
            return Err(Error::Request("no tokens to run".into()));
        }
        if tokens.len() > cache.remaining() {
            return Err(Error::Request(format!(
                "{} tokens do not fit: the cache holds {} of at most {} positions",
                tokens.len(),
                cache.len(),
                cache.capacity()
            )));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(Error::Request(format!(
                "token id {bad} is outside the model's vocabulary of {}",
                cfg.vocab_size
            )));
        }
        Ok(())
    }

    /// The kernel's view of norm `n`.
    fn norm<'a>(&self, n: &'a Norm) -> RowNorm<'a> {
        let eps = self.config.norm_eps;
        match self.config.norm {
            NormKind::LayerNorm => RowNorm::Layer {
                weight: &n.weight,
                bias: n.bias.as_deref(),
                eps,
            },
            NormKind::RmsNorm => RowNorm::Rms {
                weight: &n.weight,
                eps,
            },
        }
    }
}

/// An empty vector's allocation, reused for borrows of another lifetime (the standard library
/// collects a mapped `IntoIter` in place: no allocation).
fn recycle<'b>(mut v: Vec<AttnSeq<'_>>) -> Vec<AttnSeq<'b>> {
    v.clear();
    v.into_iter()
        .map(|s| AttnSeq {
            q: &[],
            keys: &[],
            values: &[],
            start: s.start,
        })
        .collect()
}
