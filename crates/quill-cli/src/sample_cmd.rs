//! `quill sample`: nanoGPT's `sample.py`, flag for flag.
//!
//! `quill sample --init_from=resume --out_dir=out-shakespeare-char --start="ROMEO:"` behaves like
//! `python sample.py` with the same `--key=value` flags: the same settings and defaults, the
//! same checkpoint and `meta.pkl` lookup, the same output (each sample's text, prompt included,
//! then a line of 15 dashes). Arguments without `=` name config files, as nanoGPT's
//! configurator takes them; quill reads their `key = value` lines (it runs no Python).
//!
//! Differences, all reported on stderr when they matter:
//! - `device` and `dtype`: quill computes on the CPU in float32; other values are accepted and
//!   reported, unknown ones are errors.
//! - randomness: torch's RNG stream cannot be reproduced, so sample `i` draws from its own
//!   stream seeded with `seed + i` (the same text for the same seed, whatever `num_samples`).
//! - `init_from=gpt2*` loads a Hugging Face GPT-2 folder from `models_dir` (a quill setting;
//!   default `$QUILL_MODELS_DIR`, else `./models`) instead of downloading it.
//! - `temperature=0` is greedy decoding (sample.py divides by zero); `top_k=0` or `None`
//!   disables top-k.
//!
//! The samples are generated together as one batch (`quill::generate::Batch`): sample `i` gets
//! exactly the tokens it would get alone with seed `seed + i`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use quill::formats::torch::load_torch_file;
use quill::generate::{Batch, ContextPolicy};
use quill::load::LoadOptions;
use quill::{Event, GenerateParams, LoadedModel, ModelSource, SamplerConfig, Tokenizer};

use crate::output::emit;

#[derive(clap::Args)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// sample.py settings as `--key=value` (e.g. `--out_dir=out --start="ROMEO:"`) and config
    /// files; `--help` lists every key with its default.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    raw: Vec<String>,
}

const SEPARATOR: &str = "---------------";
const GPT2_MODELS: [&str; 4] = ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"];

/// The type of a setting, as nanoGPT's configurator checks it.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Str,
    Int,
    Float,
    Bool,
}

/// Every key sample.py accepts (plus quill's `models_dir`), with its default as written there.
const KEYS: [(&str, Kind, &str); 12] = [
    ("init_from", Kind::Str, "resume"),
    ("out_dir", Kind::Str, "out"),
    ("start", Kind::Str, "\\n"),
    ("num_samples", Kind::Int, "10"),
    ("max_new_tokens", Kind::Int, "500"),
    ("temperature", Kind::Float, "0.8"),
    ("top_k", Kind::Int, "200"),
    ("seed", Kind::Int, "1337"),
    ("device", Kind::Str, "cuda"),
    ("dtype", Kind::Str, "bfloat16"),
    ("compile", Kind::Bool, "False"),
    (
        "models_dir",
        Kind::Str,
        "$QUILL_MODELS_DIR or ./models (quill only)",
    ),
];

/// Where the model comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum InitFrom {
    /// `out_dir/ckpt.pt`.
    Resume,
    /// A pretrained GPT-2 (`gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`).
    Gpt2(String),
}

/// sample.py's settings, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleConfig {
    pub init_from: InitFrom,
    pub out_dir: PathBuf,
    pub start: String,
    pub num_samples: usize,
    pub max_new_tokens: usize,
    pub temperature: f32,
    pub top_k: Option<usize>,
    pub seed: u64,
    pub device: String,
    pub dtype: String,
    pub compile: bool,
    pub models_dir: Option<PathBuf>,
    /// Messages about settings quill cannot honour, and overrides, for stderr.
    pub notes: Vec<String>,
}

impl Default for SampleConfig {
    fn default() -> Self {
        SampleConfig {
            init_from: InitFrom::Resume,
            out_dir: PathBuf::from("out"),
            start: "\n".into(),
            num_samples: 10,
            max_new_tokens: 500,
            temperature: 0.8,
            top_k: Some(200),
            seed: 1337,
            device: "cuda".into(),
            dtype: "bfloat16".into(),
            compile: false,
            models_dir: None,
            notes: Vec::new(),
        }
    }
}

/// A value as Python's `ast.literal_eval` would read it (the subset configurator meets).
#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Int(i64),
    Float(f64),
    Bool(bool),
    None,
    Str(String),
}

