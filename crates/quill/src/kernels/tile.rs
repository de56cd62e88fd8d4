//! Float micro-kernels of the matmul driver: `R` activation rows (f32) against `C` weight rows
//! (f32, f16 or bf16, widened in registers) at once, in "dot-product form" (both operands run
//! along the shared inner dimension, as weights are stored `[out, in]`).
//!
//! quill owns these because they are the hot path: at batch 1 a decode step is one pass over the
//! weights, and a tile of `R × C` outputs loads each weight vector once for `R` rows and each
//! activation vector once for `C` weight rows.
//!
//! **Every output is computed the same way whatever the tile shape**: one 8-lane f32
//! accumulator advanced by fused multiply-adds over 8-value steps, a fixed horizontal sum, then
//! the scalar tail in order. So a row gives bit-identical results alone (decode), four at a time
//! (prefill) or inside any batch, on any number of threads.

/// How weights are stored; selects the widening in the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WKind {
    F32,
    F16,
    Bf16,
}

impl WKind {
    /// Bytes per weight.
    pub(crate) fn bytes(self) -> usize {
        match self {
            WKind::F32 => 4,
            WKind::F16 | WKind::Bf16 => 2,
        }
    }

    /// The float storage of tensor type `dtype`, if it is one.
    pub(crate) fn of(dtype: crate::tensor::DType) -> Option<WKind> {
        use crate::tensor::DType;
        match dtype {
            DType::F32 => Some(WKind::F32),
            DType::F16 => Some(WKind::F16),
            DType::BF16 => Some(WKind::Bf16),
            _ => None,
        }
    }

    /// The storage's name (`f32`, `f16`, `bf16`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            WKind::F32 => "f32",
            WKind::F16 => "f16",
            WKind::Bf16 => "bf16",
        }
    }
}

/// `out[r][c] = Σ_i x[r][i] · w[c][i]` for `i < n`, where `w[c]` points at `n` weights of
/// `kind`; the weights `ahead` bytes past each row are prefetched as it streams (the next tile's
/// rows, which DRAM would otherwise deliver only on demand; 0 for none). `R` is 1..=6 and `C` 1..=4.
///
/// # Safety
/// Each `x[r]` must be valid for `n` f32 reads and each `w[c]` for `n` weights of `kind`.
#[inline]
pub(crate) unsafe fn tile<const R: usize, const C: usize>(
    kind: WKind,
    x: &[*const f32; R],
    w: &[*const u8; C],
    n: usize,
    ahead: usize,
) -> [[f32; C]; R] {
    #[cfg(target_arch = "x86_64")]
    if super::simd::has_avx512() {
        return match kind {
            WKind::F32 => avx512::tile::<0, R, C>(x, w, n, ahead),
            WKind::F16 => avx512::tile::<1, R, C>(x, w, n, ahead),
            WKind::Bf16 => avx512::tile::<2, R, C>(x, w, n, ahead),
        };
    }
    #[cfg(target_arch = "x86_64")]
    if super::simd::has_avx2_f16c() {
        return match kind {
            WKind::F32 => avx2::tile::<0, R, C>(x, w, n, ahead),
            WKind::F16 => avx2::tile::<1, R, C>(x, w, n, ahead),
            WKind::Bf16 => avx2::tile::<2, R, C>(x, w, n, ahead),
        };
    }
    // (Only the x86 kernels prefetch.)
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ahead;
    portable::<R, C>(kind, x, w, n)
}

