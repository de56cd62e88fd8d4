//! Decode-path dot products that widen compact weights (f16, bf16, Q8_0, Q4_0, Q4_1) inside the
//! dot product instead of through a buffer. Each computes exactly what `simd::dot` computes on
//! the row widened by `Matrix::row_into`: the same per-value widening (dequantization is a
//! multiply then an add, never fused) and the same accumulator layout (two 8-lane sums over
//! 16-value steps, then a horizontal sum). So single-row decode and multi-row batches agree to
//! the bit.

use super::weights::{Matrix, WeightData};

/// `x · row o of m` through a fused kernel, or `None` when none applies on this CPU.
#[inline]
pub(super) fn dot_row(m: &Matrix, o: usize, x: &[f32]) -> Option<f32> {
    #[cfg(target_arch = "x86_64")]
    {
        if !avx2() {
            return None;
        }
        let cols = m.cols;
        match &m.data {
            WeightData::Half {
                bytes,
                offset,
                bf16,
                ..
            } => {
                let at = offset + o * cols * 2;
                let src = &bytes.as_slice()[at..at + cols * 2];
                // SAFETY: AVX2, FMA and F16C are present (checked by `avx2`).
                Some(unsafe { avx2::dot_half(src, *bf16, x) })
            }
            WeightData::Quant(q) => {
                let (dtype, row) = q.row_data(o)?;
                // SAFETY: as above; block sizes are checked when the matrix is built.
                unsafe { avx2::dot_quant(dtype, row, x) }
            }
            _ => None,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, o, x);
        None
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    })
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use crate::kernels::quant::QK;
    use crate::kernels::simd::hsum256 as hsum;
    use crate::tensor::DType;

    /// Eight 16-bit values at `p` widened to f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn widen8(p: *const u8, bf16: bool) -> __m256 {
        let h = _mm_loadu_si128(p.cast());
        if bf16 {
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
        } else {
            _mm256_cvtph_ps(h)
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_half(src: &[u8], bf16: bool, x: &[f32]) -> f32 {
        let n = x.len().min(src.len() / 2);
        let (ps, px) = (src.as_ptr(), x.as_ptr());
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(px.add(i)), widen8(ps.add(2 * i), bf16), a0);
            a1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(px.add(i + 8)),
                widen8(ps.add(2 * i + 16), bf16),
                a1,
            );
            i += 16;
        }
        if i + 8 <= n {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(px.add(i)), widen8(ps.add(2 * i), bf16), a0);
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(a0, a1));
        for j in i..n {
            let b = [src[2 * j], src[2 * j + 1]];
            let w = if bf16 {
                half::bf16::from_le_bytes(b).to_f32()
            } else {
                half::f16::from_le_bytes(b).to_f32()
            };
            s += x[j] * w;
        }
        s
    }

    #[inline]
    unsafe fn f16_at(p: *const u8) -> f32 {
        half::f16::from_le_bytes([*p, *p.add(1)]).to_f32()
    }

    /// Q8_0 / Q4_0 / Q4_1 rows (32-value blocks); other block types → `None`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_quant(dtype: DType, row: &[u8], x: &[f32]) -> Option<f32> {
        let (block_bytes, kind) = match dtype {
            DType::Q8_0 => (34, 0),
            DType::Q4_0 => (18, 1),
            DType::Q4_1 => (20, 2),
            _ => return None,
        };
        let blocks = row.len() / block_bytes;
        if blocks * QK != x.len() {
            return None;
        }
        let px = x.as_ptr();
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let low = _mm_set1_epi8(0x0F);
        for b in 0..blocks {
            let p = row.as_ptr().add(b * block_bytes);
            let d = _mm256_set1_ps(f16_at(p));
            // Four groups of eight values as i32.
            let q: [__m256i; 4] = match kind {
                0 => {
                    let g =
                        |k: usize| _mm256_cvtepi8_epi32(_mm_loadl_epi64(p.add(2 + 8 * k).cast()));
                    [g(0), g(1), g(2), g(3)]
                }
                _ => {
                    let qs = _mm_loadu_si128(p.add(if kind == 1 { 2 } else { 4 }).cast());
                    let lo = _mm_and_si128(qs, low);
                    let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), low);
                    let mut v = [
                        _mm256_cvtepu8_epi32(lo),
                        _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)),
                        _mm256_cvtepu8_epi32(hi),
                        _mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)),
                    ];
                    if kind == 1 {
                        let eight = _mm256_set1_epi32(8);
                        for t in &mut v {
                            *t = _mm256_sub_epi32(*t, eight);
                        }
                    }
                    v
                }
            };
            let m = if kind == 2 {
                Some(_mm256_set1_ps(f16_at(p.add(2))))
            } else {
                None
            };
            for (k, qk) in q.iter().enumerate() {
                // w = d·q (+ m): a multiply then an add, as the scalar dequantizer computes it.
                let mut w = _mm256_mul_ps(d, _mm256_cvtepi32_ps(*qk));
                if let Some(m) = m {
                    w = _mm256_add_ps(w, m);
                }
                let xv = _mm256_loadu_ps(px.add(b * QK + 8 * k));
                if k % 2 == 0 {
                    a0 = _mm256_fmadd_ps(xv, w, a0);
                } else {
                    a1 = _mm256_fmadd_ps(xv, w, a1);
                }
            }
        }
        Some(hsum(_mm256_add_ps(a0, a1)))
    }
}
