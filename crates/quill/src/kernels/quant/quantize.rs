//! f32 → Q8_0 / Q4_0 / Q4_1 block quantizers: ports of llama.cpp's reference quantizers
//! (`quantize_row_q8_0_ref`, `quantize_row_q4_0_ref`, `quantize_row_q4_1_ref` in
//! `ggml-quants.c`), so a matrix quantized by quill holds the bytes llama.cpp would write for the
//! same f32 values. Layouts are in the parent module's docs.
//!
//! Per 32-value block `x`:
//! - Q8_0: `d = amax / 127`, `q = round(x / d)` (halves away from zero, C's `roundf`);
//! - Q4_0: `max` = the value of largest magnitude, sign kept (the first one on ties);
//!   `d = max / −8`, `q = min(15, trunc(x / d + 8.5))` (so `max` maps to 0 and `−max` to 15);
//! - Q4_1: `d = (max − min) / 15`, `m = min`, `q = min(15, trunc((x − min) / d + 0.5))`.
//!
//! The scale's inverse is computed from the f32 scale, which is then stored as f16 (round to
//! nearest even, as `GGML_FP32_TO_FP16`). A zero scale gives a zero inverse: an all-zero block
//! stores `d = 0` (`−0` for Q4_0, whose `0 / −8` keeps the sign; its nibbles are then 8) and
//! dequantizes to zeros.

use super::QK;
use crate::tensor::DType;

/// Bytes of one Q8_0 / Q4_0 / Q4_1 block.
const Q8_0_BYTES: usize = 34;
const Q4_0_BYTES: usize = 18;
const Q4_1_BYTES: usize = 20;

#[inline]
fn f16_bytes(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_le_bytes()
}

/// Appends the Q8_0 blocks of `x` (n values) to `out` (n / 32 · 34 bytes).
///
/// Panics if `x.len()` is not a multiple of 32 (callers check the shape first, as
/// `load::dtype` does).
pub fn quantize_row_q8_0(x: &[f32], out: &mut Vec<u8>) {
    assert_eq!(x.len() % QK, 0, "Q8_0 rows are whole blocks of {QK} values");
    out.reserve(x.len() / QK * Q8_0_BYTES);
    for xb in x.chunks_exact(QK) {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16_bytes(d));
        // |v·id| ≤ 127 up to rounding, so the conversion never saturates in practice; `as`
        // saturates where C's conversion would be undefined.
        out.extend(xb.iter().map(|&v| (v * id).round() as i8 as u8));
    }
}

/// Appends the Q4_0 blocks of `x` (n values) to `out` (n / 32 · 18 bytes). Value `j` of a block
/// goes to the low nibble of byte `j`, value `j + 16` to its high nibble.
///
/// Panics if `x.len()` is not a multiple of 32.
pub fn quantize_row_q4_0(x: &[f32], out: &mut Vec<u8>) {
    assert_eq!(x.len() % QK, 0, "Q4_0 rows are whole blocks of {QK} values");
    out.reserve(x.len() / QK * Q4_0_BYTES);
    for xb in x.chunks_exact(QK) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in xb {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16_bytes(d));
        // `(int8_t)(x + 8.5f)` truncates toward zero; the argument lies in [0, 16.5].
        let q = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
        out.extend((0..QK / 2).map(|j| q(xb[j]) | (q(xb[j + QK / 2]) << 4)));
    }
}

/// Appends the Q4_1 blocks of `x` (n values) to `out` (n / 32 · 20 bytes; nibbles as Q4_0).
///
/// Panics if `x.len()` is not a multiple of 32.
pub fn quantize_row_q4_1(x: &[f32], out: &mut Vec<u8>) {
    assert_eq!(x.len() % QK, 0, "Q4_1 rows are whole blocks of {QK} values");
    out.reserve(x.len() / QK * Q4_1_BYTES);
    for xb in x.chunks_exact(QK) {
        let (mut min, mut max) = (f32::MAX, -f32::MAX);
        for &v in xb {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16_bytes(d));
        out.extend_from_slice(&f16_bytes(min));
        let q = |v: f32| (((v - min) * id + 0.5) as i8).min(15) as u8;
        out.extend((0..QK / 2).map(|j| q(xb[j]) | (q(xb[j + QK / 2]) << 4)));
    }
}

/// A row quantizer: appends the blocks of an f32 row to a byte buffer.
pub type QuantizeRow = fn(&[f32], &mut Vec<u8>);

/// The quantizer for `dtype` (Q8_0, Q4_0 or Q4_1), `None` for any other type.
pub fn quantizer(dtype: DType) -> Option<QuantizeRow> {
    match dtype {
        DType::Q8_0 => Some(quantize_row_q8_0),
        DType::Q4_0 => Some(quantize_row_q4_0),
        DType::Q4_1 => Some(quantize_row_q4_1),
        _ => None,
    }
}

