//! Block-quantized weight matrices (llama.cpp's GGUF block formats) and the kernels that use
//! them without dequantizing the whole matrix.
//!
//! A [`QuantMatrix`] is one or more row ranges ("parts") of quantized bytes, each borrowed from a
//! memory-mapped file (several parts let Q, K and V — or gate and up — be used as one stacked
//! matrix without copying, even when their block types differ).
//!
//! The model's matmul (`kernels::matmul`) multiplies these matrices the way llama.cpp's CPU
//! backend does: each activation row is quantized once to 8-bit blocks ([`act::QActs`]: 32
//! values per block for Q8_0/Q4_0/Q4_1, 256 for the K-quants) and every output is a sum over
//! blocks of integer dot products scaled by the blocks' factors ([`int`]). That is several times
//! less arithmetic per weight byte than widening to f32, which is what lets quantized decode run
//! at memory bandwidth; the cost is the activation rounding, about 0.4% per product (measured
//! against float references in the tests). Blocks are summed in a fixed order, so results do not
//! depend on threads or batch size. [`QuantMatrix::row_into`] dequantizes a row exactly, for
//! embeddings and conversions.
//!
//! Layouts (little-endian; `f16` is IEEE half precision):
//! - Q8_0 (32 values, 34 bytes): `d: f16, q: [i8; 32]`; `x = d·q`.
//! - Q4_0 (32 values, 18 bytes): `d: f16, q: [u8; 16]`; value `j` is the low nibble of byte `j`,
//!   value `j + 16` the high nibble; `x = d·(q − 8)`.
//! - Q4_1 (32 values, 20 bytes): `d: f16, m: f16, q: [u8; 16]` (nibbles as Q4_0); `x = d·q + m`.
//! - Q4_K, Q5_K, Q6_K (256 values): see [`kquants`].
//!
//! [`quantize`] makes Q8_0 / Q4_0 / Q4_1 rows from f32 (llama.cpp's reference quantizers), for
//! running a model at a lower precision than it was stored in (`load::dtype`).

pub mod act;
mod blocks;
pub(crate) mod int;
#[cfg(target_arch = "x86_64")]
mod int_avx2;
mod kquants;
pub mod packed;
#[cfg(target_arch = "x86_64")]
mod packed_amx;
#[cfg(target_arch = "x86_64")]
mod packed_avx2;
#[cfg(target_arch = "x86_64")]
mod packed_avx512;
#[cfg(target_arch = "aarch64")]
mod packed_neon;
pub mod quantize;

pub use quantize::{quantize_row_q4_0, quantize_row_q4_1, quantize_row_q8_0};

use crate::tensor::{Bytes, DType};

/// Whether the Q8_0 batch kernel runs on Intel AMX here (see `packed_amx`).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_amx() -> bool {
    packed_amx::available()
}

/// Values per K-quant super-block.
pub const QK_K: usize = 256;
/// Values per Q8_0 / Q4_0 / Q4_1 block.
pub const QK: usize = 32;

/// A row range of a quantized matrix stored in one region: row-major blocks as in the file, or
/// interleaved eight rows at a time ([`packed`]).
#[derive(Debug, Clone)]
pub struct QuantPart {
    pub dtype: DType,
    pub rows: usize,
    bytes: Bytes,
    offset: usize,
    interleaved: bool,
}

impl QuantPart {
    /// Borrows `rows` rows of `cols` values of block type `dtype` at `offset` of `bytes`.
    /// `None` if the type is not a supported block format, `cols` is not a whole number of
    /// blocks, or the data does not fit inside `bytes`.
    pub fn new(
        dtype: DType,
        rows: usize,
        cols: usize,
        bytes: &Bytes,
        offset: usize,
    ) -> Option<Self> {
        if !is_supported(dtype) || !cols.is_multiple_of(dtype.block_elems()) {
            return None;
        }
        let row_bytes = cols / dtype.block_elems() * dtype.block_bytes();
        let end = offset.checked_add(rows.checked_mul(row_bytes)?)?;
        if end > bytes.as_slice().len() {
            return None;
        }
        Some(QuantPart {
            dtype,
            rows,
            bytes: bytes.clone(),
            offset,
            interleaved: false,
        })
    }

