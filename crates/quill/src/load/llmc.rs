//! llm.c's GPT-2 checkpoint (`gpt2_124M.bin`, `gpt2_124M_bf16.bin`): a 256 × i32 little-endian
//! header `[20240326, version, maxT, V, L, NH, C, Vp, 0...]`, version 3 (float32) or 5
//! (bfloat16), then every parameter tensor stacked over layers, in this order and nn.Linear
//! orientation `[out, in]`:
//!
//! ```text
//! wte [Vp, C]   wpe [maxT, C]   ln1w, ln1b [L, C]   qkvw [L, 3C, C]   qkvb [L, 3C]
//! attprojw [L, C, C]   attprojb [L, C]   ln2w, ln2b [L, C]   fcw [L, 4C, C]   fcb [L, 4C]
//! fcprojw [L, C, 4C]   fcprojb [L, C]   lnfw, lnfb [C]
//! ```
//!
//! The architecture is GPT-2's: tanh GELU, biases everywhere, LayerNorm eps 1e-5, head tied to
//! `wte`. The embedding is padded from V to Vp rows (zeros); only ids below V are sampled.
//! The tokenizer is `gpt2_tokenizer.bin` beside the model when present (llm.c's name for it),
//! else GPT-2's BPE when V is GPT-2's 50257.

use std::path::Path;

use super::Parsed;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::formats::sniff::LLMC_MODEL_MAGIC;
use crate::model::Layout;
use crate::tensor::{Bytes, DType, RawTensor, TensorStore};
use crate::tokenizer::{LlmcTokenizer, Tokenizer, GPT2_VOCAB};

const HEADER_INTS: usize = 256;

/// Hands out consecutive little-endian values and tensor views of one file, checking bounds.
pub(super) struct Cursor<'a> {
    pub path: &'a Path,
    pub format: &'static str,
    pub bytes: Bytes,
    pub at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<usize> {
        let have = self.bytes.as_slice().len();
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= have)
            .ok_or_else(|| {
                Error::format(
                    self.path,
                    self.format,
                    format!(
                    "{what} needs bytes {}..{} but the file has {have} (truncated, or the header \
                     does not match the data)",
                    self.at,
                    self.at.saturating_add(n)
                ),
                )
            })?;
        let start = self.at;
        self.at = end;
        Ok(start)
    }

    /// One little-endian i32.
    pub fn i32(&mut self, what: &str) -> Result<i32> {
        let at = self.take(4, what)?;
        let b = &self.bytes.as_slice()[at..at + 4];
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A contiguous tensor of `shape` starting here.
    pub fn tensor(&mut self, what: &str, dtype: DType, shape: &[usize]) -> Result<RawTensor> {
        let n = shape
            .iter()
            .try_fold(dtype.size(), |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::format(self.path, self.format, format!("{what} is too large")))?;
        let at = self.take(n, what)?;
        Ok(RawTensor::contiguous(
            dtype,
            shape.to_vec(),
            at,
            self.bytes.clone(),
        ))
    }

    /// Fails unless every byte was read.
    pub fn finish(&self, expected: &str) -> Result<()> {
        let have = self.bytes.as_slice().len();
        if self.at != have {
            return Err(Error::format(
                self.path,
                self.format,
                format!(
                    "{} bytes follow the last tensor: the file is larger than its header says \
                     ({expected})",
                    have - self.at
                ),
            ));
        }
        Ok(())
    }
}

