//! Kernels against plain f64 reference implementations on odd sizes.

use super::*;

/// Deterministic pseudo-random values in [-1, 1) (also the other kernel modules' test data).
pub(super) fn values(n: usize, seed: u64) -> Vec<f32> {
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

pub(super) fn close(a: &[f32], b: &[f64], tol: f64) {
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
    let shapes = [
        (1, 1, 1),
        (3, 7, 5),
        (2, 33, 17),
        (5, 67, 3),
        (7, 33, 37),
        (19, 100, 50),
        // Blocks of 9-12 rows: one pass per panel on AVX-512, alone and in pairs.
        (11, 45, 48),
        (26, 40, 130),
    ];
    for &(rows, n_in, n_out) in &shapes {
        let x = values(rows * n_in, 1);
        let w = values(n_out * n_in, 2);
        let b = values(n_out, 3);
        let m = Matrix::from_vec(n_out, n_in, w.clone());
        let mut out = vec![0.0; rows * n_out];
        matmul(&x, &m, Some(&b), &mut out);
        // The panel layout a loaded model uses (whole panels and a row-major rest).
        let p = m.clone().interleaved();
        assert_eq!(matches!(p.data, WeightData::Panel(_)), n_out >= 16);
        let mut via_panels = vec![0.0; rows * n_out];
        matmul(&x, &p, Some(&b), &mut via_panels);
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
        close(&via_panels, &want, 1e-5);
    }
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

/// Causal attention in f64, straight from the definition.
fn attention_reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    (n_head, n_kv, hd, start): (usize, usize, usize, usize),
) -> Vec<f64> {
    let n_new = q.len() / (n_head * hd);
    let mut want = vec![0.0f64; q.len()];
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
    want
}

/// Splits a `[positions, n_kv, hd]` array into the KV cache's per-head `[positions, hd]` form.
pub(super) fn per_head(x: &[f32], n_kv: usize, hd: usize) -> Vec<KvRows> {
    (0..n_kv)
        .map(|g| {
            KvRows::F32(
                x.chunks_exact(n_kv * hd)
                    .flat_map(|row| &row[g * hd..][..hd])
                    .copied()
                    .collect(),
            )
        })
        .collect()
}

/// Attention of one sequence whose cache is given as `[positions, n_kv, hd]` arrays.
fn attend(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    start: usize,
    (n_head, n_kv, hd): (usize, usize, usize),
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let (keys, values) = (per_head(k, n_kv, hd), per_head(v, n_kv, hd));
    let seq = AttnSeq {
        q,
        keys: &keys,
        values: &values,
        start,
    };
    attention(&[seq], n_head, hd, scores, out);
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
    attend(&q, &k, &v, start, (n_head, n_kv, hd), &mut scores, &mut out);
    close(
        &out,
        &attention_reference(&q, &k, &v, (n_head, n_kv, hd, start)),
        1e-5,
    );
}

/// Large enough to be split over the pool: every thread count gives the same bits, and they
/// match the reference. Head sizes: odd (portable path), 16 and 72 (the SIMD path's 8- and
/// 64-wide pieces); 47 visible positions (not a multiple of the 4-position score groups).
#[test]
fn threaded_attention_does_not_depend_on_the_thread_count() {
    for hd in [19, 16, 72] {
        let (n_head, n_kv, start, n_new) = (6, 3, 40, 7);
        let len = start + n_new;
        let q = values(n_new * n_head * hd, 13);
        let k = values(len * n_kv * hd, 14);
        let v = values(len * n_kv * hd, 15);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("thread pool");
            pool.install(|| {
                let mut scores = Vec::new();
                let mut out = vec![0.0; n_new * n_head * hd];
                attend(&q, &k, &v, start, (n_head, n_kv, hd), &mut scores, &mut out);
                out
            })
        };
        let one = run(1);
        close(
            &one,
            &attention_reference(&q, &k, &v, (n_head, n_kv, hd, start)),
            1e-5,
        );
        for threads in [2, 3, 5] {
            assert_eq!(run(threads), one, "hd {hd}, {threads} threads");
        }
        // The same arithmetic as plain dot products and axpys, to the bit.
        let mut plain = vec![0.0f32; n_new * n_head * hd];
        for t in 0..n_new {
            for h in 0..n_head {
                let g = h / (n_head / n_kv);
                let qh = &q[(t * n_head + h) * hd..][..hd];
                let mut sc: Vec<f32> = (0..start + t + 1)
                    .map(|p| dot(qh, &k[(p * n_kv + g) * hd..][..hd]) * (1.0 / (hd as f32).sqrt()))
                    .collect();
                softmax(&mut sc);
                let oh = &mut plain[(t * n_head + h) * hd..][..hd];
                for (p, &w) in sc.iter().enumerate() {
                    axpy(w, &v[(p * n_kv + g) * hd..][..hd], oh);
                }
            }
        }
        assert_eq!(one, plain, "hd {hd}");
        // A decode row (one query at the last position) equals the same row of the batch.
        let mut scores = Vec::new();
        let mut last = vec![0.0; n_head * hd];
        let q_last = &q[(n_new - 1) * n_head * hd..];
        attend(
            q_last,
            &k,
            &v,
            len - 1,
            (n_head, n_kv, hd),
            &mut scores,
            &mut last,
        );
        assert_eq!(last, one[(n_new - 1) * n_head * hd..], "hd {hd}");
    }
}

