//! The few numeric kernels the forward pass is built from: matrix products, attention over the KV
//! cache, norms and activations. The forward pass calls only these, so faster implementations
//! (SIMD, threads, quantized weights) replace them here without touching the model.
//!
//! Conventions: activations are row-major `[rows, cols]` slices of f32; weight matrices are
//! `[out, in]` (nn.Linear orientation) so that every output is one contiguous dot product.

mod activation;
mod attention;
mod crew;
mod matmul;
pub(crate) mod panel;
pub mod quant;
mod simd;
pub(crate) mod team;
mod tile;
mod weights;

pub use activation::Act;
pub use attention::{attention, AttnSeq, KvRows};
pub use matmul::{matmul, matmul_act, matmul_add};
pub use panel::Panels;
pub(crate) use panel::PANEL;
pub use simd::{axpy, describe as simd_level};
pub(crate) use tile::WKind;
pub use weights::{Matrix, WeightData};

/// Dot product (SIMD where the CPU has it; fixed summation order, so results do not depend on
/// threading or batching).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    simd::dot(a, b)
}

/// A normalisation over each row of the residual stream, with its learned parameters.
#[derive(Clone, Copy, Debug)]
pub enum RowNorm<'a> {
    /// LayerNorm: `(x - mean) / sqrt(var + eps) · weight (+ bias)`.
    Layer {
        weight: &'a [f32],
        bias: Option<&'a [f32]>,
        eps: f32,
    },
    /// RMSNorm: `x / sqrt(mean(x²) + eps) · weight`.
    Rms { weight: &'a [f32], eps: f32 },
}

impl RowNorm<'_> {
    /// Row width.
    pub fn width(&self) -> usize {
        match self {
            RowNorm::Layer { weight, .. } | RowNorm::Rms { weight, .. } => weight.len(),
        }
    }

    /// Normalises one row in place.
    fn row(&self, row: &mut [f32]) {
        match *self {
            RowNorm::Layer { weight, bias, eps } => layer_norm_row(row, weight, bias, eps),
            RowNorm::Rms { weight, eps } => rms_norm_row(row, weight, eps),
        }
    }
}

/// Below this many rows a norm runs on the calling thread (a parallel region costs a few µs,
/// about two rows' work).
const PARALLEL_NORM_ROWS: usize = 16;

/// `dst = norm(src)` row by row. src, dst: [rows, norm.width()]. The copy is fused into the
/// normalisation (each row is normalised while it is in L1), and a prompt's rows are shared out
/// over the thread pool; every row is computed the same way either way.
pub fn norm_into(src: &[f32], dst: &mut [f32], norm: RowNorm<'_>) {
    let n = norm.width();
    debug_assert_eq!(src.len(), dst.len());
    for_rows(dst, n, |i, d| {
        d.copy_from_slice(&src[i * n..][..n]);
        norm.row(d);
    });
}

/// [`norm_into`] in place. x: [rows, norm.width()].
pub fn norm_in_place(x: &mut [f32], norm: RowNorm<'_>) {
    for_rows(x, norm.width(), |_, row| norm.row(row));
}

/// Calls `f(i, row i)` for every whole row of `x` [rows, n]: on the pool (a [`team`] region)
/// when there are enough rows.
fn for_rows(x: &mut [f32], n: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if n == 0 {
        return;
    }
    let rows = x.len() / n;
    if rows >= PARALLEL_NORM_ROWS && rayon::current_num_threads() > 1 {
        let per = PARALLEL_NORM_ROWS / 2;
        team::for_chunks(&mut x[..rows * n], per * n, |t, chunk| {
            for (i, row) in chunk.chunks_exact_mut(n).enumerate() {
                f(t * per + i, row);
            }
        });
    } else {
        x.chunks_exact_mut(n)
            .enumerate()
            .for_each(|(i, row)| f(i, row));
    }
}

/// LayerNorm over each row of `x` in place. x: [rows, weight.len()].
pub fn layer_norm(x: &mut [f32], weight: &[f32], bias: Option<&[f32]>, eps: f32) {
    norm_in_place(x, RowNorm::Layer { weight, bias, eps });
}

fn layer_norm_row(row: &mut [f32], weight: &[f32], bias: Option<&[f32]>, eps: f32) {
    let n = weight.len() as f64;
    // Accumulate in f64: LayerNorm inputs grow large in deep residual streams.
    let mean = sum_f64(row, |v| v) / n;
    let var = sum_f64(row, |v| (v - mean) * (v - mean)) / n;
    let inv = 1.0 / (var + eps as f64).sqrt();
    match bias {
        Some(b) => {
            for ((v, &w), &b) in row.iter_mut().zip(weight).zip(b) {
                *v = ((*v as f64 - mean) * inv) as f32 * w + b;
            }
        }
        None => {
            for (v, &w) in row.iter_mut().zip(weight) {
                *v = ((*v as f64 - mean) * inv) as f32 * w;
            }
        }
    }
}

/// RMSNorm over each row of `x` in place. x: [rows, weight.len()].
pub fn rms_norm(x: &mut [f32], weight: &[f32], eps: f32) {
    norm_in_place(x, RowNorm::Rms { weight, eps });
}

fn rms_norm_row(row: &mut [f32], weight: &[f32], eps: f32) {
    let ms = sum_f64(row, |v| v * v) / weight.len() as f64;
    let inv = (1.0 / (ms + eps as f64).sqrt()) as f32;
    for (v, w) in row.iter_mut().zip(weight) {
        *v = (*v * inv) * w;
    }
}