/// `R` activation rows against `groups · C` consecutive weight rows (`row_bytes` apart, starting
/// at `w`), `C` at a time: `emit(first_row, tile)` per group. The same arithmetic as [`tile`],
/// with the dispatch done once per span (a decode tile is only a few hundred cycles of work).
///
/// # Safety
/// As [`tile`], for every weight row `0..groups·C`.
pub(crate) unsafe fn span<const R: usize, const C: usize, F: FnMut(usize, [[f32; C]; R])>(
    kind: WKind,
    x: &[*const f32; R],
    w: *const u8,
    row_bytes: usize,
    groups: usize,
    n: usize,
    mut emit: F,
) {
    #[cfg(target_arch = "x86_64")]
    if super::simd::has_avx512() {
        match kind {
            WKind::F32 => avx512::span::<0, R, C, F>(x, w, row_bytes, groups, n, &mut emit),
            WKind::F16 => avx512::span::<1, R, C, F>(x, w, row_bytes, groups, n, &mut emit),
            WKind::Bf16 => avx512::span::<2, R, C, F>(x, w, row_bytes, groups, n, &mut emit),
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::simd::has_avx2_f16c() {
        match kind {
            WKind::F32 => avx2::span::<0, R, C, F>(x, w, row_bytes, groups, n, &mut emit),
            WKind::F16 => avx2::span::<1, R, C, F>(x, w, row_bytes, groups, n, &mut emit),
            WKind::Bf16 => avx2::span::<2, R, C, F>(x, w, row_bytes, groups, n, &mut emit),
        }
        return;
    }
    for g in 0..groups {
        let ws: [*const u8; C] = std::array::from_fn(|c| w.add((g * C + c) * row_bytes));
        emit(g * C, portable::<R, C>(kind, x, &ws, n));
    }
}

/// Weight `i` of a row at `p`.
#[inline(always)]
pub(super) unsafe fn weight(kind: WKind, p: *const u8, i: usize) -> f32 {
    match kind {
        WKind::F32 => p.cast::<f32>().add(i).read_unaligned(),
        WKind::F16 => half::f16::from_bits(p.cast::<u16>().add(i).read_unaligned()).to_f32(),
        WKind::Bf16 => f32::from_bits((p.cast::<u16>().add(i).read_unaligned() as u32) << 16),
    }
}

/// The portable kernel: the same accumulator layout (8 lanes, then the same pairwise
/// horizontal sum, then the tail), with separate multiply and add.
unsafe fn portable<const R: usize, const C: usize>(
    kind: WKind,
    x: &[*const f32; R],
    w: &[*const u8; C],
    n: usize,
) -> [[f32; C]; R] {
    let mut out = [[0.0f32; C]; R];
    for r in 0..R {
        for c in 0..C {
            let mut acc = [0.0f32; 8];
            let mut i = 0;
            while i + 8 <= n {
                for (l, a) in acc.iter_mut().enumerate() {
                    *a += *x[r].add(i + l) * weight(kind, w[c], i + l);
                }
                i += 8;
            }
            let v = acc;
            let mut s = ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
            while i < n {
                s += *x[r].add(i) * weight(kind, w[c], i);
                i += 1;
            }
            out[r][c] = s;
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    use crate::kernels::simd::hsum256;

    /// Eight weights at element `i` of a row at `p`, as f32. `K`: 0 f32, 1 f16, 2 bf16.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in crate::kernels) unsafe fn load8<const K: u8>(p: *const u8, i: usize) -> __m256 {
        match K {
            0 => _mm256_loadu_ps(p.cast::<f32>().add(i)),
            1 => _mm256_cvtph_ps(_mm_loadu_si128(p.add(2 * i).cast())),
            _ => {
                let h = _mm_loadu_si128(p.add(2 * i).cast());
                _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn span<const K: u8, const R: usize, const C: usize, F>(
        x: &[*const f32; R],
        w: *const u8,
        row_bytes: usize,
        groups: usize,
        n: usize,
        emit: &mut F,
    ) where
        F: FnMut(usize, [[f32; C]; R]),
    {
        for g in 0..groups {
            let ws: [*const u8; C] = std::array::from_fn(|c| w.add((g * C + c) * row_bytes));
            emit(g * C, tile::<K, R, C>(x, &ws, n, C * row_bytes));
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn tile<const K: u8, const R: usize, const C: usize>(
        x: &[*const f32; R],
        w: &[*const u8; C],
        n: usize,
        ahead: usize,
    ) -> [[f32; C]; R] {
        let wb = if K == 0 { 4 } else { 2 };
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        let mut wv = [_mm256_setzero_ps(); C];
        let mut i = 0;
        while i + 8 <= n {
            for c in 0..C {
                _mm_prefetch::<_MM_HINT_T0>(w[c].wrapping_add(ahead + wb * i).cast());
                wv[c] = load8::<K>(w[c], i);
            }
            for r in 0..R {
                let xv = _mm256_loadu_ps(x[r].add(i));
                for c in 0..C {
                    acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
                }
            }
            i += 8;
        }
        let kind = match K {
            0 => super::WKind::F32,
            1 => super::WKind::F16,
            _ => super::WKind::Bf16,
        };
        let mut out = [[0.0f32; C]; R];
        for r in 0..R {
            for c in 0..C {
                let mut s = hsum256(acc[r][c]);
                for j in i..n {
                    s += *x[r].add(j) * super::weight(kind, w[c], j);
                }
                out[r][c] = s;
            }
        }
        out
    }
}

/// The same tiles on 16-lane vectors (AVX-512 F): twice the multiply-adds per instruction, for
/// prefill and batches, where the float tiles are compute-bound. Per output: one 16-lane
/// accumulator over 16-value steps, its halves added (lanes `l` and `l + 8`), then the 8-lane
/// pairwise sum and the scalar tail in order. That is another summation order than the 8-lane
/// kernels', so a machine with AVX-512 rounds differently in the last bits from one without; on
/// one machine every tile shape, decode and batch still agree to the bit.
#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use std::arch::x86_64::*;

    use crate::kernels::simd::hsum256;

    /// Sixteen weights at element `i` of a row at `p`, as f32. `K`: 0 f32, 1 f16, 2 bf16.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    pub(in crate::kernels) unsafe fn load16<const K: u8>(p: *const u8, i: usize) -> __m512 {
        match K {
            0 => _mm512_loadu_ps(p.cast::<f32>().add(i)),
            1 => _mm512_cvtph_ps(_mm256_loadu_si256(p.add(2 * i).cast())),
            _ => {
                let h = _mm256_loadu_si256(p.add(2 * i).cast());
                _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    pub(super) unsafe fn span<const K: u8, const R: usize, const C: usize, F>(
        x: &[*const f32; R],
        w: *const u8,
        row_bytes: usize,
        groups: usize,
        n: usize,
        emit: &mut F,
    ) where
        F: FnMut(usize, [[f32; C]; R]),
    {
        for g in 0..groups {
            let ws: [*const u8; C] = std::array::from_fn(|c| w.add((g * C + c) * row_bytes));
            emit(g * C, tile::<K, R, C>(x, &ws, n, C * row_bytes));
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    pub(super) unsafe fn tile<const K: u8, const R: usize, const C: usize>(
        x: &[*const f32; R],
        w: &[*const u8; C],
        n: usize,
        ahead: usize,
    ) -> [[f32; C]; R] {
        let wb = if K == 0 { 4 } else { 2 };
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        let mut wv = [_mm512_setzero_ps(); C];
        let mut i = 0;
        while i + 16 <= n {
            for c in 0..C {
                _mm_prefetch::<_MM_HINT_T0>(w[c].wrapping_add(ahead + wb * i).cast());
                wv[c] = load16::<K>(w[c], i);
            }
            for r in 0..R {
                let xv = _mm512_loadu_ps(x[r].add(i));
                for c in 0..C {
                    acc[r][c] = _mm512_fmadd_ps(xv, wv[c], acc[r][c]);
                }
            }
            i += 16;
        }
        let kind = match K {
            0 => super::WKind::F32,
            1 => super::WKind::F16,
            _ => super::WKind::Bf16,
        };
        let mut out = [[0.0f32; C]; R];
        for r in 0..R {
            for c in 0..C {
                let a = acc[r][c];
                let halves = _mm256_add_ps(
                    _mm512_castps512_ps256(a),
                    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)),
                );
                let mut s = hsum256(halves);
                for j in i..n {
                    s += *x[r].add(j) * super::weight(kind, w[c], j);
                }
                out[r][c] = s;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::values as rows;

    /// Every tile shape gives each output bit-identically, and close to the f64 reference, on
    /// lengths that are not multiples of the vector width.
    #[test]
    fn tile_shapes_agree_bitwise_and_match_reference() {
        for n in [1usize, 7, 8, 9, 31, 33, 100, 257] {
            let x = rows(4 * n, 1);
            let w = rows(4 * n, 2);
            let xs: [*const f32; 4] = std::array::from_fn(|r| x[r * n..].as_ptr());
            let ws: [*const u8; 4] = std::array::from_fn(|c| w[c * n..].as_ptr().cast());
            // SAFETY: every pointer covers `n` values.
            let full = unsafe { tile::<4, 4>(WKind::F32, &xs, &ws, n, 0) };
            for r in 0..4 {
                for c in 0..4 {
                    let exact: f64 = (0..n)
                        .map(|i| x[r * n + i] as f64 * w[c * n + i] as f64)
                        .sum();
                    assert!((full[r][c] as f64 - exact).abs() < 1e-4 * (1.0 + exact.abs()));
                    // SAFETY: as above.
                    let one = unsafe { tile::<1, 1>(WKind::F32, &[xs[r]], &[ws[c]], n, 0) };
                    assert_eq!(
                        one[0][0].to_bits(),
                        full[r][c].to_bits(),
                        "n {n} r {r} c {c}"
                    );
                    let two = unsafe {
                        tile::<2, 3>(WKind::F32, &[xs[r], xs[0]], &[ws[1], ws[c], ws[0]], n, 0)
                    };
                    assert_eq!(two[0][1].to_bits(), full[r][c].to_bits());
                    // The portable kernel (other CPUs) computes the same sums.
                    let p = unsafe { portable::<1, 1>(WKind::F32, &[xs[r]], &[ws[c]], n) };
                    assert!((p[0][0] - full[r][c]).abs() <= 1e-5 * (1.0 + exact.abs() as f32));
                }
            }
        }
    }

    /// On an AVX-512 machine the dispatcher never picks the 8-lane kernels: check them directly
    /// (every shape gives the bits of the 1 × 1 tile, close to the 16-lane result).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn eight_lane_kernels_agree_across_shapes() {
        if !crate::kernels::simd::has_avx2_f16c() {
            return;
        }
        for n in [7usize, 16, 33, 100] {
            let x = rows(4 * n, 5);
            let w = rows(4 * n, 6);
            let xs: [*const f32; 4] = std::array::from_fn(|r| x[r * n..].as_ptr());
            let ws: [*const u8; 4] = std::array::from_fn(|c| w[c * n..].as_ptr().cast());
            // SAFETY: AVX2/FMA/F16C are present; every pointer covers `n` values.
            let full = unsafe { avx2::tile::<0, 4, 4>(&xs, &ws, n, 0) };
            let wide = unsafe { tile::<4, 4>(WKind::F32, &xs, &ws, n, 0) };
            for r in 0..4 {
                for c in 0..4 {
                    // SAFETY: as above.
                    let one = unsafe { avx2::tile::<0, 1, 1>(&[xs[r]], &[ws[c]], n, 0) };
                    assert_eq!(one[0][0].to_bits(), full[r][c].to_bits(), "n {n}");
                    assert!((wide[r][c] - full[r][c]).abs() <= 1e-5 * (1.0 + full[r][c].abs()));
                }
            }
        }
    }

    /// f16 and bf16 rows give exactly what their f32 widening gives.
    #[test]
    fn half_weights_equal_their_f32_widening() {
        for n in [5usize, 16, 41] {
            let x = rows(n, 3);
            let wf = rows(n, 4);
            for (kind, bits) in [
                (
                    WKind::F16,
                    wf.iter()
                        .map(|&v| half::f16::from_f32(v).to_bits())
                        .collect::<Vec<u16>>(),
                ),
                (
                    WKind::Bf16,
                    wf.iter()
                        .map(|&v| half::bf16::from_f32(v).to_bits())
                        .collect(),
                ),
            ] {
                let widened: Vec<f32> = bits
                    .iter()
                    // SAFETY: one value per pointer.
                    .map(|b| unsafe { weight(kind, (b as *const u16).cast(), 0) })
                    .collect();
                // SAFETY: pointers cover `n` values.
                let a = unsafe { tile::<1, 1>(kind, &[x.as_ptr()], &[bits.as_ptr().cast()], n, 0) };
                let b = unsafe {
                    tile::<1, 1>(WKind::F32, &[x.as_ptr()], &[widened.as_ptr().cast()], n, 0)
                };
                assert_eq!(a[0][0].to_bits(), b[0][0].to_bits(), "{kind:?} n {n}");
            }
        }
    }
}
