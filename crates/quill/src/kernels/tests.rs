//! Kernels against plain f64 reference implementations on odd sizes.

use super::*;
use crate::config::RopeStyle;

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn close(a: &[f32], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let err = (*x as f64 - y).abs();
        assert!(
            err <= tol * (1.0 + y.abs()),
            "index {i}: {x} vs {y} (err {err})"
        );
    }
}

#[test]
fn matmul_matches_reference_on_odd_sizes() {
    for &(rows, n_in, n_out) in &[(1, 1, 1), (3, 7, 5), (2, 33, 17), (5, 67, 3)] {
        let x = values(rows * n_in, 1);
        let w = values(n_out * n_in, 2);
        let b = values(n_out, 3);
        let m = Matrix::from_vec(n_out, n_in, w.clone());
        let mut out = vec![0.0; rows * n_out];
        matmul(&x, &m, Some(&b), &mut out);
        let mut want = vec![0.0f64; rows * n_out];
        for r in 0..rows {
            for o in 0..n_out {
                let mut s = b[o] as f64;
                for i in 0..n_in {
                    s += x[r * n_in + i] as f64 * w[o * n_in + i] as f64;
                }
                want[r * n_out + o] = s;
            }
        }
        close(&out, &want, 1e-5);
    }
}

#[test]
fn layer_norm_and_rms_norm_match_reference() {
    let n = 13;
    let x = values(3 * n, 4);
    let w = values(n, 5);
    let b = values(n, 6);
    let mut ln = x.clone();
    layer_norm(&mut ln, &w, Some(&b), 1e-5);
    let mut rms = x.clone();
    rms_norm(&mut rms, &w, 1e-6);
    let (mut want_ln, mut want_rms) = (Vec::new(), Vec::new());
    for row in x.chunks(n) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n as f64;
        for i in 0..n {
            want_ln.push((row[i] as f64 - mean) / (var + 1e-5).sqrt() * w[i] as f64 + b[i] as f64);
            want_rms.push(row[i] as f64 / (ms + 1e-6).sqrt() * w[i] as f64);
        }
    }
    close(&ln, &want_ln, 1e-5);
    close(&rms, &want_rms, 1e-5);
}

#[test]
fn activations_match_reference() {
    let x: Vec<f32> = values(41, 7).iter().map(|v| v * 6.0).collect();
    let mut g = x.clone();
    gelu_exact(&mut g);
    let want: Vec<f64> = x
        .iter()
        .map(|&v| {
            let v = v as f64;
            0.5 * v * (1.0 + libm::erf(v / 2f64.sqrt()))
        })
        .collect();
    close(&g, &want, 1e-6);
    let mut t = x.clone();
    gelu_tanh(&mut t);
    let want: Vec<f64> = x
        .iter()
        .map(|&v| {
            let v = v as f64;
            0.5 * v
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v.powi(3))).tanh())
        })
        .collect();
    close(&t, &want, 1e-5);
    let d_ff = 5;
    let gu = values(2 * 2 * d_ff, 8);
    let mut out = vec![0.0; 2 * d_ff];
    swiglu(&gu, d_ff, &mut out);
    let mut want = Vec::new();
    for row in gu.chunks(2 * d_ff) {
        for i in 0..d_ff {
            let g = row[i] as f64;
            want.push(g / (1.0 + (-g).exp()) * row[d_ff + i] as f64);
        }
    }
    close(&out, &want, 1e-6);
}

#[test]
fn softmax_handles_masked_entries() {
    let mut x = vec![1.0, f32::NEG_INFINITY, 3.0];
    softmax(&mut x);
    assert_eq!(x[1], 0.0);
    assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    let mut all = vec![f32::NEG_INFINITY; 3];
    softmax(&mut all);
    assert!(all.iter().all(|v| *v == f32::NEG_INFINITY));
}

#[test]
fn rope_styles_are_the_same_rotation_under_a_permutation() {
    let hd = 10;
    let table = RopeTable::new(hd, 9, 10000.0);
    let x = values(hd, 9);
    let mut inter = x.clone();
    table.apply(&mut inter, 7, RopeStyle::Interleaved);
    // Interleaved pair i = (x[2i], x[2i+1]) ↔ half-split pair (y[i], y[i + hd/2]).
    let half = hd / 2;
    let mut y = vec![0.0; hd];
    for i in 0..half {
        y[i] = x[2 * i];
        y[i + half] = x[2 * i + 1];
    }
    table.apply(&mut y, 7, RopeStyle::HalfSplit);
    for i in 0..half {
        assert!((y[i] - inter[2 * i]).abs() < 1e-6);
        assert!((y[i + half] - inter[2 * i + 1]).abs() < 1e-6);
    }
    // A rotation keeps the norm; position 0 is the identity.
    let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
    assert!((norm(&inter) - norm(&x)).abs() < 1e-5);
    let mut z = x.clone();
    table.apply(&mut z, 0, RopeStyle::HalfSplit);
    assert_eq!(z, x);
}