/// Sequences of different lengths in one call (decode rows and a prefill chunk, grouped heads,
/// large enough to be split over the pool): each sequence's rows are exactly what it gets alone.
#[test]
fn batched_attention_equals_each_sequence_alone() {
    let (n_head, n_kv, hd) = (6, 2, 16);
    let shapes = [(30, 1), (0, 9), (57, 1), (12, 4)];
    let seqs: Vec<_> = shapes
        .iter()
        .enumerate()
        .map(|(i, &(start, n_new))| {
            let len = start + n_new;
            let seed = 20 + 3 * i as u64;
            (
                start,
                values(n_new * n_head * hd, seed),
                per_head(&values(len * n_kv * hd, seed + 1), n_kv, hd),
                per_head(&values(len * n_kv * hd, seed + 2), n_kv, hd),
            )
        })
        .collect();
    let alone: Vec<f32> = seqs
        .iter()
        .flat_map(|(start, q, k, v)| {
            let mut out = vec![0.0; q.len()];
            let seq = AttnSeq {
                q,
                keys: k,
                values: v,
                start: *start,
            };
            attention(&[seq], n_head, hd, &mut Vec::new(), &mut out);
            out
        })
        .collect();
    let parts: Vec<AttnSeq<'_>> = seqs
        .iter()
        .map(|(start, q, k, v)| AttnSeq {
            q,
            keys: k,
            values: v,
            start: *start,
        })
        .collect();
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool");
        let mut out = vec![0.0; alone.len()];
        pool.install(|| attention(&parts, n_head, hd, &mut Vec::new(), &mut out));
        assert_eq!(out, alone, "{threads} threads");
    }
}

#[test]
fn gelu_of_a_value_does_not_depend_on_where_it_sits() {
    let mut x: Vec<f32> = values(203, 16).iter().map(|v| v * 9.0).collect();
    x.extend([
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        40.0,
        -40.0,
        1e20,
        -1e20,
        f32::MAX,
        f32::MIN,
    ]);
    let mut whole = x.clone();
    gelu_tanh(&mut whole);
    for (i, &v) in x.iter().enumerate() {
        let mut one = [v];
        gelu_tanh(&mut one);
        assert_eq!(one[0].to_bits(), whole[i].to_bits(), "x = {v}");
        // ½x(1 + tanh u) = x·σ(2u), written so f64 keeps the tiny negative tail exactly.
        // The f32 argument `2u` carries a relative rounding error of a few ulp, which `e^-2u`
        // turns into a relative error proportional to |2u|.
        let (want, two_u) = {
            let v = v as f64;
            let u = (2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v.powi(3));
            (v / (1.0 + (-2.0 * u).exp()), 2.0 * u)
        };
        let err = (one[0] as f64 - want).abs();
        let tol = 1e-6 * (2.0 + two_u.abs().min(200.0)) * want.abs() + 1e-30;
        assert!(err <= tol, "x = {v}: {} vs {want}", one[0]);
    }
    // Chunks of every length and offset give the same values.
    for (a, b) in [(0, 7), (3, 11), (5, 40), (1, 200)] {
        let mut part = x[a..b].to_vec();
        gelu_tanh(&mut part);
        assert_eq!(part, whole[a..b], "{a}..{b}");
    }
    let mut nan = [f32::NAN];
    gelu_tanh(&mut nan);
    assert!(nan[0].is_nan());
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
    // Odd sizes, several tiles, and large enough for the threaded single-row path.
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
            // One row (decode) uses other tile shapes: same bits as the batch.
            let (mut one, mut one_f) = (vec![0.0; rows], vec![0.0; rows]);
            matmul(&x[..cols], &m, None, &mut one);
            matmul(&x[..cols], &f, None, &mut one_f);
            assert_eq!(one, one_f, "bf16 = {bf16}, offset {offset}");
            assert_eq!(one, a[..rows], "single row equals row 0 of the batch");
            // In panels too: the 16-bit panels compute what the f32 panels of their widening do.
            let (mp, fp) = (m.clone().interleaved(), f.clone().interleaved());
            assert!(matches!(mp.data, WeightData::Panel(_)));
            for k in [1, 5] {
                let (mut a, mut b) = (vec![0.0; k * rows], vec![0.0; k * rows]);
                matmul(&x[..k * cols], &mp, None, &mut a);
                matmul(&x[..k * cols], &fp, None, &mut b);
                assert_eq!(a, b, "panels, {k} rows, bf16 = {bf16}, offset {offset}");
            }
        }
    }
}

