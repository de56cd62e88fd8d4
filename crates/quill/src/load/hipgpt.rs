//! HipGPT training runs (`checkpoints/<run>/`): a config JSON names the weights `.bin` and the
//! `tokenizer.json`, both relative to the run directory.
//!
//! - `<run>_step<N>_config.json` / `latest_config.json` (a relative symlink):
//!   `{"model": {embed_dim, ff_hidden_dim, max_seq_len, num_heads, num_layers, vocab_size},
//!     "tokenizer": {"path", "tokens_path"}, "checkpoint": {"latest", "step"}, "training": ...}`
//! - weights, little-endian, no magic: `i32 V, S, E, L`; `f32 tok_emb[V·E]`, `pos_emb[S·E]`;
//!   per layer `i32 E, H, F`, `qkv_w[E·3E]`, `o_w[E·E]`, `ff1_w[E·F]`, `ff2_w[F·E]` (all
//!   `[in, out]`, y = x·W + b), `qkv_b[3E]`, `o_b[E]`, `ff1_b[F]`, `ff2_b[E]`,
//!   `attn_ln` gamma, beta, `ffn_ln` gamma, beta; then the untied `out_proj[E·V]` (no bias).
//!
//! The architecture is a pre-LayerNorm GPT (eps 1e-5) with a ReLU MLP, learned positions and no
//! final norm. quill runs it as a correct causal transformer. HipGPT's own kernels differ: no
//! causal mask, Q/K/V split as three contiguous blocks of the whole `[T, 3E]` buffer, dropout
//! left on at inference; its outputs are therefore not a numerical reference.

use std::path::{Path, PathBuf};

use super::llmc::Cursor;
use super::{json_usize, Parsed};
use crate::config::{Activation, ModelConfig};
use crate::error::{Error, Result};
use crate::model::Layout;
use crate::tensor::{Bytes, DType, TensorStore};
use crate::tokenizer::{HipGptTokenizer, Tokenizer};

const CONFIG: &str = "HipGPT config";

/// The config file of a run: `<dir>/<run>/<run>_step<N>_config.json` for a step, else
/// `<dir>/<run>/latest_config.json`, as HipGPT's `generate --run-name NAME [--step N]` resolves
/// it. Errors name the path that was expected and what the run directory holds.
pub fn resolve_run(checkpoints: &Path, run: &str, step: Option<u64>) -> Result<PathBuf> {
    let run_dir = checkpoints.join(run);
    if !run_dir.is_dir() {
        return Err(Error::UnknownFormat {
            path: run_dir.clone(),
            detail: format!(
                "no HipGPT run `{run}`: the directory {} does not exist{}",
                run_dir.display(),
                list_runs(checkpoints)
            ),
        });
    }
    let cfg = match step {
        Some(n) => run_dir.join(format!("{run}_step{n}_config.json")),
        None => run_dir.join("latest_config.json"),
    };
    if cfg.is_file() {
        return Ok(cfg);
    }
    let steps = list_steps(&run_dir, run);
    let found = if steps.is_empty() {
        "no <run>_step<N>_config.json there".to_string()
    } else {
        format!(
            "steps present: {}",
            steps
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Err(Error::UnknownFormat {
        path: cfg.clone(),
        detail: match step {
            Some(n) => format!("no checkpoint for step {n} of run `{run}` ({found})"),
            None => format!("run `{run}` has no latest_config.json ({found}; pass --step N)"),
        },
    })
}

fn list_runs(checkpoints: &Path) -> String {
    let mut runs: Vec<String> = std::fs::read_dir(checkpoints)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    runs.sort();
    if runs.is_empty() {
        format!(" (and {} holds no runs)", checkpoints.display())
    } else {
        format!(" (runs in {}: {})", checkpoints.display(), runs.join(", "))
    }
}

fn list_steps(run_dir: &Path, run: &str) -> Vec<u64> {
    let prefix = format!("{run}_step");
    let mut steps: Vec<u64> = std::fs::read_dir(run_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix(&prefix)?
                .strip_suffix("_config.json")?
                .parse()
                .ok()
        })
        .collect();
    steps.sort_unstable();
    steps
}

/// Whether `path` is a HipGPT config JSON (a `model` object with `embed_dim`).
pub(super) fn is_config(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .is_some_and(|v| v.get("model").and_then(|m| m.get("embed_dim")).is_some())
}

fn config_str<'a>(
    path: &Path,
    v: &'a serde_json::Value,
    section: &str,
    key: &str,
) -> Result<&'a str> {
    v.get(section)
        .and_then(|s| s.get(key))
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| {
            Error::format(
                path,
                CONFIG,
                format!("missing `{section}.{key}` (expected a file name relative to the run directory)"),
            )
        })
}

/// A file named by the config, which must exist.
fn named_file(cfg_path: &Path, run_dir: &Path, field: &str, name: &str) -> Result<PathBuf> {
    let p = run_dir.join(name);
    if p.is_file() {
        return Ok(p);
    }
    Err(Error::format(
        cfg_path,
        CONFIG,
        format!("`{field}` is {name:?}, but {} does not exist", p.display()),
    ))
}