fn literal(v: &str) -> Lit {
    let t = v.trim();
    match t {
        "True" => return Lit::Bool(true),
        "False" => return Lit::Bool(false),
        "None" => return Lit::None,
        _ => {}
    }
    let digits = t.replace('_', "");
    if !t.starts_with('_') && !t.ends_with('_') {
        if let Ok(i) = digits.parse::<i64>() {
            return Lit::Int(i);
        }
        let numeric = digits
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'));
        if numeric {
            if let Ok(f) = digits.parse::<f64>() {
                return Lit::Float(f);
            }
        }
    }
    for q in ['\'', '"'] {
        if t.len() >= 2 && t.starts_with(q) && t.ends_with(q) {
            return Lit::Str(unescape(&t[1..t.len() - 1]));
        }
    }
    // configurator: "if that goes wrong, just use the string".
    Lit::Str(v.to_string())
}

/// Python string escapes (`\n`, `\t`, `\\`, quotes); others are kept as written.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some(e @ ('\\' | '\'' | '"')) => out.push(e),
            Some(e) => {
                out.push('\\');
                out.push(e);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn known_keys() -> String {
    KEYS.iter().map(|k| k.0).collect::<Vec<_>>().join(", ")
}

impl SampleConfig {
    /// Parses sample.py's command line: `--key=value` overrides and config file names, applied
    /// in order (as configurator.py does). `models_dir_env` is `$QUILL_MODELS_DIR`.
    pub fn parse(args: &[String], models_dir_env: Option<PathBuf>) -> anyhow::Result<Self> {
        let mut c = SampleConfig {
            models_dir: models_dir_env,
            ..SampleConfig::default()
        };
        for arg in args {
            if let Some(kv) = arg.strip_prefix("--") {
                let (key, value) = kv.split_once('=').with_context(|| {
                    format!(
                        "invalid argument {arg:?}: expected --key=value (keys: {})",
                        known_keys()
                    )
                })?;
                c.set(key, value)
                    .with_context(|| format!("invalid argument {arg:?}"))?;
                c.notes.push(format!("Overriding: {key} = {value}"));
            } else {
                c.read_config_file(Path::new(arg))?;
            }
        }
        c.check()?;
        Ok(c)
    }

    /// nanoGPT config files are Python run with `exec`; quill reads their `key = value` lines.
    fn read_config_file(&mut self, path: &Path) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "reading config file {} (arguments without `=` are config files, as in \
                 nanoGPT; settings are written --key=value)",
                path.display()
            )
        })?;
        self.notes
            .push(format!("Overriding config with {}:", path.display()));
        for (n, line) in text.lines().enumerate() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let Some((key, value)) = l.split_once('=') else {
                bail!(
                    "{}:{}: quill reads only `key = value` lines from config files, not {l:?}",
                    path.display(),
                    n + 1
                );
            };
            let (key, mut value) = (key.trim(), value.trim());
            if !value.contains(['\'', '"']) {
                value = value.split('#').next().unwrap_or("").trim();
            }
            if KEYS.iter().any(|k| k.0 == key) {
                self.set(key, value)
                    .with_context(|| format!("{}:{}", path.display(), n + 1))?;
            } else {
                self.notes.push(format!(
                    "{}:{}: ignoring `{key}` (not a sample.py setting)",
                    path.display(),
                    n + 1
                ));
            }
        }
        Ok(())
    }

    fn set(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        let Some(&(_, kind, _)) = KEYS.iter().find(|k| k.0 == key) else {
            bail!("unknown config key: {key} (known: {})", known_keys());
        };
        let lit = literal(value);
        let type_err = |want: &str| anyhow::anyhow!("`{key}` must be {want}, got {value:?}");
        match kind {
            Kind::Str => {
                let s = match lit {
                    Lit::Str(s) => s,
                    _ => value.to_string(),
                };
                match key {
                    "init_from" => self.init_from = parse_init_from(&s)?,
                    "out_dir" => self.out_dir = PathBuf::from(s),
                    "start" => self.start = s,
                    "device" => self.device = s,
                    "dtype" => self.dtype = s,
                    _ => self.models_dir = Some(PathBuf::from(s)),
                }
            }
            Kind::Int => {
                let i = match lit {
                    Lit::Int(i) => Some(i),
                    Lit::None if key == "top_k" => None,
                    _ => return Err(type_err("an integer")),
                };
                let nonneg = |i: Option<i64>| -> anyhow::Result<u64> {
                    i.and_then(|x| u64::try_from(x).ok())
                        .ok_or_else(|| type_err("a non-negative integer"))
                };
                match key {
                    "num_samples" => {
                        let n = nonneg(i)?;
                        if n == 0 {
                            return Err(type_err("at least 1"));
                        }
                        self.num_samples = n as usize;
                    }
                    "max_new_tokens" => self.max_new_tokens = nonneg(i)? as usize,
                    "seed" => self.seed = nonneg(i)?,
                    _ => {
                        self.top_k = match i {
                            None | Some(0) => None,
                            Some(_) => Some(nonneg(i)? as usize),
                        }
                    }
                }
            }
            Kind::Float => {
                let f = match lit {
                    Lit::Float(f) => f,
                    Lit::Int(i) => i as f64,
                    _ => return Err(type_err("a number")),
                };
                if !(f.is_finite() && f >= 0.0) {
                    return Err(type_err("a number >= 0 (0 = greedy)"));
                }
                self.temperature = f as f32;
            }
            Kind::Bool => match lit {
                Lit::Bool(b) => self.compile = b,
                _ => return Err(type_err("True or False")),
            },
        }
        Ok(())
    }

    /// Settings quill cannot honour are reported; values sample.py would reject are errors.
    fn check(&mut self) -> anyhow::Result<()> {
        let d = self.device.as_str();
        let cuda_n = d
            .strip_prefix("cuda:")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        match d {
            "cpu" => {}
            "cuda" | "mps" => self.notes.push(format!(
                "device={d}: quill runs on the CPU (there is no GPU backend yet)"
            )),
            _ if cuda_n => self.notes.push(format!(
                "device={d}: quill runs on the CPU (there is no GPU backend yet)"
            )),
            _ => bail!("invalid device {d:?}: expected cpu, cuda, cuda:N or mps"),
        }
        match self.dtype.as_str() {
            "float32" => {}
            "bfloat16" | "float16" => self.notes.push(format!(
                "dtype={}: quill computes in float32 (weights are widened from how they are \
                 stored), so results match sample.py run with dtype=float32",
                self.dtype
            )),
            other => bail!("invalid dtype {other:?}: expected float32, bfloat16 or float16"),
        }
        if self.compile {
            self.notes
                .push("compile=True: no effect (quill has no graph compiler)".into());
        }
        Ok(())
    }
}

