//! Activations quantized to 8 bits for the integer dot products (llama.cpp's Q8_0 / Q8_K
//! activation formats, kept as separate arrays rather than packed blocks).
//!
//! Each block of `block` values (32 for Q8_0/Q4_0/Q4_1 weights, 256 for the K-quants) gets a
//! symmetric scale `d = max|x| / 127` and `q = round(x / d)` (half away from zero) in
//! `-127..=127`, so `x ≈ d·q` with at most `d/2` error per value.

/// Quantized activation rows. q: [rows, cols]; d: [rows, cols / block];
/// sum16: [rows, cols / 16] (Σq over each 16 values); s: [rows, cols / 32] (`d·Σq` over each
/// 32 values, for the `min` terms of Q4_1; only for 32-value blocks); q4: [rows, cols / 32] (the
/// Q4_0 offset terms for the interleaved kernel, see [`QRow::q4`]; only for 32-value blocks).
#[derive(Debug, Default)]
pub struct QActs {
    block: usize,
    cols: usize,
    q: Vec<i8>,
    d: Vec<f32>,
    sum16: Vec<i16>,
    s: Vec<f32>,
    q4: Vec<[i16; 2]>,
}

/// One quantized activation row (see [`QActs`]).
#[derive(Debug, Clone, Copy)]
pub struct QRow<'a> {
    pub q: &'a [i8],
    pub d: &'a [f32],
    pub sum16: &'a [i16],
    pub s: &'a [f32],
    /// Per 32-value block, `−8 · Σ q_j` over the values with `j mod 4` in {0, 1} and in {2, 3}:
    /// Q4_0's `(n − 8)·q` offset, split the way the interleaved kernel's 16-bit lanes pair the
    /// values (each at most 16,256 in magnitude, so it fits the lanes it starts them at).
    pub q4: &'a [[i16; 2]],
}

impl QActs {
    /// Quantizes `x` [rows, cols] in blocks of `block` (32 or 256; `cols` a multiple of it),
    /// reusing this buffer's allocations.
    pub fn quantize(&mut self, x: &[f32], cols: usize, block: usize) {
        debug_assert!(
            block.is_multiple_of(32)
                && cols.is_multiple_of(block)
                && x.len().is_multiple_of(cols.max(1))
        );
        let n = x.len();
        self.block = block;
        self.cols = cols;
        self.q.resize(n, 0);
        self.d.resize(n / block, 0.0);
        self.sum16.resize(n / 16, 0);
        self.s.resize(if block == 32 { n / 32 } else { 0 }, 0.0);
        self.q4.resize(if block == 32 { n / 32 } else { 0 }, [0; 2]);
        quantize_blocks(x, &mut self.q, &mut self.d, block);
        for (s, q) in self.sum16.iter_mut().zip(self.q.chunks_exact(16)) {
            *s = q.iter().map(|&v| v as i16).sum();
        }
        if block == 32 {
            for (i, s) in self.s.iter_mut().enumerate() {
                let qs = (self.sum16[2 * i] + self.sum16[2 * i + 1]) as f32;
                *s = self.d[i] * qs;
            }
            for (o, q) in self.q4.iter_mut().zip(self.q.chunks_exact(32)) {
                let mut pair = [0i16; 2];
                for (j, &v) in q.iter().enumerate() {
                    pair[j % 4 / 2] -= 8 * v as i16;
                }
                *o = pair;
            }
        }
    }

    /// Row `r`.
    #[inline]
    pub fn row(&self, r: usize) -> QRow<'_> {
        let c = self.cols;
        QRow {
            q: &self.q[r * c..(r + 1) * c],
            d: &self.d[r * c / self.block..(r + 1) * c / self.block],
            sum16: &self.sum16[r * c / 16..(r + 1) * c / 16],
            s: if self.block == 32 {
                &self.s[r * c / 32..(r + 1) * c / 32]
            } else {
                &[]
            },
            q4: if self.block == 32 {
                &self.q4[r * c / 32..(r + 1) * c / 32]
            } else {
                &[]
            },
        }
    }

    /// The dequantized values `d·q` of row `r` (what the integer kernels multiply the weights
    /// by; for tests and references).
    pub fn dequantized(&self, r: usize) -> Vec<f32> {
        let row = self.row(r);
        row.q
            .iter()
            .enumerate()
            .map(|(i, &q)| row.d[i / self.block] * q as f32)
            .collect()
    }
}

/// Rows of this many values or more are quantized on the thread pool.
const PARALLEL_MIN: usize = 1 << 14;

/// Every `block` values of `x` into `q` with one scale in `d`: on the pool when there are many
/// (as a [`team`](crate::kernels::team) region, whose helpers are awake between the kernels'
/// regions), with AVX2 where present (the same values either way).
fn quantize_blocks(x: &[f32], q: &mut [i8], d: &mut [f32], block: usize) {
    let per_task = (PARALLEL_MIN / block).max(1);
    if x.len() >= 2 * PARALLEL_MIN && rayon::current_num_threads() > 1 {
        let tasks = d.len().div_ceil(per_task);
        crate::kernels::team::run_chunks(q, per_task * block, d, per_task, tasks, |i, q, d| {
            quantize_serial(&x[i * per_task * block..][..q.len()], q, d, block)
        });
    } else {
        quantize_serial(x, q, d, block);
    }
}

