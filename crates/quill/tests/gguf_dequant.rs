//! Block dequantization against llama.cpp's Python package `gguf` (`gguf.quants.dequantize`),
//! on real Q8_0/Q4_1 blocks from the SmolLM2 GGUF, `gguf`-quantized Q4_0 blocks and seeded random
//! K-quant blocks (`fixtures/gguf/dequant_reference.json`, made by `make_reference.py`). Also
//! checks that the quantized matmul agrees with a float dot product over the dequantized row.

use std::path::PathBuf;

use quill::kernels::quant::{dequantize_row, QuantMatrix, QuantPart};
use quill::kernels::{matmul, Matrix};
use quill::tensor::{Bytes, DType};

fn dtype(name: &str) -> DType {
    match name {
        "Q8_0" => DType::Q8_0,
        "Q4_0" => DType::Q4_0,
        "Q4_1" => DType::Q4_1,
        "Q4_K" => DType::Q4K,
        "Q5_K" => DType::Q5K,
        "Q6_K" => DType::Q6K,
        other => panic!("unknown type {other}"),
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn cases() -> Vec<(DType, Vec<u8>, Vec<f32>)> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/gguf/dequant_reference.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let vals = c["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            (
                dtype(c["type"].as_str().unwrap()),
                hex(c["bytes_hex"].as_str().unwrap()),
                vals,
            )
        })
        .collect()
}

#[test]
fn dequantize_matches_gguf_reference() {
    let all = cases();
    let types: Vec<DType> = all.iter().map(|c| c.0).collect();
    // Every block format quill runs has reference blocks.
    for t in quill::kernels::quant::FORMATS {
        assert!(types.contains(&t), "no reference blocks for {t}");
    }
    for (t, bytes, want) in all {
        let mut got = vec![f32::NAN; want.len()];
        dequantize_row(t, &bytes, &mut got);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            // Both sides compute d·q (+ m) in f32 from the same f16 fields.
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                "{t} value {i}: {g} vs {w}"
            );
        }
    }
}

#[test]
fn quantized_matmul_agrees_with_dequantized_dot() {
    for (t, bytes, deq) in cases() {
        let cols = deq.len();
        let part = QuantPart::new(t, 1, cols, &Bytes::Owned(bytes.into()), 0).unwrap();
        let m = Matrix::quantized(QuantMatrix::new(cols, vec![part]));
        let x: Vec<f32> = (0..cols)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let mut out = [0.0f32];
        matmul(&x, &m, Some(&[0.5]), &mut out);
        let exact: f64 = x
            .iter()
            .zip(&deq)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum::<f64>()
            + 0.5;
        let scale: f64 = x
            .iter()
            .zip(&deq)
            .map(|(a, b)| (*a as f64 * *b as f64).abs())
            .sum();
        // 8-bit activations: each product is off by at most half a quantization step (1/254 of
        // the block's largest |x|), so the sum is within ~1% of Σ|x·w|.
        assert!(
            (out[0] as f64 - exact).abs() <= 0.01 * scale + 1e-6,
            "{t}: {} vs {exact} (Σ|xw| {scale})",
            out[0]
        );
    }
}
