//! Per-sequence state: the KV cache and the scratch buffers of the forward pass. The model's
//! weights are shared and immutable; everything that changes while a sequence is generated
//! lives here, owned by that sequence.

use crate::config::ModelConfig;

/// Keys and values of every layer for the positions processed so far.
#[derive(Debug, Clone)]
pub struct KvCache {
    kv_dim: usize,
    capacity: usize,
    len: usize,
    /// Per layer: [capacity, n_kv_head, head_dim].
    keys: Vec<Vec<f32>>,
    /// Per layer: [capacity, n_kv_head, head_dim].
    values: Vec<Vec<f32>>,
}

impl KvCache {
    /// A cache for up to `capacity` positions (at most the model's context length). Memory grows
    /// as positions are added, so a large capacity costs nothing until it is used.
    pub fn new(config: &ModelConfig, capacity: usize) -> Self {
        let capacity = capacity.min(config.context_length);
        KvCache {
            kv_dim: config.n_kv_head * config.head_dim(),
            capacity,
            len: 0,
            keys: vec![Vec::new(); config.n_layer],
            values: vec![Vec::new(); config.n_layer],
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
        for l in self.keys.iter_mut().chain(self.values.iter_mut()) {
            l.clear();
        }
    }

    /// Appends `k`, `v` ([n, kv_dim] each) to `layer`. Every layer must receive the same `n`
    /// before [`KvCache::commit`] advances the length.
    pub(crate) fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        debug_assert_eq!(self.keys[layer].len(), self.len * self.kv_dim);
        self.keys[layer].extend_from_slice(k);
        self.values[layer].extend_from_slice(v);
    }

    pub(crate) fn commit(&mut self, n: usize) {
        self.len += n;
    }

    /// Keys and values of `layer`, including rows appended but not yet committed.
    pub(crate) fn layer(&self, layer: usize) -> (&[f32], &[f32]) {
        (&self.keys[layer], &self.values[layer])
    }

    /// Bytes held by keys and values.
    pub fn bytes(&self) -> usize {
        self.keys
            .iter()
            .chain(&self.values)
            .map(|l| l.len() * 4)
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
}

/// Resizes `buf` to `n` elements (contents unspecified) without shrinking its allocation.
pub(crate) fn sized(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    buf.resize(n, 0.0);
    &mut buf[..n]
}