/// `Σ f(v)` over `row` in f64, in eight interleaved partial sums combined pairwise, then the
/// tail: a fixed order (so every row is reduced the same way on every machine and in every
/// batch) with eight independent chains instead of one long one (which the compiler may not
/// reorder, and which made the norms a serial ~2 µs per row).
#[inline]
fn sum_f64(row: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v as f64);
        }
    }
    let mut s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for &v in tail {
        s += f(v as f64);
    }
    s
}

/// Exact GELU: `x · ½(1 + erf(x/√2))`.
pub fn gelu_exact(x: &mut [f32]) {
    activation::apply(Act::GeluExact, x);
}

/// Tanh-approximated GELU: `½x(1 + tanh(√(2/π)(x + 0.044715x³)))` (see [`Act::GeluTanh`]).
pub fn gelu_tanh(x: &mut [f32]) {
    activation::apply(Act::GeluTanh, x);
}

/// ReLU in place.
pub fn relu(x: &mut [f32]) {
    activation::apply(Act::Relu, x);
}

/// SwiGLU: given `gate_up` rows laid out as [gate (d_ff) | up (d_ff)], writes
/// `silu(gate) * up` into `out` rows of width d_ff.
pub fn swiglu(gate_up: &[f32], d_ff: usize, out: &mut [f32]) {
    for (gu, o) in gate_up
        .chunks_exact(2 * d_ff)
        .zip(out.chunks_exact_mut(d_ff))
    {
        let (g, u) = gu.split_at(d_ff);
        for i in 0..d_ff {
            let s = g[i] / (1.0 + (-g[i]).exp());
            o[i] = s * u[i];
        }
    }
}

/// `x += y` elementwise.
pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Numerically stable softmax in place.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return;
    }
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// Positions per lazily computed block of a [`RopeTable`].
const ROPE_BLOCK: usize = 64;

/// RoPE rotation table: cos/sin for each position and pair, [positions, head_dim/2], computed
/// in blocks of [`ROPE_BLOCK`] positions on first use. A long context's whole table (SmolLM2:
/// 8,192 positions, 2.1 MB) would otherwise be resident from load on; a run touches only the
/// blocks of the positions it reaches. Blocks are shared by every thread (`&self`).
#[derive(Debug, Clone)]
pub struct RopeTable {
    head_dim: usize,
    theta: f32,
    positions: usize,
    /// Block `b`: cos then sin of positions `b * ROPE_BLOCK ..`, each [ROPE_BLOCK, half].
    blocks: Box<[std::sync::OnceLock<Box<[f32]>>]>,
}

impl RopeTable {
    pub fn new(head_dim: usize, positions: usize, theta: f32) -> Self {
        RopeTable {
            head_dim,
            theta,
            positions,
            blocks: (0..positions.div_ceil(ROPE_BLOCK))
                .map(|_| std::sync::OnceLock::new())
                .collect(),
        }
    }

    pub fn positions(&self) -> usize {
        self.positions
    }

    /// How many blocks have been computed.
    #[cfg(test)]
    pub(crate) fn computed_blocks(&self) -> usize {
        self.blocks.iter().filter(|b| b.get().is_some()).count()
    }

    /// cos and sin of position `pos`, [half] each.
    fn rotation(&self, pos: usize) -> (&[f32], &[f32]) {
        assert!(pos < self.positions, "RoPE position {pos} past the table");
        let h = self.head_dim / 2;
        let block = self.blocks[pos / ROPE_BLOCK].get_or_init(|| {
            let first = pos / ROPE_BLOCK * ROPE_BLOCK;
            // Computed in f64 like the reference, then rounded once.
            let freqs: Vec<f64> = (0..h)
                .map(|i| (self.theta as f64).powf(-(2.0 * i as f64) / self.head_dim as f64))
                .collect();
            let mut t = vec![0.0f32; 2 * ROPE_BLOCK * h];
            let (cos, sin) = t.split_at_mut(ROPE_BLOCK * h);
            for (r, p) in (first..(first + ROPE_BLOCK).min(self.positions)).enumerate() {
                for (i, &freq) in freqs.iter().enumerate() {
                    let angle = p as f64 * freq;
                    cos[r * h + i] = angle.cos() as f32;
                    sin[r * h + i] = angle.sin() as f32;
                }
            }
            t.into_boxed_slice()
        });
        let r = pos % ROPE_BLOCK;
        let (cos, sin) = block.split_at(ROPE_BLOCK * h);
        (&cos[r * h..(r + 1) * h], &sin[r * h..(r + 1) * h])
    }

    /// Rotates one head vector `x` [head_dim] at position `pos`.
    pub fn apply(&self, x: &mut [f32], pos: usize, style: crate::config::RopeStyle) {
        let h = self.head_dim / 2;
        let (c, s) = self.rotation(pos);
        match style {
            crate::config::RopeStyle::Interleaved => {
                for i in 0..h {
                    let (a, b) = (x[2 * i], x[2 * i + 1]);
                    x[2 * i] = a * c[i] - b * s[i];
                    x[2 * i + 1] = a * s[i] + b * c[i];
                }
            }
            crate::config::RopeStyle::HalfSplit => {
                for i in 0..h {
                    let (a, b) = (x[i], x[i + h]);
                    x[i] = a * c[i] - b * s[i];
                    x[i + h] = a * s[i] + b * c[i];
                }
            }
        }
    }
}

#[cfg(test)]
mod norm_tests;
#[cfg(test)]
mod rope_tests;
#[cfg(test)]
mod tests;
