//! AVX2 and AVX-512 VNNI kernels over interleaved groups ([`super::packed`]): activation rows
//! against the 8 weight rows of a group, one output per vector lane.
//!
//! Per block and activation row: the block's quant bytes of all 8 weight rows come as 32-byte
//! loads (4 values of each row), each multiplied by the matching 4 activation values broadcast
//! to every lane. AVX2: `maddubs` pair sums added in 16-bit lanes (Q4_0/Q4_1: 8 products of at
//! most 2·15·127 fit; Q4_0 starts the lanes at its −8·Σx offset), then `madd` by ones; VNNI:
//! `vpdpbusd` sums 4 byte products straight into 32-bit lanes, and two groups share a 512-bit
//! vector. Either way lane `c` ends as the block's exact integer dot product of weight row `c`.
//! Then per lane `acc += (d_w·d_x)·Σ` (Q4_1: `+ m_w·s_x`) with separate multiplies and adds: the
//! arithmetic of the portable row kernels, bit for bit.

use std::arch::x86_64::*;

use super::act::QRow;
use super::packed::{K_DMIN, K_MN, K_Q, K_Q5H, K_SC, LANES, Q6_HIGH, Q6_LOW, Q6_SCALES};
use super::packed_avx512 as wide;

/// Group-block bytes (8 blocks) and quant-byte offset, for kernel `T` (0 Q8_0, 1 Q4_0, 2 Q4_1;
/// 3 Q6_K, 4 Q4_K, 5 Q5_K: [`group_q6k`] and [`group_q45k`] find their fields themselves).
pub(super) const fn layout(t: u8) -> (usize, usize) {
    match t {
        0 => (8 * 34, 16),
        1 => (8 * 18, 16),
        2 => (8 * 20, 32),
        3 => (Q6_GB, 0),
        4 => (LANES * 144, 0),
        _ => (LANES * 176, 0),
    }
}

/// Four bytes at `p` as the same i32 in every lane.
#[inline(always)]
unsafe fn bcast4(p: *const i8) -> __m256i {
    _mm256_set1_epi32(p.cast::<i32>().read_unaligned())
}

/// Most activation rows per call of [`group`].
pub(super) const MAX_ROWS: usize = 16;

