//! AArch64 NEON kernels over interleaved groups ([`super::packed`]) of the 32-value block formats
//! Q8_0, Q4_0 and Q4_1: activation rows against the 8 weight rows of a group, rows 0..4 of the
//! group in one 4-lane vector and rows 4..8 in another.
//!
//! The interleaved layout suits NEON as it suits AVX2: a group-block's 4-byte unit `u` holds
//! the same 4 values of all 8 rows (32 bytes), so its first 16 bytes are rows 0..4 and its last
//! 16 rows 4..8, and the byte products of one unit against the 4 matching activation values
//! (broadcast to every lane) sum, per 32-bit lane, to one row's share of the dot product.
//! With the `dotprod` extension (Armv8.4, optional from 8.2: Apple M1 on, Graviton 2 on,
//! Cortex-A76 on) that is one `sdot` per 16 bytes; without it (Cortex-A72, Raspberry Pi 4)
//! `smull` widens the byte products to 16 bits and two pairwise adds fold each row's four into
//! its 32-bit lane (a pair of products is at most 2·128·127, which fits 16 bits). Either way
//! every lane ends as the block's exact integer dot product, then `acc += (d_w·d_x)·Σ`
//! (Q4_1: `+ m_w·s_x`) with separate multiplies and adds: the portable row kernels' arithmetic
//! ([`super::blocks`]), bit for bit.
//!
//! `sdot` and the f16 → f32 widening of the scales (`fcvtl`, base AArch64) are written as inline
//! assembly: Rust's `vdotq_s32` and `float16x4_t` are not stable yet.
//!
//! Speed note: these kernels are tested for their bits under QEMU (with and without `dotprod`);
//! no Arm machine was at hand to time them, so no speed is claimed for them.

use std::arch::aarch64::*;
use std::arch::asm;

use super::act::QRow;
use super::packed::LANES;

/// Most activation rows per call of [`span`].
pub(super) const MAX_ROWS: usize = 16;

/// Group-block bytes (8 blocks) and quant-byte offset, for kernel `T` (0 Q8_0, 1 Q4_0, 2 Q4_1).
const fn layout(t: u8) -> (usize, usize) {
    match t {
        0 => (8 * 34, 16),
        1 => (8 * 18, 16),
        _ => (8 * 20, 32),
    }
}

/// The four f16 values at `p` as f32 (exact: every f16 is an f32).
#[inline(always)]
unsafe fn f16x4(p: *const u8) -> float32x4_t {
    let h = vld1_u16(p.cast());
    let r: float32x4_t;
    // SAFETY: `fcvtl` is base AArch64 SIMD; registers only.
    asm!("fcvtl {0:v}.4s, {1:v}.4h", out(vreg) r, in(vreg) h, options(pure, nomem, nostack));
    r
}

/// Four bytes at `p` repeated in every 32-bit lane.
#[inline(always)]
unsafe fn bcast4(p: *const i8) -> int8x16_t {
    vreinterpretq_s8_s32(vld1q_dup_s32(p.cast()))
}

/// `acc + Σ_4 w·x` per 32-bit lane (signed bytes; `x` within ±127). `D`: with `sdot`.
#[inline(always)]
unsafe fn dot4<const D: bool>(acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
    if D {
        let mut a = acc;
        // SAFETY: the caller's `dotprod` target feature; registers only.
        asm!(
            "sdot {0:v}.4s, {1:v}.16b, {2:v}.16b",
            inout(vreg) a,
            in(vreg) w,
            in(vreg) x,
            options(pure, nomem, nostack)
        );
        a
    } else {
        // Lanes of the products: rows 0 and 1 (low half), rows 2 and 3 (high half), 4 each;
        // pairwise adds give [r0, r0, r1, r1, r2, r2, r3, r3], then each row's two pairs add
        // into its 32-bit lane.
        let lo = vmull_s8(vget_low_s8(w), vget_low_s8(x));
        let hi = vmull_high_s8(w, x);
        vpadalq_s16(acc, vpaddq_s16(lo, hi))
    }
}

/// One row's 8 outputs: rows 0..4 and 4..8 of the group.
type Acc = [float32x4_t; 2];

