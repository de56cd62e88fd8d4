//! Weight matrices as the kernels see them: an owned f32 buffer; f32 borrowed straight from a
//! memory-mapped file when it is contiguous and aligned; f16/bf16 kept 16-bit (borrowed); or
//! GGUF block-quantized rows. The matmul kernels read every storage in place (16-bit weights
//! are widened in registers, blocks feed integer dot products); [`Matrix::row_into`] widens or
//! dequantizes one row for embedding lookups and conversions.

use super::panel::{Panels, PANEL};
use super::quant::QuantMatrix;
use super::tile::WKind;
use crate::tensor::Bytes;

/// The storage behind a [`Matrix`].
#[derive(Debug, Clone)]
pub enum WeightData {
    Owned(Vec<f32>),
    /// `len` f32 values at byte `offset` of `bytes`; the offset is 4-byte aligned.
    Mapped {
        bytes: Bytes,
        offset: usize,
        len: usize,
    },
    /// Block-quantized rows (GGUF), used by the quantized kernels without dequantizing.
    Quant(QuantMatrix),
    /// `len` IEEE f16 (or, with `bf16`, bfloat16) values at byte `offset` of `bytes`, usually
    /// the memory-mapped checkpoint: half the bytes of f32 per token, widened to f32 in
    /// registers by the kernels.
    Half {
        bytes: Bytes,
        offset: usize,
        len: usize,
        bf16: bool,
    },
    /// f32/f16/bf16 rows regrouped in panels of 16 for the float kernels ([`super::panel`]):
    /// what a loaded model's float matrices become (see [`Matrix::interleaved`]).
    Panel(Panels),
}

impl WeightData {
    /// Borrows `len` f32 values from `bytes` at `offset` if they are aligned and in bounds and the
    /// machine is little-endian; otherwise `None` (the caller converts instead).
    pub fn try_map(bytes: &Bytes, offset: usize, len: usize) -> Option<WeightData> {
        let data = bytes.as_slice();
        let end = offset.checked_add(len.checked_mul(4)?)?;
        if cfg!(target_endian = "big") || end > data.len() {
            return None;
        }
        let ptr = data[offset..].as_ptr();
        if !(ptr as usize).is_multiple_of(std::mem::align_of::<f32>()) {
            return None;
        }
        Some(WeightData::Mapped {
            bytes: bytes.clone(),
            offset,
            len,
        })
    }

    /// The f32 values. Quantized data has none: an empty slice (callers dispatch on
    /// [`WeightData::Quant`] first, as [`super::matmul`] and [`Matrix::row_into`] do).
    pub fn as_slice(&self) -> &[f32] {
        match self {
            WeightData::Quant(_) | WeightData::Half { .. } | WeightData::Panel(_) => &[],
            WeightData::Owned(v) => v,
            WeightData::Mapped { bytes, offset, len } => {
                let data = &bytes.as_slice()[*offset..*offset + *len * 4];
                // SAFETY: `try_map` checked alignment and bounds; every bit pattern is a valid
                // f32; the bytes are immutable and kept alive by the reference-counted `bytes`.
                unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<f32>(), *len) }
            }
        }
    }

    pub fn is_mapped(&self) -> bool {
        match self {
            WeightData::Quant(q) => q.is_mapped(),
            WeightData::Half { bytes, .. } => bytes.is_mapped(),
            _ => matches!(self, WeightData::Mapped { .. }),
        }
    }
}

/// A weight matrix `[rows, cols]` = `[out, in]`, row-major.
#[derive(Debug, Clone)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: WeightData,
}

impl Matrix {
    pub fn from_vec(rows: usize, cols: usize, data: Vec<f32>) -> Self {
        debug_assert_eq!(data.len(), rows * cols);
        Matrix {
            rows,
            cols,
            data: WeightData::Owned(data),
        }
    }

    pub fn as_slice(&self) -> &[f32] {
        self.data.as_slice()
    }

    /// A quantized matrix over `q`'s rows.
    pub fn quantized(q: QuantMatrix) -> Self {
        Matrix {
            rows: q.rows,
            cols: q.cols,
            data: WeightData::Quant(q),
        }
    }

