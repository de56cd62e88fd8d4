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

/// How far ahead of the block being read decode prefetches weights (bytes).
const PREFETCH: usize = 1024;

/// Decode streams the weights once: asks for the `len` bytes `PREFETCH` ahead of `p` (a
/// prefetch past the matrix's end is a no-op). Measured: GPT-2 q4_0 decode, medians of 6
/// alternated runs, 193 → 204 tokens/s in the interleaved kernel, → 215 with the Q6_K head too.
#[inline(always)]
pub(super) unsafe fn prefetch_ahead(p: *const u8, len: usize) {
    let ahead = p.wrapping_add(PREFETCH);
    for l in (0..len).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(l).cast());
    }
}

/// The horizontal sums of `a` and of `b`, reduced together.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum2_epi32(a: __m256i, b: __m256i) -> (i32, i32) {
    let h = _mm256_hadd_epi32(a, b);
    let s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    let s = _mm_hadd_epi32(s, s);
    (_mm_cvtsi128_si32(s), _mm_extract_epi32(s, 1))
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

/// A shuffle mask that spreads i16 element `lo` of each 128-bit lane over the low lane's 8
/// words and element `hi` over the high lane's: with `_mm256_shuffle_epi8` on a register holding
/// 8 scales in both lanes, the scale vector of two 16-value sub-blocks in one instruction.
#[inline(always)]
unsafe fn pick16(lo: usize, hi: usize) -> __m256i {
    let b = |e: usize, k: usize| (2 * e + k % 2) as i8;
    let m: [i8; 32] = std::array::from_fn(|k| if k < 16 { b(lo, k) } else { b(hi, k) });
    _mm256_loadu_si256(m.as_ptr().cast())
}

