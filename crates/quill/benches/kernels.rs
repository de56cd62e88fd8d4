//! Kernel micro-benchmarks (divan): the matmul driver on GPT-2 124M shapes for every weight
//! storage, at batch 1 (decode: bandwidth-bound) and 8 (batched decode / small prefill), plus
//! activation quantization and attention. Run: `cargo bench -p quill --bench kernels`.
//! Thread count follows `RAYON_NUM_THREADS` (default: all cores). Timings only; correctness is
//! in the unit tests (`kernels::tests`).

use std::sync::Arc;

use divan::{black_box, Bencher};
use quill::kernels::quant::{self, act::QActs, QuantMatrix, QuantPart};
use quill::kernels::{matmul, AttnSeq, KvRows, Matrix, WeightData};
use quill::tensor::{Bytes, DType};

fn main() {
    divan::main();
}

/// GPT-2 124M's MLP up-projection: [3072, 768].
const OUT: usize = 3072;
const IN: usize = 768;

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
            (h % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// `rows` × `IN` K-quant blocks. quill has no K-quant quantizer (they come from GGUF files), and
/// the kernels' speed does not depend on the values, so the blocks are filled with pseudo-random
/// bytes and a small f16 scale at each of the `scales` offsets.
fn k_blocks(dtype: DType, rows: usize, scales: &[usize]) -> Matrix {
    let bb = dtype.block_bytes();
    let mut bytes: Vec<u8> = values(rows * IN / dtype.block_elems() * bb, 7)
        .iter()
        .map(|v| ((v + 1.0) * 127.9) as u8)
        .collect();
    for blk in bytes.chunks_exact_mut(bb) {
        for &o in scales {
            blk[o..o + 2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
        }
    }
    let b = Bytes::Owned(Arc::new(bytes));
    let part = QuantPart::new(dtype, rows, IN, &b, 0).expect("whole super-blocks");
    Matrix::quantized(QuantMatrix::new(IN, vec![part]))
}

fn weights(storage: &str) -> Matrix {
    let w = values(OUT * IN, 1);
    let rows_only = storage.ends_with("-rows");
    let quantized = |dtype: DType, f: fn(&[f32], &mut Vec<u8>)| {
        let mut bytes = Vec::new();
        for row in w.chunks_exact(IN) {
            f(row, &mut bytes);
        }
        let b = Bytes::Owned(Arc::new(bytes));
        let part = QuantPart::new(dtype, OUT, IN, &b, 0).expect("whole blocks");
        let q = QuantMatrix::new(IN, vec![part]);
        // As a loaded model has them (interleaved), unless asked for the row-major layout.
        Matrix::quantized(if rows_only { q } else { q.interleaved() })
    };
    let half = |bf16: bool| {
        let bytes: Vec<u8> = w
            .iter()
            .flat_map(|&v| {
                if bf16 {
                    half::bf16::from_f32(v).to_le_bytes()
                } else {
                    half::f16::from_f32(v).to_le_bytes()
                }
            })
            .collect();
        Matrix {
            rows: OUT,
            cols: IN,
            data: WeightData::Half {
                bytes: Bytes::Owned(Arc::new(bytes)),
                offset: 0,
                len: OUT * IN,
                bf16,
            },
        }
    };
    // Float matrices and Q6_K as a loaded model has them (panels of 16 rows, interleaved groups
    // of 8), unless asked for rows.
    let as_loaded = |m: Matrix| if rows_only { m } else { m.interleaved() };
    match storage.trim_end_matches("-rows") {
        "f16" => as_loaded(half(false)),
        "bf16" => as_loaded(half(true)),
        "q8_0" => quantized(DType::Q8_0, quant::quantize_row_q8_0),
        "q4_0" => quantized(DType::Q4_0, quant::quantize_row_q4_0),
        "q4_1" => quantized(DType::Q4_1, quant::quantize_row_q4_1),
        "q4_k" => as_loaded(k_blocks(DType::Q4K, OUT, &[0, 2])),
        "q5_k" => as_loaded(k_blocks(DType::Q5K, OUT, &[0, 2])),
        "q6_k" => as_loaded(k_blocks(DType::Q6K, OUT, &[208])),
        _ => as_loaded(Matrix::from_vec(OUT, IN, w)),
    }
}

#[divan::bench(
    args = [
        "f32", "f16", "bf16", "f32-rows", "f16-rows", "q8_0", "q4_0", "q4_1", "q8_0-rows", "q4_0-rows", "q4_1-rows",
        "q4_k", "q5_k", "q6_k", "q4_k-rows", "q5_k-rows", "q6_k-rows",
    ],
    consts = [1, 8, 64]
)]
fn matmul_up_proj<const ROWS: usize>(bencher: Bencher, storage: &str) {
    let w = weights(storage);
    let x = values(ROWS * IN, 2);
    let mut out = vec![0.0f32; ROWS * OUT];
    bencher
        .counter(divan::counter::BytesCount::new(w.weight_bytes()))
        .bench_local(|| matmul(black_box(&x), black_box(&w), None, &mut out));
}