/// Random blocks of `dtype` with finite, moderate f16 scales (and mins) at `scale_offsets`.
fn random_blocks(dtype: crate::tensor::DType, n_blocks: usize, seed: u64) -> Vec<u8> {
    use crate::tensor::DType;
    let bb = dtype.block_bytes();
    let scale_offsets: &[usize] = match dtype {
        DType::Q8_0 | DType::Q4_0 => &[0],
        DType::Q4_1 | DType::Q4K | DType::Q5K => &[0, 2],
        _ => &[208],
    };
    let raw = values(n_blocks * bb, seed);
    let mut bytes: Vec<u8> = raw.iter().map(|v| ((v + 1.0) * 127.9) as u8).collect();
    for (i, blk) in bytes.chunks_exact_mut(bb).enumerate() {
        for (k, &off) in scale_offsets.iter().enumerate() {
            let sign = if k == 1 && dtype == DType::Q4_1 {
                -1.0
            } else {
                1.0
            };
            let v = sign * (0.002 + 0.004 * ((i * 3 + k) % 7) as f32);
            blk[off..off + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
        }
    }
    bytes
}

/// The integer kernels compute `Σ w·x̂`: the dequantized weights times the activations as
/// quantized to 8 bits (`QActs`), up to f32 rounding. Checked against an f64 reference for every
/// block type, on odd row and feature counts (and several parts stacked), and a single row
/// (decode) is bit-identical to the same row inside a batch.
#[test]
fn quantized_matmul_is_dequantized_weights_times_quantized_activations() {
    use crate::kernels::quant::{QuantMatrix, QuantPart};
    use crate::tensor::{Bytes, DType};
    let cases: &[(&[DType], usize)] = &[
        (&[DType::Q8_0], 96),
        (&[DType::Q4_0], 96),
        (&[DType::Q4_1], 96),
        (&[DType::Q4K], 512),
        (&[DType::Q5K], 512),
        (&[DType::Q6K], 512),
        (&[DType::Q4_0, DType::Q8_0, DType::Q4_1], 160),
        (&[DType::Q6K, DType::Q4K], 256),
    ];
    for (ci, &(dtypes, cols)) in cases.iter().enumerate() {
        let part_rows = [37usize, 5, 22];
        let mut parts = Vec::new();
        for (k, &dt) in dtypes.iter().enumerate() {
            let rows = part_rows[k];
            let n_blocks = rows * cols / dt.block_elems();
            let b = Bytes::Owned(std::sync::Arc::new(random_blocks(
                dt,
                n_blocks,
                40 + ci as u64 + k as u64,
            )));
            parts.push(QuantPart::new(dt, rows, cols, &b, 0).expect("whole blocks"));
        }
        let plain = QuantMatrix::new(cols, parts);
        for interleave in [false, true] {
            let q = if interleave {
                Matrix::quantized(plain.interleaved())
            } else {
                Matrix::quantized(plain.clone())
            };
            check_quantized_matmul(ci, dtypes, cols, &part_rows, &q);
        }
    }
}

fn check_quantized_matmul(
    ci: usize,
    dtypes: &[crate::tensor::DType],
    cols: usize,
    part_rows: &[usize],
    q: &Matrix,
) {
    use crate::kernels::quant::act::QActs;
    let f = q.to_f32();
    let n_rows = 7;
    let x = values(n_rows * cols, 50 + ci as u64);
    let bias = values(q.rows, 51);
    let mut got = vec![0.0; n_rows * q.rows];
    matmul(&x, q, Some(&bias), &mut got);
    // Each part sees the activations quantized in its own block size.
    let mut acts = std::collections::HashMap::new();
    for &dt in dtypes {
        let block = crate::kernels::quant::int::act_block(dt);
        acts.entry(block).or_insert_with(|| {
            let mut a = QActs::default();
            a.quantize(&x, cols, block);
            (0..n_rows).map(|r| a.dequantized(r)).collect::<Vec<_>>()
        });
    }
    let mut want = vec![0.0f64; n_rows * q.rows];
    let mut mag = vec![0.0f64; n_rows * q.rows];
    let mut o = 0;
    for (k, &dt) in dtypes.iter().enumerate() {
        let xq = &acts[&crate::kernels::quant::int::act_block(dt)];
        for _ in 0..part_rows[k] {
            for r in 0..n_rows {
                let wr = f.row(o);
                want[r * q.rows + o] = bias[o] as f64
                    + (0..cols)
                        .map(|i| wr[i] as f64 * xq[r][i] as f64)
                        .sum::<f64>();
                mag[r * q.rows + o] = (0..cols)
                    .map(|i| (wr[i] as f64 * xq[r][i] as f64).abs())
                    .sum::<f64>();
            }
            o += 1;
        }
    }
    for i in 0..got.len() {
        let err = (got[i] as f64 - want[i]).abs();
        assert!(
            err <= 1e-5 * (1.0 + mag[i]),
            "{dtypes:?} output {i}: {} vs {} (err {err})",
            got[i],
            want[i]
        );
    }
    // Decode (one row) gives the same bits as that row inside the batch.
    for r in [0, 3, 6] {
        let mut one = vec![0.0; q.rows];
        matmul(&x[r * cols..(r + 1) * cols], q, Some(&bias), &mut one);
        assert_eq!(one, got[r * q.rows..(r + 1) * q.rows], "{dtypes:?} row {r}");
    }
    // And the quantization error against the exact f32 product stays small.
    let mut exact = vec![0.0; n_rows * q.rows];
    matmul(&x, &f, Some(&bias), &mut exact);
    let scale = exact.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    let worst = got
        .iter()
        .zip(&exact)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 0.03 * scale, "{dtypes:?}: {worst} vs scale {scale}");
}