/// Whether every f16 scale (and Q4_1 minimum) in `data`, blocks of type `dtype`, is finite: a
/// block whose values are too large for an f16 scale (|x| beyond about 8·10⁶ for Q8_0, 5·10⁵
/// for Q4_0) stores an infinite one.
pub fn scales_finite(dtype: DType, data: &[u8]) -> bool {
    let finite = |b: &[u8], at: usize| super::f16_at(b, at).is_finite();
    match dtype {
        DType::Q8_0 => data.chunks_exact(Q8_0_BYTES).all(|b| finite(b, 0)),
        DType::Q4_0 => data.chunks_exact(Q4_0_BYTES).all(|b| finite(b, 0)),
        DType::Q4_1 => data
            .chunks_exact(Q4_1_BYTES)
            .all(|b| finite(b, 0) && finite(b, 2)),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::super::dequantize_row;
    use super::*;
    use rand::{Rng, SeedableRng};

    /// |v − f16(v)|: the error of storing a scale or minimum as f16 (subnormals included).
    fn f16_err(v: f32) -> f32 {
        (v - half::f16::from_f32(v).to_f32()).abs()
    }

    fn round_trip(dtype: DType, x: &[f32]) -> (Vec<u8>, Vec<f32>) {
        let mut bytes = Vec::new();
        quantizer(dtype).expect("a 32-value format")(x, &mut bytes);
        assert_eq!(Some(bytes.len()), dtype.bytes_for(x.len()));
        let mut back = vec![f32::NAN; x.len()];
        dequantize_row(dtype, &bytes, &mut back);
        (bytes, back)
    }

    /// The largest round-trip error the format allows for block `xb`, from its own scale `d`:
    /// half a step for round-to-nearest (a whole step for Q4_0, whose `−max` end is clipped
    /// from code 16 to 15), plus the f16 rounding of the scale times the largest code, plus
    /// (Q4_1) the f16 rounding of the minimum; a little slack for f32 arithmetic.
    fn bound(dtype: DType, xb: &[f32]) -> f32 {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let (min, max) = xb
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        let slack = 1e-6 * amax;
        match dtype {
            DType::Q8_0 => {
                let d = amax / 127.0;
                0.5 * d + 127.0 * f16_err(d) + slack
            }
            DType::Q4_0 => {
                let d = amax / 8.0;
                d + 8.0 * f16_err(d) + slack
            }
            DType::Q4_1 => {
                let d = (max - min) / 15.0;
                0.5 * d + 15.0 * f16_err(d) + f16_err(min) + slack
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn round_trip_error_is_within_each_formats_bound() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for dtype in [DType::Q8_0, DType::Q4_0, DType::Q4_1] {
            // Odd numbers of rows, and of blocks per row; scales from tiny to large, with an
            // offset so Q4_1's minimum matters.
            for (rows, blocks) in [(1, 1), (3, 5), (7, 3), (13, 1)] {
                let cols = blocks * QK;
                for r in 0..rows {
                    let scale = 10f32.powi(r % 7 - 4);
                    let shift = if r % 2 == 1 { 0.3 * scale } else { 0.0 };
                    let x: Vec<f32> = (0..cols)
                        .map(|_| rng.gen_range(-1.0f32..1.0) * scale + shift)
                        .collect();
                    let (_, back) = round_trip(dtype, &x);
                    for (b, (xb, yb)) in x.chunks(QK).zip(back.chunks(QK)).enumerate() {
                        let tol = bound(dtype, xb);
                        for (j, (a, y)) in xb.iter().zip(yb).enumerate() {
                            assert!(
                                (a - y).abs() <= tol,
                                "{dtype} row {r} block {b} value {j}: {a} -> {y}, bound {tol}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn q8_0_block_by_hand() {
        // amax 127 gives d = 1 exactly (f16 0x3C00), so q = roundf(x): halves away from zero.
        let mut x = [0.0f32; QK];
        let head = [127.0, -127.0, 0.5, -0.5, 1.49, 2.5, -2.5, 0.49, 100.2];
        x[..head.len()].copy_from_slice(&head);
        let (bytes, back) = round_trip(DType::Q8_0, &x);
        assert_eq!(&bytes[..2], &[0x00, 0x3C]);
        let q: Vec<i8> = bytes[2..].iter().map(|&b| b as i8).collect();
        assert_eq!(&q[..head.len()], &[127, -127, 1, -1, 1, 3, -3, 0, 100]);
        assert!(q[head.len()..].iter().all(|&v| v == 0));
        assert_eq!(back[5], 3.0);
    }

    #[test]
    fn q4_0_block_by_hand() {
        // The largest magnitude is −8: d = −8 / −8 = 1, q = min(15, trunc(x + 8.5)).
        let mut x = [0.0f32; QK];
        x[..6].copy_from_slice(&[-8.0, 7.0, 0.5, -0.5, 3.2, 7.9]);
        x[16..19].copy_from_slice(&[-3.0, 1.0, 6.6]);
        let (bytes, back) = round_trip(DType::Q4_0, &x);
        assert_eq!(&bytes[..2], &[0x00, 0x3C]);
        let lo = |j: usize| bytes[2 + j] & 0x0F;
        let hi = |j: usize| bytes[2 + j] >> 4;
        assert_eq!(
            (0..6).map(lo).collect::<Vec<_>>(),
            [0, 15, 9, 8, 11, 15] // 7.9 + 8.5 = 16.4 → 16 → clipped to 15
        );
        assert_eq!((0..3).map(hi).collect::<Vec<_>>(), [5, 9, 15]);
        assert_eq!(lo(6), 8); // zeros are stored as 8
        assert_eq!(&back[..6], &[-8.0, 7.0, 1.0, 0.0, 3.0, 7.0]);

        // A positive maximum flips the scale's sign: d = −1; its mirror −8 clips to code 15.
        let mut y = [0.0f32; QK];
        y[0] = 8.0;
        y[1] = -8.0; // same magnitude, later: the first one wins
        let (bytes, back) = round_trip(DType::Q4_0, &y);
        assert_eq!(&bytes[..2], &[0x00, 0xBC]); // f16 −1.0
        assert_eq!((bytes[2] & 0x0F, bytes[3] & 0x0F), (0, 15));
        assert_eq!((back[0], back[1]), (8.0, -7.0));
    }

    #[test]
    fn q4_1_block_by_hand() {
        // min −1, max 14: d = 1, m = −1, q = min(15, trunc(x + 1 + 0.5)).
        let mut x = [0.0f32; QK];
        x[..5].copy_from_slice(&[-1.0, 14.0, 2.4, 2.5, -0.6]);
        x[16] = 6.0;
        let (bytes, back) = round_trip(DType::Q4_1, &x);
        assert_eq!(&bytes[..4], &[0x00, 0x3C, 0x00, 0xBC]);
        let lo: Vec<u8> = (0..5).map(|j| bytes[4 + j] & 0x0F).collect();
        assert_eq!(lo, [0, 15, 3, 4, 0]);
        assert_eq!(bytes[4] >> 4, 7);
        assert_eq!(bytes[9] & 0x0F, 1); // a zero is code 1 (= m + d)
        assert_eq!(&back[..5], &[-1.0, 14.0, 2.0, 3.0, -1.0]);
    }

    #[test]
    fn an_all_zero_block_stores_a_zero_scale_and_dequantizes_to_zeros() {
        let x = [0.0f32; 2 * QK];
        for dtype in [DType::Q8_0, DType::Q4_0, DType::Q4_1] {
            let (bytes, back) = round_trip(dtype, &x);
            let header = if dtype == DType::Q4_1 { 4 } else { 2 };
            for b in bytes.chunks_exact(dtype.block_bytes()) {
                // Q4_0 computes d = 0 / −8 = −0 (f16 0x8000), as llama.cpp does.
                let d = if dtype == DType::Q4_0 {
                    [0, 0x80]
                } else {
                    [0, 0]
                };
                assert_eq!(&b[..2], &d, "{dtype}: d = 0");
                let qs = &b[header..];
                let want = if dtype == DType::Q4_0 { 0x88 } else { 0 };
                assert!(qs.iter().all(|&q| q == want), "{dtype}: {qs:?}");
            }
            if dtype == DType::Q4_1 {
                assert_eq!(&bytes[2..4], &[0, 0], "m = 0");
            }
            assert!(back.iter().all(|&v| v == 0.0), "{dtype}: {back:?}");
        }
    }

    #[test]
    fn a_constant_block_round_trips_through_q4_1s_minimum() {
        let x = [0.75f32; QK];
        let (bytes, back) = round_trip(DType::Q4_1, &x);
        assert_eq!(&bytes[..2], &[0, 0]);
        assert!(back.iter().all(|&v| v == 0.75));
    }

    #[test]
    fn oversized_values_are_reported_as_infinite_scales() {
        let mut x = [0.0f32; QK];
        x[3] = 1e7; // Q4_0: d = 1.25e6, beyond f16's 65504
        let mut bytes = Vec::new();
        quantize_row_q4_0(&x, &mut bytes);
        assert!(!scales_finite(DType::Q4_0, &bytes));
        bytes.clear();
        quantize_row_q8_0(&x, &mut bytes); // d = 78740: also too large
        assert!(!scales_finite(DType::Q8_0, &bytes));
        x[3] = 1e3;
        bytes.clear();
        quantize_row_q4_1(&x, &mut bytes);
        assert!(scales_finite(DType::Q4_1, &bytes));
    }
}
