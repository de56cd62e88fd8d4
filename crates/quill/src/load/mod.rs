//! From a path to a ready model: sniff the format by content, read the architecture, map the
//! tensors into quill's layout, and find the tokenizer that belongs with the checkpoint.
//!
//! Supported:
//! - a Hugging Face folder: `config.json` + `model.safetensors` | `model.safetensors.index.json`
//!   (sharded) | `pytorch_model.bin`, for `model_type` `gpt2` and `llama`; or one of those weight
//!   files directly, with `config.json` beside it;
//! - a nanoGPT `ckpt.pt` (or its `out_dir`), with `data/<dataset>/meta.pkl` when present;
//! - a Mini-LLM `ckpt.pt` (Llama style, `model_args` a pickled dataclass);
//! - a HipGPT run: its `<run>_step<N>_config.json` / `latest_config.json`, or the run directory;
//! - an llm.c model `.bin` (version 3 float32, version 5 bfloat16);
//! - a llama.cpp GGUF file (`llama` or `gpt2` architecture; quantized weights stay quantized),
//!   with the tokenizer and chat template from its metadata;
//! - the embedded default model (a character-level GPT trained on tiny Shakespeare).
//!
//! [`LoadOptions::dtype`] runs the weight matrices in another storage than the checkpoint's
//! (f32, f16, bf16, or quantized on load to Q8_0 / Q4_0 / Q4_1): see [`dtype`].

pub mod dtype;
mod embedded;
mod gguf;
mod hf;
mod hipgpt;
mod llmc;
mod nanogpt;

pub use dtype::WeightDtype;
pub use hipgpt::resolve_run as hipgpt_run_config;

use std::path::{Path, PathBuf};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::formats::sniff::{sniff_file, FileKind};
use crate::model::{weights, Layout, Model};
use crate::tensor::TensorStore;
use crate::tokenizer::Tokenizer;

/// Where to load a model from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// The model compiled into quill.
    Embedded,
    /// A file or folder in any supported format.
    Path(PathBuf),
}

/// Options that override what the checkpoint implies.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Use this tokenizer (`tokenizer.json`, `vocab.json` with `merges.txt` beside it, or a
    /// nanoGPT `meta.pkl`) instead of the one found next to the checkpoint.
    pub tokenizer: Option<PathBuf>,
    /// Run the weight matrices in this storage whatever the checkpoint stores (converted, or
    /// quantized, once at load). `None` keeps the checkpoint's own storage.
    pub dtype: Option<WeightDtype>,
}

/// A description of what was loaded, for `quill info` and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// The format, e.g. "nanoGPT ckpt.pt" or "Hugging Face safetensors".
    pub format: String,
    /// The file or folder read.
    pub path: String,
    /// How the weights are stored in the file.
    pub stored_dtype: String,
    /// How the weight matrices are stored while running (after any [`LoadOptions::dtype`]
    /// conversion), e.g. `"q8_0"`, or `"q4_k, q6_k"` when mixed (most common first).
    pub run_dtype: String,
    pub parameters: usize,
    /// How the tokenizer was found.
    pub tokenizer: String,
    /// Whether weight matrices are read straight from a memory-mapped file.
    pub memory_mapped: bool,
}

/// A model with its tokenizer, ready to generate.
#[derive(Debug)]
pub struct LoadedModel {
    pub model: Model,
    /// `None` when no tokenizer belongs with the checkpoint (ids can still be run).
    pub tokenizer: Option<Tokenizer>,
    pub info: ModelInfo,
    /// The chat template the checkpoint ships with (GGUF `tokenizer.chat_template`).
    pub chat: Option<crate::chat::ChatTemplate>,
}

