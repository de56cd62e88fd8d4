//! Running a model at a chosen precision whatever its checkpoint stores: after the canonical
//! [`Weights`] are built, every 2-D weight matrix — `tok_emb` [vocab, C] (also the head when
//! tied), each block's `qkv`, `attn_out`, `up`, `down` and an untied `head` [vocab, C] — is
//! converted to the requested storage:
//!
//! | dtype | storage | per value |
//! |---|---|---|
//! | `f32` | [`WeightData::Owned`] (a mapped f32 matrix stays mapped) | 4 bytes |
//! | `f16`, `bf16` | [`WeightData::Half`] over owned bytes, round to nearest even | 2 bytes |
//! | `q8_0`, `q4_0`, `q4_1` | [`WeightData::Quant`]: one owned [`QuantPart`] (llama.cpp's reference quantizers) | 8.5, 4.5, 5 bits |
//!
//! Norms, biases and `pos_emb` stay f32. A matrix already in the requested storage is kept as
//! it is (no copy); so is each part of a stacked quantized matrix that already has the target
//! block type. Block formats need whole 32-value blocks per row: a matrix whose column count is
//! not a multiple of 32 is an error naming it, checked before anything is converted.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernels::quant::{quantize, QuantMatrix, QuantPart, QK};
use crate::kernels::{Matrix, WKind, WeightData};
use crate::model::Weights;
use crate::tensor::{Bytes, DType};

/// The storage to run a model's weight matrices in (`LoadOptions::dtype`, `--dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightDtype {
    F32,
    F16,
    Bf16,
    Q8_0,
    Q4_0,
    Q4_1,
}

impl WeightDtype {
    /// Every value, in the order help texts list them.
    pub const ALL: [WeightDtype; 6] = [
        WeightDtype::F32,
        WeightDtype::F16,
        WeightDtype::Bf16,
        WeightDtype::Q8_0,
        WeightDtype::Q4_0,
        WeightDtype::Q4_1,
    ];

    /// The lower-case name (`"q8_0"`), as parsed by [`str::parse`].
    pub fn name(self) -> &'static str {
        self.dtype().name()
    }

    /// The element or block type of the converted matrices.
    pub fn dtype(self) -> DType {
        match self {
            WeightDtype::F32 => DType::F32,
            WeightDtype::F16 => DType::F16,
            WeightDtype::Bf16 => DType::BF16,
            WeightDtype::Q8_0 => DType::Q8_0,
            WeightDtype::Q4_0 => DType::Q4_0,
            WeightDtype::Q4_1 => DType::Q4_1,
        }
    }

    /// Whether the storage is a 32-value block format (columns must be a multiple of 32).
    pub fn is_block(self) -> bool {
        self.dtype().is_quantized()
    }
}

impl std::fmt::Display for WeightDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WeightDtype {
    type Err = Error;

    /// Parses `f32`, `f16`, `bf16`, `q8_0`, `q4_0` or `q4_1` (any case).
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        WeightDtype::ALL
            .into_iter()
            .find(|d| d.name() == lower)
            .ok_or_else(|| {
                let valid: Vec<&str> = WeightDtype::ALL.iter().map(|d| d.name()).collect();
                Error::config("dtype", format!("`{s}` is not one of {}", valid.join(", ")))
            })
    }
}

/// Converts every weight matrix of `weights` to `dtype` storage (see the module docs).
/// `source` names the checkpoint in errors. Errors, before converting anything, if `dtype` is
/// a block format and a matrix's column count is not a multiple of 32; and if a value does not
/// fit the target's f16 numbers (an f16 weight, or a block scale, beyond ±65504).
pub fn convert_weights(weights: &mut Weights, dtype: WeightDtype, source: &Path) -> Result<()> {
    for (name, m) in matrices(weights) {
        check_shape(name, m, dtype, source)?;
    }
    for (name, m) in matrices_mut(weights) {
        if let Some(c) = convert_matrix(m, dtype).map_err(|d| Error::tensor(source, name, d))? {
            // The source's file pages were read to convert; hand them back so the resident
            // memory is the converted copy alone.
            std::mem::replace(m, c).release_source();
        }
    }
    Ok(())
}

