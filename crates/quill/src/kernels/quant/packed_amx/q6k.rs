//! Q6_K on the AMX tiles ([`Q6`], run by [`super::span_sblocks`]). A Q6_K super-block is 256
//! six-bit values `q` (stored as 0..64, meaning `q − 32`) in 16 sub-blocks of 16, each with a signed 8-bit scale `sc`, and
//! one f16 `d`: its integer part per weight row is `Σ_s sc_s·Σ_{i∈s} (q_i − 32)·x_i`, and the
//! float step comes once per super-block, as for Q4_K. A tile product cannot apply a scale per
//! 16 values, so the scales go into the weights: `P = sc·(q − 32)` (−4064..=4096, a 16-bit
//! product from `vpmaddubsw`) is split into its low byte (0..=255, unsigned) and the rest,
//! `P >> 8` (−16..=16, signed), so `P = 256·hi + lo`. Per 64 values (four sub-blocks) that
//! makes two B tiles, `tdpbssd` adds the `hi` products and `tdpbsud` the `lo` ones into two C
//! tiles over the super-block's four steps, and `256·C_hi + C_lo` is exactly the 512-bit VNNI
//! kernel's integer `Σ_s sc_s·Σ (q − 32)·x`, with its −32 offset inside the tiles. The float
//! steps are that kernel's ([`q6k_finish`]): the same bits.
//!
//! Measured first and not kept: four B tiles per 64 values, one per base-4 digit of the scale
//! (`sc = 64a + 16b + 4c + d`, each digit times `q` a byte), with the offset from the
//! activations' 16-value sums as the VNNI kernel takes it: the digit tiles' stores, loads and
//! products left it level with VNNI at 8 rows.

use std::arch::x86_64::*;

use super::super::act::QRow;
use super::super::packed_avx512::{halves, q6k_finish, q6k_scale, q6k_weights};
use super::SuperBlock;

/// Q6_K for [`super::span_sblocks`].
pub(super) struct Q6;

impl SuperBlock for Q6 {
    const KIND: u8 = 3;
    const SIGNED_HI: bool = true;
    const HI_SHIFT: i64 = 8;
    type Scales = __m512;

    #[inline(always)]
    unsafe fn build(p0: *const u8, p1: *const u8, h: usize, bt: *mut u8) {
        build_b(p0, p1, 4 * h, bt);
    }

    #[inline(always)]
    unsafe fn scales(p0: *const u8, p1: *const u8) -> Self::Scales {
        halves(p0, p1)
    }

    #[inline(always)]
    unsafe fn finish(x: &QRow<'_>, sb: usize, dw: &__m512, isum: __m512i, acc: &mut __m512) {
        q6k_finish(x, sb, *dw, isum, acc);
    }
}

/// The B_hi and B_lo tiles of sub-blocks `s0..s0 + 4` of a Q6_K super-block of two groups (at
/// `p0`, `p1`), at `bt` and `bt + 1024`: B row `4i + k` holds, for each lane, the high and low
/// bytes of `sc·(q − 32)` for values `16(s0 + i) + 4k..+4` under the lane's sub-block scale.
///
/// # Safety
/// AVX-512 F/BW must be present; `p0`/`p1` must cover a Q6_K group-block, `bt` 2048 writable
/// bytes (64-byte aligned).
#[inline(always)]
unsafe fn build_b(p0: *const u8, p1: *const u8, s0: usize, bt: *mut u8) {
    let byte = _mm512_set1_epi32(0xFF);
    for i in 0..4 {
        let sc = q6k_scale(p0, p1, s0 + i);
        // The scale byte at bytes 0 and 2 of its lane (`even`) or 1 and 3 (`odd`): `maddubs`
        // then gives each 16-bit lane one value times the scale (a pair sum with a zero).
        let sb = _mm512_and_si512(sc, byte);
        let even = _mm512_or_si512(sb, _mm512_slli_epi32(sb, 16));
        let odd = _mm512_slli_epi32(even, 8);
        // 32·sc in every 16-bit lane: the −32 offset.
        let sw = _mm512_or_si512(
            _mm512_and_si512(sc, _mm512_set1_epi32(0xFFFF)),
            _mm512_slli_epi32(sc, 16),
        );
        let off = _mm512_slli_epi16(sw, 5);
        for (k, v) in q6k_weights(p0, p1, s0 + i).iter().enumerate() {
            let e = _mm512_sub_epi16(_mm512_maddubs_epi16(*v, even), off);
            let o = _mm512_sub_epi16(_mm512_maddubs_epi16(*v, odd), off);
            // lo: e's low byte at even bytes, o's at odd; hi: their high bytes likewise (as
            // a byte, the high byte of P is P >> 8).
            let lo = _mm512_ternarylogic_epi32::<0xD8>(
                _mm512_slli_epi16(o, 8),
                e,
                _mm512_set1_epi16(0xFF),
            );
            let hi = _mm512_ternarylogic_epi32::<0xD8>(
                o,
                _mm512_srli_epi16(e, 8),
                _mm512_set1_epi16(0xFF),
            );
            let row = bt.add(64 * (4 * i + k));
            _mm512_store_si512(row.cast(), hi);
            _mm512_store_si512(row.add(1024).cast(), lo);
        }
    }
}
