//! The RoPE table: both pair layouts are one rotation, blocks are computed on first use.

use super::tests::values;
use super::*;
use crate::config::RopeStyle;

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
fn rope_blocks_are_computed_on_first_use_and_match_the_formula() {
    let (hd, theta) = (10, 500.0f32);
    // 200 positions: blocks of 64 at 0, 64, 128 and a short one at 192.
    let table = RopeTable::new(hd, 200, theta);
    assert_eq!(table.positions(), 200);
    assert_eq!(table.computed_blocks(), 0);
    let x = values(hd, 3);
    for pos in [0, 63, 64, 127, 192, 199] {
        let mut got = x.clone();
        table.apply(&mut got, pos, RopeStyle::HalfSplit);
        let half = hd / 2;
        for i in 0..half {
            let angle = pos as f64 * (theta as f64).powf(-(2.0 * i as f64) / hd as f64);
            let (c, s) = (angle.cos() as f32, angle.sin() as f32);
            let (a, b) = (x[i], x[i + half]);
            assert_eq!(got[i], a * c - b * s, "pos {pos} pair {i}");
            assert_eq!(got[i + half], a * s + b * c, "pos {pos} pair {i}");
        }
    }
    assert_eq!(
        table.computed_blocks(),
        3,
        "positions 128..192 were never used"
    );
}