/// Interleaved weights give exactly the bits of the portable row kernel (`int::dot`) for every
/// output, at every batch size 1..=9 (every tile height), on an odd block count; also at the
/// extremes of the integer sums (all nibbles 15 or all bytes −128 against activations ±127,
/// where a 16-bit partial sum would overflow if the kernel's bound were wrong).
#[test]
fn interleaved_kernels_match_the_portable_row_kernel_bit_for_bit() {
    use crate::kernels::quant::act::QActs;
    use crate::kernels::quant::{int, QuantMatrix, QuantPart};
    use crate::tensor::{Bytes, DType};
    for dt in crate::kernels::quant::FORMATS {
        let be = dt.block_elems();
        // Five blocks per row (three K-quant super-blocks).
        let (rows, cols) = (24, if be == 32 { 160 } else { 768 });
        for extreme in [false, true] {
            let mut bytes = random_blocks(dt, rows * cols / be, 70);
            let mut x = values(9 * cols, 71);
            if extreme {
                for blk in bytes.chunks_exact_mut(dt.block_bytes()) {
                    match dt {
                        DType::Q8_0 => blk[2..].fill(0x80),
                        DType::Q4_0 => blk[2..].fill(0xFF),
                        // Four- or five-bit values 15 / 31, scales and mins 63.
                        DType::Q4_1 | DType::Q4K | DType::Q5K => blk[4..].fill(0xFF),
                        // Six-bit values 63 (31 after the offset) with scales −128.
                        _ => {
                            blk[..192].fill(0xFF);
                            blk[192..208].fill(0x80);
                        }
                    }
                }
                for (i, v) in x.iter_mut().enumerate() {
                    *v = if (i / cols) % 2 == 0 { 1.0 } else { -1.0 };
                }
            }
            let b = Bytes::Owned(std::sync::Arc::new(bytes.clone()));
            let plain = QuantMatrix::new(
                cols,
                vec![QuantPart::new(dt, rows, cols, &b, 0).expect("part")],
            );
            let q = plain.interleaved();
            assert!(q.parts.len() == 1 && q.parts[0].is_interleaved());
            assert_eq!(
                Matrix::quantized(q.clone()).to_f32().as_slice(),
                Matrix::quantized(plain).to_f32().as_slice(),
                "{dt}: interleaving keeps every value"
            );
            let m = Matrix::quantized(q);
            let rb = bytes.len() / rows;
            for n in 1..=9 {
                let xs = &x[..n * cols];
                let mut got = vec![0.0; n * rows];
                matmul(xs, &m, None, &mut got);
                let mut a = QActs::default();
                a.quantize(xs, cols, be);
                for r in 0..n {
                    for o in 0..rows {
                        let want = int::dot(dt, &bytes[o * rb..(o + 1) * rb], &a.row(r));
                        assert_eq!(
                            got[r * rows + o].to_bits(),
                            want.to_bits(),
                            "{dt} extreme {extreme}: batch {n}, row {r}, output {o}"
                        );
                    }
                }
            }
        }
    }
}

