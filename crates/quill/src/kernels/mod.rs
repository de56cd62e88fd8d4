//! The few numeric kernels the forward pass is built from: matrix products, attention over the KV
//! cache, norms and activations. The forward pass calls only these, so faster implementations
//! (SIMD, threads, quantized weights) replace them here without touching the model.
//!
//! Conventions: activations are row-major `[rows, cols]` slices of f32; weight matrices are
//! `[out, in]` (nn.Linear orientation) so that every output is one contiguous dot product.

mod activation;
mod attention;
mod matmul;
mod panel;
pub mod quant;
mod simd;
mod tile;
mod weights;

pub use activation::Act;
pub use attention::{attention, AttnSeq, KvRows};
pub use matmul::{matmul, matmul_act};
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

/// LayerNorm over each row of `x` in place. x: [rows, weight.len()].
pub fn layer_norm(x: &mut [f32], weight: &[f32], bias: Option<&[f32]>, eps: f32) {
    let n = weight.len();
    for row in x.chunks_exact_mut(n) {
        // Accumulate in f64: LayerNorm inputs grow large in deep residual streams.
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = row
            .iter()
            .map(|&v| {
                let d = v as f64 - mean;
                d * d
            })
            .sum::<f64>()
            / n as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for (i, v) in row.iter_mut().enumerate() {
            let y = ((*v as f64 - mean) * inv) as f32 * weight[i];
            *v = match bias {
                Some(b) => y + b[i],
                None => y,
            };
        }
    }
}

/// RMSNorm over each row of `x` in place. x: [rows, weight.len()].
pub fn rms_norm(x: &mut [f32], weight: &[f32], eps: f32) {
    let n = weight.len();
    for row in x.chunks_exact_mut(n) {
        let ms = row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / n as f64;
        let inv = (1.0 / (ms + eps as f64).sqrt()) as f32;
        for (v, w) in row.iter_mut().zip(weight) {
            *v = (*v * inv) * w;
        }
    }
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

/// Precomputed RoPE rotation table: cos/sin for each position and pair, [positions, head_dim/2].
#[derive(Debug, Clone)]
pub struct RopeTable {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    pub fn new(head_dim: usize, positions: usize, theta: f32) -> Self {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for p in 0..positions {
            for i in 0..half {
                // Computed in f64 like the reference, then rounded once.
                let freq = (theta as f64).powf(-(2.0 * i as f64) / head_dim as f64);
                let angle = p as f64 * freq;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        RopeTable { half, cos, sin }
    }

    pub fn positions(&self) -> usize {
        self.cos.len() / self.half.max(1)
    }

    /// Rotates one head vector `x` [head_dim] at position `pos`.
    pub fn apply(&self, x: &mut [f32], pos: usize, style: crate::config::RopeStyle) {
        let h = self.half;
        let (c, s) = (
            &self.cos[pos * h..(pos + 1) * h],
            &self.sin[pos * h..(pos + 1) * h],
        );
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
mod tests;
