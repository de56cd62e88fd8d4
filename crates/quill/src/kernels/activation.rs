//! Elementwise activations, applied to a matrix product's output while it is still in cache (the
//! matmul driver calls [`apply`] on each chunk of features it has just written, so the work is
//! split over the pool with the product and costs no extra pass or hand-off).
//!
//! The tanh-approximated GELU is the hot one (GPT-2's MLP: 3072 values per token per layer). It
//! is computed as `x · σ(2u)` with `u = √(2/π)(x + 0.044715x³)`, which equals
//! `½x(1 + tanh u)` exactly in real arithmetic and avoids the cancellation of `1 + tanh u` for
//! negative `u`. On AVX2 the exponential is a vectorised polynomial (about 1 ulp); elsewhere
//! the same formula runs with the C library's `exp`.
//!
//! Every value is computed the same way wherever it sits in the slice: a tail shorter than the
//! vector width is padded into a full vector rather than finished by a different scalar path, so
//! results do not depend on how the features were split into chunks.

/// An activation fused into a matrix product's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// No activation: the product as it is.
    None,
    /// `½x(1 + tanh(√(2/π)(x + 0.044715x³)))` (GPT-2's `gelu_new`, PyTorch `approximate="tanh"`).
    GeluTanh,
    /// `x · ½(1 + erf(x/√2))`.
    GeluExact,
    /// `max(x, 0)`.
    Relu,
}

/// Applies `act` to every value of `x` in place.
pub fn apply(act: Act, x: &mut [f32]) {
    match act {
        Act::None => {}
        Act::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
        Act::GeluExact => {
            for v in x {
                let xf = *v as f64;
                *v = (0.5 * xf * (1.0 + libm::erf(xf * std::f64::consts::FRAC_1_SQRT_2))) as f32;
            }
        }
        Act::GeluTanh => gelu_tanh(x),
    }
}

/// √(2/π).
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_K: f32 = 0.044715;

fn gelu_tanh(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::simd::has_avx2_f16c() {
        // SAFETY: AVX2 and FMA are present (checked at run time).
        unsafe { avx2::gelu_tanh(x) };
        return;
    }
    for v in x {
        let u = *v;
        let z = -2.0 * SQRT_2_OVER_PI * (u + GELU_K * u * u * u);
        *v = u / (1.0 + z.exp());
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{GELU_K, SQRT_2_OVER_PI};

    /// `e^x` in 8 lanes: `2^n · p(r)` with `x = n·ln2 + r`, `|r| ≤ ln2/2`, `p` a degree-6
    /// polynomial (Cephes coefficients), `ln2` split in two for an exact reduction. Inputs are
    /// clamped to ±87, where `e^x` stays a normal f32.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp(x: __m256) -> __m256 {
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(-87.0)),
            _mm256_set1_ps(87.0),
        );
        let n = _mm256_round_ps(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let r2 = _mm256_mul_ps(r, r);
        p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
        let pow2 = _mm256_slli_epi32(
            _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
            23,
        );
        _mm256_mul_ps(p, _mm256_castsi256_ps(pow2))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn gelu8(x: __m256) -> __m256 {
        let x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
        let inner = _mm256_fmadd_ps(_mm256_set1_ps(GELU_K), x3, x);
        let z = _mm256_mul_ps(_mm256_set1_ps(-2.0 * SQRT_2_OVER_PI), inner);
        let y = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), exp(z)));
        // Past the clamp `e^z` is infinite: x/∞ is a signed zero.
        let big = _mm256_cmp_ps(z, _mm256_set1_ps(87.0), _CMP_GT_OQ);
        _mm256_blendv_ps(y, _mm256_mul_ps(x, _mm256_setzero_ps()), big)
    }

    /// # Safety
    /// AVX2 and FMA must be present.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gelu_tanh(x: &mut [f32]) {
        let mut chunks = x.chunks_exact_mut(8);
        for c in &mut chunks {
            let v = _mm256_loadu_ps(c.as_ptr());
            _mm256_storeu_ps(c.as_mut_ptr(), gelu8(v));
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let mut buf = [0.0f32; 8];
            buf[..tail.len()].copy_from_slice(tail);
            let v = gelu8(_mm256_loadu_ps(buf.as_ptr()));
            _mm256_storeu_ps(buf.as_mut_ptr(), v);
            tail.copy_from_slice(&buf[..tail.len()]);
        }
    }
}