impl LoadedModel {
    /// Token ids that end a sequence: the tokenizer's end-of-sequence tokens plus, for models
    /// that ship a chat template (GGUF), the end-of-turn ids from their metadata.
    pub fn eos_ids(&self) -> Vec<u32> {
        let mut ids = self
            .tokenizer
            .as_ref()
            .map(Tokenizer::eos_ids)
            .unwrap_or_default();
        if let Some(c) = &self.chat {
            ids.extend_from_slice(c.stop_ids());
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// A checkpoint read from disk but not yet turned into a [`Model`].
pub(crate) struct Parsed {
    pub store: TensorStore,
    pub config: ModelConfig,
    pub layout: Layout,
    pub format: String,
    pub tokenizer: Option<(Tokenizer, String)>,
}

/// Loads a model from `source`.
pub fn load(source: &ModelSource, opts: &LoadOptions) -> Result<LoadedModel> {
    let (parsed, path, chat) = match source {
        ModelSource::Embedded => (embedded::parse()?, "(embedded)".to_string(), None),
        ModelSource::Path(p) if p.is_file() && sniff_file(p)? == FileKind::Gguf => {
            let (parsed, chat) = gguf::parse(p)?;
            (parsed, p.display().to_string(), chat)
        }
        ModelSource::Path(p) => (parse_path(p)?, p.display().to_string(), None),
    };
    let mut loaded = finish(parsed, path, opts)?;
    loaded.chat = chat;
    release_freed_heap();
    Ok(loaded)
}

/// Hands the heap that loading used and freed back to the OS. Parsing a GGUF's metadata and
/// building its tokenizer allocate and free hundreds of thousands of small strings; glibc keeps
/// freed small blocks in its arenas, resident, so without this a loaded GPT-2 stays several MB
/// above what the model holds. Elsewhere a no-op.
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns glibc's own free arena pages to the OS; it touches no
    // live allocation and any pad value is valid.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn finish(parsed: Parsed, path: String, opts: &LoadOptions) -> Result<LoadedModel> {
    let Parsed {
        store,
        config,
        layout,
        format,
        tokenizer,
    } = parsed;
    let stored_dtype = dominant_dtype(&store);
    let mut weights = weights::build(&store, &config, layout)?;
    if let Some(d) = opts.dtype {
        dtype::convert_weights(&mut weights, d, Path::new(&path))?;
    }
    let run_dtype = dtype::storage_summary(&weights);
    let parameters = weights.param_count();
    let model = Model::new(config, weights)?;
    store.release_mapped_pages();
    let memory_mapped = model.weights().any_mapped();
    let tokenizer = match &opts.tokenizer {
        Some(p) => Some((tokenizer_from_file(p)?, format!("{} (given)", p.display()))),
        None => tokenizer,
    };
    if let Some((tok, _)) = &tokenizer {
        let (tv, mv) = (tok.vocab_size(), model.config().vocab_size);
        if tv > mv {
            return Err(Error::Config {
                field: "tokenizer".into(),
                detail: format!(
                    "the tokenizer has {tv} tokens but the model's embedding has only {mv} rows \
                     ({path}): they do not belong together"
                ),
            });
        }
    }
    let tok_desc = tokenizer
        .as_ref()
        .map_or("none found".to_string(), |(t, how)| {
            format!("{} from {how}", t.describe())
        });
    Ok(LoadedModel {
        model,
        tokenizer: tokenizer.map(|t| t.0),
        info: ModelInfo {
            format,
            path,
            stored_dtype,
            run_dtype,
            parameters,
            tokenizer: tok_desc,
            memory_mapped,
        },
        chat: None,
    })
}

/// Reads any supported file or folder.
fn parse_path(path: &Path) -> Result<Parsed> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        if path.join("config.json").is_file() {
            return hf::parse_folder(path);
        }
        let ckpt = path.join("ckpt.pt");
        if ckpt.is_file() {
            return nanogpt::parse(&ckpt);
        }
        let hip = path.join("latest_config.json");
        if hip.is_file() {
            return hipgpt::parse_config(&hip);
        }
        return Err(Error::UnknownFormat {
            path: path.into(),
            detail: "a folder with neither config.json (Hugging Face), ckpt.pt (nanoGPT) nor \
                     latest_config.json (HipGPT run)"
                .into(),
        });
    }
    match sniff_file(path)? {
        FileKind::Safetensors => hf::parse_weights_file(path),
        FileKind::TorchZip => nanogpt::parse_torch(path),
        FileKind::Pickle => Err(Error::UnknownFormat {
            path: path.into(),
            detail: "a plain pickle (like nanoGPT's meta.pkl), not model weights".into(),
        }),
        FileKind::Gguf => gguf::parse(path).map(|(parsed, _)| parsed),
        FileKind::LlmcModel => llmc::parse(path),
        FileKind::Unknown if hipgpt::is_config(path) => hipgpt::parse_config(path),
        FileKind::Unknown => Err(Error::UnknownFormat {
            path: path.into(),
            detail: "not safetensors, a PyTorch zip checkpoint, GGUF or llm.c (checked the \
                     first bytes)"
                .into(),
        }),
    }
}