fn parse_init_from(s: &str) -> anyhow::Result<InitFrom> {
    if s == "resume" {
        return Ok(InitFrom::Resume);
    }
    if GPT2_MODELS.contains(&s) {
        return Ok(InitFrom::Gpt2(s.to_string()));
    }
    bail!(
        "`init_from` must be resume, {}; got {s:?}",
        GPT2_MODELS.join(", ")
    )
}

fn usage() -> String {
    let mut s = String::from(
        "Usage: quill sample [CONFIG_FILE...] [--key=value...]\n\nnanoGPT sample.py settings \
         (same names and defaults):\n",
    );
    for (k, _, d) in KEYS {
        s.push_str(&format!("  --{k}={d}\n"));
    }
    s
}

/// Loads the model and tokenizer as sample.py chooses them.
fn load(c: &SampleConfig) -> anyhow::Result<(LoadedModel, Vec<String>)> {
    let mut notes = Vec::new();
    match &c.init_from {
        InitFrom::Resume => {
            let ckpt = c.out_dir.join("ckpt.pt");
            if !c.out_dir.is_dir() {
                bail!(
                    "out_dir={}: no such directory (expected {}, written by nanoGPT's train.py)",
                    c.out_dir.display(),
                    ckpt.display()
                );
            }
            if !ckpt.is_file() {
                bail!(
                    "init_from=resume: no checkpoint at {} (out_dir={})",
                    ckpt.display(),
                    c.out_dir.display()
                );
            }
            // sample.py: data/<config.dataset>/meta.pkl relative to the working directory.
            let root = load_torch_file(&ckpt)?;
            let dataset = root
                .get("config")
                .and_then(|cfg| cfg.get("dataset"))
                .and_then(|d| d.as_str());
            let meta = dataset.map(|ds| Path::new("data").join(ds).join("meta.pkl"));
            let meta = meta.filter(|m| m.is_file());
            let opts = LoadOptions {
                tokenizer: meta.clone(),
                ..LoadOptions::default()
            };
            let mut loaded = quill::load(&ModelSource::Path(ckpt.clone()), &opts)?;
            if loaded.info.format == "nanoGPT ckpt.pt" {
                match &meta {
                    Some(m) => notes.push(format!("Loading meta from {}...", m.display())),
                    None => {
                        notes.push("No meta.pkl found, assuming GPT-2 encodings...".into());
                        loaded.tokenizer = Some(Tokenizer::gpt2()?);
                    }
                }
            }
            Ok((loaded, notes))
        }
        InitFrom::Gpt2(name) => {
            let base = c
                .models_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("models"));
            let dir = base.join(name);
            if !dir.exists() {
                bail!(
                    "init_from={name}: no Hugging Face {name} folder at {} (expected config.json \
                     and model.safetensors or pytorch_model.bin there, e.g. from \
                     `huggingface-cli download {name} --local-dir {}`); quill does not download \
                     models: set --models_dir=DIR or QUILL_MODELS_DIR",
                    dir.display(),
                    dir.display()
                );
            }
            let mut loaded = quill::load(&ModelSource::Path(dir), &LoadOptions::default())?;
            // sample.py encodes with tiktoken's gpt2 for pretrained models.
            loaded.tokenizer = Some(Tokenizer::gpt2()?);
            Ok((loaded, notes))
        }
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.raw.iter().any(|x| x == "--help" || x == "-h") {
        print!("{}", usage());
        return Ok(());
    }
    let env = std::env::var_os("QUILL_MODELS_DIR").map(PathBuf::from);
    let c = SampleConfig::parse(&a.raw, env)?;
    for n in &c.notes {
        eprintln!("[quill] {n}");
    }
    let t0 = Instant::now();
    let (loaded, notes) = load(&c)?;
    for n in &notes {
        eprintln!("[quill] {n}");
    }
    let tok = loaded
        .tokenizer
        .as_ref()
        .with_context(|| format!("no tokenizer found for {}", loaded.info.path))?;
    let start = match c.start.strip_prefix("FILE:") {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("start=FILE:{p}: reading {p}"))?
        }
        None => c.start.clone(),
    };
    let ids = tok.encode(&start, false)?;
    if ids.is_empty() {
        bail!("start={:?} encodes to no tokens: give some text", c.start);
    }
    let shown = tok.decode(&ids)?;
    // All samples run as one batch (each with its own cache, sampler and seed, so each gets
    // exactly the tokens it would get alone); they are printed in order, sample 0 streamed.
    let mut batch = Batch::new(&loaded.model, Some(tok));
    for i in 0..c.num_samples {
        let params = GenerateParams {
            max_new_tokens: c.max_new_tokens,
            sampler: SamplerConfig {
                temperature: c.temperature,
                top_k: c.top_k,
                seed: c.seed.wrapping_add(i as u64),
                ..SamplerConfig::default()
            },
            // sample.py never stops early and crops the context to block_size every step.
            eos_ids: Vec::new(),
            context: ContextPolicy::Crop,
            truncate_prompt: true,
            ..GenerateParams::default()
        };
        batch.add(ids.clone(), params)?;
    }
    let mut out = std::io::stdout().lock();
    let mut texts = vec![String::new(); c.num_samples];
    let mut done = vec![false; c.num_samples];
    let (mut next, mut generated) = (0, 0);
    emit(&mut out, &shown)?;
    while next < c.num_samples {
        if !batch.is_done() {
            for (i, ev) in batch.step()? {
                match ev {
                    Event::Token { text, .. } => texts[i].push_str(&text),
                    Event::Finished { text, stats, .. } => {
                        texts[i].push_str(&text);
                        generated += stats.generated_tokens;
                        done[i] = true;
                    }
                    Event::Prompt { .. } | Event::ContextShift { .. } => {}
                }
            }
        }
        // Print what is ready: the current sample's new text, then any finished samples.
        while next < c.num_samples {
            emit(&mut out, &std::mem::take(&mut texts[next]))?;
            if !done[next] {
                break;
            }
            writeln!(out)?;
            writeln!(out, "{SEPARATOR}")?;
            out.flush()?;
            next += 1;
            if next < c.num_samples {
                emit(&mut out, &shown)?;
            }
        }
        if batch.is_done() && next < c.num_samples && !done[next] {
            bail!("generation of sample {next} ended without finishing");
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "[quill] {} samples, {generated} tokens in {secs:.2} s; seeds {}..{}",
        c.num_samples,
        c.seed,
        c.seed.wrapping_add(c.num_samples as u64 - 1)
    );
    Ok(())
}

#[cfg(test)]
#[path = "sample_cmd_tests.rs"]
mod tests;
