//! `quill generate`.

use std::io::{Read, Write};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use quill::generate::ContextPolicy;
use quill::{Event, GenerateParams, Generation, SamplerConfig};

use crate::output::emit;
use crate::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt text; `-` reads standard input, `@FILE` reads a file (`@@...` for a literal `@`).
    #[arg(long, short = 'p', default_value = "\n", allow_hyphen_values = true)]
    prompt: String,
    /// Most tokens to generate.
    #[arg(
        long,
        short = 'n',
        default_value_t = 256,
        allow_negative_numbers = true
    )]
    max_new_tokens: usize,
    /// Sampling temperature; 0 = greedy. [default: 0.8]
    #[arg(long, short = 't', allow_negative_numbers = true)]
    temperature: Option<f32>,
    /// Keep only the K most likely tokens; 0 disables. [default: 200]
    #[arg(long, allow_negative_numbers = true)]
    top_k: Option<i64>,
    /// Nucleus sampling: keep the most likely tokens up to this total probability (0, 1].
    #[arg(long, allow_negative_numbers = true)]
    top_p: Option<f32>,
    /// Random seed; when absent one is chosen and printed to stderr.
    #[arg(long, short = 's')]
    seed: Option<u64>,
    /// What to do when the text outgrows the context window.
    #[arg(long, value_enum, default_value_t = Policy::Shift)]
    context_policy: Policy,
    /// Keep only the last context-length tokens of a prompt that is too long (instead of failing).
    #[arg(long)]
    truncate_prompt: bool,
    /// Do not stop at end-of-sequence tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Do not print the prompt before the generated text.
    #[arg(long)]
    no_echo: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Policy {
    /// Re-encode the most recent half window when the context is full (fast).
    Shift,
    /// nanoGPT's exact semantics: re-run the last full window every step (slow).
    Crop,
    /// Stop generating when the context is full.
    Stop,
}

fn read_prompt(arg: &str) -> anyhow::Result<String> {
    if arg == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the prompt from standard input")?;
        return Ok(s);
    }
    if let Some(rest) = arg.strip_prefix("@@") {
        return Ok(format!("@{rest}"));
    }
    if let Some(path) = arg.strip_prefix('@') {
        return std::fs::read_to_string(path)
            .with_context(|| format!("reading prompt file {path}"));
    }
    Ok(arg.to_string())
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let prompt = read_prompt(&a.prompt)?;
    let defaults = SamplerConfig::default();
    let top_k = match a.top_k {
        None => defaults.top_k,
        Some(0) => None,
        Some(k) if k > 0 => Some(k as usize),
        Some(k) => bail!("invalid --top-k {k}: must be >= 0 (0 disables)"),
    };
    let seed_given = a.seed.is_some();
    let seed = a.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    let sampler = SamplerConfig {
        temperature: a.temperature.unwrap_or(defaults.temperature),
        top_k,
        top_p: a.top_p,
        seed,
    };
    sampler.validate()?;

    let t_load = Instant::now();
    let loaded = a.model.load()?;
    let load_time = t_load.elapsed();
    let tokenizer = loaded.tokenizer.as_ref().with_context(|| {
        format!(
            "no tokenizer found for {}; pass --tokenizer PATH",
            loaded.info.path
        )
    })?;
    let ids = tokenizer.encode(&prompt, true)?;
    if ids.is_empty() {
        bail!("the prompt is empty after tokenization: give some text with --prompt");
    }
    let params = GenerateParams {
        max_new_tokens: a.max_new_tokens,
        sampler,
        eos_ids: if a.ignore_eos {
            Vec::new()
        } else {
            tokenizer.eos_ids()
        },
        context: match a.context_policy {
            Policy::Shift => ContextPolicy::Shift,
            Policy::Crop => ContextPolicy::Crop,
            Policy::Stop => ContextPolicy::Stop,
        },
        truncate_prompt: a.truncate_prompt,
    };
    let gen = Generation::new(&loaded.model, Some(tokenizer), ids, params)?;

    let mut out = std::io::stdout().lock();
    if !a.no_echo {
        emit(&mut out, &prompt)?;
    }
    for ev in gen {
        match ev? {
            Event::Prompt { dropped, .. } if dropped > 0 => {
                eprintln!("[quill] prompt truncated: dropped its first {dropped} tokens");
            }
            Event::Prompt { .. } | Event::ContextShift { .. } => {}
            Event::Token { text, .. } => emit(&mut out, &text)?,
            Event::Finished {
                reason,
                text,
                stats,
            } => {
                emit(&mut out, &text)?;
                writeln!(out)?;
                out.flush()?;
                let secs = stats.decode_time.as_secs_f64();
                let rate = if secs > 0.0 {
                    stats.generated_tokens as f64 / secs
                } else {
                    0.0
                };
                eprintln!(
                    "[quill] {} tokens in {:.3} s ({:.1} tokens/s); prompt {} tokens in {:.1} ms; \
                     load {:.1} ms; finish: {}; seed {}{}",
                    stats.generated_tokens,
                    secs,
                    rate,
                    stats.prompt_tokens,
                    stats.prefill_time.as_secs_f64() * 1e3,
                    load_time.as_secs_f64() * 1e3,
                    reason.as_str(),
                    seed,
                    if seed_given {
                        ""
                    } else {
                        " (chosen; pass --seed to repeat)"
                    },
                );
            }
        }
    }
    Ok(())
}
