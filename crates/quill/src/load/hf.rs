//! Hugging Face folders: `config.json` plus safetensors (single or sharded) or
//! `pytorch_model.bin`, and the tokenizer files beside them.

use std::path::Path;

use super::{json_bool, json_f32, json_usize, nanogpt, Parsed};
use crate::config::{Activation, Family, ModelConfig, NormKind, Positions, RopeStyle};
use crate::error::{Error, Result};
use crate::formats::{safetensors, sniff, torch};
use crate::model::Layout;
use crate::tensor::TensorStore;
use crate::tokenizer::Tokenizer;

/// A folder holding `config.json`.
pub(super) fn parse_folder(dir: &Path) -> Result<Parsed> {
    let candidates = [
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
    ];
    let Some(weights) = candidates.iter().map(|c| dir.join(c)).find(|p| p.is_file()) else {
        return Err(Error::UnknownFormat {
            path: dir.into(),
            detail: format!("config.json is there but none of {}", candidates.join(", ")),
        });
    };
    parse_weights_file(&weights)
}

/// A weights file (safetensors, safetensors index, or PyTorch state dict) with `config.json`
/// in the same folder.
pub(super) fn parse_weights_file(path: &Path) -> Result<Parsed> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(Error::UnknownFormat {
            path: path.into(),
            detail: format!(
                "weights without an architecture: expected {} beside them",
                config_path.display()
            ),
        });
    }
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(&config_path, "config.json", e.to_string()))?;
    let (store, format) = if path.extension().is_some_and(|e| e == "json") {
        (
            safetensors::load_safetensors_index(path)?,
            "Hugging Face sharded safetensors",
        )
    } else {
        match sniff::sniff_file(path)? {
            sniff::FileKind::Safetensors => (
                safetensors::load_safetensors(path)?,
                "Hugging Face safetensors",
            ),
            sniff::FileKind::TorchZip => {
                let root = torch::load_torch_file(path)?;
                (
                    torch::state_dict_to_store(path, &root)?,
                    "Hugging Face pytorch_model.bin",
                )
            }
            _ => {
                return Err(Error::UnknownFormat {
                    path: path.into(),
                    detail: "expected safetensors or a PyTorch zip state dict".into(),
                })
            }
        }
    };
    let (config, layout) = config_from_json(&config_path, &json, &store)?;
    let tokenizer = find_tokenizer(dir)?;
    Ok(Parsed {
        store,
        config,
        layout,
        format: format.to_string(),
        tokenizer,
    })
}

/// Builds the architecture from a Hugging Face `config.json`.
pub(super) fn config_from_json(
    path: &Path,
    cfg: &serde_json::Value,
    store: &TensorStore,
) -> Result<(ModelConfig, Layout)> {
    let model_type = cfg
        .get("model_type")
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::format(path, "config.json", "missing `model_type` (a string)"))?;
    match model_type {
        "gpt2" => gpt2_config(path, cfg, store).map(|c| (c, Layout::HfGpt2)),
        "llama" => llama_config(path, cfg).map(|c| (c, Layout::HfLlama)),
        other => Err(Error::Unsupported {
            path: path.into(),
            detail: format!(
                "model_type `{other}`: quill runs the `gpt2` and `llama` architectures"
            ),
        }),
    }
}