    /// Whether the rows are stored interleaved ([`packed`]) rather than row-major.
    pub fn is_interleaved(&self) -> bool {
        self.interleaved
    }

    /// This part as interleaved parts: the first `rows / 8 · 8` rows repacked and the rest, if
    /// any, left row-major after them. Other block types, parts of fewer than 8 rows and parts
    /// already interleaved come back unchanged.
    ///
    /// A group of 8 rows fills the same bytes in either layout, so bytes this part alone owns
    /// (quantized at load) are repacked in place, group by group; borrowed or shared bytes (a
    /// mapped file) are repacked into a copy and their file pages handed back to the OS. Either
    /// way the resident memory does not double.
    fn into_interleaved(mut self, cols: usize) -> Vec<QuantPart> {
        let head = self.rows / packed::LANES * packed::LANES;
        if self.interleaved || !packed::packable(self.dtype) || head == 0 {
            return vec![self];
        }
        let rb = self.row_bytes(cols);
        let range = self.offset..self.offset + head * rb;
        let owned = match &mut self.bytes {
            Bytes::Owned(v) => std::sync::Arc::get_mut(v),
            _ => None,
        };
        let (bytes, offset) = match owned {
            Some(v) => {
                packed::pack_in_place(self.dtype, &mut v[range.clone()], head, rb);
                (self.bytes.clone(), self.offset)
            }
            None => {
                let src = &self.bytes.as_slice()[range.clone()];
                let copy = packed::pack(self.dtype, src, head, rb);
                self.bytes.release(range.start, range.len());
                (Bytes::Owned(std::sync::Arc::new(copy)), 0)
            }
        };
        let mut out = vec![QuantPart {
            dtype: self.dtype,
            rows: head,
            bytes,
            offset,
            interleaved: true,
        }];
        if head < self.rows {
            out.push(QuantPart {
                rows: self.rows - head,
                offset: range.end,
                ..self
            });
        }
        out
    }

    /// Bytes of one row of `cols` values.
    pub(crate) fn row_bytes(&self, cols: usize) -> usize {
        cols / self.dtype.block_elems() * self.dtype.block_bytes()
    }

    /// The bytes of every row, `rows · row_bytes(cols)`.
    pub(crate) fn data(&self, cols: usize) -> &[u8] {
        &self.bytes.as_slice()[self.offset..][..self.rows * self.row_bytes(cols)]
    }

    /// Row `r` dequantized into `out` [cols].
    fn row_into(&self, r: usize, cols: usize, out: &mut [f32]) {
        let rb = self.row_bytes(cols);
        if !self.interleaved {
            let row = &self.bytes.as_slice()[self.offset + r * rb..][..rb];
            return dequantize_row_dispatch(self.dtype, row, out);
        }
        // One block at a time from the row's group, through a block-sized buffer.
        let (bb, be) = (self.dtype.block_bytes(), self.dtype.block_elems());
        let g = r / packed::LANES;
        let group = &self.data(cols)[g * packed::LANES * rb..][..packed::LANES * rb];
        let mut blk = [0u8; 256];
        for (gb, o) in group
            .chunks_exact(packed::LANES * bb)
            .zip(out.chunks_exact_mut(be))
        {
            packed::get_block(self.dtype, gb, r % packed::LANES, &mut blk[..bb]);
            dequantize_row_dispatch(self.dtype, &blk[..bb], o);
        }
    }

    pub fn is_mapped(&self) -> bool {
        self.bytes.is_mapped()
    }

    /// Where the part's storage starts (tests check that nothing was copied).
    #[cfg(test)]
    pub(crate) fn bytes_ptr(&self) -> *const u8 {
        self.bytes.as_slice().as_ptr()
    }
}

