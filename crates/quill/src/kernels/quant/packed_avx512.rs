//! AVX-512 VNNI kernels over two interleaved groups at once ([`super::packed`]): lanes 0..8 of a
//! 512-bit vector are the 8 weight rows of one group, lanes 8..16 those of the next, and every
//! activation broadcast feeds both. Each lane computes exactly what the 256-bit kernels of
//! [`super::packed_avx2`] compute for it (the same exact integer sums, then the same float
//! steps), so the bits do not depend on which kernel ran. Batches and prefill use them; decode
//! (one row, bound by memory) stays on the 256-bit kernels.

use std::arch::x86_64::*;

use super::act::QRow;
use super::packed::{K_DMIN, K_MN, K_Q, K_Q5H, K_SC, LANES, Q6_HIGH, Q6_LOW, Q6_SCALES};
use super::packed_avx2::{layout, MAX_ROWS};

/// Two 32-byte loads, from `p0` (lanes 0..8) and `p1` (lanes 8..16), as one vector.
#[inline(always)]
unsafe fn both(p0: *const u8, p1: *const u8) -> __m512i {
    _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256(p0.cast())),
        _mm256_loadu_si256(p1.cast()),
        1,
    )
}

/// Hands a pair's outputs to `emit(r, first_weight_row, lanes)`: `acc[r]` holds row `r`'s 16
/// outputs, group `g` (its rows from `8g`) in lanes 0..8 and group `g + 1` in lanes 8..16.
#[inline(always)]
pub(super) unsafe fn emit_pair<F>(acc: &[__m512], g: usize, emit: &mut F)
where
    F: FnMut(usize, usize, [f32; LANES]),
{
    for (r, a) in acc.iter().enumerate() {
        let mut out = [0.0f32; 2 * LANES];
        _mm512_storeu_ps(out.as_mut_ptr(), *a);
        for (h, lanes) in out.chunks_exact(LANES).enumerate() {
            let mut v = [0.0f32; LANES];
            v.copy_from_slice(lanes);
            emit(r, (g + h) * LANES, v);
        }
    }
}

/// Eight f16 at `p0` and eight at `p1`, as 16 f32 lanes.
#[inline(always)]
pub(super) unsafe fn halves(p0: *const u8, p1: *const u8) -> __m512 {
    _mm512_cvtph_ps(_mm256_set_m128i(
        _mm_loadu_si128(p1.cast()),
        _mm_loadu_si128(p0.cast()),
    ))
}

