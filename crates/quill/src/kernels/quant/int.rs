//! Integer matrix-product micro-kernels over quantized weights and 8-bit activations
//! ([`QActs`]): the quantized counterpart of `kernels::tile`. AVX2 kernels for Q8_0, Q4_0, Q4_1,
//! Q4_K, Q5_K and Q6_K; portable scalar kernels for every supported block type (and every CPU).
//!
//! Every output is computed the same way whatever the tile shape `R × C`, so decode (one row),
//! prefill and batches agree to the bit on a given machine.

use super::act::QRow;
use super::{blocks, kquants, QK, QK_K};
use crate::tensor::DType;

/// Activation block size the integer kernels need for weights of type `dtype`.
pub(crate) fn act_block(dtype: DType) -> usize {
    if dtype.block_elems() == QK_K {
        QK_K
    } else {
        QK
    }
}

/// `out[r][c] = w[c] · x̂[r]`: weight row `c` (raw blocks of type `dtype`, `cols` values)
/// against activation row `r` quantized in blocks of [`act_block`]`(dtype)`.
/// `R` is 1..=4 and `C` 1..=2.
#[inline]
pub(crate) fn tile<const R: usize, const C: usize>(
    dtype: DType,
    x: &[QRow<'_>; R],
    w: &[&[u8]; C],
    cols: usize,
) -> [[f32; C]; R] {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::has_avx2_f16c() {
        let p: [*const u8; C] = std::array::from_fn(|c| w[c].as_ptr());
        let bytes_ok = w
            .iter()
            .all(|r| r.len() == cols / dtype.block_elems() * dtype.block_bytes());
        let acts_ok = x.iter().all(|r| r.q.len() == cols);
        if bytes_ok && acts_ok {
            use super::int_avx2 as k;
            // SAFETY: AVX2/FMA/F16C are present; row and activation lengths checked above.
            unsafe {
                match dtype {
                    DType::Q8_0 => return k::tile32::<0, R, C>(x, &p, cols / QK),
                    DType::Q4_0 => return k::tile32::<1, R, C>(x, &p, cols / QK),
                    DType::Q4_1 => return k::tile32::<2, R, C>(x, &p, cols / QK),
                    DType::Q6K => return k::tile_q6k::<R, C>(x, &p, cols / QK_K),
                    DType::Q4K => return k::tile_q45k::<false, R, C>(x, &p, cols / QK_K),
                    DType::Q5K => return k::tile_q45k::<true, R, C>(x, &p, cols / QK_K),
                    _ => {}
                }
            }
        }
    }
    // (Only the x86 kernels take the length checks above.)
    #[cfg(not(target_arch = "x86_64"))]
    let _ = cols;
    let mut out = [[0.0f32; C]; R];
    for r in 0..R {
        for c in 0..C {
            out[r][c] = dot(dtype, w[c], &x[r]);
        }
    }
    out
}

/// Weight rows `0..n` of `w` (consecutive rows of `row_bytes` bytes; `n` a multiple of `C`) against
/// the `R` activation rows, `C` weight rows at a time: `emit(o, tile)` for each group starting at
/// row `o`. The same arithmetic as [`tile`], with the checks and dispatch done once per span
/// instead of once per tile (at decode a tile is only a few hundred cycles of work).
pub(crate) fn span<const R: usize, const C: usize>(
    dtype: DType,
    x: &[QRow<'_>; R],
    w: &[u8],
    row_bytes: usize,
    cols: usize,
    mut emit: impl FnMut(usize, [[f32; C]; R]),
) {
    let n = w.len().checked_div(row_bytes).unwrap_or(0);
    debug_assert_eq!(n % C, 0);
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::has_avx2_f16c()
        && row_bytes == cols / dtype.block_elems() * dtype.block_bytes()
        && w.len() == n * row_bytes
        && x.iter().all(|r| r.q.len() == cols)
    {
        use super::int_avx2 as k;
        let (p, groups) = (w.as_ptr(), n / C);
        // SAFETY: AVX2/FMA/F16C are present; every weight row and activation row has the
        // length the kernels read (checked just above).
        unsafe {
            match dtype {
                DType::Q8_0 => return k::span::<0, R, C, _>(x, p, row_bytes, groups, &mut emit),
                DType::Q4_0 => return k::span::<1, R, C, _>(x, p, row_bytes, groups, &mut emit),
                DType::Q4_1 => return k::span::<2, R, C, _>(x, p, row_bytes, groups, &mut emit),
                DType::Q6K => return k::span::<3, R, C, _>(x, p, row_bytes, groups, &mut emit),
                DType::Q4K => return k::span::<4, R, C, _>(x, p, row_bytes, groups, &mut emit),
                DType::Q5K => return k::span::<5, R, C, _>(x, p, row_bytes, groups, &mut emit),
                _ => {}
            }
        }
    }
    for g in 0..n / C {
        let rows: [&[u8]; C] = std::array::from_fn(|c| &w[(g * C + c) * row_bytes..][..row_bytes]);
        emit(g * C, tile::<R, C>(dtype, x, &rows, cols));
    }
}

/// The portable kernel for one output: per block an exact integer dot product, scaled and
/// summed in block order.
pub(crate) fn dot(dtype: DType, row: &[u8], x: &QRow<'_>) -> f32 {
    match dtype {
        DType::Q8_0 => blocks::dot_q8_0(row, x),
        DType::Q4_0 => blocks::dot_q4_0(row, x),
        DType::Q4_1 => blocks::dot_q4_1(row, x),
        DType::Q4K => kquants::dot_q4_k(row, x),
        DType::Q5K => kquants::dot_q5_k(row, x),
        DType::Q6K => kquants::dot_q6_k(row, x),
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::quant::act::QActs;

    /// The SIMD tiles and the portable kernel agree: exactly for the K-quants (integer totals,
    /// same scalar accumulation), within f32 rounding for the 32-value blocks (lane-wise sums).
    #[test]
    fn simd_tiles_agree_with_the_portable_kernel() {
        for (dtype, cols) in [
            (DType::Q8_0, 96),
            (DType::Q4_0, 96),
            (DType::Q4_1, 96),
            (DType::Q6K, 512),
            (DType::Q4K, 768),
            (DType::Q5K, 768),
        ] {
            let n_blocks = cols / dtype.block_elems();
            let scale_at: &[usize] = match dtype {
                DType::Q6K => &[208],
                DType::Q4_1 | DType::Q4K | DType::Q5K => &[0, 2],
                _ => &[0],
            };
            // Two weight rows and three activation rows: a 3 × 2 tile and a 1 × 1 tile.
            let rows: [Vec<u8>; 2] = std::array::from_fn(|k| {
                let mut row: Vec<u8> = (0..n_blocks * dtype.block_bytes())
                    .map(|i| ((i + 31 * k) * 89 % 253) as u8)
                    .collect();
                for blk in row.chunks_exact_mut(dtype.block_bytes()) {
                    for &o in scale_at {
                        let v = half::f16::from_f32(0.01 + 0.003 * k as f32);
                        blk[o..o + 2].copy_from_slice(&v.to_le_bytes());
                    }
                }
                row
            });
            let x: Vec<f32> = (0..3 * cols)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
                .collect();
            let mut a = QActs::default();
            a.quantize(&x, cols, act_block(dtype));
            let xs = [a.row(0), a.row(1), a.row(2)];
            let simd = tile::<3, 2>(dtype, &xs, &[&rows[0], &rows[1]], cols);
            let one = tile::<1, 1>(dtype, &[a.row(2)], &[&rows[1]], cols)[0][0];
            assert_eq!(one.to_bits(), simd[2][1].to_bits(), "{dtype}: tile shape");
            for r in 0..3 {
                for c in 0..2 {
                    let (simd, port) = (simd[r][c], dot(dtype, &rows[c], &xs[r]));
                    if dtype.block_elems() == QK_K {
                        assert_eq!(simd.to_bits(), port.to_bits(), "{dtype}");
                    } else {
                        assert!(
                            (simd - port).abs() <= 1e-5 * (1.0 + port.abs()),
                            "{dtype}: {simd} vs {port}"
                        );
                    }
                }
            }
        }
    }
}