/// The activation rows `x` (at most [`MAX_ROWS`]) against one interleaved group of `blocks`
/// group-blocks at `g`: `acc[r]` = the 8 outputs of row `r`. Per block the weights are unpacked
/// once into registers, then every row passes over them (its running sums in `acc`, in L1).
///
/// `V`: the integer products by AVX-512 VNNI's `vpdpbusd` (4 byte products summed straight into
/// i32 lanes: one instruction where AVX2 needs `maddubs`, an add and a `madd`). The sums are
/// exact integers either way, so `V` changes no bit. `R` > 0 fixes the row count at compile
/// time (decode: one row); 0 takes it from `x`.
///
/// Always inlined into [`span`] / [`span_vnni`], which carry the target features.
///
/// # Safety
/// AVX2, FMA and F16C (and for `V` AVX-512 VL + VNNI) must be present; `g` must cover `blocks`
/// group-blocks of kernel `T`'s layout, and each `x[r]` `blocks · 32` values (with their scales
/// and sums).
#[inline(always)]
unsafe fn group<const T: u8, const R: usize, const V: bool>(
    x: &[QRow<'_>],
    g: *const u8,
    blocks: usize,
    acc: &mut [__m256; MAX_ROWS],
) {
    let (gb, head) = layout(T);
    let ones = _mm256_set1_epi16(1);
    let m4 = _mm256_set1_epi8(0x0F);
    let rows = if R > 0 { R } else { x.len() }.min(MAX_ROWS);
    for a in acc[..rows].iter_mut() {
        *a = _mm256_setzero_ps();
    }
    for b in 0..blocks {
        let p = g.add(b * gb);
        if R == 1 {
            // Past the group's end lies the next group.
            super::int_avx2::prefetch_ahead(p, gb);
        }
        let qs = p.add(head);
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(p.cast()));
        if T == 0 && R == 1 {
            // One row: multiply each load right away (no unpacked copy of the block to keep).
            let xr = x.get_unchecked(0);
            let xq = xr.q.as_ptr().add(32 * b);
            let mut s = [_mm256_setzero_si256(); 2];
            for u in 0..8 {
                let v = _mm256_loadu_si256(qs.add(32 * u).cast());
                let xs = _mm256_sign_epi8(bcast4(xq.add(4 * u)), v);
                s[u % 2] = dot4::<V>(s[u % 2], _mm256_sign_epi8(v, v), xs, ones);
            }
            let s = _mm256_add_epi32(s[0], s[1]);
            acc[0] = _mm256_add_ps(acc[0], scaled::<T>(dw, p, xr, b, s));
            continue;
        }
        // Q8_0: the bytes (0..8) and their magnitudes (8..16); Q4: low and high nibbles.
        let mut wv = [_mm256_setzero_si256(); 16];
        if T == 0 {
            for u in 0..8 {
                let v = _mm256_loadu_si256(qs.add(32 * u).cast());
                wv[u] = v;
                wv[8 + u] = _mm256_sign_epi8(v, v);
            }
        } else {
            for u in 0..4 {
                let v = _mm256_loadu_si256(qs.add(32 * u).cast());
                wv[2 * u] = _mm256_and_si256(v, m4);
                wv[2 * u + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            }
        }
        for r in 0..rows {
            let xr = x.get_unchecked(r);
            let xq = xr.q.as_ptr().add(32 * b);
            let i = if T == 0 {
                // Signed bytes: the weights lend their sign to the activations (the byte
                // products take unsigned × signed).
                // Two independent chains, so consecutive products need not wait on each other.
                let mut s = [_mm256_setzero_si256(); 2];
                for u in 0..8 {
                    let xs = _mm256_sign_epi8(bcast4(xq.add(4 * u)), wv[u]);
                    s[u % 2] = dot4::<V>(s[u % 2], wv[8 + u], xs, ones);
                }
                _mm256_add_epi32(s[0], s[1])
            } else if V {
                // Q4_0's stored nibbles are q + 8: start the lanes at the −8·Σx offset. Low and
                // high nibbles accumulate in two independent chains.
                let mut lo = if T == 1 {
                    _mm256_madd_epi16(bcast4(xr.q4.as_ptr().add(b).cast()), ones)
                } else {
                    _mm256_setzero_si256()
                };
                let mut hi = _mm256_setzero_si256();
                for u in 0..4 {
                    lo = _mm256_dpbusd_epi32(lo, wv[2 * u], bcast4(xq.add(4 * u)));
                    hi = _mm256_dpbusd_epi32(hi, wv[2 * u + 1], bcast4(xq.add(16 + 4 * u)));
                }
                _mm256_add_epi32(lo, hi)
            } else {
                // 16-bit lanes (8 products of at most 2·15·127 fit); Q4_0 starts them at its
                // −8·Σx offset, split by lane. Every lane's final value fits i16, so wrapping
                // adds on the way are harmless.
                let mut s = if T == 1 {
                    bcast4(xr.q4.as_ptr().add(b).cast())
                } else {
                    _mm256_setzero_si256()
                };
                for u in 0..4 {
                    let pl = _mm256_maddubs_epi16(wv[2 * u], bcast4(xq.add(4 * u)));
                    let ph = _mm256_maddubs_epi16(wv[2 * u + 1], bcast4(xq.add(16 + 4 * u)));
                    s = _mm256_add_epi16(s, _mm256_add_epi16(pl, ph));
                }
                _mm256_madd_epi16(s, ones)
            };
            let a = acc.get_unchecked_mut(r);
            *a = _mm256_add_ps(*a, scaled::<T>(dw, p, xr, b, i));
        }
    }
}

/// `acc + Σ_4 a·b` per i32 lane (`a` unsigned bytes, `b` signed; no pair can saturate).
#[inline(always)]
unsafe fn dot4<const V: bool>(acc: __m256i, a: __m256i, b: __m256i, ones: __m256i) -> __m256i {
    if V {
        _mm256_dpbusd_epi32(acc, a, b)
    } else {
        _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones))
    }
}