    /// The same matrix laid out for the kernels: quantized rows interleaved for the
    /// integer kernels (in place where this matrix alone owns its blocks, else a repacked copy;
    /// see [`super::quant::packed`]); f32, f16 and bf16 rows regrouped in panels of 16
    /// ([`super::panel`]; a copy, the mapped source's pages handed back as it is read).
    /// Other storage, and matrices of fewer than 16 rows, come back as they are.
    pub fn interleaved(self) -> Matrix {
        let (rows, cols) = (self.rows, self.cols);
        let float: Option<(WKind, &[u8])> = match &self.data {
            WeightData::Owned(_) | WeightData::Mapped { .. } => {
                let f = self.as_slice();
                // SAFETY: reinterpreting initialised f32 values as their bytes.
                let b = unsafe { std::slice::from_raw_parts(f.as_ptr().cast::<u8>(), f.len() * 4) };
                Some((WKind::F32, b))
            }
            WeightData::Half {
                bytes,
                offset,
                len,
                bf16,
            } => {
                let kind = if *bf16 { WKind::Bf16 } else { WKind::F16 };
                Some((kind, &bytes.as_slice()[*offset..*offset + *len * 2]))
            }
            WeightData::Quant(_) | WeightData::Panel(_) => None,
        };
        if let Some((kind, src)) = float.filter(|_| rows >= PANEL && cols > 0) {
            let panels = Panels::build(kind, rows, cols, src, |r0, n| self.release_rows(r0, n));
            return Matrix {
                rows,
                cols,
                data: WeightData::Panel(panels),
            };
        }
        match self.data {
            WeightData::Quant(q) => Matrix::quantized(q.into_interleaved()),
            data => Matrix { data, ..self },
        }
    }

    /// Tells the OS this matrix's memory-mapped bytes will not be read again soon (after a
    /// converted copy replaced it): their pages leave the resident set. A no-op for owned data.
    pub fn release_source(&self) {
        match &self.data {
            WeightData::Quant(q) => q.release(),
            _ => self.release_rows(0, self.rows),
        }
    }

    /// [`Self::release_source`] for rows `r0..r0 + n` only, so a conversion can hand each
    /// stretch of a mapped file back as soon as it has read it. Quantized storage is left
    /// alone (released whole by `release_source`).
    pub fn release_rows(&self, r0: usize, n: usize) {
        let n = n.min(self.rows.saturating_sub(r0));
        match &self.data {
            WeightData::Mapped { bytes, offset, .. } => {
                bytes.release(offset + r0 * self.cols * 4, n * self.cols * 4)
            }
            WeightData::Half { bytes, offset, .. } => {
                bytes.release(offset + r0 * self.cols * 2, n * self.cols * 2)
            }
            WeightData::Quant(_) | WeightData::Owned(_) | WeightData::Panel(_) => {}
        }
    }

    pub fn is_quantized(&self) -> bool {
        matches!(self.data, WeightData::Quant(_))
    }

    /// The same matrix with f32 storage (a copy when quantized).
    pub fn to_f32(&self) -> Matrix {
        match &self.data {
            WeightData::Quant(_) | WeightData::Half { .. } | WeightData::Panel(_) => {
                let mut v = vec![0.0; self.rows * self.cols];
                for (r, row) in v.chunks_exact_mut(self.cols.max(1)).enumerate() {
                    self.row_into(r, row);
                }
                Matrix::from_vec(self.rows, self.cols, v)
            }
            _ => self.clone(),
        }
    }

    /// Row `r` as a slice of `cols` values (f32 storage only; see [`Matrix::row_into`]).
    pub fn row(&self, r: usize) -> &[f32] {
        &self.as_slice()[r * self.cols..(r + 1) * self.cols]
    }

    /// Writes row `r` as f32 into `out` [cols] (dequantizing when the storage is quantized).
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        match &self.data {
            WeightData::Quant(q) => q.row_into(r, out),
            WeightData::Panel(p) => p.row_into(r, out),
            WeightData::Half {
                bytes,
                offset,
                bf16,
                ..
            } => {
                let at = offset + r * self.cols * 2;
                widen_row(&bytes.as_slice()[at..at + self.cols * 2], *bf16, out);
            }
            _ => out.copy_from_slice(self.row(r)),
        }
    }

    /// Bytes of weight data read by one pass over the matrix (the decode roofline's numerator).
    pub fn weight_bytes(&self) -> usize {
        match &self.data {
            WeightData::Quant(q) => q.weight_bytes(),
            WeightData::Panel(p) => p.bytes().len(),
            WeightData::Half { .. } => self.rows * self.cols * 2,
            _ => self.rows * self.cols * 4,
        }
    }
}

/// Widens little-endian f16 or bf16 values to f32 (bit-exact: every 16-bit value is an f32).
fn widen_row(src: &[u8], bf16: bool, out: &mut [f32]) {
    if bf16 {
        // bf16 is the top half of an f32: a shift, which the compiler vectorises.
        for (o, b) in out.iter_mut().zip(src.chunks_exact(2)) {
            *o = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU supports F16C and AVX (checked just above).
        return unsafe { widen_f16_f16c(src, out) };
    }
    for (o, b) in out.iter_mut().zip(src.chunks_exact(2)) {
        *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    }
}

/// f16 → f32 with the F16C instruction, eight values at a time (unaligned loads).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "f16c,avx")]
unsafe fn widen_f16_f16c(src: &[u8], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = out.len().min(src.len() / 2);
    let mut i = 0;
    while i + 8 <= n {
        let h = _mm_loadu_si128(src.as_ptr().add(2 * i).cast());
        _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        i += 8;
    }
    for j in i..n {
        out[j] = half::f16::from_le_bytes([src[2 * j], src[2 * j + 1]]).to_f32();
    }
}