fn quantize_serial(x: &[f32], q: &mut [i8], d: &mut [f32], block: usize) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::has_avx2_f16c() {
        // SAFETY: AVX2 is present (checked just above).
        return unsafe { avx2::quantize(x, q, d, block) };
    }
    for ((xb, qb), d) in x
        .chunks_exact(block)
        .zip(q.chunks_exact_mut(block))
        .zip(d.iter_mut())
    {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        *d = amax / 127.0;
        let id = if *d > 0.0 { 1.0 / *d } else { 0.0 };
        for (q, v) in qb.iter_mut().zip(xb) {
            *q = (v * id).round().clamp(-127.0, 127.0) as i8;
        }
    }
}

/// The quantizer eight values at a time, bit-identical to the scalar one: the same maximum,
/// scale and products, rounding half away from zero done exactly (`trunc`, then ±1 where the
/// fraction is at least one half), NaN to 0 as Rust's float-to-int cast does.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX2 must be present; `x.len()` a multiple of `block` (itself a multiple of 32),
    /// `q` as long as `x`, `d` one value per block.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn quantize(x: &[f32], q: &mut [i8], d: &mut [f32], block: usize) {
        let sign = _mm256_set1_ps(-0.0);
        let half = _mm256_set1_ps(0.5);
        let one = _mm256_set1_ps(1.0);
        let lim = _mm256_set1_ps(127.0);
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for ((xb, qb), d) in x
            .chunks_exact(block)
            .zip(q.chunks_exact_mut(block))
            .zip(d.iter_mut())
        {
            let mut m = _mm256_setzero_ps();
            for v in xb.chunks_exact(8) {
                let a = _mm256_andnot_ps(sign, _mm256_loadu_ps(v.as_ptr()));
                // A NaN lane keeps the running maximum, as `f32::max` ignores NaN.
                m = _mm256_max_ps(a, m);
            }
            let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps(m2, m2, 1)));
            *d = amax / 127.0;
            let id = _mm256_set1_ps(if *d > 0.0 { 1.0 / *d } else { 0.0 });
            for (xc, qc) in xb.chunks_exact(32).zip(qb.chunks_exact_mut(32)) {
                let mut iv = [_mm256_setzero_si256(); 4];
                for (k, out) in iv.iter_mut().enumerate() {
                    let v = _mm256_mul_ps(_mm256_loadu_ps(xc.as_ptr().add(8 * k)), id);
                    let t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
                    let f = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t));
                    let step = _mm256_or_ps(_mm256_and_ps(v, sign), one);
                    let up = _mm256_and_ps(_mm256_cmp_ps(f, half, _CMP_GE_OQ), step);
                    let r = _mm256_min_ps(
                        _mm256_max_ps(
                            _mm256_add_ps(t, up),
                            _mm256_sub_ps(_mm256_setzero_ps(), lim),
                        ),
                        lim,
                    );
                    let ok = _mm256_cmp_ps(v, v, _CMP_ORD_Q);
                    *out = _mm256_cvttps_epi32(_mm256_and_ps(r, ok));
                }
                let ab = _mm256_packs_epi32(iv[0], iv[1]);
                let cd = _mm256_packs_epi32(iv[2], iv[3]);
                let bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), order);
                _mm256_storeu_si256(qc.as_mut_ptr().cast(), bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantizes_with_symmetric_scales_and_sums() {
        let x: Vec<f32> = (0..64).map(|i| i as f32 - 32.0).collect();
        let mut a = QActs::default();
        a.quantize(&x, 64, 32);
        let r = a.row(0);
        assert_eq!(r.d.len(), 2);
        assert_eq!(r.q[0], -127);
        assert_eq!(r.d[0], 32.0 / 127.0);
        assert_eq!(r.sum16.len(), 4);
        assert_eq!(
            r.sum16[1],
            r.q[16..32].iter().map(|&v| v as i16).sum::<i16>()
        );
        let s0: i32 = r.q[..32].iter().map(|&v| v as i32).sum();
        assert_eq!(r.s[0], r.d[0] * s0 as f32);
        // Every value is within half a step of its quantized value.
        for (i, v) in a.dequantized(0).iter().enumerate() {
            assert!((v - x[i]).abs() <= r.d[i / 32] / 2.0 + 1e-6);
        }
        // The AVX2 path gives the scalar quantizer's bits, including halves, huge and tiny
        // scales, infinities and NaN.
        let mut x: Vec<f32> = (0..512).map(|i| (i as f32 - 256.0) / 7.0).collect();
        x[40] = f32::NAN;
        x[70] = f32::INFINITY;
        for (i, v) in x[96..128].iter_mut().enumerate() {
            *v = i as f32 - 16.5; // scale 1: exact halves to round away from zero
        }
        x[127] = 127.0;
        x[128..160].fill(1e-42);
        x[160] = -3e38;
        for block in [32, 256] {
            let mut q = vec![0i8; x.len()];
            let mut d = vec![0.0f32; x.len() / block];
            quantize_blocks(&x, &mut q, &mut d, block);
            for ((xb, qb), &db) in x.chunks(block).zip(q.chunks(block)).zip(&d) {
                let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                assert_eq!(db.to_bits(), (amax / 127.0).to_bits());
                let id = if db > 0.0 { 1.0 / db } else { 0.0 };
                for (v, &qv) in xb.iter().zip(qb) {
                    assert_eq!(qv, (v * id).round().clamp(-127.0, 127.0) as i8, "{v}");
                }
            }
        }
        // An all-zero block has scale 0 and zeros.
        a.quantize(&[0.0; 256], 256, 256);
        assert_eq!(a.row(0).d, &[0.0]);
        assert!(a.row(0).q.iter().all(|&q| q == 0));
        assert!(a.row(0).s.is_empty());
    }
}
