//! AVX2 integer dot-product micro-kernels: `R` quantized activation rows against `C` quantized
//! weight rows. Weights are unpacked to bytes once per block and shared by the `R` rows; the
//! products are `maddubs` (u8 × i8 → pairs of i16) then `madd` (→ i32), scaled per block.
//!
//! Each output's arithmetic does not depend on `R` or `C` (see the parent module), so every
//! tile shape gives the same bits.

use std::arch::x86_64::*;

use super::act::QRow;
use super::QK;
use crate::kernels::simd::hsum256;

/// An f16 at `p` as f32 (F16C).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16(p: *const u8) -> f32 {
    let bits = p.cast::<u16>().read_unaligned() as i32;
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)))
}

/// The 32 nibbles of 16 bytes at `p` as bytes 0..16, in value order (low nibbles, then high).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let qs = _mm_loadu_si128(p.cast());
    let m = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(qs, m);
    let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), m);
    _mm256_set_m128i(hi, lo)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

/// Q8_0 (`T` = 0), Q4_0 (1) and Q4_1 (2) rows of `blocks` 32-value blocks.
///
/// Per output: two 8-lane f32 accumulators (even and odd blocks, so consecutive blocks do not
/// wait on each other's fused multiply-add) gain `(d_w·d_x) · Σ_4 q_w·q_x` (lane `l` holding
/// values `4l..4l+4` of the block) per block; the result is the horizontal sum of their sum;
/// Q4_1 adds
/// `m_w · (d_x·Σq_x)` per block to a scalar; the result is the horizontal sum (plus that scalar).
///
/// # Safety
/// AVX2, FMA and F16C must be present; each `w[c]` must cover `blocks` blocks and each `x[r]`
/// `blocks · 32` values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn tile32<const T: u8, const R: usize, const C: usize>(
    x: &[QRow<'_>; R],
    w: &[*const u8; C],
    blocks: usize,
) -> [[f32; C]; R] {
    let bb = match T {
        0 => 34,
        1 => 18,
        _ => 20,
    };
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[[_mm256_setzero_ps(); 2]; C]; R];
    let mut sm = [[0.0f32; C]; R];
    let mut wq = [_mm256_setzero_si256(); C];
    let mut aw = [_mm256_setzero_si256(); C];
    let mut dw = [0.0f32; C];
    let mut mw = [0.0f32; C];
    for b in 0..blocks {
        for c in 0..C {
            let p = w[c].add(b * bb);
            dw[c] = f16(p);
            match T {
                0 => wq[c] = _mm256_loadu_si256(p.add(2).cast()),
                1 => wq[c] = _mm256_sub_epi8(nibbles(p.add(2)), _mm256_set1_epi8(8)),
                _ => {
                    wq[c] = nibbles(p.add(4));
                    mw[c] = f16(p.add(2));
                }
            }
            // maddubs multiplies unsigned by signed bytes: signed weights lend their sign to
            // the activations.
            aw[c] = if T == 2 {
                wq[c]
            } else {
                _mm256_sign_epi8(wq[c], wq[c])
            };
        }
        for r in 0..R {
            let xq = _mm256_loadu_si256(x[r].q.as_ptr().add(b * QK).cast());
            let dx = *x[r].d.get_unchecked(b);
            for c in 0..C {
                let xs = if T == 2 {
                    xq
                } else {
                    _mm256_sign_epi8(xq, wq[c])
                };
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw[c], xs), ones);
                let d = _mm256_set1_ps(dw[c] * dx);
                let a = &mut acc[r][c][b & 1];
                *a = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), *a);
                if T == 2 {
                    sm[r][c] += mw[c] * *x[r].s.get_unchecked(b);
                }
            }
        }
    }
    let mut out = [[0.0f32; C]; R];
    for r in 0..R {
        for c in 0..C {
            out[r][c] = hsum256(_mm256_add_ps(acc[r][c][0], acc[r][c][1]));
            if T == 2 {
                out[r][c] += sm[r][c];
            }
        }
    }
    out
}

/// Bytes 0..64 of a Q6_K chunk: low nibbles from `ql` (`high`: the high nibbles) with bits
/// `shift..shift+2` of `qh` on top.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_chunk(ql: __m256i, qh: __m256i, high: bool, shift: u32) -> __m256i {
    let m4 = _mm256_set1_epi8(0x0F);
    let m2 = _mm256_set1_epi8(3);
    let lo = if high {
        _mm256_and_si256(_mm256_srli_epi16(ql, 4), m4)
    } else {
        _mm256_and_si256(ql, m4)
    };
    let h = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(shift as i32)), m2);
    _mm256_or_si256(lo, _mm256_slli_epi16(h, 4))
}