/// Reads an llm.c model file.
pub(super) fn parse(path: &Path) -> Result<Parsed> {
    let bytes = Bytes::Mapped(crate::formats::safetensors::map_file(path)?);
    let mut cur = Cursor {
        path,
        format: "llm.c model",
        bytes,
        at: 0,
    };
    let mut h = [0i32; HEADER_INTS];
    for (i, v) in h.iter_mut().enumerate() {
        *v = cur.i32(&format!("header int {i}"))?;
    }
    let bad = |detail: String| Error::format(path, "llm.c model", detail);
    if h[0] != LLMC_MODEL_MAGIC {
        return Err(bad(format!(
            "magic is {}, expected {LLMC_MODEL_MAGIC}",
            h[0]
        )));
    }
    let dtype = match h[1] {
        3 => DType::F32,
        5 => DType::BF16,
        v => {
            return Err(bad(format!(
                "version {v}; quill reads 3 (float32) and 5 (bfloat16). Older files lack the \
                 padded vocabulary: re-export with llm.c's current train_gpt2.py"
            )))
        }
    };
    let field = |i: usize, name: &str| -> Result<usize> {
        usize::try_from(h[i])
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| {
                bad(format!(
                    "header `{name}` is {}, expected a positive int",
                    h[i]
                ))
            })
    };
    let (max_t, v, l, nh, c, vp) = (
        field(2, "maxT")?,
        field(3, "V")?,
        field(4, "L")?,
        field(5, "NH")?,
        field(6, "C")?,
        field(7, "Vp")?,
    );
    if vp < v {
        return Err(bad(format!(
            "padded vocabulary Vp {vp} is smaller than V {v}"
        )));
    }
    // Sizes in u128: header values are untrusted and their products may not fit a usize.
    let (t, vv, ll, cc, pv) = (max_t as u128, v as u128, l as u128, c as u128, vp as u128);
    let params: u128 = pv * cc + t * cc + ll * (12 * cc * cc + 13 * cc) + 2 * cc;
    let want_len = 4 * HEADER_INTS as u128 + params * dtype.size() as u128;
    let expected = format!(
        "maxT {max_t}, V {vv}, Vp {vp}, L {l}, NH {nh}, C {c}: {want_len} bytes = 1024-byte \
         header + {params} {dtype} parameters"
    );
    let have_len = cur.bytes.as_slice().len();
    if (have_len as u128) < want_len {
        return Err(bad(format!(
            "{have_len} bytes, expected {expected} (truncated, or the header does not match \
             the data)"
        )));
    }
    let mut store = TensorStore::new(path);
    let mut put = |name: String, t: RawTensor| store.insert(name, t);
    put(
        "transformer.wte.weight".into(),
        cur.tensor("wte", dtype, &[vp, c])?,
    );
    put(
        "transformer.wpe.weight".into(),
        cur.tensor("wpe", dtype, &[max_t, c])?,
    );
    let per_layer: [(&str, &[usize]); 12] = [
        ("ln_1.weight", &[c]),
        ("ln_1.bias", &[c]),
        ("attn.c_attn.weight", &[3 * c, c]),
        ("attn.c_attn.bias", &[3 * c]),
        ("attn.c_proj.weight", &[c, c]),
        ("attn.c_proj.bias", &[c]),
        ("ln_2.weight", &[c]),
        ("ln_2.bias", &[c]),
        ("mlp.c_fc.weight", &[4 * c, c]),
        ("mlp.c_fc.bias", &[4 * c]),
        ("mlp.c_proj.weight", &[c, 4 * c]),
        ("mlp.c_proj.bias", &[c]),
    ];
    for (name, shape) in per_layer {
        for i in 0..l {
            put(
                format!("transformer.h.{i}.{name}"),
                cur.tensor(name, dtype, shape)?,
            );
        }
    }
    put(
        "transformer.ln_f.weight".into(),
        cur.tensor("lnfw", dtype, &[c])?,
    );
    put(
        "transformer.ln_f.bias".into(),
        cur.tensor("lnfb", dtype, &[c])?,
    );
    cur.finish(&expected)?;
    // llm.c's GPT-2 is GPT-2 exactly (tanh GELU, biases, tied head).
    let config = ModelConfig::gpt2(vp, l, nh, c, max_t);
    config.validate().map_err(|e| bad(format!("header: {e}")))?;
    Ok(Parsed {
        store,
        config,
        layout: Layout::NanoGpt,
        format: format!("llm.c model .bin (version {})", h[1]),
        tokenizer: find_tokenizer(path, v)?,
    })
}

/// `gpt2_tokenizer.bin` beside the model, else GPT-2's BPE for a 50257-token model.
fn find_tokenizer(path: &Path, v: usize) -> Result<Option<(Tokenizer, String)>> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let beside = dir.join("gpt2_tokenizer.bin");
    if beside.is_file() {
        let t = LlmcTokenizer::from_file(&beside)?;
        if t.vocab_size() != v {
            return Err(Error::format(
                &beside,
                "llm.c tokenizer",
                format!(
                    "{} tokens, but the model beside it has V = {v}",
                    t.vocab_size()
                ),
            ));
        }
        return Ok(Some((
            Tokenizer::Llmc(Box::new(t)),
            beside.display().to_string(),
        )));
    }
    if v == GPT2_VOCAB {
        return Ok(Some((
            Tokenizer::gpt2()?,
            "no gpt2_tokenizer.bin beside the model: V = 50257, GPT-2 BPE".into(),
        )));
    }
    Ok(None)
}
