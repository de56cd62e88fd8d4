//! Per-sequence state: the KV cache and the scratch buffers of the forward pass. The model's
//! weights are shared and immutable; everything that changes while a sequence is generated
//! lives here, owned by that sequence.

use half::slice::HalfFloatSliceExt;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::kernels::KvRows;

/// Keys and values of every layer for the positions processed so far.
///
/// Stored per layer and per KV head, `[positions, head_dim]`: attention scans one head's
/// positions, and with each head contiguous that scan streams memory (in a `[positions,
/// n_kv_head, head_dim]` layout consecutive positions of a head are a whole row apart).
///
/// A clone keeps the original's room to grow (its reserve): a forked sequence (a beam) appends
/// without reallocating. `clone_from` reuses the target's buffers.
#[derive(Debug)]
pub struct KvCache {
    n_kv_head: usize,
    head_dim: usize,
    capacity: usize,
    len: usize,
    dtype: KvDtype,
    /// Per layer, per KV head: [positions, head_dim].
    keys: Vec<Vec<KvRows>>,
    /// Per layer, per KV head: [positions, head_dim].
    values: Vec<Vec<KvRows>>,
}

/// How a [`KvCache`] stores keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvDtype {
    /// Exactly the values the model computed (PyTorch's numbers).
    #[default]
    F32,
    /// Rounded to the nearest f16: half the memory and half the bytes attention reads per
    /// token, at a small cost in accuracy (llama.cpp's default cache type).
    F16,
}

impl KvDtype {
    pub const ALL: [KvDtype; 2] = [KvDtype::F32, KvDtype::F16];

    pub fn as_str(self) -> &'static str {
        match self {
            KvDtype::F32 => "f32",
            KvDtype::F16 => "f16",
        }
    }

    /// Bytes per cached value.
    pub fn bytes(self) -> usize {
        match self {
            KvDtype::F32 => 4,
            KvDtype::F16 => 2,
        }
    }
}

impl std::fmt::Display for KvDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for KvDtype {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        KvDtype::ALL
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let valid: Vec<&str> = KvDtype::ALL.iter().map(|d| d.as_str()).collect();
                Error::config(
                    "kv cache type",
                    format!("{s:?} is not one of {}", valid.join(", ")),
                )
            })
    }
}

impl KvCache {
    /// A cache for up to `capacity` positions (at most the model's context length), storing
    /// f32. Memory grows as positions are added, so a large capacity costs nothing until it is
    /// used.
    pub fn new(config: &ModelConfig, capacity: usize) -> Self {
        Self::with_dtype(config, capacity, KvDtype::F32)
    }

    /// [`KvCache::new`] storing keys and values as `dtype`.
    pub fn with_dtype(config: &ModelConfig, capacity: usize, dtype: KvDtype) -> Self {
        let capacity = capacity.min(config.context_length);
        let empty = match dtype {
            KvDtype::F32 => KvRows::F32(Vec::new()),
            KvDtype::F16 => KvRows::F16(Vec::new()),
        };
        let heads = vec![empty; config.n_kv_head];
        KvCache {
            n_kv_head: config.n_kv_head,
            head_dim: config.head_dim(),
            capacity,
            len: 0,
            dtype,
            keys: vec![heads.clone(); config.n_layer],
            values: vec![heads; config.n_layer],
        }
    }