fn gpt2_config(path: &Path, cfg: &serde_json::Value, store: &TensorStore) -> Result<ModelConfig> {
    let d_model = json_usize(path, cfg, &["n_embd", "hidden_size"], None)?;
    let n_head = json_usize(path, cfg, &["n_head", "num_attention_heads"], None)?;
    let activation = match cfg.get("activation_function").and_then(|v| v.as_str()) {
        None | Some("gelu_new") | Some("gelu_pytorch_tanh") | Some("gelu_fast") => {
            Activation::GeluTanh
        }
        Some("gelu") => Activation::GeluExact,
        Some("relu") => Activation::Relu,
        Some(other) => {
            return Err(Error::Unsupported {
                path: path.into(),
                detail: format!("activation_function `{other}`"),
            })
        }
    };
    // Biases: Hugging Face GPT-2 always has them; nanoGPT exports with `bias=False` do not.
    // The tensors decide, so either kind of export loads.
    let has = |suffix: &str| {
        store.get(&format!("transformer.h.0.{suffix}")).is_some()
            || store.get(&format!("h.0.{suffix}")).is_some()
    };
    let base = ModelConfig::gpt2(
        json_usize(path, cfg, &["vocab_size"], None)?,
        json_usize(path, cfg, &["n_layer", "num_hidden_layers"], None)?,
        n_head,
        d_model,
        json_usize(path, cfg, &["n_positions", "n_ctx"], None)?,
    );
    Ok(ModelConfig {
        d_ff: json_usize(path, cfg, &["n_inner"], Some(4 * d_model))?,
        norm_eps: json_f32(path, cfg, "layer_norm_epsilon", 1e-5)?,
        norm_bias: has("ln_1.bias"),
        linear_bias: has("attn.c_attn.bias"),
        activation,
        tied_head: json_bool(path, cfg, "tie_word_embeddings", true)?,
        ..base
    })
}

fn llama_config(path: &Path, cfg: &serde_json::Value) -> Result<ModelConfig> {
    let d_model = json_usize(path, cfg, &["hidden_size"], None)?;
    let n_head = json_usize(path, cfg, &["num_attention_heads"], None)?;
    let unsupported = |detail: String| Error::Unsupported {
        path: path.into(),
        detail,
    };
    if let Some(act) = cfg.get("hidden_act").and_then(|v| v.as_str()) {
        if act != "silu" {
            return Err(unsupported(format!("hidden_act `{act}` (Llama uses silu)")));
        }
    }
    if cfg.get("rope_scaling").is_some_and(|v| !v.is_null()) {
        return Err(unsupported("rope_scaling is not supported yet".into()));
    }
    for flag in ["attention_bias", "mlp_bias"] {
        if json_bool(path, cfg, flag, false)? {
            return Err(unsupported(format!("`{flag}: true`")));
        }
    }
    if let Some(hd) = cfg.get("head_dim").and_then(|v| v.as_u64()) {
        if hd as usize * n_head != d_model {
            return Err(unsupported(format!(
                "head_dim {hd} × {n_head} heads != hidden_size {d_model}"
            )));
        }
    }
    Ok(ModelConfig {
        family: Family::Llama,
        vocab_size: json_usize(path, cfg, &["vocab_size"], None)?,
        n_layer: json_usize(path, cfg, &["num_hidden_layers"], None)?,
        n_head,
        n_kv_head: json_usize(path, cfg, &["num_key_value_heads"], Some(n_head))?,
        d_model,
        d_ff: json_usize(path, cfg, &["intermediate_size"], None)?,
        context_length: json_usize(path, cfg, &["max_position_embeddings"], None)?,
        norm: NormKind::RmsNorm,
        norm_eps: json_f32(path, cfg, "rms_norm_eps", 1e-6)?,
        norm_bias: false,
        linear_bias: false,
        activation: Activation::SwiGlu,
        positions: Positions::Rope {
            theta: json_f32(path, cfg, "rope_theta", 10000.0)?,
            style: RopeStyle::HalfSplit,
        },
        tied_head: json_bool(path, cfg, "tie_word_embeddings", false)?,
        final_norm: true,
    })
}

/// The tokenizer files a Hugging Face folder may hold, in order of preference.
pub(super) fn find_tokenizer(dir: &Path) -> Result<Option<(Tokenizer, String)>> {
    let tj = dir.join("tokenizer.json");
    if tj.is_file() {
        return Ok(Some((
            Tokenizer::from_tokenizer_json(&tj)?,
            tj.display().to_string(),
        )));
    }
    let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
    if vocab.is_file() && merges.is_file() {
        return Ok(Some((
            Tokenizer::from_vocab_merges(&vocab, &merges)?,
            vocab.display().to_string(),
        )));
    }
    let meta = dir.join("meta.pkl");
    if meta.is_file() {
        return Ok(Some((
            nanogpt::char_tokenizer(&meta)?,
            meta.display().to_string(),
        )));
    }
    Ok(None)
}