/// Block `b`'s contribution for every lane: `(d_w·d_x)·i` (Q4_1: `+ m_w·s_x`), as the portable
/// row kernels compute it.
#[inline(always)]
unsafe fn scaled<const T: u8>(
    dw: __m256,
    p: *const u8,
    xr: &QRow<'_>,
    b: usize,
    i: __m256i,
) -> __m256 {
    let dx = _mm256_set1_ps(*xr.d.get_unchecked(b));
    let t = _mm256_mul_ps(_mm256_mul_ps(dw, dx), _mm256_cvtepi32_ps(i));
    if T == 2 {
        let mw = _mm256_cvtph_ps(_mm_loadu_si128(p.add(16).cast()));
        _mm256_add_ps(t, _mm256_mul_ps(mw, _mm256_set1_ps(*xr.s.get_unchecked(b))))
    } else {
        t
    }
}

/// `groups` interleaved groups from `w` against every row of `x` (at most [`MAX_ROWS`]);
/// `emit(r, first_weight_row, lanes)`. `T` = 3 (Q6_K) takes [`group_q6k`], 4 and 5 (Q4_K,
/// Q5_K) [`group_q45k`], with `V` as those kernels take it (256-bit `vpdpbusd`). With `V` and
/// more than one row, pairs of groups go to the 512-bit kernels of [`super::packed_avx512`]
/// (every format; the K-quants' pairs, measured on the AVX-512 Xeon with `quill bench
/// --prompt-tokens 128`, alternated: Q4_K_M prefill 1409–1449 → 1823–1929 tokens/s, Q5_K_M
/// 1283–1408 → 1801–1816).
#[inline(always)]
unsafe fn span_impl<const T: u8, const V: bool, F>(
    x: &[QRow<'_>],
    w: *const u8,
    blocks: usize,
    groups: usize,
    emit: &mut F,
) where
    F: FnMut(usize, usize, [f32; LANES]),
{
    let gbytes = blocks * layout(T).0;
    let x = &x[..x.len().min(MAX_ROWS)];
    let mut first = 0;
    if V && x.len() > 1 {
        // Pairs of groups on 512-bit vectors; an odd last group below. (At one row the 512-bit
        // kernel measured slower: decode is bound by latency and bandwidth, not instructions.)
        let mut acc = [_mm512_setzero_ps(); MAX_ROWS];
        while first + 2 <= groups {
            let p = w.add(first * gbytes);
            let q = p.add(gbytes);
            match T {
                3 => wide::group_pair_q6k(x, p, q, blocks, &mut acc),
                4 => wide::group_pair_q45k::<false>(x, p, q, blocks, &mut acc),
                5 => wide::group_pair_q45k::<true>(x, p, q, blocks, &mut acc),
                _ => wide::group_pair::<T>(x, p, q, blocks, &mut acc),
            }
            wide::emit_pair(&acc[..x.len()], first, emit);
            first += 2;
        }
    }
    let mut acc = [_mm256_setzero_ps(); MAX_ROWS];
    for g in first..groups {
        let p = w.add(g * gbytes);
        match (T, x.len()) {
            (3, 1) => group_q6k::<1, V>(x, p, blocks, &mut acc),
            (3, _) => group_q6k::<0, V>(x, p, blocks, &mut acc),
            (4, 1) => group_q45k::<false, 1, V>(x, p, blocks, &mut acc),
            (4, _) => group_q45k::<false, 0, V>(x, p, blocks, &mut acc),
            (5, 1) => group_q45k::<true, 1, V>(x, p, blocks, &mut acc),
            (5, _) => group_q45k::<true, 0, V>(x, p, blocks, &mut acc),
            (_, 1) => group::<T, 1, V>(x, p, blocks, &mut acc),
            _ => group::<T, 0, V>(x, p, blocks, &mut acc),
        }
        for (r, a) in acc[..x.len()].iter().enumerate() {
            let mut out = [0.0f32; LANES];
            _mm256_storeu_ps(out.as_mut_ptr(), *a);
            emit(r, g * LANES, out);
        }
    }
}

/// [`span_impl`] with AVX2.
///
/// # Safety
/// As [`group`] (Q6_K: [`group_q6k`]), for every group `0..groups` at `w + group · blocks · gb`.
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
    span_impl::<T, false, F>(x, w, blocks, groups, emit)
}