    /// How keys and values are stored.
    pub fn dtype(&self) -> KvDtype {
        self.dtype
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
            match h {
                KvRows::F32(v) => v.clear(),
                KvRows::F16(v) => v.clear(),
            }
        }
    }

    /// Appends `k`, `v` ([n, n_kv_head · head_dim] each) to `layer`. Every layer must receive
    /// the same `n` before [`KvCache::commit`] advances the length.
    pub(crate) fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        let hd = self.head_dim;
        let most = self.capacity * hd;
        let stride = self.n_kv_head * hd;
        for (heads, rows) in [(&mut self.keys[layer], k), (&mut self.values[layer], v)] {
            for (h, dst) in heads.iter_mut().enumerate() {
                debug_assert_eq!(dst.len(), self.len * hd);
                let more = rows.len() / stride * hd;
                let new_rows = rows.chunks_exact(stride).map(|row| &row[h * hd..][..hd]);
                match dst {
                    KvRows::F32(d) => {
                        grow(d, more, most);
                        for r in new_rows {
                            d.extend_from_slice(r);
                        }
                    }
                    KvRows::F16(d) => {
                        grow(d, more, most);
                        for r in new_rows {
                            let at = d.len();
                            d.resize(at + hd, half::f16::ZERO);
                            // Round to nearest even (F16C where the CPU has it).
                            d[at..].convert_from_f32_slice(r);
                        }
                    }
                }
            }
        }
    }

    /// Makes room for `positions` positions in all (at most the capacity) at once, so a
    /// sequence whose length is known up front never regrows its caches. Growing reallocates and
    /// copies every head's rows; the old blocks stay resident in the allocator's free lists, so
    /// regrowth can hold the cache nearly twice over.
    pub fn reserve(&mut self, positions: usize) {
        let want = positions.min(self.capacity).saturating_sub(self.len) * self.head_dim;
        for h in self.keys.iter_mut().chain(self.values.iter_mut()).flatten() {
            match h {
                KvRows::F32(v) => v.reserve_exact(want),
                KvRows::F16(v) => v.reserve_exact(want),
            }
        }
    }

    pub(crate) fn commit(&mut self, n: usize) {
        self.len += n;
    }

    /// Keys and values of `layer`, per KV head ([positions, head_dim] each), including rows
    /// appended but not yet committed.
    pub(crate) fn layer(&self, layer: usize) -> (&[KvRows], &[KvRows]) {
        (&self.keys[layer], &self.values[layer])
    }

    /// Bytes held by keys and values.
    pub fn bytes(&self) -> usize {
        self.keys
            .iter()
            .chain(&self.values)
            .flatten()
            .map(|h| h.len())
            .sum::<usize>()
            * self.dtype.bytes()
    }
}

impl Clone for KvCache {
    fn clone(&self) -> Self {
        let copy = |heads: &Vec<Vec<KvRows>>| -> Vec<Vec<KvRows>> {
            heads
                .iter()
                .map(|layer| layer.iter().map(with_room).collect())
                .collect()
        };
        KvCache {
            keys: copy(&self.keys),
            values: copy(&self.values),
            ..*self
        }
    }

    fn clone_from(&mut self, src: &Self) {
        if (self.n_kv_head, self.head_dim, self.keys.len(), self.dtype)
            != (src.n_kv_head, src.head_dim, src.keys.len(), src.dtype)
        {
            *self = src.clone();
            return;
        }
        let mine = self.keys.iter_mut().chain(self.values.iter_mut()).flatten();
        let theirs = src.keys.iter().chain(&src.values).flatten();
        for (dst, from) in mine.zip(theirs) {
            match (dst, from) {
                (KvRows::F32(d), KvRows::F32(f)) => d.clone_from(f),
                (KvRows::F16(d), KvRows::F16(f)) => d.clone_from(f),
                (d, f) => *d = with_room(f),
            }
        }
        (self.capacity, self.len) = (src.capacity, src.len);
    }
}

/// A copy of one head's rows with the same room to grow as the original.
fn with_room(h: &KvRows) -> KvRows {
    fn copy<T: Copy>(v: &[T], room: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(room);
        out.extend_from_slice(v);
        out
    }
    match h {
        KvRows::F32(v) => KvRows::F32(copy(v, v.capacity())),
        KvRows::F16(v) => KvRows::F16(copy(v, v.capacity())),
    }
}

