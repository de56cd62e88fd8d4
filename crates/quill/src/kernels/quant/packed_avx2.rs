//! AVX2 kernels over interleaved groups ([`super::packed`]): `R` activation rows against the 8
//! weight rows of a group, one output per vector lane.
//!
//! Per block and activation row: the block's quant bytes of all 8 weight rows come as 32-byte
//! loads (4 values of each row), each multiplied (`maddubs`) by the matching 4 activation values
//! broadcast to every lane; the 16-bit pair sums add up in place (Q4_0/Q4_1: 8 products of at
//! most 2·15·127 fit in i16) and `madd` by ones leaves lane `c` = the block's integer dot product
//! of weight row `c`. Then per lane `acc += (d_w·d_x)·Σ` (Q4_1: `+ m_w·s_x`) with separate
//! multiplies and adds: the arithmetic of the portable row kernels, bit for bit.

use std::arch::x86_64::*;

use super::act::QRow;
use super::packed::LANES;

/// Group-block bytes (8 blocks) and quant-byte offset, for kernel `T` (0 Q8_0, 1 Q4_0, 2 Q4_1).
const fn layout(t: u8) -> (usize, usize) {
    match t {
        0 => (8 * 34, 16),
        1 => (8 * 18, 16),
        _ => (8 * 20, 32),
    }
}

/// Four bytes at `p` as the same i32 in every lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bcast4(p: *const i8) -> __m256i {
    _mm256_set1_epi32(p.cast::<i32>().read_unaligned())
}

/// `R` activation rows against one interleaved group of `blocks` group-blocks at `g`.
///
/// # Safety
/// AVX2, FMA and F16C must be present; `g` must cover `blocks` group-blocks of kernel `T`'s
/// layout, and each `x[r]` `blocks · 32` values (with their scales and sums).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const T: u8, const R: usize>(
    x: &[QRow<'_>; R],
    g: *const u8,
    blocks: usize,
) -> [[f32; LANES]; R] {
    let (gb, head) = layout(T);
    let ones = _mm256_set1_epi16(1);
    let m4 = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..blocks {
        let p = g.add(b * gb);
        let qs = p.add(head);
        let mut isum = [_mm256_setzero_si256(); R];
        if T == 0 {
            // Signed bytes: the weights lend their sign to the activations (maddubs multiplies
            // unsigned by signed); one product per 16-bit pair can reach 2·128·127, so each is
            // widened to i32 before adding.
            for u in 0..8 {
                let v = _mm256_loadu_si256(qs.add(32 * u).cast());
                let av = _mm256_sign_epi8(v, v);
                for r in 0..R {
                    let xb = bcast4(x[r].q.as_ptr().add(32 * b + 4 * u));
                    let prod = _mm256_maddubs_epi16(av, _mm256_sign_epi8(xb, v));
                    isum[r] = _mm256_add_epi32(isum[r], _mm256_madd_epi16(prod, ones));
                }
            }
        } else {
            for u in 0..4 {
                let v = _mm256_loadu_si256(qs.add(32 * u).cast());
                let lo = _mm256_and_si256(v, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                for r in 0..R {
                    let xq = x[r].q.as_ptr().add(32 * b + 4 * u);
                    let pl = _mm256_maddubs_epi16(lo, bcast4(xq));
                    let ph = _mm256_maddubs_epi16(hi, bcast4(xq.add(16)));
                    isum[r] = _mm256_add_epi16(isum[r], _mm256_add_epi16(pl, ph));
                }
            }
            for s in isum.iter_mut() {
                *s = _mm256_madd_epi16(*s, ones);
            }
        }
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(p.cast()));
        for r in 0..R {
            let mut i = isum[r];
            if T == 1 {
                // Q4_0 nibbles are stored as 0..16 for q − 8: subtract 8·Σx exactly.
                let sx = *x[r].sum16.get_unchecked(2 * b) as i32
                    + *x[r].sum16.get_unchecked(2 * b + 1) as i32;
                i = _mm256_sub_epi32(i, _mm256_set1_epi32(8 * sx));
            }
            let dx = _mm256_set1_ps(*x[r].d.get_unchecked(b));
            let mut t = _mm256_mul_ps(_mm256_mul_ps(dw, dx), _mm256_cvtepi32_ps(i));
            if T == 2 {
                let mw = _mm256_cvtph_ps(_mm_loadu_si128(p.add(16).cast()));
                t = _mm256_add_ps(
                    t,
                    _mm256_mul_ps(mw, _mm256_set1_ps(*x[r].s.get_unchecked(b))),
                );
            }
            acc[r] = _mm256_add_ps(acc[r], t);
        }
    }
    let mut out = [[0.0f32; LANES]; R];
    for r in 0..R {
        _mm256_storeu_ps(out[r].as_mut_ptr(), acc[r]);
    }
    out
}

/// `groups` interleaved groups from `w` against every row of `x`, four rows at a time while a
/// group's weights are in L1; `emit(r, first_weight_row, lanes)`.
///
/// # Safety
/// As [`tile`], for every group `0..groups` at `w + group · blocks · gb`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn span<const T: u8, F>(
    x: &[QRow<'_>],
    w: *const u8,
    blocks: usize,
    groups: usize,
    emit: &mut F,
) where
    F: FnMut(usize, usize, [f32; LANES]),
{
    let gbytes = blocks * layout(T).0;
    for g in 0..groups {
        let p = w.add(g * gbytes);
        let mut r = 0;
        while r < x.len() {
            let n = (x.len() - r).min(4);
            let rows = &x[r..r + n];
            macro_rules! run {
                ($n:literal) => {
                    if let Ok(xs) = <&[QRow<'_>; $n]>::try_from(rows) {
                        for (i, v) in tile::<T, $n>(xs, p, blocks).into_iter().enumerate() {
                            emit(r + i, g * LANES, v);
                        }
                    }
                };
            }
            match n {
                4 => run!(4),
                3 => run!(3),
                2 => run!(2),
                _ => run!(1),
            }
            r += n;
        }
    }
}