#[test]
fn attention_matches_reference_with_grouped_heads() {
    let (n_head, n_kv, hd, start, n_new) = (4, 2, 3, 2, 3);
    let len = start + n_new;
    let q = values(n_new * n_head * hd, 10);
    let k = values(len * n_kv * hd, 11);
    let v = values(len * n_kv * hd, 12);
    let mut scores = vec![0.0; len];
    let mut out = vec![0.0; n_new * n_head * hd];
    attention(&q, &k, &v, start, n_head, n_kv, hd, &mut scores, &mut out);
    let mut want = vec![0.0f64; out.len()];
    for t in 0..n_new {
        for h in 0..n_head {
            let g = h / (n_head / n_kv);
            let visible = start + t + 1;
            let s: Vec<f64> = (0..visible)
                .map(|p| {
                    (0..hd)
                        .map(|d| {
                            q[(t * n_head + h) * hd + d] as f64 * k[(p * n_kv + g) * hd + d] as f64
                        })
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let m = s.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for d in 0..hd {
                want[(t * n_head + h) * hd + d] = (0..visible)
                    .map(|p| e[p] / z * v[(p * n_kv + g) * hd + d] as f64)
                    .sum();
            }
        }
    }
    close(&out, &want, 1e-5);
}

#[test]
fn mapped_weights_borrow_aligned_f32_only() {
    let floats = [1.0f32, 2.0, 3.0];
    let mut bytes = vec![0u8; 4];
    for f in floats {
        bytes.extend_from_slice(&f.to_le_bytes());
    }
    let b = crate::tensor::Bytes::Owned(std::sync::Arc::new(bytes));
    let m = WeightData::try_map(&b, 4, 3).expect("aligned");
    assert_eq!(m.as_slice(), &floats);
    assert!(
        WeightData::try_map(&b, 2, 3).is_none(),
        "misaligned offset must not map"
    );
    assert!(
        WeightData::try_map(&b, 4, 4).is_none(),
        "out of bounds must not map"
    );
}

#[test]
fn half_weights_compute_exactly_what_their_f32_widening_computes() {
    // Odd sizes, several tiles, and large enough for the threaded (fused) single-row path.
    let (rows, cols) = (301, 231);
    let vals = values(rows * cols, 21);
    for bf16 in [false, true] {
        let mut bytes = vec![0u8; 2]; // odd start: exercises the unaligned f16 path too
        let mut widened = Vec::new();
        for &v in &vals {
            let b = if bf16 {
                half::bf16::from_f32(v).to_le_bytes()
            } else {
                half::f16::from_f32(v).to_le_bytes()
            };
            widened.push(if bf16 {
                half::bf16::from_le_bytes(b).to_f32()
            } else {
                half::f16::from_le_bytes(b).to_f32()
            });
            bytes.extend_from_slice(&b);
        }
        for offset in [2usize, 1] {
            let mut shifted = bytes.clone();
            if offset == 1 {
                shifted.remove(0);
            }
            let m = Matrix {
                rows,
                cols,
                data: WeightData::Half {
                    bytes: crate::tensor::Bytes::Owned(std::sync::Arc::new(shifted)),
                    offset,
                    len: rows * cols,
                    bf16,
                },
            };
            let f = Matrix::from_vec(rows, cols, widened.clone());
            assert_eq!(m.weight_bytes(), rows * cols * 2);
            let x = values(5 * cols, 22);
            let (mut a, mut b) = (vec![0.0; 5 * rows], vec![0.0; 5 * rows]);
            matmul(&x, &m, None, &mut a);
            matmul(&x, &f, None, &mut b);
            assert_eq!(a, b, "bf16 = {bf16}, offset {offset}");
            // One row (decode) goes through the fused kernels: same bits as the batch.
            let (mut one, mut one_f) = (vec![0.0; rows], vec![0.0; rows]);
            matmul(&x[..cols], &m, None, &mut one);
            matmul(&x[..cols], &f, None, &mut one_f);
            assert_eq!(one, one_f, "bf16 = {bf16}, offset {offset}");
            assert_eq!(one, a[..rows], "single row equals row 0 of the batch");
        }
    }
}

#[test]
fn quantized_rows_compute_exactly_what_their_dequantized_rows_compute() {
    use crate::kernels::quant::{QuantMatrix, QuantPart};
    use crate::tensor::{Bytes, DType};
    let (rows, cols) = (290, 256);
    for (dtype, block_bytes, scales) in [
        (DType::Q8_0, 34, 1),
        (DType::Q4_0, 18, 1),
        (DType::Q4_1, 20, 2),
    ] {
        // Random blocks with sane f16 scales (and mins).
        let raw = values(rows * cols / 32 * block_bytes, 31);
        let mut bytes = Vec::with_capacity(raw.len());
        for (i, chunk) in raw.chunks(block_bytes).enumerate() {
            for k in 0..scales {
                let v = 0.01 + 0.02 * ((i + k) % 7) as f32 * if k == 1 { -1.0 } else { 1.0 };
                bytes.extend_from_slice(&half::f16::from_f32(v).to_le_bytes());
            }
            bytes.extend(
                chunk[2 * scales..]
                    .iter()
                    .map(|v| ((v + 1.0) * 127.0) as u8),
            );
        }
        let b = Bytes::Owned(std::sync::Arc::new(bytes));
        let part = QuantPart::new(dtype, rows, cols, &b, 0).expect("whole blocks");
        let q = Matrix::quantized(QuantMatrix::new(cols, vec![part]));
        let f = q.to_f32();
        let x = values(5 * cols, 32);
        let (mut a, mut c) = (vec![0.0; rows], vec![0.0; rows]);
        matmul(&x[..cols], &q, None, &mut a); // fused decode kernel
        matmul(&x[..cols], &f, None, &mut c);
        assert_eq!(a, c, "{dtype}");
        let (mut a5, mut c5) = (vec![0.0; 5 * rows], vec![0.0; 5 * rows]);
        matmul(&x, &q, None, &mut a5); // dequantize-then-dot batch path
        matmul(&x, &f, None, &mut c5);
        assert_eq!(a5, c5, "{dtype}");
        assert_eq!(a, a5[..rows], "{dtype}: decode equals row 0 of the batch");
    }
}