/// [`span_impl`] with AVX-512 VNNI byte dot products (batches: two groups per 512-bit vector;
/// one row and an odd last group: 256-bit `vpdpbusd` in place of `maddubs` and the 16-bit
/// sums).
///
/// # Safety
/// As [`span`], and AVX-512 F, BW, VL and VNNI must be present.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn span_vnni<const T: u8, F>(
    x: &[QRow<'_>],
    w: *const u8,
    blocks: usize,
    groups: usize,
    emit: &mut F,
) where
    F: FnMut(usize, usize, [f32; LANES]),
{
    span_impl::<T, true, F>(x, w, blocks, groups, emit)
}

/// Bytes of a Q6_K group-block (8 super-blocks; its fields are laid out in [`super::packed`]).
const Q6_GB: usize = LANES * 210;

/// The activation rows `x` (at most [`MAX_ROWS`]) against one interleaved Q6_K group of
/// `sblocks` group-blocks at `g`: `acc[r]` = the 8 outputs of row `r`.
///
/// Per 16-value sub-block the 8 rows' six-bit values come as four 32-byte vectors (4 values of
/// each row per vector: low nibbles, high nibbles, then the two high bits moved in), unpacked
/// once for every activation row. Per row, `maddubs` forms byte-pair products (at most
/// 2·63·127), two of them are added in 16-bit lanes (at most 32,004: no overflow), and `madd` by
/// the sub-block's scale, repeated in both halves of each row's 32-bit lane, gives
/// `sc · Σ q·x` per row. The −32 offset is `32 · Σ_s sc_s · Σ x` over the sub-blocks, from the
/// activations' 16-value sums, two sub-blocks per `madd`. Each lane's super-block total is the
/// exact integer the portable kernel forms, then `acc += (d_w·d_x)·total`: the same bits.
///
/// `V` (AVX-512 VNNI): four `vpdpbusd` sum the sub-block's 16 products per row straight into
/// its 32-bit lane (at most 16·63·127), and one 32-bit multiply applies the scale: the same
/// integers.
///
/// # Safety
/// AVX2, FMA and F16C (and for `V` AVX-512 VL + VNNI) must be present; `g` must cover `sblocks`
/// Q6_K group-blocks, and each `x[r]` `sblocks · 256` values with their scales and 16-value sums.
#[inline(always)]
unsafe fn group_q6k<const R: usize, const V: bool>(
    x: &[QRow<'_>],
    g: *const u8,
    sblocks: usize,
    acc: &mut [__m256; MAX_ROWS],
) {
    let m4 = _mm256_set1_epi8(0x0F);
    let m30 = _mm256_set1_epi8(0x30);
    let rows = if R > 0 { R } else { x.len() }.min(MAX_ROWS);
    for a in acc[..rows].iter_mut() {
        *a = _mm256_setzero_ps();
    }
    let mut isum = [_mm256_setzero_si256(); MAX_ROWS];
    let mut corr = [_mm256_setzero_si256(); MAX_ROWS];
    for sb in 0..sblocks {
        let p = g.add(sb * Q6_GB);
        if R == 1 {
            super::int_avx2::prefetch_ahead(p, Q6_GB);
        }
        for r in 0..rows {
            isum[r] = _mm256_setzero_si256();
            corr[r] = _mm256_setzero_si256();
        }
        for pair in 0..8 {
            // Scales of sub-blocks 2·pair (s) and 2·pair + 1 (t) of the 8 rows as i16,
            // [s0..s7 | t0..t7], reordered to [s0..s3 t0..t3 | s4..s7 t4..t7] so that each
            // 128-bit lane holds its four rows.
            let v = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(Q6_SCALES + 16 * pair).cast()));
            let u = _mm256_permute4x64_epi64(v, 0b11_01_10_00);
            // Per row lane: (s, s), (t, t) and (s, t).
            let scv = [_mm256_unpacklo_epi16(u, u), _mm256_unpackhi_epi16(u, u)];
            let st = _mm256_unpacklo_epi16(u, _mm256_bsrli_epi128(u, 8));
            // For `V`: the two sub-blocks' scales of the 8 rows as i32.
            let sc32 = [
                _mm256_cvtepi16_epi32(_mm256_castsi256_si128(v)),
                _mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(v)),
            ];
            for (h, sc) in scv.iter().enumerate() {
                let s = 2 * pair + h;
                let lo0 = _mm256_loadu_si256(p.add(Q6_LOW + 64 * s).cast());
                let lo1 = _mm256_loadu_si256(p.add(Q6_LOW + 64 * s + 32).cast());
                let hb = _mm256_loadu_si256(p.add(Q6_HIGH + 32 * s).cast());
                // Values 16s + 4m + j, m = 0..4: low bits from a nibble, bits 4..6 from bits
                // 2m.. of `hb` (16-bit shifts: what crosses a byte is masked off).
                let w = [
                    _mm256_or_si256(
                        _mm256_and_si256(lo0, m4),
                        _mm256_and_si256(_mm256_slli_epi16(hb, 4), m30),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(lo0, 4), m4),
                        _mm256_and_si256(_mm256_slli_epi16(hb, 2), m30),
                    ),
                    _mm256_or_si256(_mm256_and_si256(lo1, m4), _mm256_and_si256(hb, m30)),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(lo1, 4), m4),
                        _mm256_and_si256(_mm256_srli_epi16(hb, 2), m30),
                    ),
                ];
                if V {
                    for r in 0..rows {
                        let xq = x.get_unchecked(r).q.as_ptr().add(256 * sb + 16 * s);
                        let d0 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), w[0], bcast4(xq));
                        let d1 =
                            _mm256_dpbusd_epi32(_mm256_setzero_si256(), w[1], bcast4(xq.add(4)));
                        let d0 = _mm256_dpbusd_epi32(d0, w[2], bcast4(xq.add(8)));
                        let d1 = _mm256_dpbusd_epi32(d1, w[3], bcast4(xq.add(12)));
                        let i = _mm256_mullo_epi32(_mm256_add_epi32(d0, d1), sc32[h]);
                        let a = isum.get_unchecked_mut(r);
                        *a = _mm256_add_epi32(*a, i);
                    }
                    continue;
                }
                for r in 0..rows {
                    let xq = x.get_unchecked(r).q.as_ptr().add(256 * sb + 16 * s);
                    let p0 = _mm256_maddubs_epi16(w[0], bcast4(xq));
                    let p1 = _mm256_maddubs_epi16(w[1], bcast4(xq.add(4)));
                    let p2 = _mm256_maddubs_epi16(w[2], bcast4(xq.add(8)));
                    let p3 = _mm256_maddubs_epi16(w[3], bcast4(xq.add(12)));
                    let i = _mm256_add_epi32(
                        _mm256_madd_epi16(_mm256_add_epi16(p0, p1), *sc),
                        _mm256_madd_epi16(_mm256_add_epi16(p2, p3), *sc),
                    );
                    let a = isum.get_unchecked_mut(r);
                    *a = _mm256_add_epi32(*a, i);
                }
            }
            for r in 0..rows {
                let sums = x.get_unchecked(r).sum16.as_ptr().add(16 * sb + 2 * pair);
                let c = corr.get_unchecked_mut(r);
                *c = _mm256_add_epi32(*c, _mm256_madd_epi16(st, bcast4(sums.cast())));
            }
        }
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(p.cast()));
        for r in 0..rows {
            let total = _mm256_sub_epi32(isum[r], _mm256_slli_epi32(corr[r], 5));
            let dx = _mm256_set1_ps(*x.get_unchecked(r).d.get_unchecked(sb));
            let t = _mm256_mul_ps(_mm256_mul_ps(dw, dx), _mm256_cvtepi32_ps(total));
            let a = acc.get_unchecked_mut(r);
            *a = _mm256_add_ps(*a, t);
        }
    }
}