/// `packed_avx2::group` for two groups at once on 512-bit vectors (lanes 0..8: group `g0`,
/// 8..16: `g1`), with AVX-512 VNNI: half the instructions per weight. Each lane's arithmetic is
/// `group`'s (exact integer dot product, then `(d_w·d_x)·i` and the add), so the bits are the
/// same. AVX-512 has no byte `sign`: Q8_0 negates the activations under a mask of the negative
/// weights.
///
/// # Safety
/// As `packed_avx2::group` with `V`, for both groups, and AVX-512 BW must be present.
#[inline(always)]
pub(super) unsafe fn group_pair<const T: u8>(
    x: &[QRow<'_>],
    g0: *const u8,
    g1: *const u8,
    blocks: usize,
    acc: &mut [__m512; MAX_ROWS],
) {
    let (gb, head) = layout(T);
    let ones = _mm512_set1_epi16(1);
    let m4 = _mm512_set1_epi8(0x0F);
    let zero = _mm512_setzero_si512();
    let rows = x.len().min(MAX_ROWS);
    for a in acc[..rows].iter_mut() {
        *a = _mm512_setzero_ps();
    }
    for b in 0..blocks {
        let (p0, p1) = (g0.add(b * gb), g1.add(b * gb));
        let (q0, q1) = (p0.add(head), p1.add(head));
        let dw = halves(p0, p1);
        let mw = if T == 2 {
            halves(p0.add(16), p1.add(16))
        } else {
            _mm512_setzero_ps()
        };
        // Q8_0: magnitudes (0..8) and the masks of negative weights; Q4: low and high nibbles.
        let mut wv = [zero; 8];
        let mut neg = [0u64; 8];
        if T == 0 {
            for u in 0..8 {
                let v = both(q0.add(32 * u), q1.add(32 * u));
                wv[u] = _mm512_abs_epi8(v);
                neg[u] = _mm512_movepi8_mask(v);
            }
        } else {
            for u in 0..4 {
                let v = both(q0.add(32 * u), q1.add(32 * u));
                wv[2 * u] = _mm512_and_si512(v, m4);
                wv[2 * u + 1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
            }
        }
        for r in 0..rows {
            let xr = x.get_unchecked(r);
            let xq = xr.q.as_ptr().add(32 * b);
            let x4 = |k: usize| _mm512_set1_epi32(xq.add(k).cast::<i32>().read_unaligned());
            let i = if T == 0 {
                let mut s = [zero; 2];
                for u in 0..8 {
                    let xb = x4(4 * u);
                    let xs = _mm512_mask_sub_epi8(xb, neg[u], zero, xb);
                    s[u % 2] = _mm512_dpbusd_epi32(s[u % 2], wv[u], xs);
                }
                _mm512_add_epi32(s[0], s[1])
            } else {
                let mut lo = if T == 1 {
                    let o = xr.q4.as_ptr().add(b).cast::<i32>().read_unaligned();
                    _mm512_madd_epi16(_mm512_set1_epi32(o), ones)
                } else {
                    zero
                };
                let mut hi = zero;
                for u in 0..4 {
                    lo = _mm512_dpbusd_epi32(lo, wv[2 * u], x4(4 * u));
                    hi = _mm512_dpbusd_epi32(hi, wv[2 * u + 1], x4(16 + 4 * u));
                }
                _mm512_add_epi32(lo, hi)
            };
            let dx = _mm512_set1_ps(*xr.d.get_unchecked(b));
            let mut t = _mm512_mul_ps(_mm512_mul_ps(dw, dx), _mm512_cvtepi32_ps(i));
            if T == 2 {
                t = _mm512_add_ps(t, _mm512_mul_ps(mw, _mm512_set1_ps(*xr.s.get_unchecked(b))));
            }
            let a = acc.get_unchecked_mut(r);
            *a = _mm512_add_ps(*a, t);
        }
    }
}

/// A Q4_K/Q5_K super-block's scales and mins for two groups (group-blocks at `p0`, `p1`):
/// `scv[s]` holds each lane's sub-block `s` scale (6 bits), `mnv[p]` each lane's mins of
/// sub-blocks `2p` and `2p + 1` in its two 16-bit halves (low 2 bits from the scale bytes'
/// top, high 4 from a nibble).
///
/// # Safety
/// AVX-512 F/BW must be present; `p0`/`p1` must cover a group-block.
#[inline(always)]
pub(super) unsafe fn q45k_scales(p0: *const u8, p1: *const u8) -> ([__m512i; 8], [__m512i; 4]) {
    let m6 = _mm512_set1_epi32(0x3F);
    let n4 = _mm512_set1_epi32(0x0F);
    // 8 bytes of each group at `at`, widened to 16 i32 lanes.
    let bytes = |at: usize| {
        let (a, b) = (
            _mm_loadl_epi64(p0.add(at).cast()),
            _mm_loadl_epi64(p1.add(at).cast()),
        );
        _mm512_cvtepu8_epi32(_mm_unpacklo_epi64(a, b))
    };
    let mut scv = [_mm512_setzero_si512(); 8];
    let mut mnv = [_mm512_setzero_si512(); 4];
    for (pr, mn) in mnv.iter_mut().enumerate() {
        let (a, b) = (bytes(K_SC + 16 * pr), bytes(K_SC + 16 * pr + 8));
        scv[2 * pr] = _mm512_and_si512(a, m6);
        scv[2 * pr + 1] = _mm512_and_si512(b, m6);
        let n = bytes(K_MN + 8 * pr);
        let lo = _mm512_or_si512(
            _mm512_slli_epi32(_mm512_and_si512(n, n4), 2),
            _mm512_srli_epi32(a, 6),
        );
        let hi = _mm512_or_si512(
            _mm512_slli_epi32(_mm512_srli_epi32(n, 4), 2),
            _mm512_srli_epi32(b, 6),
        );
        *mn = _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
    }
    (scv, mnv)
}

/// Sub-block `s`'s 6-bit scale of each lane (a Q4_K/Q5_K super-block of two groups at `p0`,
/// `p1`): [`q45k_scales`]'s `scv[s]` alone.
///
/// # Safety
/// As [`q45k_scales`].
#[inline(always)]
pub(super) unsafe fn q45k_scale(p0: *const u8, p1: *const u8, s: usize) -> __m512i {
    let (a, b) = (
        _mm_loadl_epi64(p0.add(K_SC + 8 * s).cast()),
        _mm_loadl_epi64(p1.add(K_SC + 8 * s).cast()),
    );
    _mm512_and_si512(
        _mm512_cvtepu8_epi32(_mm_unpacklo_epi64(a, b)),
        _mm512_set1_epi32(0x3F),
    )
}

/// Sub-block `s` of a Q4_K (`FIVE` false) or Q5_K super-block for two groups, as unsigned
/// bytes ready for the byte products: lane `l` (row `l` of the pair) of `wv[2u]` holds values
/// `4u..4u + 4`, of `wv[2u + 1]` values `16 + 4u..16 + 4u + 4`.
///
/// # Safety
/// AVX-512 F/BW must be present; `p0`/`p1` must cover a group-block.
#[inline(always)]
pub(super) unsafe fn q45k_weights<const FIVE: bool>(
    p0: *const u8,
    p1: *const u8,
    s: usize,
) -> [__m512i; 8] {
    let m4 = _mm512_set1_epi8(0x0F);
    let b4 = _mm512_set1_epi8(0x10);
    let (q0, q1) = (p0.add(K_Q + 128 * s), p1.add(K_Q + 128 * s));
    let hb = if FIVE {
        both(p0.add(K_Q5H + 32 * s), p1.add(K_Q5H + 32 * s))
    } else {
        _mm512_setzero_si512()
    };
    // Fifth bit of value 4k + j: bit k of byte j, moved to bit 4.
    let fifth = |k: usize| {
        let v = match k {
            0 => _mm512_slli_epi16(hb, 4),
            1 => _mm512_slli_epi16(hb, 3),
            2 => _mm512_slli_epi16(hb, 2),
            3 => _mm512_slli_epi16(hb, 1),
            4 => hb,
            5 => _mm512_srli_epi16(hb, 1),
            6 => _mm512_srli_epi16(hb, 2),
            _ => _mm512_srli_epi16(hb, 3),
        };
        _mm512_and_si512(v, b4)
    };
    let mut wv = [_mm512_setzero_si512(); 8];
    for u in 0..4 {
        let v = both(q0.add(32 * u), q1.add(32 * u));
        wv[2 * u] = _mm512_and_si512(v, m4);
        wv[2 * u + 1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        if FIVE {
            wv[2 * u] = _mm512_or_si512(wv[2 * u], fifth(u));
            wv[2 * u + 1] = _mm512_or_si512(wv[2 * u + 1], fifth(4 + u));
        }
    }
    wv
}

/// A Q4_K/Q5_K super-block's float steps for one row: from the scaled integer sums `isum`
/// (Σ_s sc_s·Σ q_w·q_x per lane), the mins term from the row's 32-value sums and `mnv`, then
/// `acc += d_x·(d·isum − dmin·mins)`, in the 256-bit kernel's order.
///
/// # Safety
/// AVX-512 F/BW and AVX2 must be present; `xr` must hold super-block `sb`'s sums and scale.
#[inline(always)]
pub(super) unsafe fn q45k_finish(
    xr: &QRow<'_>,
    sb: usize,
    (dw, dmin): (__m512, __m512),
    mnv: &[__m512i; 4],
    isum: __m512i,
    acc: &mut __m512,
) {
    // Which 32-bit word of the paired 32-value sums holds sub-blocks 2p, 2p + 1.
    let pick = [0, 1, 4, 5].map(|k| _mm256_set1_epi32(k));
    // The 32-value sums S_s (at most 32·127) as i16: words [S0 S1 S2 S3 ..| S4 .. S7 ..].
    let s16 = _mm256_loadu_si256(xr.sum16.as_ptr().add(16 * sb).cast());
    let sums = _mm256_hadd_epi16(s16, s16);
    let mut mins = _mm512_setzero_si512();
    for (mn, k) in mnv.iter().zip(&pick) {
        let pair = _mm512_broadcast_i64x4(_mm256_permutevar8x32_epi32(sums, *k));
        mins = _mm512_add_epi32(mins, _mm512_madd_epi16(*mn, pair));
    }
    let dx = _mm512_set1_ps(*xr.d.get_unchecked(sb));
    let t = _mm512_sub_ps(
        _mm512_mul_ps(dw, _mm512_cvtepi32_ps(isum)),
        _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(mins)),
    );
    *acc = _mm512_add_ps(*acc, _mm512_mul_ps(dx, t));
}

/// `packed_avx2::group_q45k` (with `V`) for two Q4_K (`FIVE` false) or Q5_K groups at once:
/// per 32-value sub-block, eight `vpdpbusd` on 512-bit vectors sum both groups' products per
/// row, one 32-bit multiply applies each lane's scale; the mins term, the super-block's float
/// steps and their order are the 256-bit kernel's, lane by lane: the same bits.
///
/// # Safety
/// As `packed_avx2::group_q45k` with `V`, for both groups, and AVX-512 F/BW/VL + VNNI must be
/// present.
#[inline(always)]
pub(super) unsafe fn group_pair_q45k<const FIVE: bool>(
    x: &[QRow<'_>],
    g0: *const u8,
    g1: *const u8,
    sblocks: usize,
    acc: &mut [__m512; MAX_ROWS],
) {
    let gb = layout(if FIVE { 5 } else { 4 }).0;
    let zero = _mm512_setzero_si512();
    let rows = x.len().min(MAX_ROWS);
    for a in acc[..rows].iter_mut() {
        *a = _mm512_setzero_ps();
    }
    let mut isum = [zero; MAX_ROWS];
    for sb in 0..sblocks {
        let (p0, p1) = (g0.add(sb * gb), g1.add(sb * gb));
        let (scv, mnv) = q45k_scales(p0, p1);
        for a in isum[..rows].iter_mut() {
            *a = zero;
        }
        for (s, sc) in scv.iter().enumerate() {
            let wv = q45k_weights::<FIVE>(p0, p1, s);
            for r in 0..rows {
                let xq = x.get_unchecked(r).q.as_ptr().add(256 * sb + 32 * s);
                let x4 = |k: usize| _mm512_set1_epi32(xq.add(k).cast::<i32>().read_unaligned());
                let mut d = [zero; 2];
                for u in 0..4 {
                    d[0] = _mm512_dpbusd_epi32(d[0], wv[2 * u], x4(4 * u));
                    d[1] = _mm512_dpbusd_epi32(d[1], wv[2 * u + 1], x4(16 + 4 * u));
                }
                let i = _mm512_mullo_epi32(_mm512_add_epi32(d[0], d[1]), *sc);
                let a = isum.get_unchecked_mut(r);
                *a = _mm512_add_epi32(*a, i);
            }
        }
        let scales = (halves(p0, p1), halves(p0.add(K_DMIN), p1.add(K_DMIN)));
        for r in 0..rows {
            q45k_finish(
                x.get_unchecked(r),
                sb,
                scales,
                &mnv,
                *isum.get_unchecked(r),
                acc.get_unchecked_mut(r),
            );
        }
    }
}

/// Sub-block `s`'s (16 values) scales of a Q6_K super-block of two groups (at `p0`, `p1`), as
/// 16 sign-extended i32 lanes (group 0's rows in lanes 0..8).
///
/// # Safety
/// AVX-512 F must be present; `p0`/`p1` must cover a Q6_K group-block.
#[inline(always)]
pub(super) unsafe fn q6k_scale(p0: *const u8, p1: *const u8, s: usize) -> __m512i {
    let at = Q6_SCALES + 8 * s;
    let (a, b) = (
        _mm_loadl_epi64(p0.add(at).cast()),
        _mm_loadl_epi64(p1.add(at).cast()),
    );
    _mm512_cvtepi8_epi32(_mm_unpacklo_epi64(a, b))
}

/// Sub-block `s`'s six-bit values (0..64) of a Q6_K super-block of two groups, as four vectors:
/// vector `k` holds values `16s + 4k..16s + 4k + 4` of each of the 16 rows (4 bytes per
/// 32-bit lane, group 0's rows in lanes 0..8), the layout of an AMX B tile row.
///
/// # Safety
/// AVX-512 F/BW must be present; `p0`/`p1` must cover a Q6_K group-block.
#[inline(always)]
pub(super) unsafe fn q6k_weights(p0: *const u8, p1: *const u8, s: usize) -> [__m512i; 4] {
    let m4 = _mm512_set1_epi8(0x0F);
    let m30 = _mm512_set1_epi8(0x30);
    let lo0 = both(p0.add(Q6_LOW + 64 * s), p1.add(Q6_LOW + 64 * s));
    let lo1 = both(p0.add(Q6_LOW + 64 * s + 32), p1.add(Q6_LOW + 64 * s + 32));
    let hb = both(p0.add(Q6_HIGH + 32 * s), p1.add(Q6_HIGH + 32 * s));
    // Values 16s + 4m + j: low bits from a nibble, bits 4..6 from bits 2m.. of `hb`.
    [
        _mm512_or_si512(
            _mm512_and_si512(lo0, m4),
            _mm512_and_si512(_mm512_slli_epi16(hb, 4), m30),
        ),
        _mm512_or_si512(
            _mm512_and_si512(_mm512_srli_epi16(lo0, 4), m4),
            _mm512_and_si512(_mm512_slli_epi16(hb, 2), m30),
        ),
        _mm512_or_si512(_mm512_and_si512(lo1, m4), _mm512_and_si512(hb, m30)),
        _mm512_or_si512(
            _mm512_and_si512(_mm512_srli_epi16(lo1, 4), m4),
            _mm512_and_si512(_mm512_srli_epi16(hb, 2), m30),
        ),
    ]
}

/// A Q6_K super-block's scales for the −32 offset: vector `pair` holds each lane's scales of
/// sub-blocks `2·pair` and `2·pair + 1` as the 16-bit halves of its 32-bit word.
///
/// # Safety
/// AVX-512 F must be present; `p0`/`p1` must cover a Q6_K group-block.
#[inline(always)]
pub(super) unsafe fn q6k_pair_scales(p0: *const u8, p1: *const u8) -> [__m512i; 8] {
    let m16 = _mm512_set1_epi32(0xFFFF);
    std::array::from_fn(|pair| {
        let (s, t) = (q6k_scale(p0, p1, 2 * pair), q6k_scale(p0, p1, 2 * pair + 1));
        _mm512_or_si512(_mm512_and_si512(s, m16), _mm512_slli_epi32(t, 16))
    })
}

/// Row `x`'s −32 offset term for Q6_K super-block `sb` of two groups: per lane
/// `Σ_s sc_s·Σ_{i∈s} x_i`, from the activations' 16-value sums (`st` from
/// [`q6k_pair_scales`]).
///
/// # Safety
/// AVX-512 F/BW must be present; `x` must have super-block `sb`'s sums.
#[inline(always)]
pub(super) unsafe fn q6k_corr(x: &QRow<'_>, sb: usize, st: &[__m512i; 8]) -> __m512i {
    let sums = x.sum16.as_ptr().add(16 * sb);
    let mut corr = _mm512_setzero_si512();
    for (pair, v) in st.iter().enumerate() {
        let sw = _mm512_set1_epi32(sums.add(2 * pair).cast::<i32>().read_unaligned());
        corr = _mm512_add_epi32(corr, _mm512_madd_epi16(*v, sw));
    }
    corr
}

/// Row `x`'s float step for Q6_K super-block `sb` of two groups, from its exact integer
/// `total` = `Σ_s sc_s·Σ_{i∈s} (q_i − 32)·x_i` per lane: `acc += (d_w·d_x)·total`.
///
/// # Safety
/// AVX-512 F must be present; `x` must have super-block `sb`'s scale.
#[inline(always)]
pub(super) unsafe fn q6k_finish(
    x: &QRow<'_>,
    sb: usize,
    dw: __m512,
    total: __m512i,
    acc: &mut __m512,
) {
    let dx = _mm512_set1_ps(*x.d.get_unchecked(sb));
    let t = _mm512_mul_ps(_mm512_mul_ps(dw, dx), _mm512_cvtepi32_ps(total));
    *acc = _mm512_add_ps(*acc, t);
}

/// `packed_avx2::group_q6k` (with `V`) for two Q6_K groups at once: per 16-value sub-block,
/// four `vpdpbusd` on 512-bit vectors and one 32-bit multiply by each lane's scale; the −32
/// offset from the activations' 16-value sums, two sub-blocks per `madd`; the super-block's
/// float steps as the 256-bit kernel takes them, lane by lane: the same bits.
///
/// # Safety
/// As `packed_avx2::group_q6k` with `V`, for both groups, and AVX-512 F/BW/VL + VNNI must be
/// present.
#[inline(always)]
pub(super) unsafe fn group_pair_q6k(
    x: &[QRow<'_>],
    g0: *const u8,
    g1: *const u8,
    sblocks: usize,
    acc: &mut [__m512; MAX_ROWS],
) {
    let gb = layout(3).0;
    let zero = _mm512_setzero_si512();
    let rows = x.len().min(MAX_ROWS);
    for a in acc[..rows].iter_mut() {
        *a = _mm512_setzero_ps();
    }
    let mut isum = [zero; MAX_ROWS];
    for sb in 0..sblocks {
        let (p0, p1) = (g0.add(sb * gb), g1.add(sb * gb));
        isum[..rows].fill(zero);
        for s in 0..16 {
            let sc = q6k_scale(p0, p1, s);
            let w = q6k_weights(p0, p1, s);
            for r in 0..rows {
                let xq = x.get_unchecked(r).q.as_ptr().add(256 * sb + 16 * s);
                let x4 = |k: usize| _mm512_set1_epi32(xq.add(k).cast::<i32>().read_unaligned());
                let d0 = _mm512_dpbusd_epi32(zero, w[0], x4(0));
                let d1 = _mm512_dpbusd_epi32(zero, w[1], x4(4));
                let d0 = _mm512_dpbusd_epi32(d0, w[2], x4(8));
                let d1 = _mm512_dpbusd_epi32(d1, w[3], x4(12));
                let i = _mm512_mullo_epi32(_mm512_add_epi32(d0, d1), sc);
                let a = isum.get_unchecked_mut(r);
                *a = _mm512_add_epi32(*a, i);
            }
        }
        let st = q6k_pair_scales(p0, p1);
        let dw = halves(p0, p1);
        for ((xr, i), a) in x.iter().zip(&isum).zip(acc.iter_mut()) {
            let total = _mm512_sub_epi32(*i, _mm512_slli_epi32(q6k_corr(xr, sb, &st), 5));
            q6k_finish(xr, sb, dw, total, a);
        }
    }
}
