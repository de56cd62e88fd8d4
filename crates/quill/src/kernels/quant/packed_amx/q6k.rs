//! Q6_K on the AMX tiles ([`span`]). A Q6_K super-block is 256 six-bit values `q` (stored as
//! 0..64, meaning `q − 32`) in 16 sub-blocks of 16, each with a signed 8-bit scale `sc`, and
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

use std::arch::asm;
use std::arch::x86_64::*;

use super::super::act::QRow;
use super::super::packed::LANES;
use super::super::packed_avx2::{layout, MAX_ROWS};
use super::super::packed_avx512::{emit_pair, halves, q6k_finish, q6k_scale, q6k_weights};
use super::{configure, Aligned};

/// Bytes of one step's two B tiles (16 rows × 64 bytes each): `hi` at 0, `lo` at 1024.
const STEP_B: usize = 2 * 1024;

/// Q6_K on the tiles: `2 · pairs` interleaved groups of `sblocks` super-blocks at `w` against
/// the rows `x` (`stride` bytes apart); `emit(r, first_weight_row, lanes)`.
///
/// # Safety
/// As [`super::span`], for `2 · pairs` Q6_K groups.
#[inline(always)]
pub(super) unsafe fn span<F>(
    x: &[QRow<'_>],
    stride: usize,
    w: *const u8,
    sblocks: usize,
    pairs: usize,
    emit: &mut F,
) where
    F: FnMut(usize, usize, [f32; LANES]),
{
    let steps = pairs * 4 * sblocks;
    if steps == 0 {
        return;
    }
    let m = x.len();
    let gb = layout(3).0;
    let gbytes = sblocks * gb;
    // Tiles: 0, 1 C_hi, C_lo (m × 16 i32); 2, 3 A (m × 64 activation bytes, by parity); 4, 5
    // and 6, 7 B_hi, B_lo (16 × 64 weight bytes, by parity).
    configure((0..8).map(|t| (64, if t < 4 { m as u8 } else { 16 })));
    // Step q of a pair covers sub-blocks 4h..4h + 4 (h = q % 4) of super-block q / 4. Its B
    // tiles are built AHEAD steps before its product, into a ring of RING buffers, for the
    // reason `span_q8_0` gives.
    const AHEAD: usize = 3;
    const RING: usize = 4;
    let mut bt = [const { Aligned([0u8; STEP_B]) }; RING];
    // A super-block's C_hi rows, then its C_lo rows at 64 · MAX_ROWS; two, by parity.
    let mut c = [const { Aligned([0u8; 2 * 64 * MAX_ROWS]) }; 2];
    let at = |pair: usize, sb: usize| {
        let p0 = w.add(pair * 2 * gbytes + sb * gb);
        (p0, p0.add(gbytes))
    };
    let next = |(pair, q): (usize, usize)| {
        if q + 1 == 4 * sblocks {
            (pair + 1, 0)
        } else {
            (pair, q + 1)
        }
    };
    let build = |(pair, q): (usize, usize), bt: *mut u8| {
        let (p0, p1) = at(pair, q >> 2);
        build_b(p0, p1, 4 * (q & 3), bt);
    };
    let mut acc = [_mm512_setzero_ps(); MAX_ROWS];
    // The super-block whose sums were stored last step, and its buffer.
    let mut pending: Option<(usize, usize, usize)> = None;
    let (mut built, mut prod) = ((0, 0), (0, 0));
    for j in 0..AHEAD.min(steps) {
        build(built, bt[j % RING].0.as_mut_ptr());
        built = next(built);
    }
    let mut stored = 0;
    for j in 0..=steps {
        if j + AHEAD < steps {
            build(built, bt[(j + AHEAD) % RING].0.as_mut_ptr());
            built = next(built);
        }
        let mut now = None;
        if j < steps {
            let (pair, q) = prod;
            let h = q & 3;
            if h == 0 {
                asm!("tilezero tmm0", "tilezero tmm1", options(nostack, nomem));
            }
            product(
                x[0].q.as_ptr().add(64 * q),
                stride,
                bt[j % RING].0.as_ptr(),
                j % 2,
            );
            if h == 3 {
                let buf = c[stored % 2].0.as_mut_ptr();
                asm!(
                    "tilestored [{c} + {s64} * 1], tmm0",
                    "tilestored [{lo} + {s64} * 1], tmm1",
                    c = in(reg) buf,
                    lo = in(reg) buf.add(64 * MAX_ROWS),
                    s64 = in(reg) 64usize,
                    options(nostack),
                );
                now = Some((pair, q >> 2, stored % 2));
                stored += 1;
            }
            prod = next(prod);
        }
        // The super-block stored last step: its float steps (after this step's product was
        // issued, so they need not wait for the store).
        if let Some((pair, sb, k)) = pending {
            let (p0, p1) = at(pair, sb);
            if sb == 0 {
                acc[..m].fill(_mm512_setzero_ps());
            }
            let dw = halves(p0, p1);
            let buf = c[k].0.as_ptr();
            for (r, a) in acc[..m].iter_mut().enumerate() {
                let hi = _mm512_load_si512(buf.add(64 * r).cast());
                let lo = _mm512_load_si512(buf.add(64 * (MAX_ROWS + r)).cast());
                let total = _mm512_add_epi32(_mm512_slli_epi32(hi, 8), lo);
                q6k_finish(x.get_unchecked(r), sb, dw, total, a);
            }
            if sb + 1 == sblocks {
                emit_pair(&acc[..m], 2 * pair, emit);
            }
        }
        pending = now;
    }
    asm!("tilerelease", options(nostack, nomem));
}

/// The B_hi and B_lo tiles of sub-blocks `s0..s0 + 4` of a Q6_K super-block of two groups (at
/// `p0`, `p1`), at `bt` and `bt + 1024`: B row `4i + k` holds, for each lane, the high and low
/// bytes of `sc·(q − 32)` for values `16(s0 + i) + 4k..+4` under the lane's sub-block scale.
///
/// # Safety
/// AVX-512 F/BW must be present; `p0`/`p1` must cover a Q6_K group-block, `bt` [`STEP_B`]
/// writable bytes (64-byte aligned).
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

/// One step: the A tile (`m` rows × 64 activation bytes from `xa`, `stride` apart) times the
/// B_hi tile at `bt` (signed × signed) and the B_lo tile at `bt + 1024` (signed × unsigned),
/// added into C_hi and C_lo (tiles 0, 1). `parity` picks the A and B tiles, so consecutive
/// steps share none.
///
/// # Safety
/// The tiles must be configured as [`span`] does; `xa` must cover the A tile's rows, `bt`
/// [`STEP_B`] bytes.
#[inline(always)]
unsafe fn product(xa: *const i8, stride: usize, bt: *const u8, parity: usize) {
    macro_rules! step {
        ($a:literal, $bh:literal, $bl:literal) => {
            asm!(
                concat!("tileloadd ", $a, ", [{xa} + {xs} * 1]"),
                concat!("tileloadd ", $bh, ", [{bt} + {s64} * 1]"),
                concat!("tileloadd ", $bl, ", [{bl} + {s64} * 1]"),
                concat!("tdpbssd tmm0, ", $a, ", ", $bh),
                concat!("tdpbsud tmm1, ", $a, ", ", $bl),
                xa = in(reg) xa,
                xs = in(reg) stride,
                bt = in(reg) bt,
                bl = in(reg) bt.add(1024),
                s64 = in(reg) 64usize,
                options(nostack, readonly),
            )
        };
    }
    if parity == 0 {
        step!("tmm2", "tmm4", "tmm5")
    } else {
        step!("tmm3", "tmm6", "tmm7")
    }
}
