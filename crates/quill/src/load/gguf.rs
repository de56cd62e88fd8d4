//! llama.cpp GGUF files: the architecture from `general.architecture` and `<arch>.*` metadata,
//! the tensors as views into the memory map (quantized ones stay quantized), the tokenizer and
//! chat template embedded in the metadata.
//!
//! Architectures: `llama` (Llama, SmolLM2, TinyLlama, Mistral-style; Q and K stored in the
//! interleaved RoPE convention by llama.cpp's converter) and `gpt2`.

use std::path::Path;

use super::Parsed;
use crate::chat::ChatTemplate;
use crate::config::{Activation, Family, ModelConfig, NormKind, Positions, RopeStyle};
use crate::error::{Error, Result};
use crate::formats::gguf::GgufFile;
use crate::model::Layout;
use crate::tensor::TensorStore;

/// Parses a GGUF file into a checkpoint and its chat template (if the metadata has one).
pub(super) fn parse(path: &Path) -> Result<(Parsed, Option<ChatTemplate>)> {
    let g = GgufFile::open(path)?;
    let arch = g.str("general.architecture")?.to_string();
    let store = g.to_store()?;
    let (config, layout) = match arch.as_str() {
        "llama" => (llama_config(&g, &store)?, Layout::GgufLlama),
        "gpt2" => (gpt2_config(&g, &store)?, Layout::GgufGpt2),
        other => {
            return Err(Error::Unsupported {
                path: path.into(),
                detail: format!(
                    "GGUF architecture `{other}`: quill runs `llama` and `gpt2` GGUF files"
                ),
            })
        }
    };
    let tokenizer = crate::tokenizer::gguf::from_gguf(&g)?;
    let chat = match (&tokenizer, g.opt_str("tokenizer.chat_template")?) {
        (Some(tok), Some(src)) => Some(ChatTemplate::from_gguf(&g, src, tok)?),
        _ => None,
    };
    // The metadata (vocabulary, merges: about 2 MB for GPT-2) now lives in owned values and
    // the tokenizer; its file pages would otherwise stay resident beside the weights.
    g.bytes.release(0, g.data_offset);
    let format = format!("GGUF v{} ({arch})", g.version);
    let tokenizer = tokenizer.map(|t| (t, format!("{} metadata", path.display())));
    Ok((
        Parsed {
            store,
            config,
            layout,
            format,
            tokenizer,
        },
        chat,
    ))
}

/// Rows of a tensor that must exist (the vocabulary size from `token_embd.weight`).
fn rows_of(g: &GgufFile, store: &TensorStore, name: &str) -> Result<usize> {
    let t = store
        .get(name)
        .ok_or_else(|| Error::tensor(&g.path, name, "missing (the architecture needs it)"))?;
    match t.shape.as_slice() {
        [rows, _] => Ok(*rows),
        s => Err(Error::tensor(
            &g.path,
            name,
            format!("has shape {s:?}, expected [vocab, d_model]"),
        )),
    }
}

fn llama_config(g: &GgufFile, store: &TensorStore) -> Result<ModelConfig> {
    let k = |s: &str| format!("llama.{s}");
    let d_model = g.usize(&k("embedding_length"))?;
    let n_head = g.usize(&k("attention.head_count"))?;
    let unsupported = |detail: String| Error::Unsupported {
        path: g.path.clone(),
        detail,
    };
    if n_head == 0 || d_model % n_head != 0 {
        return Err(Error::format(
            &g.path,
            "GGUF",
            format!(
                "`llama.attention.head_count` {n_head} does not divide embedding_length {d_model}"
            ),
        ));
    }
    let hd = d_model / n_head;
    for key in [
        "attention.key_length",
        "attention.value_length",
        "rope.dimension_count",
    ] {
        if let Some(v) = g.opt_usize(&k(key))? {
            if v != hd {
                return Err(unsupported(format!(
                    "`llama.{key}` is {v} but d_model / heads is {hd} (partial or decoupled \
                     head sizes are not supported)"
                )));
            }
        }
    }
    if let Some(s) = g.opt_str(&k("rope.scaling.type"))? {
        if s != "none" {
            return Err(unsupported(format!("`llama.rope.scaling.type` `{s}`")));
        }
    }
    if g.get(&k("expert_count"))
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
        > 0
    {
        return Err(unsupported("mixture-of-experts models".into()));
    }
    Ok(ModelConfig {
        family: Family::Llama,
        vocab_size: rows_of(g, store, "token_embd.weight")?,
        n_layer: g.usize(&k("block_count"))?,
        n_head,
        n_kv_head: g
            .opt_usize(&k("attention.head_count_kv"))?
            .unwrap_or(n_head),
        d_model,
        d_ff: g.usize(&k("feed_forward_length"))?,
        context_length: g.usize(&k("context_length"))?,
        norm: NormKind::RmsNorm,
        norm_eps: g
            .opt_f32(&k("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5),
        norm_bias: false,
        linear_bias: false,
        activation: Activation::SwiGlu,
        positions: Positions::Rope {
            theta: g.opt_f32(&k("rope.freq_base"))?.unwrap_or(10000.0),
            style: RopeStyle::Interleaved,
        },
        tied_head: store.get("output.weight").is_none(),
        final_norm: true,
    })
}

fn gpt2_config(g: &GgufFile, store: &TensorStore) -> Result<ModelConfig> {
    let k = |s: &str| format!("gpt2.{s}");
    let n_head = g.usize(&k("attention.head_count"))?;
    let base = ModelConfig::gpt2(
        rows_of(g, store, "token_embd.weight")?,
        g.usize(&k("block_count"))?,
        n_head,
        g.usize(&k("embedding_length"))?,
        g.usize(&k("context_length"))?,
    );
    Ok(ModelConfig {
        d_ff: g.usize(&k("feed_forward_length"))?,
        norm_eps: g
            .opt_f32(&k("attention.layer_norm_epsilon"))?
            .unwrap_or(1e-5),
        norm_bias: store.get("blk.0.attn_norm.bias").is_some(),
        linear_bias: store.get("blk.0.attn_qkv.bias").is_some(),
        // ggml's GELU is the tanh approximation (GPT-2's).
        tied_head: store.get("output.weight").is_none(),
        ..base
    })
}