/// Reserves room for `more` values in `dst`: growth by doubling, but never past `most` values
/// (the capacity) unless `more` itself needs it.
fn grow<T>(dst: &mut Vec<T>, more: usize, most: usize) {
    let need = dst.len() + more;
    if need > dst.capacity() {
        let to = need.max(dst.capacity() * 2).min(most.max(need));
        dst.reserve_exact(to - dst.len());
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

/// Below this many elements a scratch buffer keeps its allocation whatever it is used for.
const KEEP_ELEMS: usize = 16 << 10;

/// Resizes `buf` to `n` elements (contents unspecified). The allocation is kept while the passes
/// using it are at least a quarter of its size; a buffer grown for a prefill pass (up to
/// [`PASS_ROWS`](super::PASS_ROWS) rows) is handed back at the first decode step and a small one
/// allocated instead, so a sequence does not hold megabytes of prompt activations it will not
/// use again (GPT-2: 3 MB of a 64-row pass). Steps whose sizes stay within 4× of each other
/// never allocate.
pub(crate) fn sized(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if buf.capacity() > KEEP_ELEMS && buf.capacity() / 4 > n {
        // A fresh vector rather than `shrink_to`: the old block goes back whole.
        *buf = Vec::with_capacity(n);
    }
    buf.resize(n, 0.0);
    &mut buf[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where every head's rows live (changes when a vector reallocates).
    fn homes(c: &KvCache) -> Vec<*const u8> {
        let ptr = |h: &KvRows| match h {
            KvRows::F32(v) => v.as_ptr().cast::<u8>(),
            KvRows::F16(v) => v.as_ptr().cast::<u8>(),
        };
        c.keys.iter().chain(&c.values).flatten().map(ptr).collect()
    }

    #[test]
    fn reserved_positions_append_without_reallocating() {
        let cfg = ModelConfig::gpt2(32, 2, 2, 8, 64);
        let stride = cfg.n_kv_head * cfg.head_dim();
        for dtype in KvDtype::ALL {
            let mut c = KvCache::with_dtype(&cfg, 64, dtype);
            let rows: Vec<f32> = (0..5 * stride).map(|i| i as f32).collect();
            let append = |c: &mut KvCache, n: usize| {
                for l in 0..cfg.n_layer {
                    c.append(l, &rows[..n * stride], &rows[..n * stride]);
                }
                c.commit(n);
            };
            append(&mut c, 5);
            c.reserve(40);
            let before = homes(&c);
            for _ in 0..35 {
                append(&mut c, 1);
            }
            assert_eq!(c.len(), 40);
            assert_eq!(
                homes(&c),
                before,
                "{dtype}: no position past the reserve moved"
            );
            // One more regrows (the reserve was exact).
            append(&mut c, 1);
            assert_ne!(homes(&c), before, "{dtype}: the 41st position needs room");
            // A reserve past the capacity stops at the capacity.
            let mut fresh = KvCache::with_dtype(&cfg, 64, dtype);
            fresh.reserve(1000);
            let room = |h: &KvRows| match h {
                KvRows::F32(v) => v.capacity(),
                KvRows::F16(v) => v.capacity(),
            };
            let rooms: Vec<usize> = fresh.values.iter().flatten().map(room).collect();
            assert!(rooms.iter().all(|&n| n == 64 * cfg.head_dim()), "{rooms:?}");
        }
    }

    /// A clone holds the same keys and values with the same room to grow (appending within the
    /// original's reserve does not move it), and `clone_from` copies into the target's own
    /// buffers when they are large enough.
    #[test]
    fn clones_keep_the_reserve_and_clone_from_reuses_buffers() {
        let cfg = ModelConfig::gpt2(32, 2, 2, 8, 64);
        let stride = cfg.n_kv_head * cfg.head_dim();
        let rows: Vec<f32> = (0..3 * stride).map(|i| i as f32 * 0.5).collect();
        let append = |c: &mut KvCache, n: usize| {
            for l in 0..cfg.n_layer {
                c.append(l, &rows[..n * stride], &rows[..n * stride]);
            }
            c.commit(n);
        };
        let same = |a: &KvCache, b: &KvCache| {
            a.len() == b.len() && a.keys == b.keys && a.values == b.values
        };
        for dtype in KvDtype::ALL {
            let mut c = KvCache::with_dtype(&cfg, 64, dtype);
            c.reserve(20);
            append(&mut c, 3);
            let mut fork = c.clone();
            assert!(same(&fork, &c), "{dtype}");
            let before = homes(&fork);
            for _ in 0..17 {
                append(&mut fork, 1);
            }
            assert_eq!(homes(&fork), before, "{dtype}: the clone kept the reserve");
            // A cache with room takes another's contents in place.
            let mut spare = fork.clone();
            let spare_homes = homes(&spare);
            spare.clone_from(&c);
            assert!(same(&spare, &c), "{dtype}: clone_from copies");
            assert_eq!(homes(&spare), spare_homes, "{dtype}: into its own buffers");
            // Across cache types it is a plain copy.
            let other = if dtype == KvDtype::F32 {
                KvDtype::F16
            } else {
                KvDtype::F32
            };
            let mut x = KvCache::with_dtype(&cfg, 64, other);
            x.clone_from(&c);
            assert!(same(&x, &c) && x.dtype() == dtype, "{dtype}");
        }
    }

    #[test]
    fn kv_dtype_names_round_trip_and_unknown_names_are_errors() {
        for d in [KvDtype::F32, KvDtype::F16] {
            assert_eq!(d.to_string().parse::<KvDtype>().ok(), Some(d));
            assert_eq!(d.as_str().to_uppercase().parse::<KvDtype>().ok(), Some(d));
        }
        let e = "q8_0".parse::<KvDtype>().expect_err("not a cache type");
        assert!(e.to_string().contains("f32, f16"), "{e}");
    }
}