/// Q6_K rows of `sblocks` 256-value super-blocks.
///
/// Per output and super-block the integer total `Σ_s sc_s · Σ (q_w − 32)·q_x` is formed exactly
/// (`Σ q_w·q_x` by maddubs on the unsigned 6-bit values, minus `32·Σ_s sc_s·Σq_x` from the
/// activations' 16-value sums), then a scalar f32 accumulator gains `(d_w·d_x) · total`.
///
/// # Safety
/// As [`tile32`], with 210-byte super-blocks and `sblocks · 256` activation values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn tile_q6k<const R: usize, const C: usize>(
    x: &[QRow<'_>; R],
    w: &[*const u8; C],
    sblocks: usize,
) -> [[f32; C]; R] {
    let mut out = [[0.0f32; C]; R];
    for sb in 0..sblocks {
        let mut isum = [[_mm256_setzero_si256(); C]; R];
        let mut wq = [_mm256_setzero_si256(); C];
        let mut scv = [_mm256_setzero_si256(); C];
        for n in 0..2 {
            for part in 0..4 {
                let j = 4 * n + part;
                for c in 0..C {
                    let p = w[c].add(sb * 210);
                    let ql = _mm256_loadu_si256(p.add(64 * n + 32 * (part % 2)).cast());
                    let qh = _mm256_loadu_si256(p.add(128 + 32 * n).cast());
                    wq[c] = q6_chunk(ql, qh, part >= 2, 2 * part as u32);
                    let s0 = *p.add(192 + 2 * j) as i8 as i16;
                    let s1 = *p.add(193 + 2 * j) as i8 as i16;
                    scv[c] = _mm256_set_m128i(_mm_set1_epi16(s1), _mm_set1_epi16(s0));
                }
                for r in 0..R {
                    let xq = _mm256_loadu_si256(x[r].q.as_ptr().add(sb * 256 + 32 * j).cast());
                    for c in 0..C {
                        let p16 = _mm256_maddubs_epi16(wq[c], xq);
                        isum[r][c] = _mm256_add_epi32(isum[r][c], _mm256_madd_epi16(p16, scv[c]));
                    }
                }
            }
        }
        for c in 0..C {
            let p = w[c].add(sb * 210);
            let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(192).cast()));
            let dw = f16(p.add(208));
            for r in 0..R {
                let bs = _mm256_loadu_si256(x[r].sum16.as_ptr().add(sb * 16).cast());
                let corr = _mm256_madd_epi16(sc16, bs);
                let total = hsum_epi32(_mm256_sub_epi32(isum[r][c], _mm256_slli_epi32(corr, 5)));
                out[r][c] += (dw * *x[r].d.get_unchecked(sb)) * total as f32;
            }
        }
    }
    out
}

/// The tile of kernel `K` (0 Q8_0, 1 Q4_0, 2 Q4_1: [`tile32`]; 3 Q6_K: [`tile_q6k`]) over
/// `groups` groups of `C` consecutive weight rows starting at `w`, the tile inlined so per group
/// only its own work remains; `emit(first_row, tile)`.
///
/// # Safety
/// As [`tile32`] / [`tile_q6k`], for every row `0..groups·C` at `w + row·row_bytes`;
/// `row_bytes` is the row's whole-block size.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn span<const K: u8, const R: usize, const C: usize, F>(
    x: &[QRow<'_>; R],
    w: *const u8,
    row_bytes: usize,
    groups: usize,
    emit: &mut F,
) where
    F: FnMut(usize, [[f32; C]; R]),
{
    let blocks = row_bytes / [34, 18, 20, 210][K as usize];
    for g in 0..groups {
        let p: [*const u8; C] = std::array::from_fn(|c| w.add((g * C + c) * row_bytes));
        let tile = match K {
            0 => tile32::<0, R, C>(x, &p, blocks),
            1 => tile32::<1, R, C>(x, &p, blocks),
            2 => tile32::<2, R, C>(x, &p, blocks),
            _ => tile_q6k::<R, C>(x, &p, blocks),
        };
        emit(g * C, tile);
    }
}
