//! The default model compiled into quill: a character-level GPT (nanoGPT architecture) trained
//! on tiny Shakespeare by `fixtures/train_char.py`, stored as bf16 safetensors with its
//! Hugging Face `config.json` and nanoGPT `meta.pkl`. Its bytes live in the binary; nothing is
//! read from disk.

use std::path::Path;

use super::{hf, Parsed};
use crate::error::{Error, Result};
use crate::formats::{pickle, safetensors};
use crate::tensor::Bytes;
use crate::tokenizer::{CharTokenizer, Tokenizer};

const CONFIG: &str =
    include_str!("../../../../fixtures/models/shakespeare-char/hf-bf16/config.json");
static WEIGHTS: &[u8] =
    include_bytes!("../../../../fixtures/models/shakespeare-char/hf-bf16/model.safetensors");
static META: &[u8] =
    include_bytes!("../../../../fixtures/models/shakespeare-char/hf-bf16/meta.pkl");

pub(super) fn parse() -> Result<Parsed> {
    let weights_path = Path::new("(embedded)/model.safetensors");
    let config_path = Path::new("(embedded)/config.json");
    let meta_path = Path::new("(embedded)/meta.pkl");
    let (store, _) = safetensors::parse_safetensors(weights_path, Bytes::Static(WEIGHTS))?;
    let json: serde_json::Value = serde_json::from_str(CONFIG)
        .map_err(|e| Error::format(config_path, "config.json", e.to_string()))?;
    let (config, layout) = hf::config_from_json(config_path, &json, &store)?;
    let meta = pickle::load_pickle_bytes(meta_path, META, &mut |_| {
        Err(Error::format(
            meta_path,
            "pickle",
            "unexpected persistent id",
        ))
    })?;
    let tokenizer = Tokenizer::Char(CharTokenizer::from_meta(meta_path, &meta)?);
    Ok(Parsed {
        store,
        config,
        layout,
        format: "embedded (nanoGPT character-level GPT, bf16 safetensors)".into(),
        tokenizer: Some((tokenizer, "the embedded meta.pkl".into())),
    })
}
