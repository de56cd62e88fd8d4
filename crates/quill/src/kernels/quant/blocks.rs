//! The 32-value block formats Q8_0, Q4_0 and Q4_1 (layouts in the parent module's docs).

use super::act::QRow;
use super::{f16_at, QK};

const Q8_0_BYTES: usize = 34;
const Q4_0_BYTES: usize = 18;
const Q4_1_BYTES: usize = 20;

#[inline(always)]
pub(super) fn dequant_q8_0(data: &[u8], out: &mut [f32]) {
    for (b, o) in data.chunks_exact(Q8_0_BYTES).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        for (v, &q) in o.iter_mut().zip(&b[2..]) {
            *v = d * (q as i8) as f32;
        }
    }
}

/// The 32 nibbles of a Q4_0/Q4_1 block as integers 0..16, in value order.
#[inline(always)]
fn nibbles(qs: &[u8]) -> [i8; QK] {
    let mut v = [0i8; QK];
    for j in 0..QK / 2 {
        v[j] = (qs[j] & 0x0F) as i8;
        v[j + QK / 2] = (qs[j] >> 4) as i8;
    }
    v
}

#[inline(always)]
pub(super) fn dequant_q4_0(data: &[u8], out: &mut [f32]) {
    for (b, o) in data.chunks_exact(Q4_0_BYTES).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        for (v, q) in o.iter_mut().zip(nibbles(&b[2..])) {
            *v = d * (q - 8) as f32;
        }
    }
}

#[inline(always)]
pub(super) fn dequant_q4_1(data: &[u8], out: &mut [f32]) {
    for (b, o) in data.chunks_exact(Q4_1_BYTES).zip(out.chunks_exact_mut(QK)) {
        let (d, m) = (f16_at(b, 0), f16_at(b, 2));
        for (v, q) in o.iter_mut().zip(nibbles(&b[4..])) {
            *v = d * q as f32 + m;
        }
    }
}

#[inline]
fn idot(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

pub(super) fn dot_q8_0(row: &[u8], a: &QRow<'_>) -> f32 {
    let mut acc = 0.0f32;
    for (i, b) in row.chunks_exact(Q8_0_BYTES).enumerate() {
        let mut w = [0i8; QK];
        for (x, &q) in w.iter_mut().zip(&b[2..]) {
            *x = q as i8;
        }
        let s = idot(&w, &a.q[i * QK..][..QK]);
        acc += (f16_at(b, 0) * a.d[i]) * s as f32;
    }
    acc
}

pub(super) fn dot_q4_0(row: &[u8], a: &QRow<'_>) -> f32 {
    let mut acc = 0.0f32;
    for (i, b) in row.chunks_exact(Q4_0_BYTES).enumerate() {
        let s = idot(&nibbles(&b[2..]), &a.q[i * QK..][..QK])
            - 8 * (a.sum16[2 * i] as i32 + a.sum16[2 * i + 1] as i32);
        acc += (f16_at(b, 0) * a.d[i]) * s as f32;
    }
    acc
}

pub(super) fn dot_q4_1(row: &[u8], a: &QRow<'_>) -> f32 {
    let mut acc = 0.0f32;
    for (i, b) in row.chunks_exact(Q4_1_BYTES).enumerate() {
        let s = idot(&nibbles(&b[4..]), &a.q[i * QK..][..QK]);
        let (d, m) = (f16_at(b, 0), f16_at(b, 2));
        acc += (d * a.d[i]) * s as f32 + m * a.s[i];
    }
    acc
}