/// The activation rows `x` (at most [`MAX_ROWS`]) against one interleaved Q4_K (`FIVE` false)
/// or Q5_K group of `sblocks` group-blocks at `g`: `acc[r]` = the 8 outputs of row `r`.
///
/// Per 32-value sub-block the 8 rows' values come as eight 32-byte vectors (4 values of each
/// row per vector: low and high nibbles of four loads, Q5_K's fifth bit moved in), unpacked
/// once for every activation row. Per row, `maddubs` forms byte-pair products (at most
/// 2·15·127 for 4 bits, 2·31·127 for 5), eight (Q4_K) or four (Q5_K) of them are added in
/// 16-bit lanes (at most 30,480 / 31,496: no overflow), and `madd` by the sub-block's scale,
/// repeated in both halves of each row's 32-bit lane, gives `sc · Σ q·x`. The mins term
/// `Σ_s m_s · Σx` pairs two sub-blocks per `madd`, against the activations' 32-value sums. Each
/// lane's two super-block totals are the exact integers the portable kernel forms, then
/// `acc += d_x·(d·total − dmin·mins)` as it computes it: the same bits.
///
/// `V` (AVX-512 VNNI): eight `vpdpbusd` in two chains sum the sub-block's 32 products per row
/// straight into its 32-bit lane (at most 32·31·127), and one 32-bit multiply applies the
/// scale: the same integers.
///
/// # Safety
/// AVX2, FMA and F16C (and for `V` AVX-512 VL + VNNI) must be present; `g` must cover `sblocks`
/// group-blocks of the format, and each `x[r]` `sblocks · 256` values with their scales and
/// 16-value sums.
#[inline(always)]
unsafe fn group_q45k<const FIVE: bool, const R: usize, const V: bool>(
    x: &[QRow<'_>],
    g: *const u8,
    sblocks: usize,
    acc: &mut [__m256; MAX_ROWS],
) {
    let gb = layout(if FIVE { 5 } else { 4 }).0;
    let m4 = _mm256_set1_epi8(0x0F);
    let b4 = _mm256_set1_epi8(0x10);
    let m6 = _mm256_set1_epi32(0x3F);
    let n4 = _mm256_set1_epi32(0x0F);
    // Which 32-bit word of the activations' paired 32-value sums holds sub-blocks 2p, 2p + 1.
    let pick = [0, 1, 4, 5].map(|k| _mm256_set1_epi32(k));
    let rows = if R > 0 { R } else { x.len() }.min(MAX_ROWS);
    for a in acc[..rows].iter_mut() {
        *a = _mm256_setzero_ps();
    }
    let mut isum = [_mm256_setzero_si256(); MAX_ROWS];
    for sb in 0..sblocks {
        let p = g.add(sb * gb);
        if R == 1 {
            super::int_avx2::prefetch_ahead(p, gb);
        }
        // Per row lane: each sub-block's scale in both 16-bit halves; per pair of sub-blocks
        // the two mins (low 2 bits from the scale bytes' top, high 4 from a nibble).
        let mut scv = [_mm256_setzero_si256(); 8];
        let mut mnv = [_mm256_setzero_si256(); 4];
        for (pr, mn) in mnv.iter_mut().enumerate() {
            let bytes = |at: usize| _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.add(at).cast()));
            let (a, b) = (bytes(K_SC + 16 * pr), bytes(K_SC + 16 * pr + 8));
            for (h, v) in [a, b].into_iter().enumerate() {
                let sc = _mm256_and_si256(v, m6);
                // (`V` multiplies 32-bit lanes; `madd` wants the scale in both halves.)
                scv[2 * pr + h] = if V {
                    sc
                } else {
                    _mm256_or_si256(sc, _mm256_slli_epi32(sc, 16))
                };
            }
            let n = bytes(K_MN + 8 * pr);
            let lo = _mm256_or_si256(
                _mm256_slli_epi32(_mm256_and_si256(n, n4), 2),
                _mm256_srli_epi32(a, 6),
            );
            let hi = _mm256_or_si256(
                _mm256_slli_epi32(_mm256_srli_epi32(n, 4), 2),
                _mm256_srli_epi32(b, 6),
            );
            *mn = _mm256_or_si256(lo, _mm256_slli_epi32(hi, 16));
        }
        for a in isum[..rows].iter_mut() {
            *a = _mm256_setzero_si256();
        }
        for (s, sc) in scv.iter().enumerate() {
            let q = p.add(K_Q + 128 * s);
            let hb = if FIVE {
                _mm256_loadu_si256(p.add(K_Q5H + 32 * s).cast())
            } else {
                _mm256_setzero_si256()
            };
            // Fifth bit of value 4k + j: bit k of byte j; moved to bit 4 (16-bit shifts: what
            // crosses a byte is masked off).
            let fifth = |k: usize| {
                let v = match k {
                    0 => _mm256_slli_epi16(hb, 4),
                    1 => _mm256_slli_epi16(hb, 3),
                    2 => _mm256_slli_epi16(hb, 2),
                    3 => _mm256_slli_epi16(hb, 1),
                    4 => hb,
                    5 => _mm256_srli_epi16(hb, 1),
                    6 => _mm256_srli_epi16(hb, 2),
                    _ => _mm256_srli_epi16(hb, 3),
                };
                _mm256_and_si256(v, b4)
            };
            // wv[2u]: values 4u + j, wv[2u + 1]: values 16 + 4u + j.
            let mut wv = [_mm256_setzero_si256(); 8];
            for u in 0..4 {
                let v = _mm256_loadu_si256(q.add(32 * u).cast());
                wv[2 * u] = _mm256_and_si256(v, m4);
                wv[2 * u + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                if FIVE {
                    wv[2 * u] = _mm256_or_si256(wv[2 * u], fifth(u));
                    wv[2 * u + 1] = _mm256_or_si256(wv[2 * u + 1], fifth(4 + u));
                }
            }
            if V {
                for r in 0..rows {
                    let xq = x.get_unchecked(r).q.as_ptr().add(256 * sb + 32 * s);
                    let mut d = [_mm256_setzero_si256(); 2];
                    for u in 0..4 {
                        d[0] = _mm256_dpbusd_epi32(d[0], wv[2 * u], bcast4(xq.add(4 * u)));
                        d[1] = _mm256_dpbusd_epi32(d[1], wv[2 * u + 1], bcast4(xq.add(16 + 4 * u)));
                    }
                    let i = _mm256_mullo_epi32(_mm256_add_epi32(d[0], d[1]), *sc);
                    let a = isum.get_unchecked_mut(r);
                    *a = _mm256_add_epi32(*a, i);
                }
                continue;
            }
            for r in 0..rows {
                let xq = x.get_unchecked(r).q.as_ptr().add(256 * sb + 32 * s);
                let prod = |u: usize| {
                    _mm256_add_epi16(
                        _mm256_maddubs_epi16(wv[2 * u], bcast4(xq.add(4 * u))),
                        _mm256_maddubs_epi16(wv[2 * u + 1], bcast4(xq.add(16 + 4 * u))),
                    )
                };
                let (h0, h1) = (
                    _mm256_add_epi16(prod(0), prod(1)),
                    _mm256_add_epi16(prod(2), prod(3)),
                );
                let i = if FIVE {
                    _mm256_add_epi32(_mm256_madd_epi16(h0, *sc), _mm256_madd_epi16(h1, *sc))
                } else {
                    _mm256_madd_epi16(_mm256_add_epi16(h0, h1), *sc)
                };
                let a = isum.get_unchecked_mut(r);
                *a = _mm256_add_epi32(*a, i);
            }
        }
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(p.cast()));
        let dmin = _mm256_cvtph_ps(_mm_loadu_si128(p.add(K_DMIN).cast()));
        for r in 0..rows {
            let xr = x.get_unchecked(r);
            // The 32-value sums S_s (at most 32·127) as i16: words [S0 S1 S2 S3 ..| S4 .. S7 ..].
            let s16 = _mm256_loadu_si256(xr.sum16.as_ptr().add(16 * sb).cast());
            let sums = _mm256_hadd_epi16(s16, s16);
            let mut mins = _mm256_setzero_si256();
            for (mn, k) in mnv.iter().zip(&pick) {
                let pair = _mm256_permutevar8x32_epi32(sums, *k);
                mins = _mm256_add_epi32(mins, _mm256_madd_epi16(*mn, pair));
            }
            let dx = _mm256_set1_ps(*xr.d.get_unchecked(sb));
            let t = _mm256_sub_ps(
                _mm256_mul_ps(dw, _mm256_cvtepi32_ps(*isum.get_unchecked(r))),
                _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(mins)),
            );
            let a = acc.get_unchecked_mut(r);
            *a = _mm256_add_ps(*a, _mm256_mul_ps(dx, t));
        }
    }
}
