//! Per-sequence state: the KV cache and the scratch buffers of the forward pass. The model's
//! weights are shared and immutable; everything that changes while a sequence is generated
//! lives here, owned by that sequence.

use crate::config::ModelConfig;

/// Keys and values of every layer for the positions processed so far.
///
/// Stored per layer and per KV head, `[positions, head_dim]`: attention scans one head's
/// positions, and with each head contiguous that scan streams memory (in a `[positions,
/// n_kv_head, head_dim]` layout consecutive positions of a head are a whole row apart).
#[derive(Debug, Clone)]
pub struct KvCache {
    n_kv_head: usize,
    head_dim: usize,
    capacity: usize,
    len: usize,
    /// Per layer, per KV head: [positions, head_dim].
    keys: Vec<Vec<Vec<f32>>>,
    /// Per layer, per KV head: [positions, head_dim].
    values: Vec<Vec<Vec<f32>>>,
}

impl KvCache {
    /// A cache for up to `capacity` positions (at most the model's context length). Memory grows
    /// as positions are added, so a large capacity costs nothing until it is used.
    pub fn new(config: &ModelConfig, capacity: usize) -> Self {
        let capacity = capacity.min(config.context_length);
        let heads = vec![Vec::new(); config.n_kv_head];
        KvCache {
            n_kv_head: config.n_kv_head,
            head_dim: config.head_dim(),
            capacity,
            len: 0,
            keys: vec![heads.clone(); config.n_layer],
            values: vec![heads; config.n_layer],
        }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most positions this cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Room left before the context is full.
    pub fn remaining(&self) -> usize {
        self.capacity - self.len
    }

    /// Forgets every position (the buffers are kept for reuse).
    pub fn clear(&mut self) {
        self.len = 0;
        for h in self.keys.iter_mut().chain(self.values.iter_mut()).flatten() {
            h.clear();
        }
    }

    /// Appends `k`, `v` ([n, n_kv_head · head_dim] each) to `layer`. Every layer must receive
    /// the same `n` before [`KvCache::commit`] advances the length.
    pub(crate) fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        let hd = self.head_dim;
        let most = self.capacity * hd;
        for (heads, rows) in [(&mut self.keys[layer], k), (&mut self.values[layer], v)] {
            let n = rows.len() / (self.n_kv_head * hd);
            for (h, dst) in heads.iter_mut().enumerate() {
                debug_assert_eq!(dst.len(), self.len * hd);
                // Grow by doubling, but never past the capacity.
                let need = dst.len() + n * hd;
                if need > dst.capacity() {
                    let to = need.max(dst.capacity() * 2).min(most.max(need));
                    dst.reserve_exact(to - dst.len());
                }
                for row in rows.chunks_exact(self.n_kv_head * hd) {
                    dst.extend_from_slice(&row[h * hd..][..hd]);
                }
            }
        }
    }

    pub(crate) fn commit(&mut self, n: usize) {
        self.len += n;
    }

    /// Keys and values of `layer`, per KV head ([positions, head_dim] each), including rows
    /// appended but not yet committed.
    pub(crate) fn layer(&self, layer: usize) -> (&[Vec<f32>], &[Vec<f32>]) {
        (&self.keys[layer], &self.values[layer])
    }

    /// Bytes held by keys and values.
    pub fn bytes(&self) -> usize {
        self.keys
            .iter()
            .chain(&self.values)
            .flatten()
            .map(|h| h.len() * 4)
            .sum()
    }
}

/// Reusable activation buffers for one sequence, so the decode loop does not allocate per token
/// once they have grown to size.
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    pub(crate) x: Vec<f32>,
    pub(crate) h: Vec<f32>,
    pub(crate) qkv: Vec<f32>,
    pub(crate) q: Vec<f32>,
    pub(crate) k: Vec<f32>,
    pub(crate) v: Vec<f32>,
    pub(crate) att: Vec<f32>,
    pub(crate) proj: Vec<f32>,
    pub(crate) up: Vec<f32>,
    pub(crate) act: Vec<f32>,
    pub(crate) scores: Vec<f32>,
    /// Per sequence of a pass: its first position, its rows of the batch.
    pub(crate) starts: Vec<usize>,
    pub(crate) spans: Vec<std::ops::Range<usize>>,
    /// The batch rows whose logits are wanted.
    pub(crate) picked: Vec<usize>,
    /// The attention call's per-sequence parts; always empty between uses (only its
    /// allocation is kept).
    pub(crate) attn: Vec<crate::kernels::AttnSeq<'static>>,
}

/// Resizes `buf` to `n` elements (contents unspecified) without shrinking its allocation.
pub(crate) fn sized(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    buf.resize(n, 0.0);
    &mut buf[..n]
}
