//! Activations quantized to 8 bits for the integer dot products (llama.cpp's Q8_0 / Q8_K
//! activation formats, kept as separate arrays rather than packed blocks).
//!
//! Each block of `block` values (32 for Q8_0/Q4_0/Q4_1 weights, 256 for the K-quants) gets a
//! symmetric scale `d = max|x| / 127` and `q = round(x / d)` (half away from zero) in
//! `-127..=127`, so `x ≈ d·q` with at most `d/2` error per value.

/// Quantized activation rows. q: [rows, cols]; d: [rows, cols / block];
/// sum16: [rows, cols / 16] (Σq over each 16 values); s: [rows, cols / 32] (`d·Σq` over each
/// 32 values, for the `min` terms of Q4_1; only for 32-value blocks).
#[derive(Debug, Default)]
pub struct QActs {
    block: usize,
    cols: usize,
    q: Vec<i8>,
    d: Vec<f32>,
    sum16: Vec<i16>,
    s: Vec<f32>,
}

/// One quantized activation row (see [`QActs`]).
#[derive(Debug, Clone, Copy)]
pub struct QRow<'a> {
    pub q: &'a [i8],
    pub d: &'a [f32],
    pub sum16: &'a [i16],
    pub s: &'a [f32],
}

impl QActs {
    /// Quantizes `x` [rows, cols] in blocks of `block` (32 or 256; `cols` a multiple of it),
    /// reusing this buffer's allocations.
    pub fn quantize(&mut self, x: &[f32], cols: usize, block: usize) {
        debug_assert!(block % 32 == 0 && cols % block == 0 && x.len() % cols.max(1) == 0);
        let n = x.len();
        self.block = block;
        self.cols = cols;
        self.q.resize(n, 0);
        self.d.resize(n / block, 0.0);
        self.sum16.resize(n / 16, 0);
        self.s.resize(if block == 32 { n / 32 } else { 0 }, 0.0);
        for ((xb, qb), d) in x
            .chunks_exact(block)
            .zip(self.q.chunks_exact_mut(block))
            .zip(self.d.iter_mut())
        {
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            *d = amax / 127.0;
            let id = if *d > 0.0 { 1.0 / *d } else { 0.0 };
            for (q, v) in qb.iter_mut().zip(xb) {
                *q = (v * id).round().clamp(-127.0, 127.0) as i8;
            }
        }
        for (s, q) in self.sum16.iter_mut().zip(self.q.chunks_exact(16)) {
            *s = q.iter().map(|&v| v as i16).sum();
        }
        if block == 32 {
            for (i, s) in self.s.iter_mut().enumerate() {
                let qs = (self.sum16[2 * i] + self.sum16[2 * i + 1]) as f32;
                *s = self.d[i] * qs;
            }
        }
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> QRow<'_> {
        let c = self.cols;
        QRow {
            q: &self.q[r * c..(r + 1) * c],
            d: &self.d[r * c / self.block..(r + 1) * c / self.block],
            sum16: &self.sum16[r * c / 16..(r + 1) * c / 16],
            s: if self.block == 32 {
                &self.s[r * c / 32..(r + 1) * c / 32]
            } else {
                &[]
            },
        }
    }

    /// The dequantized values `d·q` of row `r` (what the integer kernels multiply the weights
    /// by; for tests and references).
    pub fn dequantized(&self, r: usize) -> Vec<f32> {
        let row = self.row(r);
        row.q
            .iter()
            .enumerate()
            .map(|(i, &q)| row.d[i / self.block] * q as f32)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantizes_with_symmetric_scales_and_sums() {
        let x: Vec<f32> = (0..64).map(|i| i as f32 - 32.0).collect();
        let mut a = QActs::default();
        a.quantize(&x, 64, 32);
        let r = a.row(0);
        assert_eq!(r.d.len(), 2);
        assert_eq!(r.q[0], -127);
        assert_eq!(r.d[0], 32.0 / 127.0);
        assert_eq!(r.sum16.len(), 4);
        assert_eq!(
            r.sum16[1],
            r.q[16..32].iter().map(|&v| v as i16).sum::<i16>()
        );
        let s0: i32 = r.q[..32].iter().map(|&v| v as i32).sum();
        assert_eq!(r.s[0], r.d[0] * s0 as f32);
        // Every value is within half a step of its quantized value.
        for (i, v) in a.dequantized(0).iter().enumerate() {
            assert!((v - x[i]).abs() <= r.d[i / 32] / 2.0 + 1e-6);
        }
        // An all-zero block has scale 0 and zeros.
        a.quantize(&[0.0; 256], 256, 256);
        assert_eq!(a.row(0).d, &[0.0]);
        assert!(a.row(0).q.iter().all(|&q| q == 0));
        assert!(a.row(0).s.is_empty());
    }
}