/// Q6_K rows of `sblocks` 256-value super-blocks.
///
/// Per output and super-block the integer total `Σ_s sc_s · Σ (q_w − 32)·q_x` is formed exactly
/// (`Σ q_w·q_x` by maddubs on the unsigned 6-bit values, then `madd` by the two sub-blocks'
/// scales, minus `32·Σ_s sc_s·Σq_x` from the activations' 16-value sums), then a scalar f32
/// accumulator gains `(d_w·d_x) · total`. Per 128-value half the weights' `ql` and `qh` bytes
/// are loaded once, and each 32-value chunk's scale vector is one byte shuffle.
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
    let m4 = _mm256_set1_epi8(0x0F);
    let m30 = _mm256_set1_epi8(0x30);
    let masks: [__m256i; 4] = std::array::from_fn(|k| pick16(2 * k, 2 * k + 1));
    let mut out = [[0.0f32; C]; R];
    for sb in 0..sblocks {
        if R == 1 {
            for p in w {
                prefetch_ahead(p.add(sb * 210), 210);
            }
        }
        let mut isum = [[_mm256_setzero_si256(); C]; R];
        for n in 0..2 {
            let mut ql = [[_mm256_setzero_si256(); 2]; C];
            let mut qh = [_mm256_setzero_si256(); C];
            let mut sc = [_mm256_setzero_si256(); C];
            for c in 0..C {
                let p = w[c].add(sb * 210);
                ql[c] = [
                    _mm256_loadu_si256(p.add(64 * n).cast()),
                    _mm256_loadu_si256(p.add(64 * n + 32).cast()),
                ];
                qh[c] = _mm256_loadu_si256(p.add(128 + 32 * n).cast());
                // This half's 8 signed scales as i16, in both lanes.
                let s8 = _mm_loadl_epi64(p.add(192 + 8 * n).cast());
                sc[c] = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(s8));
            }
            for (part, mask) in masks.iter().enumerate() {
                let j = 4 * n + part;
                let mut wq = [_mm256_setzero_si256(); C];
                let mut scv = [_mm256_setzero_si256(); C];
                for c in 0..C {
                    // Value bits 0..4 from a nibble of `ql`, bits 4..6 from bits 2·part.. of
                    // `qh`, moved to 4..6 (16-bit shifts: what crosses a byte is masked off).
                    let lo = match part {
                        0 => _mm256_and_si256(ql[c][0], m4),
                        1 => _mm256_and_si256(ql[c][1], m4),
                        2 => _mm256_and_si256(_mm256_srli_epi16(ql[c][0], 4), m4),
                        _ => _mm256_and_si256(_mm256_srli_epi16(ql[c][1], 4), m4),
                    };
                    let h = match part {
                        0 => _mm256_slli_epi16(qh[c], 4),
                        1 => _mm256_slli_epi16(qh[c], 2),
                        2 => qh[c],
                        _ => _mm256_srli_epi16(qh[c], 2),
                    };
                    wq[c] = _mm256_or_si256(lo, _mm256_and_si256(h, m30));
                    scv[c] = _mm256_shuffle_epi8(sc[c], *mask);
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

/// The 8 six-bit scales and the 8 six-bit mins of a Q4_K / Q5_K super-block, as bytes, from
/// its 12 packed bytes at `q` (the layout of `kquants::scale_min`), with 32-bit word operations.
#[inline(always)]
unsafe fn scales_mins(q: *const u8) -> (u64, u64) {
    let word = |i: usize| q.add(4 * i).cast::<u32>().read_unaligned();
    let (w0, w1, w2) = (word(0), word(1), word(2));
    let (k6, k4, k2) = (0x3F3F_3F3Fu32, 0x0F0F_0F0Fu32, 0x0303_0303u32);
    // Scales 0..4: the low 6 bits of bytes 0..4; 4..8: the low nibbles of bytes 8..12 with
    // the top 2 bits of bytes 0..4 above them. Mins likewise from bytes 4..8 and the high
    // nibbles of 8..12.
    let sc_lo = w0 & k6;
    let sc_hi = (w2 & k4) | (((w0 >> 6) & k2) << 4);
    let m_lo = w1 & k6;
    let m_hi = ((w2 >> 4) & k4) | (((w1 >> 6) & k2) << 4);
    (
        sc_lo as u64 | (sc_hi as u64) << 32,
        m_lo as u64 | (m_hi as u64) << 32,
    )
}

/// Q4_K (`FIVE` false, 144-byte super-blocks) and Q5_K (`FIVE`, 176 bytes) rows of `sblocks`
/// 256-value super-blocks.
///
/// Per output and super-block both integer totals of the portable kernel are formed exactly:
/// `Σ_s sc_s · Σ q_w·q_x` (maddubs of the unsigned 4- or 5-bit values against the activations,
/// then `madd` by the sub-block's scale, spread by a byte shuffle) and `Σ_s m_s · Σq_x` (the
/// mins against the activations' 16-value sums); then `d_x · (d·total − dmin·mins)` is added in
/// super-block order, as `kquants::dot_q4_k` / `dot_q5_k` compute it, so the bits are the same.
///
/// # Safety
/// As [`tile32`], with whole super-blocks and `sblocks · 256` activation values (with their
/// 16-value sums).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn tile_q45k<const FIVE: bool, const R: usize, const C: usize>(
    x: &[QRow<'_>; R],
    w: &[*const u8; C],
    sblocks: usize,
) -> [[f32; C]; R] {
    let bytes = if FIVE { 176 } else { 144 };
    let qs_at = if FIVE { 48 } else { 16 };
    let m4 = _mm256_set1_epi8(0x0F);
    let b4 = _mm256_set1_epi8(0x10);
    let masks: [__m256i; 8] = std::array::from_fn(|e| pick16(e, e));
    let mut out = [[0.0f32; C]; R];
    for sb in 0..sblocks {
        if R == 1 {
            for p in w {
                prefetch_ahead(p.add(sb * bytes), bytes);
            }
        }
        let mut sc = [_mm256_setzero_si256(); C];
        let mut mins = [_mm256_setzero_si256(); C];
        let mut qh = [_mm256_setzero_si256(); C];
        for c in 0..C {
            let p = w[c].add(sb * bytes);
            let (s, m) = scales_mins(p.add(4));
            // The 8 scales as i16 in both lanes; each min twice in a row (it weighs both
            // 16-value sums of its sub-block).
            let s = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(s as i64));
            sc[c] = _mm256_broadcastsi128_si256(s);
            let m = _mm_cvtsi64_si128(m as i64);
            mins[c] = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m));
            if FIVE {
                qh[c] = _mm256_loadu_si256(p.add(16).cast());
            }
        }
        let mut isum = [[_mm256_setzero_si256(); C]; R];
        for j in 0..4 {
            let mut wlo = [_mm256_setzero_si256(); C];
            let mut whi = [_mm256_setzero_si256(); C];
            let mut slo = [_mm256_setzero_si256(); C];
            let mut shi = [_mm256_setzero_si256(); C];
            for c in 0..C {
                let q = _mm256_loadu_si256(w[c].add(sb * bytes + qs_at + 32 * j).cast());
                wlo[c] = _mm256_and_si256(q, m4);
                whi[c] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                if FIVE {
                    // Bit 2j of qh[l] is value l's fifth bit in the low half, bit 2j+1 in the
                    // high half: each moved to bit 4 (16-bit shifts; the rest masked off).
                    let (h0, h1) = match j {
                        0 => (_mm256_slli_epi16(qh[c], 4), _mm256_slli_epi16(qh[c], 3)),
                        1 => (_mm256_slli_epi16(qh[c], 2), _mm256_slli_epi16(qh[c], 1)),
                        2 => (qh[c], _mm256_srli_epi16(qh[c], 1)),
                        _ => (_mm256_srli_epi16(qh[c], 2), _mm256_srli_epi16(qh[c], 3)),
                    };
                    wlo[c] = _mm256_or_si256(wlo[c], _mm256_and_si256(h0, b4));
                    whi[c] = _mm256_or_si256(whi[c], _mm256_and_si256(h1, b4));
                }
                slo[c] = _mm256_shuffle_epi8(sc[c], masks[2 * j]);
                shi[c] = _mm256_shuffle_epi8(sc[c], masks[2 * j + 1]);
            }
            for r in 0..R {
                let xq = x[r].q.as_ptr().add(sb * 256 + 64 * j);
                let xlo = _mm256_loadu_si256(xq.cast());
                let xhi = _mm256_loadu_si256(xq.add(32).cast());
                for c in 0..C {
                    // Pairs of at most 2·31·128 fit i16; times a 6-bit scale fits i32.
                    let pl = _mm256_madd_epi16(_mm256_maddubs_epi16(wlo[c], xlo), slo[c]);
                    let ph = _mm256_madd_epi16(_mm256_maddubs_epi16(whi[c], xhi), shi[c]);
                    isum[r][c] = _mm256_add_epi32(isum[r][c], _mm256_add_epi32(pl, ph));
                }
            }
        }
        for c in 0..C {
            let p = w[c].add(sb * bytes);
            let (d, dmin) = (f16(p), f16(p.add(2)));
            for r in 0..R {
                let bs = _mm256_loadu_si256(x[r].sum16.as_ptr().add(sb * 16).cast());
                let (sum_q, sum_m) = hsum2_epi32(isum[r][c], _mm256_madd_epi16(mins[c], bs));
                out[r][c] += *x[r].d.get_unchecked(sb) * (d * sum_q as f32 - dmin * sum_m as f32);
            }
        }
    }
    out
}

/// The tile of kernel `K` (0 Q8_0, 1 Q4_0, 2 Q4_1: [`tile32`]; 3 Q6_K: [`tile_q6k`]; 4 Q4_K,
/// 5 Q5_K: [`tile_q45k`]) over
/// `groups` groups of `C` consecutive weight rows starting at `w`, the tile inlined so per group
/// only its own work remains; `emit(first_row, tile)`.
///
/// # Safety
/// As [`tile32`] / [`tile_q6k`] / [`tile_q45k`], for every row `0..groups·C` at `w + row·row_bytes`;
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
    let blocks = row_bytes / [34, 18, 20, 210, 144, 176][K as usize];
    for g in 0..groups {
        let p: [*const u8; C] = std::array::from_fn(|c| w.add((g * C + c) * row_bytes));
        let tile = match K {
            0 => tile32::<0, R, C>(x, &p, blocks),
            1 => tile32::<1, R, C>(x, &p, blocks),
            2 => tile32::<2, R, C>(x, &p, blocks),
            3 => tile_q6k::<R, C>(x, &p, blocks),
            4 => tile_q45k::<false, R, C>(x, &p, blocks),
            _ => tile_q45k::<true, R, C>(x, &p, blocks),
        };
        emit(g * C, tile);
    }
}