/// Blocks a matrix alone owns (quantized at load) are interleaved in place, and end exactly as
/// the copying repack leaves shared ones: same bytes, same values, the tail rows row-major.
#[test]
fn interleaving_in_place_equals_the_repacked_copy() {
    use crate::kernels::quant::{QuantMatrix, QuantPart};
    use crate::tensor::Bytes;
    for dt in crate::kernels::quant::FORMATS {
        let (rows, cols) = (37, if dt.block_elems() == 32 { 96 } else { 512 });
        let bytes = random_blocks(dt, rows * cols / dt.block_elems(), 72);
        let part = |b: &Bytes| QuantPart::new(dt, rows, cols, b, 0).expect("part");
        let shared = Bytes::Owned(std::sync::Arc::new(bytes.clone()));
        let plain = QuantMatrix::new(cols, vec![part(&shared)]);
        let copied = plain.interleaved();
        let own = Bytes::Owned(std::sync::Arc::new(bytes));
        let in_place = QuantMatrix::new(cols, vec![part(&own)]);
        drop(own);
        let in_place = in_place.into_interleaved();
        for q in [&copied, &in_place] {
            assert_eq!(q.parts.len(), 2, "{dt}: 32 rows interleaved, 5 row-major");
            assert!(q.parts[0].is_interleaved() && !q.parts[1].is_interleaved());
        }
        assert_eq!(
            copied.parts[0].data(cols),
            in_place.parts[0].data(cols),
            "{dt}"
        );
        assert_eq!(
            Matrix::quantized(in_place).to_f32().as_slice(),
            Matrix::quantized(plain).to_f32().as_slice(),
            "{dt}: every value kept"
        );
    }
}

/// Large enough for the threaded path: the result does not depend on how many rows are in the
/// batch or how the features are split into chunks.
#[test]
fn batch_composition_does_not_change_any_output() {
    use crate::kernels::quant::{QuantMatrix, QuantPart};
    use crate::tensor::{Bytes, DType};
    let (rows, cols) = (1001, 256);
    let b = Bytes::Owned(std::sync::Arc::new(random_blocks(
        DType::Q4_0,
        rows * cols / 32,
        60,
    )));
    let q = QuantMatrix::new(
        cols,
        vec![QuantPart::new(DType::Q4_0, rows, cols, &b, 0).expect("whole blocks")],
    );
    let packed = Matrix::quantized(q.interleaved());
    let q = Matrix::quantized(q);
    let f = Matrix::from_vec(rows, cols, values(rows * cols, 61));
    let panels = f.clone().interleaved();
    assert!(matches!(panels.data, WeightData::Panel(_)));
    for m in [&q, &packed, &f, &panels] {
        // More rows than one row block of the driver, in passes of every size.
        let x = values(19 * cols, 62);
        let mut all = vec![0.0; 19 * rows];
        matmul(&x, m, None, &mut all);
        for (start, n) in [
            (0usize, 1usize),
            (2, 3),
            (4, 5),
            (8, 1),
            (1, 16),
            (9, 10),
            (11, 2),
        ] {
            let mut part = vec![0.0; n * rows];
            matmul(&x[start * cols..(start + n) * cols], m, None, &mut part);
            assert_eq!(
                part,
                all[start * rows..(start + n) * rows],
                "rows {start}..{}",
                start + n
            );
        }
        // The fused activation is the product then the activation, bit for bit.
        let mut fused = vec![0.0; 19 * rows];
        matmul_act(&x, m, None, &mut fused, Act::GeluTanh);
        gelu_tanh(&mut all);
        assert_eq!(fused, all);
        // The fused residual add is the product (with its bias) then the add, bit for bit, at
        // decode (one row) and in batches.
        let bias = values(rows, 63);
        for n in [1usize, 19] {
            let x = &x[..n * cols];
            let residual: Vec<f32> = values(n * rows, 64).iter().map(|v| v * 30.0).collect();
            let mut product = vec![0.0; n * rows];
            matmul(x, m, Some(&bias), &mut product);
            let mut want = residual.clone();
            add_in_place(&mut want, &product);
            let mut got = residual.clone();
            matmul_add(x, m, Some(&bias), &mut got);
            assert_eq!(got, want, "{n} rows");
        }
    }
}
