//! PyTorch training checkpoints: nanoGPT's `ckpt.pt` (+ `data/<dataset>/meta.pkl`) and
//! Mini-LLM's `ckpt.pt` (Llama style, `model_args` a pickled dataclass).

use std::path::{Path, PathBuf};

use super::{hf, Parsed};
use crate::config::{Activation, Family, ModelConfig, NormKind, Positions, RopeStyle};
use crate::error::{Error, Result};
use crate::formats::{pickle, torch, PyValue};
use crate::model::Layout;
use crate::tensor::TensorStore;
use crate::tokenizer::{CharTokenizer, Tokenizer};

/// A `ckpt.pt` path.
pub(super) fn parse(path: &Path) -> Result<Parsed> {
    parse_torch(path)
}

/// Any PyTorch zip file: a training checkpoint (dict with `model` and `model_args`), or a bare
/// state dict that needs a `config.json` beside it (`pytorch_model.bin`).
pub(super) fn parse_torch(path: &Path) -> Result<Parsed> {
    let root = torch::load_torch_file(path)?;
    let (Some(model), Some(args)) = (root.get("model"), root.get("model_args")) else {
        if matches!(root, PyValue::Dict(_)) && root.get("model").is_none() {
            // A plain state dict: the architecture must come from config.json.
            return hf::parse_weights_file(path);
        }
        return Err(Error::format(
            path,
            "PyTorch checkpoint",
            "expected a dict with `model` (state dict) and `model_args`",
        ));
    };
    let mut store = torch::state_dict_to_store(path, model)?;
    store.strip_prefix("_orig_mod.");
    if args.get("n_embd").is_some() {
        let config = nanogpt_config(path, args)?;
        let tokenizer = nanogpt_tokenizer(path, &root)?;
        Ok(Parsed {
            store,
            config,
            layout: Layout::NanoGpt,
            format: "nanoGPT ckpt.pt".into(),
            tokenizer: Some(tokenizer),
        })
    } else if args.get("dim").is_some() {
        let config = minillm_config(path, args, &store)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let tokenizer = hf::find_tokenizer(dir)?;
        Ok(Parsed {
            store,
            config,
            layout: Layout::MetaLlama,
            format: "Mini-LLM ckpt.pt".into(),
            tokenizer,
        })
    } else {
        Err(Error::Unsupported {
            path: path.into(),
            detail: "`model_args` has neither `n_embd` (nanoGPT) nor `dim` (Mini-LLM / Llama)"
                .into(),
        })
    }
}

fn arg_usize(path: &Path, args: &PyValue, key: &str) -> Result<usize> {
    let v = args
        .get(key)
        .ok_or_else(|| Error::format(path, "model_args", format!("missing `{key}`")))?;
    v.as_i64()
        .filter(|&i| i >= 0)
        .map(|i| i as usize)
        .ok_or_else(|| {
            Error::format(
                path,
                "model_args",
                format!(
                    "`{key}` is a {}, expected a non-negative int",
                    v.type_name()
                ),
            )
        })
}

fn nanogpt_config(path: &Path, args: &PyValue) -> Result<ModelConfig> {
    let d_model = arg_usize(path, args, "n_embd")?;
    let n_head = arg_usize(path, args, "n_head")?;
    let bias = match args.get("bias") {
        None => true,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| Error::format(path, "model_args", "`bias` is not a bool".to_string()))?,
    };
    let base = ModelConfig::gpt2(
        arg_usize(path, args, "vocab_size")?,
        arg_usize(path, args, "n_layer")?,
        n_head,
        d_model,
        arg_usize(path, args, "block_size")?,
    );
    Ok(ModelConfig {
        norm_bias: bias,
        linear_bias: bias,
        // nanoGPT's MLP uses nn.GELU() (exact erf); lm_head is always tied to wte.
        activation: Activation::GeluExact,
        ..base
    })
}

fn minillm_config(path: &Path, args: &PyValue, store: &TensorStore) -> Result<ModelConfig> {
    let d_model = arg_usize(path, args, "dim")?;
    let n_head = arg_usize(path, args, "n_heads")?;
    let n_kv_head = match args.get("n_kv_heads") {
        None | Some(PyValue::None) => n_head,
        Some(_) => arg_usize(path, args, "n_kv_heads")?,
    };
    // The feed-forward width follows from `multiple_of`; read it off the tensor instead of
    // re-deriving the rounding rule.
    let w1 = "layers.0.feed_forward.w1.weight";
    let d_ff = store
        .get(w1)
        .and_then(|t| t.shape.first().copied())
        .ok_or_else(|| Error::tensor(path, w1, "missing (needed for the feed-forward width)"))?;
    let norm_eps = args
        .get("norm_eps")
        .and_then(PyValue::as_f64)
        .unwrap_or(1e-6) as f32;
    let theta = args
        .get("rope_theta")
        .and_then(PyValue::as_f64)
        .unwrap_or(10000.0) as f32;
    Ok(ModelConfig {
        family: Family::Llama,
        vocab_size: arg_usize(path, args, "vocab_size")?,
        n_layer: arg_usize(path, args, "n_layers")?,
        n_head,
        n_kv_head,
        d_model,
        d_ff,
        context_length: arg_usize(path, args, "max_seq_len")?,
        norm: NormKind::RmsNorm,
        norm_eps,
        norm_bias: false,
        linear_bias: false,
        activation: Activation::SwiGlu,
        positions: Positions::Rope {
            theta,
            style: RopeStyle::Interleaved,
        },
        // Mini-LLM ties `output` to `tok_embeddings`; torch.save keeps both names over one
        // storage. A separate `output.weight` storage means an untied head.
        tied_head: match (
            store.get("output.weight"),
            store.get("tok_embeddings.weight"),
        ) {
            (None, _) => true,
            (Some(out), Some(emb)) => out.same_view(emb),
            (Some(_), None) => false,
        },
        final_norm: true,
    })
}

/// nanoGPT's tokenizer choice, as `sample.py` makes it: `data/<config.dataset>/meta.pkl` if it
/// exists, else GPT-2's BPE. sample.py looks relative to the working directory; quill also
/// looks beside the checkpoint and in its ancestors, so an `out_dir` inside a nanoGPT checkout
/// works from anywhere.
fn nanogpt_tokenizer(path: &Path, root: &PyValue) -> Result<(Tokenizer, String)> {
    let dataset = root
        .get("config")
        .and_then(|c| c.get("dataset"))
        .and_then(PyValue::as_str);
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut candidates: Vec<PathBuf> = vec![dir.join("meta.pkl")];
    if let Some(ds) = dataset {
        let rel = Path::new("data").join(ds).join("meta.pkl");
        candidates.push(rel.clone());
        for anc in dir.ancestors().take(4) {
            candidates.push(anc.join(&rel));
        }
    }
    if let Some(meta) = candidates.iter().find(|p| p.is_file()) {
        return Ok((char_tokenizer(meta)?, meta.display().to_string()));
    }
    let why = match dataset {
        Some(ds) => format!("no data/{ds}/meta.pkl found: GPT-2 BPE fallback, as sample.py"),
        None => "no config.dataset: GPT-2 BPE fallback, as sample.py".into(),
    };
    Ok((Tokenizer::gpt2()?, why))
}

/// A nanoGPT character-level `meta.pkl`.
pub(super) fn char_tokenizer(path: &Path) -> Result<Tokenizer> {
    let meta = pickle::load_pickle_file(path)?;
    Ok(Tokenizer::Char(CharTokenizer::from_meta(path, &meta)?))
}