#[divan::bench(consts = [32, 256])]
fn quantize_activations<const BLOCK: usize>(bencher: Bencher) {
    let x = values(8 * OUT, 3);
    let mut a = QActs::default();
    bencher.bench_local(|| a.quantize(black_box(&x), OUT, BLOCK));
}

/// One decode row's attention over a KV cache of `positions`, stored f32 (`F16` false) or f16.
#[divan::bench(args = [128, 1024], consts = [false, true])]
fn attention_decode_step<const F16: bool>(bencher: Bencher, positions: usize) {
    let (nh, hd) = (12, 64);
    let q = values(nh * hd, 4);
    // The KV cache's layout: per head, [positions, hd].
    let rows = |seed: u32| {
        let v = values(positions * hd, seed);
        if F16 {
            KvRows::F16(v.iter().map(|&x| half::f16::from_f32(x)).collect())
        } else {
            KvRows::F32(v)
        }
    };
    let keys: Vec<KvRows> = (0..nh).map(|h| rows(5 + h as u32)).collect();
    let vals: Vec<KvRows> = (0..nh).map(|h| rows(50 + h as u32)).collect();
    let mut scores = vec![0.0; positions];
    let mut out = vec![0.0; nh * hd];
    let seq = [AttnSeq {
        q: &q,
        keys: &keys,
        values: &vals,
        start: positions - 1,
    }];
    bencher
        .bench_local(|| quill::kernels::attention(black_box(&seq), nh, hd, &mut scores, &mut out));
}

/// GPT-2's tied output head, [50257, 768]: larger than L2 (and than L3 on most machines; the
/// AMX Xeon's is 480 MB), so the weights stream from the outer levels as in a whole decode step
/// (where every matrix has left L2 by its next use).
#[divan::bench(args = ["f32", "f16", "q8_0", "q4_0", "q6_k", "q6_k-rows"], consts = [1, 8], sample_count = 20)]
fn matmul_head<const ROWS: usize>(bencher: Bencher, storage: &str) {
    const VOCAB: usize = 50257;
    let v = values(VOCAB * IN, 9);
    let w = match storage {
        "f16" => Matrix {
            rows: VOCAB,
            cols: IN,
            data: WeightData::Half {
                bytes: Bytes::Owned(Arc::new(
                    v.iter()
                        .flat_map(|&f| half::f16::from_f32(f).to_le_bytes())
                        .collect(),
                )),
                offset: 0,
                len: VOCAB * IN,
                bf16: false,
            },
        },
        "q8_0" | "q4_0" => {
            let dtype = if storage == "q8_0" {
                DType::Q8_0
            } else {
                DType::Q4_0
            };
            let mut bytes = Vec::new();
            for row in v.chunks_exact(IN) {
                if dtype == DType::Q8_0 {
                    quant::quantize_row_q8_0(row, &mut bytes);
                } else {
                    quant::quantize_row_q4_0(row, &mut bytes);
                }
            }
            let b = Bytes::Owned(Arc::new(bytes));
            let part = QuantPart::new(dtype, VOCAB, IN, &b, 0).expect("whole blocks");
            Matrix::quantized(QuantMatrix::new(IN, vec![part]))
        }
        // llama-quantize's choice for a tied GPT-2 head in its 4- and 5-bit files.
        "q6_k" | "q6_k-rows" => k_blocks(DType::Q6K, VOCAB, &[208]),
        _ => Matrix::from_vec(VOCAB, IN, v),
    };
    // As a loaded model has it, unless asked for the row-major layout.
    let w = if storage.ends_with("-rows") {
        w
    } else {
        w.interleaved()
    };
    let x = values(ROWS * IN, 2);
    let mut out = vec![0.0f32; ROWS * VOCAB];
    bencher
        .counter(divan::counter::BytesCount::new(w.weight_bytes()))
        .bench_local(|| matmul(black_box(&x), black_box(&w), None, &mut out));
}