/// The activation rows `x` (at most [`MAX_ROWS`]) against one interleaved group of `blocks`
/// group-blocks at `g`: `acc[r]` = the 8 outputs of row `r`. Per block the weights are
/// unpacked once into registers (16 vectors), then every row passes over them.
///
/// # Safety
/// NEON (and for `D` the `dotprod` extension) must be present; `g` must cover `blocks`
/// group-blocks of kernel `T`'s layout, and each `x[r]` `blocks · 32` values with their scales
/// (Q4_1: and sums).
#[inline(always)]
unsafe fn group<const T: u8, const D: bool>(
    x: &[QRow<'_>],
    g: *const u8,
    blocks: usize,
    acc: &mut [Acc; MAX_ROWS],
) {
    let (gb, head) = layout(T);
    let m4 = vdupq_n_u8(0x0F);
    let eight = vdupq_n_s8(8);
    let rows = x.len().min(MAX_ROWS);
    for a in acc[..rows].iter_mut() {
        *a = [vdupq_n_f32(0.0); 2];
    }
    for b in 0..blocks {
        let p = g.add(b * gb);
        let qs = p.add(head);
        let dw = [f16x4(p), f16x4(p.add(8))];
        let mw = if T == 2 {
            [f16x4(p.add(16)), f16x4(p.add(24))]
        } else {
            [vdupq_n_f32(0.0); 2]
        };
        // Per unit and half (rows 0..4, 4..8): Q8_0 the bytes of units 0..8; Q4 the low
        // nibbles (values 4u..4u+4) in 0..8 and the high nibbles (16+4u..) in 8..16, Q4_0's
        // shifted to −8..8.
        let mut wv = [vdupq_n_s8(0); 16];
        if T == 0 {
            for u in 0..8 {
                wv[2 * u] = vld1q_s8(qs.add(32 * u).cast());
                wv[2 * u + 1] = vld1q_s8(qs.add(32 * u + 16).cast());
            }
        } else {
            for u in 0..4 {
                for h in 0..2 {
                    let v = vld1q_u8(qs.add(32 * u + 16 * h));
                    let lo = vreinterpretq_s8_u8(vandq_u8(v, m4));
                    let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(v));
                    let (lo, hi) = if T == 1 {
                        (vsubq_s8(lo, eight), vsubq_s8(hi, eight))
                    } else {
                        (lo, hi)
                    };
                    wv[2 * u + h] = lo;
                    wv[8 + 2 * u + h] = hi;
                }
            }
        }
        for r in 0..rows {
            let xr = x.get_unchecked(r);
            let xq = xr.q.as_ptr().add(32 * b);
            // Two chains per half (even and odd units), so consecutive products need not wait
            // on each other.
            let mut s = [vdupq_n_s32(0); 4];
            for u in 0..8 {
                // Q8_0: unit u holds values 4u..4u+4; Q4: index u < 4 the low nibbles
                // (values 4u..), u ≥ 4 the high ones (values 16 + 4(u − 4)..).
                let at = if T == 0 || u < 4 {
                    4 * u
                } else {
                    16 + 4 * (u - 4)
                };
                let xb = bcast4(xq.add(at));
                let (w0, w1) = if T == 0 {
                    (wv[2 * u], wv[2 * u + 1])
                } else {
                    let k = if u < 4 { 2 * u } else { 8 + 2 * (u - 4) };
                    (wv[k], wv[k + 1])
                };
                let c = u % 2;
                s[c] = dot4::<D>(s[c], w0, xb);
                s[2 + c] = dot4::<D>(s[2 + c], w1, xb);
            }
            let i = [vaddq_s32(s[0], s[1]), vaddq_s32(s[2], s[3])];
            let dx = vdupq_n_f32(*xr.d.get_unchecked(b));
            let a = acc.get_unchecked_mut(r);
            for h in 0..2 {
                let mut t = vmulq_f32(vmulq_f32(dw[h], dx), vcvtq_f32_s32(i[h]));
                if T == 2 {
                    let sx = vdupq_n_f32(*xr.s.get_unchecked(b));
                    t = vaddq_f32(t, vmulq_f32(mw[h], sx));
                }
                a[h] = vaddq_f32(a[h], t);
            }
        }
    }
}

/// `groups` interleaved groups from `w` against every row of `x` (at most [`MAX_ROWS`]);
/// `emit(r, first_weight_row, lanes)`. `D`: with `sdot` (only through [`span_dot`], which
/// enables the extension); plain NEON, which every AArch64 CPU has, otherwise.
///
/// # Safety
/// As [`group`], for every group `0..groups` at `w + group · blocks · gb`.
#[inline(always)]
pub(super) unsafe fn span<const T: u8, const D: bool, F>(
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
    let mut acc = [[vdupq_n_f32(0.0); 2]; MAX_ROWS];
    for g in 0..groups {
        group::<T, D>(x, w.add(g * gbytes), blocks, &mut acc);
        for (r, a) in acc[..x.len()].iter().enumerate() {
            let mut out = [0.0f32; LANES];
            vst1q_f32(out.as_mut_ptr(), a[0]);
            vst1q_f32(out.as_mut_ptr().add(4), a[1]);
            emit(r, g * LANES, out);
        }
    }
}

/// [`span`] with `sdot`.
///
/// # Safety
/// As [`span`], and the CPU must have the `dotprod` extension.
#[target_feature(enable = "dotprod")]
pub(super) unsafe fn span_dot<const T: u8, F>(
    x: &[QRow<'_>],
    w: *const u8,
    blocks: usize,
    groups: usize,
    emit: &mut F,
) where
    F: FnMut(usize, usize, [f32; LANES]),
{
    span::<T, true, F>(x, w, blocks, groups, emit)
}
