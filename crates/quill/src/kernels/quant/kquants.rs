//! llama.cpp's K-quants: 256-value super-blocks with 6- or 8-bit sub-block scales.
//!
//! - Q4_K (144 bytes): `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`. Eight sub-blocks of
//!   32 values, each with a 6-bit scale `sc` and min `m` packed into `scales`; the 64 values
//!   `64j..64j+64` are the low nibbles then the high nibbles of `qs[32j..32j+32]`;
//!   `x = d·sc·q − dmin·m`.
//! - Q5_K (176 bytes): `d, dmin, scales[12], qh: [u8; 32], qs: [u8; 128]`; as Q4_K with a fifth
//!   bit per value from `qh` (bit `2j` for the low-nibble half of chunk `j`, `2j+1` for the high).
//! - Q6_K (210 bytes): `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`. Sixteen
//!   sub-blocks of 16 values with signed 8-bit scales; `x = d·sc·(q − 32)` with 6-bit `q`.

use super::act::QRow;
use super::{f16_at, QK_K};

const Q4_K_BYTES: usize = 144;
const Q5_K_BYTES: usize = 176;
const Q6_K_BYTES: usize = 210;

/// The 6-bit scale and min of sub-block `j` (0..8) from the 12 packed bytes.
#[inline]
fn scale_min(j: usize, q: &[u8]) -> (i32, i32) {
    if j < 4 {
        ((q[j] & 63) as i32, (q[j + 4] & 63) as i32)
    } else {
        (
            ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4)) as i32,
            ((q[j + 4] >> 4) | ((q[j] >> 6) << 4)) as i32,
        )
    }
}

/// A Q4_K / Q5_K super-block unpacked: values 0..32, per-32 scales and mins, d and dmin.
struct Unpacked45 {
    q: [i8; QK_K],
    sc: [i32; 8],
    m: [i32; 8],
    d: f32,
    dmin: f32,
}

/// Where a Q4_K / Q5_K super-block's 4-bit quants start (Q5_K's fifth bits sit before them).
const fn qs_at(five: bool) -> usize {
    if five {
        48
    } else {
        16
    }
}

/// The fields of a Q4_K (`five` false) or Q5_K super-block `b` after d and dmin: its 256 values
/// in order (0..16, or 0..32 with the fifth bit), its 8 six-bit scales and its 8 six-bit mins.
pub(super) fn q45_k_fields(b: &[u8], five: bool) -> ([u8; QK_K], [u8; 8], [u8; 8]) {
    let (mut sc, mut m) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        let (s, n) = scale_min(j, &b[4..16]);
        (sc[j], m[j]) = (s as u8, n as u8);
    }
    let qs = &b[qs_at(five)..][..128];
    let mut q = [0u8; QK_K];
    for j in 0..4 {
        for l in 0..32 {
            let byte = qs[32 * j + l];
            q[64 * j + l] = byte & 0x0F;
            q[64 * j + 32 + l] = byte >> 4;
            if five {
                let h = b[16 + l];
                q[64 * j + l] |= (h >> (2 * j) & 1) << 4;
                q[64 * j + 32 + l] |= (h >> (2 * j + 1) & 1) << 4;
            }
        }
    }
    (q, sc, m)
}

/// The inverse of [`q45_k_fields`]: writes the scales, (Q5_K) fifth bits and quants of the
/// super-block `b`, every byte after d and dmin.
pub(super) fn q45_k_store_fields(
    q: &[u8; QK_K],
    sc: &[u8; 8],
    m: &[u8; 8],
    b: &mut [u8],
    five: bool,
) {
    let scales = &mut b[4..16];
    for j in 0..4 {
        scales[j] = (sc[j] & 63) | (sc[j + 4] >> 4) << 6;
        scales[j + 4] = (m[j] & 63) | (m[j + 4] >> 4) << 6;
        scales[j + 8] = (sc[j + 4] & 0x0F) | (m[j + 4] & 0x0F) << 4;
    }
    let at = qs_at(five);
    for j in 0..4 {
        for l in 0..32 {
            let (lo, hi) = (q[64 * j + l], q[64 * j + 32 + l]);
            b[at + 32 * j + l] = (lo & 0x0F) | (hi & 0x0F) << 4;
        }
    }
    if five {
        for l in 0..32 {
            b[16 + l] = (0..4).fold(0, |h, j| {
                h | (q[64 * j + l] >> 4 & 1) << (2 * j)
                    | (q[64 * j + 32 + l] >> 4 & 1) << (2 * j + 1)
            });
        }
    }
}

fn unpack_q45(b: &[u8], five: bool) -> Unpacked45 {
    let (q, sc, m) = q45_k_fields(b, five);
    Unpacked45 {
        q: q.map(|v| v as i8),
        sc: sc.map(i32::from),
        m: m.map(i32::from),
        d: f16_at(b, 0),
        dmin: f16_at(b, 2),
    }
}

fn dequant45(u: &Unpacked45, out: &mut [f32]) {
    for (s, o) in out.chunks_exact_mut(32).enumerate() {
        let d = u.d * u.sc[s] as f32;
        let m = u.dmin * u.m[s] as f32;
        for (v, &q) in o.iter_mut().zip(&u.q[32 * s..32 * s + 32]) {
            *v = d * q as f32 - m;
        }
    }
}