/// A short description of how the weight matrices are stored, by share of their elements:
/// `"q8_0"`, or `"q4_k, q6_k"` when several types are mixed (the most common first).
pub fn storage_summary(weights: &Weights) -> String {
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    for (_, m) in matrices(weights) {
        let n = m.rows * m.cols;
        let mut add = |name: &'static str, k: usize| match counts.iter_mut().find(|c| c.0 == name) {
            Some(c) => c.1 += k,
            None => counts.push((name, k)),
        };
        match &m.data {
            WeightData::Owned(_) | WeightData::Mapped { .. } => add("f32", n),
            WeightData::Half { bf16, .. } => add(if *bf16 { "bf16" } else { "f16" }, n),
            WeightData::Panel(p) => add(p.kind().name(), n),
            WeightData::Quant(q) => {
                for p in &q.parts {
                    add(p.dtype.name(), p.rows * m.cols);
                }
            }
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    let names: Vec<&str> = counts.iter().map(|c| c.0).collect();
    names.join(", ")
}

/// The weight matrices with their canonical names (`tok_emb`, `blocks.{i}.qkv`, ..., `head`).
fn matrices(w: &Weights) -> Vec<(String, &Matrix)> {
    let mut v = vec![("tok_emb".to_string(), &w.tok_emb)];
    for (i, b) in w.blocks.iter().enumerate() {
        for (n, l) in [
            ("qkv", &b.qkv),
            ("attn_out", &b.attn_out),
            ("up", &b.up),
            ("down", &b.down),
        ] {
            v.push((format!("blocks.{i}.{n}"), &l.w));
        }
    }
    if let Some(h) = &w.head {
        v.push(("head".to_string(), &h.w));
    }
    v
}

/// [`matrices`], mutably.
fn matrices_mut(w: &mut Weights) -> Vec<(String, &mut Matrix)> {
    let mut v = vec![("tok_emb".to_string(), &mut w.tok_emb)];
    for (i, b) in w.blocks.iter_mut().enumerate() {
        v.push((format!("blocks.{i}.qkv"), &mut b.qkv.w));
        v.push((format!("blocks.{i}.attn_out"), &mut b.attn_out.w));
        v.push((format!("blocks.{i}.up"), &mut b.up.w));
        v.push((format!("blocks.{i}.down"), &mut b.down.w));
    }
    if let Some(h) = &mut w.head {
        v.push(("head".to_string(), &mut h.w));
    }
    v
}

fn check_shape(name: String, m: &Matrix, dtype: WeightDtype, source: &Path) -> Result<()> {
    if dtype.is_block() && !m.cols.is_multiple_of(QK) {
        return Err(Error::tensor(
            source,
            name,
            format!(
                "has shape [{}, {}]: {dtype} stores each row in blocks of {QK} values, and {} \
                 columns are not a whole number of blocks (f32, f16 and bf16 work for any shape)",
                m.rows, m.cols, m.cols
            ),
        ));
    }
    Ok(())
}

/// Whether `m` is already stored as `dtype`.
fn already(m: &Matrix, dtype: WeightDtype) -> bool {
    match (&m.data, dtype) {
        (WeightData::Owned(_) | WeightData::Mapped { .. }, WeightDtype::F32) => true,
        (WeightData::Half { bf16, .. }, WeightDtype::F16 | WeightDtype::Bf16) => {
            *bf16 == (dtype == WeightDtype::Bf16)
        }
        (WeightData::Quant(q), _) => q.parts.iter().all(|p| p.dtype == dtype.dtype()),
        (WeightData::Panel(p), _) => WKind::of(dtype.dtype()) == Some(p.kind()),
        _ => false,
    }
}

/// `m` in `dtype` storage, or `None` when it already is. Errors with a detail message.
fn convert_matrix(m: &Matrix, dtype: WeightDtype) -> Result<Option<Matrix>, String> {
    if already(m, dtype) {
        return Ok(None);
    }
    let converted = match dtype {
        WeightDtype::F32 => m.to_f32(),
        WeightDtype::F16 | WeightDtype::Bf16 => to_half(m, dtype == WeightDtype::Bf16)?,
        WeightDtype::Q8_0 | WeightDtype::Q4_0 | WeightDtype::Q4_1 => to_blocks(m, dtype.dtype())?,
    };
    Ok(Some(converted))
}

/// Rows converted per stretch: about 4 MiB of f32 source. After each stretch its rows of a
/// memory-mapped source are handed back to the OS, so converting a large matrix (GPT-2's 154 MB
/// f32 embedding) never holds the whole source and the whole result resident at once.
fn stretch_rows(cols: usize) -> usize {
    ((4 << 20) / (4 * cols.max(1))).max(1)
}

/// Converts rows `start..` of `m` into `out` (as many rows as it holds, `out_row_bytes` each):
/// `f(scratch, row, r, out_row)` gets row `r` as f32, on the pool, in stretches of
/// [`stretch_rows`]; each stretch's rows of a mapped source are handed back once converted.
fn convert_rows<T>(
    m: &Matrix,
    start: usize,
    out: &mut [u8],
    out_row_bytes: usize,
    init: impl Fn() -> T + Sync + Send,
    f: impl Fn(&mut T, &[f32], usize, &mut [u8]) -> Result<(), String> + Sync + Send,
) -> Result<(), String> {
    if out_row_bytes == 0 {
        return Ok(());
    }
    let step = stretch_rows(m.cols);
    for (k, stretch) in out.chunks_mut(step * out_row_bytes).enumerate() {
        let first = start + k * step;
        stretch
            .par_chunks_mut(out_row_bytes)
            .enumerate()
            .try_for_each_init(
                || (vec![0.0f32; m.cols], init()),
                |(row, scratch), (i, o)| {
                    m.row_into(first + i, row);
                    f(scratch, row, first + i, o)
                },
            )?;
        m.release_rows(first, stretch.len() / out_row_bytes);
    }
    Ok(())
}

/// `m` [rows, cols] as little-endian f16 or bf16 bytes (round to nearest even).
fn to_half(m: &Matrix, bf16: bool) -> Result<Matrix, String> {
    let (rows, cols) = (m.rows, m.cols);
    let mut bytes = vec![0u8; rows * cols * 2];
    convert_rows(
        m,
        0,
        &mut bytes,
        cols * 2,
        || (),
        |_, row, r, out| {
            for (o, &x) in out.chunks_exact_mut(2).zip(row.iter()) {
                let (b, inf) = if bf16 {
                    let h = half::bf16::from_f32(x);
                    (h.to_le_bytes(), h.is_infinite())
                } else {
                    let h = half::f16::from_f32(x);
                    (h.to_le_bytes(), h.is_infinite())
                };
                if inf && x.is_finite() {
                    let kind = if bf16 { "bf16" } else { "f16" };
                    return Err(format!(
                        "row {r} holds {x}, beyond the range of {kind} (shape [{rows}, {cols}])"
                    ));
                }
                o.copy_from_slice(&b);
            }
            Ok(())
        },
    )?;
    Ok(Matrix {
        rows,
        cols,
        data: WeightData::Half {
            bytes: Bytes::Owned(Arc::new(bytes)),
            offset: 0,
            len: rows * cols,
            bf16,
        },
    })
}

/// `m` [rows, cols] (cols a multiple of 32) quantized to `dtype` blocks. Parts of a stacked
/// quantized matrix that already have that type are kept; the rest becomes one owned part
/// per run of rows.
fn to_blocks(m: &Matrix, dtype: DType) -> Result<Matrix, String> {
    // Row ranges to keep as they are (a part of the target type) or to quantize.
    let mut ranges: Vec<(usize, usize, Option<QuantPart>)> = Vec::new();
    match &m.data {
        WeightData::Quant(q) => {
            let mut start = 0;
            for p in &q.parts {
                let keep = (p.dtype == dtype).then(|| p.clone());
                match ranges.last_mut() {
                    Some(last) if keep.is_none() && last.2.is_none() => last.1 += p.rows,
                    _ => ranges.push((start, p.rows, keep)),
                }
                start += p.rows;
            }
        }
        _ => ranges.push((0, m.rows, None)),
    }
    let mut parts = Vec::with_capacity(ranges.len());
    for (start, rows, keep) in ranges {
        match keep {
            Some(p) => parts.push(p),
            None => parts.push(quantize_rows(m, start, rows, dtype)?),
        }
    }
    Ok(Matrix::quantized(QuantMatrix::new(m.cols, parts)))
}

/// Rows `start..start + rows` of `m` quantized to `dtype` into one owned part.
fn quantize_rows(m: &Matrix, start: usize, rows: usize, dtype: DType) -> Result<QuantPart, String> {
    let cols = m.cols;
    let quantize_row = quantize::quantizer(dtype)
        .ok_or_else(|| format!("{dtype} is not a format quill can quantize to"))?;
    let row_bytes = dtype
        .bytes_for(cols)
        .ok_or_else(|| format!("{cols} columns are not whole {dtype} blocks"))?;
    let mut bytes = vec![0u8; rows * row_bytes];
    let scratch = || Vec::with_capacity(row_bytes);
    convert_rows(
        m,
        start,
        &mut bytes,
        row_bytes,
        scratch,
        |q, row, r, out| {
            q.clear();
            quantize_row(row, q);
            if !quantize::scales_finite(dtype, q) {
                let amax = row.iter().fold(0.0f32, |a, v| a.max(v.abs()));
                return Err(format!(
                    "row {r} holds values up to {amax}: too large for {dtype}'s f16 block scales"
                ));
            }
            out.copy_from_slice(q);
            Ok(())
        },
    )?;
    QuantPart::new(dtype, rows, cols, &Bytes::Owned(Arc::new(bytes)), 0)
        .ok_or_else(|| format!("cannot hold {rows} × {cols} values as {dtype}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::weights::{Block, Linear, Norm};

    fn lin(rows: usize, cols: usize) -> Linear {
        let v = (0..rows * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0);
        Linear {
            w: Matrix::from_vec(rows, cols, v.collect()),
            b: None,
        }
    }

    /// A one-block model with width `c` (the MLP is 4c wide).
    fn weights(c: usize, vocab: usize) -> Weights {
        let norm = || Norm {
            weight: vec![1.0; c],
            bias: None,
        };
        Weights {
            tok_emb: lin(vocab, c).w,
            pos_emb: Some(lin(8, c).w),
            blocks: vec![Block {
                attn_norm: norm(),
                qkv: lin(3 * c, c),
                attn_out: lin(c, c),
                mlp_norm: norm(),
                up: lin(4 * c, c),
                down: lin(c, 4 * c),
            }],
            final_norm: Some(norm()),
            head: None,
        }
    }

    #[test]
    fn names_parse_in_any_case_and_bad_names_list_the_valid_ones() {
        for d in WeightDtype::ALL {
            assert_eq!(d.name().parse::<WeightDtype>().ok(), Some(d));
            assert_eq!(d.name().to_uppercase().parse::<WeightDtype>().ok(), Some(d));
        }
        let e = "q9"
            .parse::<WeightDtype>()
            .expect_err("not a dtype")
            .to_string();
        assert!(
            e.contains("`q9`") && e.contains("f32, f16, bf16, q8_0, q4_0, q4_1"),
            "{e}"
        );
    }

    #[test]
    fn every_matrix_is_converted_and_the_rest_stays_f32() {
        for d in WeightDtype::ALL {
            let mut w = weights(32, 5);
            convert_weights(&mut w, d, Path::new("t")).expect("converts");
            assert_eq!(storage_summary(&w), d.name());
            assert!(matches!(
                w.pos_emb.as_ref().map(|m| &m.data),
                Some(WeightData::Owned(_))
            ));
            for (name, m) in matrices(&w) {
                let want = match (&m.data, d) {
                    (WeightData::Owned(_), WeightDtype::F32) => true,
                    (WeightData::Half { bf16, .. }, WeightDtype::F16 | WeightDtype::Bf16) => {
                        *bf16 == (d == WeightDtype::Bf16)
                    }
                    (WeightData::Quant(q), _) => {
                        q.parts.len() == 1 && q.parts[0].dtype == d.dtype()
                    }
                    _ => false,
                };
                assert!(want, "{d}: {name} is {:?}", m.data);
            }
        }
    }

    /// A matrix larger than one conversion stretch (so converted in several) gives exactly
    /// what converting each row on its own gives: no row skipped, repeated or misplaced.
    #[test]
    fn conversion_in_stretches_matches_row_by_row() {
        let cols = 32;
        let rows = 2 * stretch_rows(cols) + 77;
        let m = lin(rows, cols).w;
        let q = to_blocks(&m, DType::Q8_0).expect("quantizes");
        let h = to_half(&m, true).expect("converts");
        let (mut got, mut want) = (vec![0.0; cols], Vec::new());
        for r in [0, 1, stretch_rows(cols) - 1, stretch_rows(cols), rows - 1] {
            let row = m.row(r);
            want.clear();
            quantize::quantize_row_q8_0(row, &mut want);
            let mut deq = vec![0.0; cols];
            crate::kernels::quant::dequantize_row(DType::Q8_0, &want, &mut deq);
            q.row_into(r, &mut got);
            assert_eq!(got, deq, "q8_0 row {r}");
            h.row_into(r, &mut got);
            let bf: Vec<f32> = row
                .iter()
                .map(|&v| half::bf16::from_f32(v).to_f32())
                .collect();
            assert_eq!(got, bf, "bf16 row {r}");
        }
    }

    #[test]
    fn columns_that_are_not_whole_blocks_are_an_error_naming_the_matrix() {
        let mut w = weights(48, 5);
        let before = format!("{:?}", w.tok_emb.data);
        let e = convert_weights(&mut w, WeightDtype::Q4_0, Path::new("m.bin"))
            .expect_err("48 columns")
            .to_string();
        assert!(
            e.contains("m.bin") && e.contains("tok_emb") && e.contains("[5, 48]"),
            "{e}"
        );
        assert_eq!(format!("{:?}", w.tok_emb.data), before, "nothing converted");
        // Any shape works for the 16-bit types.
        convert_weights(&mut w, WeightDtype::F16, Path::new("m.bin")).expect("f16 converts");
    }

    #[test]
    fn a_matrix_already_in_the_requested_storage_is_not_copied() {
        let mut w = weights(32, 5);
        convert_weights(&mut w, WeightDtype::Q8_0, Path::new("t")).expect("q8_0");
        let mut again = w.clone();
        convert_weights(&mut again, WeightDtype::Q8_0, Path::new("t")).expect("q8_0 again");
        assert!(same_bytes(&w.blocks[0].up.w, &again.blocks[0].up.w));
        // f16 → f16 keeps the bytes too.
        let mut h = weights(32, 5);
        convert_weights(&mut h, WeightDtype::F16, Path::new("t")).expect("f16");
        let mut h2 = h.clone();
        convert_weights(&mut h2, WeightDtype::F16, Path::new("t")).expect("f16 again");
        assert!(same_bytes(&h.tok_emb, &h2.tok_emb));
    }

    /// Whether two matrices share their storage (no copy was made).
    fn same_bytes(a: &Matrix, b: &Matrix) -> bool {
        let bytes = |m: &Matrix| match &m.data {
            WeightData::Quant(q) => q.parts[0].bytes_ptr(),
            WeightData::Half { bytes, .. } => bytes.as_slice().as_ptr(),
            _ => std::ptr::null(),
        };
        !bytes(a).is_null() && bytes(a) == bytes(b)
    }

    #[test]
    fn f16_overflow_is_an_error_not_infinity() {
        let mut w = weights(32, 5);
        if let WeightData::Owned(v) = &mut w.blocks[0].down.w.data {
            v[7] = 1e6;
        }
        let e = convert_weights(&mut w, WeightDtype::F16, Path::new("t"))
            .expect_err("1e6 is beyond f16")
            .to_string();
        assert!(e.contains("blocks.0.down") && e.contains("f16"), "{e}");
        // bf16 has f32's range.
        convert_weights(&mut w, WeightDtype::Bf16, Path::new("t")).expect("bf16");
    }

    #[test]
    fn stacked_parts_of_the_target_type_are_kept_and_the_others_requantized() {
        let m = lin(64, 32).w;
        let mut q8 = Vec::new();
        let mut q4 = Vec::new();
        let mut row = vec![0.0; 32];
        for r in 0..32 {
            m.row_into(r, &mut row);
            quantize::quantize_row_q8_0(&row, &mut q8);
            m.row_into(32 + r, &mut row);
            quantize::quantize_row_q4_0(&row, &mut q4);
        }
        let part = |dt, b: Vec<u8>| {
            QuantPart::new(dt, 32, 32, &Bytes::Owned(Arc::new(b)), 0).expect("part")
        };
        let stacked = Matrix::quantized(QuantMatrix::new(
            32,
            vec![part(DType::Q8_0, q8), part(DType::Q4_0, q4)],
        ));
        let c = convert_matrix(&stacked, WeightDtype::Q8_0)
            .expect("converts")
            .expect("the q4_0 part changes");
        let WeightData::Quant(q) = &c.data else {
            panic!("quantized")
        };
        assert_eq!(q.parts.len(), 2);
        assert!(q.parts.iter().all(|p| p.dtype == DType::Q8_0));
        let WeightData::Quant(orig) = &stacked.data else {
            panic!("quantized")
        };
        assert_eq!(q.parts[0].bytes_ptr(), orig.parts[0].bytes_ptr());
    }
}