/// Loads the run a config JSON describes.
pub(super) fn parse_config(cfg_path: &Path) -> Result<Parsed> {
    let text = std::fs::read_to_string(cfg_path).map_err(|e| Error::io(cfg_path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(cfg_path, CONFIG, format!("not JSON: {e}")))?;
    let m = v
        .get("model")
        .ok_or_else(|| Error::format(cfg_path, CONFIG, "missing the `model` object"))?;
    let get = |k: &str| json_usize(cfg_path, m, &[k], None);
    let (e, f, s, h, l) = (
        get("embed_dim")?,
        get("ff_hidden_dim")?,
        get("max_seq_len")?,
        get("num_heads")?,
        get("num_layers")?,
    );
    let cfg_vocab = json_usize(cfg_path, m, &["vocab_size"], Some(0))?;
    let run_dir = cfg_path.parent().unwrap_or(Path::new("."));
    let weights = named_file(
        cfg_path,
        run_dir,
        "checkpoint.latest",
        config_str(cfg_path, &v, "checkpoint", "latest")?,
    )?;
    let tok_path = named_file(
        cfg_path,
        run_dir,
        "tokenizer.path",
        config_str(cfg_path, &v, "tokenizer", "path")?,
    )?;
    let tokenizer = HipGptTokenizer::from_file(&tok_path)?;
    // HipGPT: a vocab_size of 0 in the config means "the tokenizer's".
    let vocab = if cfg_vocab == 0 {
        tokenizer.vocab_size()
    } else {
        cfg_vocab
    };
    let store = read_weights(&weights, [vocab, s, e, l], h, f)?;
    // HipGPT: ReLU MLP of width F, untied output projection, no final LayerNorm.
    let config = ModelConfig {
        d_ff: f,
        activation: Activation::Relu,
        tied_head: false,
        final_norm: false,
        ..ModelConfig::gpt2(vocab, l, h, e, s)
    };
    config
        .validate()
        .map_err(|err| Error::format(cfg_path, CONFIG, err.to_string()))?;
    Ok(Parsed {
        store,
        config,
        layout: Layout::HipGpt,
        format: format!("HipGPT checkpoint ({})", weights.display()),
        tokenizer: Some((Tokenizer::HipGpt(tokenizer), tok_path.display().to_string())),
    })
}

/// Reads a weights `.bin`, checking every size it declares against the config's
/// (`[V, S, E, L]`, heads, feed-forward width).
fn read_weights(path: &Path, want: [usize; 4], heads: usize, ff: usize) -> Result<TensorStore> {
    let bytes = Bytes::Mapped(crate::formats::safetensors::map_file(path)?);
    let mut cur = Cursor {
        path,
        format: "HipGPT weights",
        bytes,
        at: 0,
    };
    let mismatch = |what: &str, got: i32, want: usize| {
        Error::format(
            path,
            "HipGPT weights",
            format!("header `{what}` is {got} but the config says {want}: they belong to different models"),
        )
    };
    for (what, &w) in ["V", "S", "E", "L"].iter().zip(&want) {
        let got = cur.i32(what)?;
        if usize::try_from(got).ok() != Some(w) {
            return Err(mismatch(what, got, w));
        }
    }
    let [v, s, e, l] = want;
    let mut store = TensorStore::new(path);
    store.insert(
        "transformer.wte.weight".into(),
        cur.tensor("tok_emb", DType::F32, &[v, e])?,
    );
    store.insert(
        "transformer.wpe.weight".into(),
        cur.tensor("pos_emb", DType::F32, &[s, e])?,
    );
    for i in 0..l {
        for (what, w) in [("E", e), ("H", heads), ("F", ff)] {
            let got = cur.i32(&format!("layer {i} {what}"))?;
            if usize::try_from(got).ok() != Some(w) {
                return Err(mismatch(&format!("layer {i} {what}"), got, w));
            }
        }
        let p = format!("transformer.h.{i}");
        let parts: [(&str, &str, &[usize]); 12] = [
            ("qkv_w", "attn.c_attn.weight", &[e, 3 * e]),
            ("o_w", "attn.c_proj.weight", &[e, e]),
            ("ff1_w", "mlp.c_fc.weight", &[e, ff]),
            ("ff2_w", "mlp.c_proj.weight", &[ff, e]),
            ("qkv_b", "attn.c_attn.bias", &[3 * e]),
            ("o_b", "attn.c_proj.bias", &[e]),
            ("ff1_b", "mlp.c_fc.bias", &[ff]),
            ("ff2_b", "mlp.c_proj.bias", &[e]),
            ("attn_ln gamma", "ln_1.weight", &[e]),
            ("attn_ln beta", "ln_1.bias", &[e]),
            ("ffn_ln gamma", "ln_2.weight", &[e]),
            ("ffn_ln beta", "ln_2.bias", &[e]),
        ];
        for (what, name, shape) in parts {
            let t = cur.tensor(&format!("layer {i} {what}"), DType::F32, shape)?;
            store.insert(format!("{p}.{name}"), t);
        }
    }
    store.insert(
        "lm_head.weight".into(),
        cur.tensor("out_proj", DType::F32, &[e, v])?,
    );
    cur.finish(&format!("V {v}, S {s}, E {e}, L {l}, H {heads}, F {ff}"))?;
    Ok(store)
}