/// A tokenizer from an explicit file: `tokenizer.json`, `vocab.json` (with `merges.txt` beside
/// it) or a nanoGPT `meta.pkl`, told apart by content.
pub fn tokenizer_from_file(path: &Path) -> Result<Tokenizer> {
    std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    match sniff_file(path)? {
        FileKind::Pickle => return nanogpt::char_tokenizer(path),
        FileKind::Gguf => {
            return Tokenizer::from_gguf(path)?.ok_or_else(|| {
                Error::format(
                    path,
                    "GGUF",
                    "no `tokenizer.ggml.model`: the file has no vocabulary",
                )
            })
        }
        _ => {}
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if crate::tokenizer::is_llmc_tokenizer(&bytes) {
        let t = crate::tokenizer::LlmcTokenizer::from_bytes(path, &bytes)?;
        return Ok(Tokenizer::Llmc(Box::new(t)));
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
        if crate::tokenizer::is_hipgpt_json(&v) {
            let t = crate::tokenizer::HipGptTokenizer::from_json(path, &v)?;
            return Ok(Tokenizer::HipGpt(t));
        }
    }
    let merges = path.with_file_name("merges.txt");
    let looks_like_vocab = path.file_name().is_some_and(|n| n == "vocab.json");
    if looks_like_vocab && merges.is_file() {
        return Tokenizer::from_vocab_merges(path, &merges);
    }
    Tokenizer::from_tokenizer_json(path)
}

/// The dtype that holds most of the parameters.
fn dominant_dtype(store: &TensorStore) -> String {
    let mut counts: Vec<(crate::tensor::DType, usize)> = Vec::new();
    for t in store.tensors.values() {
        match counts.iter_mut().find(|(d, _)| *d == t.dtype) {
            Some((_, n)) => *n += t.numel(),
            None => counts.push((t.dtype, t.numel())),
        }
    }
    counts
        .iter()
        .max_by_key(|c| c.1)
        .map_or("unknown".into(), |c| c.0.name().to_string())
}

/// Reads an integer field from a JSON object or fails naming the file and the field.
pub(crate) fn json_usize(
    path: &Path,
    cfg: &serde_json::Value,
    keys: &[&str],
    default: Option<usize>,
) -> Result<usize> {
    for k in keys {
        if let Some(v) = cfg.get(*k) {
            if v.is_null() {
                continue;
            }
            return v.as_u64().map(|x| x as usize).ok_or_else(|| {
                Error::format(
                    path,
                    "config.json",
                    format!("`{k}` is {v}, expected an integer"),
                )
            });
        }
    }
    default.ok_or_else(|| {
        Error::format(
            path,
            "config.json",
            format!("missing `{}` (expected an integer)", keys.join("` or `")),
        )
    })
}

/// Reads a number field from a JSON object, with a default.
pub(crate) fn json_f32(
    path: &Path,
    cfg: &serde_json::Value,
    key: &str,
    default: f32,
) -> Result<f32> {
    match cfg.get(key) {
        None | Some(serde_json::Value::Null) => Ok(default),
        Some(v) => v.as_f64().map(|x| x as f32).ok_or_else(|| {
            Error::format(
                path,
                "config.json",
                format!("`{key}` is {v}, expected a number"),
            )
        }),
    }
}

/// Reads a boolean field from a JSON object, with a default.
pub(crate) fn json_bool(
    path: &Path,
    cfg: &serde_json::Value,
    key: &str,
    default: bool,
) -> Result<bool> {
    match cfg.get(key) {
        None | Some(serde_json::Value::Null) => Ok(default),
        Some(v) => v.as_bool().ok_or_else(|| {
            Error::format(
                path,
                "config.json",
                format!("`{key}` is {v}, expected true or false"),
            )
        }),
    }
}
