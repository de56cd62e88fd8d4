//! The row norms against an f64 reference, and pooled rows against rows alone.

use super::tests::{close, values};
use super::*;

#[test]
fn layer_norm_and_rms_norm_match_reference() {
    // 13: all tail; 771: eight-wide partial sums plus a tail.
    for n in [13usize, 771] {
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
                want_ln
                    .push((row[i] as f64 - mean) / (var + 1e-5).sqrt() * w[i] as f64 + b[i] as f64);
                want_rms.push(row[i] as f64 / (ms + 1e-6).sqrt() * w[i] as f64);
            }
        }
        close(&ln, &want_ln, 1e-5);
        close(&rms, &want_rms, 1e-5);
    }
}

/// A prompt's rows are normalised on the pool (and copied on the way): each row gets the bits
/// it gets alone, whatever the number of rows.
#[test]
fn norm_into_gives_each_row_its_bits_alone() {
    let n = 771;
    let rows = 2 * PARALLEL_NORM_ROWS + 3;
    let x: Vec<f32> = values(rows * n, 8).iter().map(|v| v * 40.0 + 3.0).collect();
    let (w, b) = (values(n, 9), values(n, 10));
    let norms = [
        RowNorm::Layer {
            weight: &w,
            bias: Some(&b),
            eps: 1e-5,
        },
        RowNorm::Layer {
            weight: &w,
            bias: None,
            eps: 1e-5,
        },
        RowNorm::Rms {
            weight: &w,
            eps: 1e-6,
        },
    ];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .expect("pool");
    for norm in norms {
        let mut all = vec![f32::NAN; rows * n];
        pool.install(|| norm_into(&x, &mut all, norm));
        for (r, got) in all.chunks(n).enumerate() {
            let mut alone = x[r * n..][..n].to_vec();
            norm_in_place(&mut alone, norm);
            let same = got
                .iter()
                .zip(&alone)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{norm:?}: row {r}");
        }
    }
}