/// The block formats quill has kernels for.
pub const FORMATS: [DType; 6] = [
    DType::Q8_0,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q4K,
    DType::Q5K,
    DType::Q6K,
];

/// Whether quill has kernels for block type `dtype`.
pub fn is_supported(dtype: DType) -> bool {
    FORMATS.contains(&dtype)
}

/// A quantized `[rows, cols]` = `[out, in]` matrix made of one or more stacked parts.
#[derive(Debug, Clone)]
pub struct QuantMatrix {
    pub rows: usize,
    pub cols: usize,
    pub parts: Vec<QuantPart>,
}

impl QuantMatrix {
    /// Stacks `parts` (each with `cols` columns) along the rows.
    pub fn new(cols: usize, parts: Vec<QuantPart>) -> Self {
        QuantMatrix {
            rows: parts.iter().map(|p| p.rows).sum(),
            cols,
            parts,
        }
    }

    /// Bytes of quantized data read by one pass over the matrix.
    pub fn weight_bytes(&self) -> usize {
        self.parts
            .iter()
            .map(|p| p.rows * p.row_bytes(self.cols))
            .sum()
    }

    pub fn is_mapped(&self) -> bool {
        self.parts.iter().all(QuantPart::is_mapped)
    }

    /// The same matrix with every quantized part interleaved for the kernels
    /// ([`packed`]; a row count that is not a multiple of 8 leaves its last rows row-major).
    /// Bytes shared with `self` are repacked into a copy; see [`Self::into_interleaved`].
    pub fn interleaved(&self) -> QuantMatrix {
        self.clone().into_interleaved()
    }

    /// [`Self::interleaved`], repacking the parts whose bytes only this matrix holds in place.
    pub fn into_interleaved(self) -> QuantMatrix {
        let cols = self.cols;
        let parts = self
            .parts
            .into_iter()
            .flat_map(|p| p.into_interleaved(cols))
            .collect();
        QuantMatrix::new(cols, parts)
    }

    /// Hands the parts' memory-mapped pages back to the OS (see [`Bytes::release`]).
    pub fn release(&self) {
        for p in &self.parts {
            p.bytes.release(p.offset, p.rows * p.row_bytes(self.cols));
        }
    }

    /// The part holding row `r` and the row's index inside it.
    fn locate(&self, mut r: usize) -> Option<(&QuantPart, usize)> {
        for p in &self.parts {
            if r < p.rows {
                return Some((p, r));
            }
            r -= p.rows;
        }
        None
    }

    /// Writes row `r` dequantized into `out` [cols]. Rows past the end give zeros.
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        match self.locate(r) {
            Some((p, i)) => p.row_into(i, self.cols, out),
            None => out.fill(0.0),
        }
    }
}

/// [`dequantize_row`] compiled for the best instruction set of this CPU. The loops are the
/// same scalar code (no FMA contraction), so the values are bit-identical on every path.
fn dequantize_row_dispatch(dtype: DType, data: &[u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { dequantize_row_avx2(dtype, data, out) };
    }
    dequantize_row(dtype, data, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dequantize_row_avx2(dtype: DType, data: &[u8], out: &mut [f32]) {
    dequantize_row(dtype, data, out)
}

/// Dequantizes one row of blocks of type `dtype` into `out` (`out.len()` values).
#[inline(always)]
pub fn dequantize_row(dtype: DType, data: &[u8], out: &mut [f32]) {
    match dtype {
        DType::Q8_0 => blocks::dequant_q8_0(data, out),
        DType::Q4_0 => blocks::dequant_q4_0(data, out),
        DType::Q4_1 => blocks::dequant_q4_1(data, out),
        DType::Q4K => kquants::dequant_q4_k(data, out),
        DType::Q5K => kquants::dequant_q5_k(data, out),
        DType::Q6K => kquants::dequant_q6_k(data, out),
        _ => out.fill(0.0),
    }
}

#[inline]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

#[cfg(test)]
mod tests;