#[inline]
fn idot(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

fn dot45(u: &Unpacked45, a: &QRow<'_>, blk: usize) -> f32 {
    let aq = &a.q[blk * QK_K..][..QK_K];
    let (mut sum_q, mut sum_m) = (0i32, 0i32);
    for s in 0..8 {
        sum_q += u.sc[s] * idot(&u.q[32 * s..32 * s + 32], &aq[32 * s..32 * s + 32]);
        sum_m += u.m[s] * (a.sum16[blk * 16 + 2 * s] as i32 + a.sum16[blk * 16 + 2 * s + 1] as i32);
    }
    a.d[blk] * (u.d * sum_q as f32 - u.dmin * sum_m as f32)
}

#[inline(always)]
pub(super) fn dequant_q4_k(data: &[u8], out: &mut [f32]) {
    for (b, o) in data
        .chunks_exact(Q4_K_BYTES)
        .zip(out.chunks_exact_mut(QK_K))
    {
        dequant45(&unpack_q45(b, false), o);
    }
}

#[inline(always)]
pub(super) fn dequant_q5_k(data: &[u8], out: &mut [f32]) {
    for (b, o) in data
        .chunks_exact(Q5_K_BYTES)
        .zip(out.chunks_exact_mut(QK_K))
    {
        dequant45(&unpack_q45(b, true), o);
    }
}

pub(super) fn dot_q4_k(row: &[u8], a: &QRow<'_>) -> f32 {
    let mut acc = 0.0f32;
    for (i, b) in row.chunks_exact(Q4_K_BYTES).enumerate() {
        acc += dot45(&unpack_q45(b, false), a, i);
    }
    acc
}

pub(super) fn dot_q5_k(row: &[u8], a: &QRow<'_>) -> f32 {
    let mut acc = 0.0f32;
    for (i, b) in row.chunks_exact(Q5_K_BYTES).enumerate() {
        acc += dot45(&unpack_q45(b, true), a, i);
    }
    acc
}

/// The 256 six-bit values (0..64, before the −32 offset) of a Q6_K super-block, in order.
pub(super) fn q6_k_values(b: &[u8]) -> [u8; QK_K] {
    let (ql, qh) = (&b[0..128], &b[128..192]);
    let mut q = [0u8; QK_K];
    for n in 0..2 {
        let (ql, qh) = (&ql[64 * n..], &qh[32 * n..]);
        let y = &mut q[128 * n..];
        for l in 0..32 {
            let h = qh[l];
            y[l] = (ql[l] & 0x0F) | ((h & 3) << 4);
            y[l + 32] = (ql[l + 32] & 0x0F) | (((h >> 2) & 3) << 4);
            y[l + 64] = (ql[l] >> 4) | (((h >> 4) & 3) << 4);
            y[l + 96] = (ql[l + 32] >> 4) | (((h >> 6) & 3) << 4);
        }
    }
    q
}

/// The inverse of [`q6_k_values`]: writes the `ql` and `qh` fields (the first 192 bytes of the
/// super-block `b`) holding the six-bit values `q`.
pub(super) fn q6_k_store_values(q: &[u8; QK_K], b: &mut [u8]) {
    let (ql, qh) = b[..192].split_at_mut(128);
    for n in 0..2 {
        let (ql, qh, y) = (&mut ql[64 * n..], &mut qh[32 * n..], &q[128 * n..]);
        for l in 0..32 {
            ql[l] = (y[l] & 0x0F) | (y[l + 64] << 4);
            ql[l + 32] = (y[l + 32] & 0x0F) | (y[l + 96] << 4);
            qh[l] = (y[l] >> 4)
                | ((y[l + 32] >> 4) << 2)
                | ((y[l + 64] >> 4) << 4)
                | ((y[l + 96] >> 4) << 6);
        }
    }
}

/// A Q6_K super-block unpacked: values −32..32 in order, one signed scale per 16 values.
fn unpack_q6_k(b: &[u8]) -> ([i8; QK_K], [i32; 16], f32) {
    let q = q6_k_values(b).map(|v| v as i8 - 32);
    let mut sc = [0i32; 16];
    for (s, &byte) in sc.iter_mut().zip(&b[192..208]) {
        *s = byte as i8 as i32;
    }
    (q, sc, f16_at(b, 208))
}

#[inline(always)]
pub(super) fn dequant_q6_k(data: &[u8], out: &mut [f32]) {
    for (b, o) in data
        .chunks_exact(Q6_K_BYTES)
        .zip(out.chunks_exact_mut(QK_K))
    {
        let (q, sc, d) = unpack_q6_k(b);
        for (s, o16) in o.chunks_exact_mut(16).enumerate() {
            let ds = d * sc[s] as f32;
            for (v, &x) in o16.iter_mut().zip(&q[16 * s..16 * s + 16]) {
                *v = ds * x as f32;
            }
        }
    }
}

pub(super) fn dot_q6_k(row: &[u8], a: &QRow<'_>) -> f32 {
    let mut acc = 0.0f32;
    for (i, b) in row.chunks_exact(Q6_K_BYTES).enumerate() {
        let (q, sc, d) = unpack_q6_k(b);
        let aq = &a.q[i * QK_K..][..QK_K];
        let mut sum = 0i32;
        for s in 0..16 {
            sum += sc[s] * idot(&q[16 * s..16 * s + 16], &aq[16 * s..16 * s + 16]);
        }
        acc += a.d[i] * d * sum as f32;
    }
    acc
}
