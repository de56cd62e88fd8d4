//! `quill generate`.

use std::io::{Read, Write};
use std::time::Instant;

use anyhow::{bail, Context};
use quill::generate::{beam_search, BeamParams};
use quill::sampling::TokenLogprobs;
use quill::{Event, Generation, Tokenizer};
use serde_json::json;

use crate::hipgpt_args::HipGptArgs;
use crate::output::emit;
use crate::sampling_args::SamplingArgs;
use crate::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt text; `-` reads standard input, `@FILE` reads a file (`@@...` for a literal `@`).
    #[arg(long, short = 'p', default_value = "\n", allow_hyphen_values = true)]
    prompt: String,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    hipgpt: HipGptArgs,
    /// Sequences to generate for the prompt; sequence i uses seed + i.
    #[arg(long, default_value_t = 1)]
    num_return_sequences: usize,
    /// Beam search with this many beams instead of sampling (output printed at the end).
    #[arg(long)]
    num_beams: Option<usize>,
    /// Beam search: exponent of the length normalisation of scores.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    length_penalty: f32,
    /// Beam search: stop as soon as NUM_BEAMS hypotheses are finished.
    #[arg(long)]
    early_stopping: bool,
    /// Do not print the prompt before the generated text.
    #[arg(long)]
    no_echo: bool,
    /// Generate for every prompt in FILE (one per line, or JSON Lines with per-prompt
    /// settings), batched, writing JSON Lines results to stdout.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["prompt", "num_beams"])]
    prompts_file: Option<std::path::PathBuf>,
    /// Sequences generated together with --prompts-file.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
}

/// Reads the prompt argument: text, `-` (stdin) or `@FILE`.
pub fn read_prompt(arg: &str) -> anyhow::Result<String> {
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

const SEPARATOR: &str = "---------------";

pub fn run(mut a: Args) -> anyhow::Result<()> {
    let hip = a.hipgpt.apply(&mut a.model, &mut a.sampling)?;
    if let Some(path) = &a.prompts_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading prompts file {}", path.display()))?;
        let specs = crate::prompts_file::parse(&text)?;
        let (seed, _) = a.sampling.seed();
        let sampler = a.sampling.sampler(seed)?;
        let loaded = a.model.load()?;
        let params = a.sampling.params(sampler, loaded.eos_ids())?;
        let mut out = std::io::stdout().lock();
        return crate::prompts_file::run(&loaded, &specs, &params, a.batch_size, &mut out);
    }
    let prompt = read_prompt(&a.prompt)?;
    let (seed, seed_given) = a.sampling.seed();
    let sampler = a.sampling.sampler(seed)?;
    if a.num_return_sequences == 0 {
        bail!("invalid --num-return-sequences 0: must be >= 1");
    }
    let t_load = Instant::now();
    let mut loaded = a.model.load()?;
    if let Some(h) = &hip {
        h.fit_window(&mut loaded)?;
    }
    let load_ms = t_load.elapsed().as_secs_f64() * 1e3;
    let tok = loaded.tokenizer.as_ref().with_context(|| {
        format!(
            "no tokenizer found for {}; pass --tokenizer PATH",
            loaded.info.path
        )
    })?;
    let ids = tok.encode(&prompt, true)?;
    if ids.is_empty() {
        bail!("the prompt is empty after tokenization: give some text with --prompt");
    }
    let params = a.sampling.params(sampler, loaded.eos_ids())?;
    let mut out = std::io::stdout().lock();

    if let Some(num_beams) = a.num_beams {
        let bp = BeamParams {
            num_beams,
            max_new_tokens: params.max_new_tokens,
            length_penalty: a.length_penalty,
            early_stopping: a.early_stopping,
            eos_ids: params.eos_ids.clone(),
            num_return_sequences: a.num_return_sequences,
            kv_cache: params.kv_cache,
        };
        let hyps = beam_search(&loaded.model, &ids, tok.vocab_size(), &bp)?;
        for (i, h) in hyps.iter().enumerate() {
            let body: Vec<u32> = h
                .tokens
                .iter()
                .copied()
                .filter(|t| !bp.eos_ids.contains(t))
                .collect();
            if !a.no_echo {
                emit(&mut out, &prompt)?;
            }
            emit(&mut out, &tok.decode(&body)?)?;
            writeln!(out)?;
            if hyps.len() > 1 {
                writeln!(out, "{SEPARATOR}")?;
            }
            eprintln!(
                "[quill] beam {i}: {} tokens, log-probability {:.4}, score {:.4}",
                h.tokens.len(),
                h.logprob,
                h.score
            );
        }
        return Ok(());
    }

    for i in 0..a.num_return_sequences {
        let mut p = params.clone();
        p.sampler.seed = seed.wrapping_add(i as u64);
        let gen = Generation::new(&loaded.model, Some(tok), ids.clone(), p)?;
        if params.logprobs.is_some() {
            run_json(gen, tok, &mut out)?;
        } else {
            if hip.is_some() {
                // HipGPT's output format.
                emit(&mut out, &format!("Prompt: {prompt}\nGenerated: "))?;
            } else if !a.no_echo {
                emit(&mut out, &prompt)?;
            }
            run_text(
                gen,
                &mut out,
                load_ms,
                seed.wrapping_add(i as u64),
                seed_given,
            )?;
            if a.num_return_sequences > 1 {
                writeln!(out, "{SEPARATOR}")?;
            }
        }
    }
    Ok(())
}

/// Streams text as it is generated, then a summary on stderr.
fn run_text(
    gen: Generation<'_>,
    out: &mut impl Write,
    load_ms: f64,
    seed: u64,
    seed_given: bool,
) -> anyhow::Result<()> {
    for ev in gen {
        match ev? {
            Event::Prompt { dropped, .. } if dropped > 0 => {
                eprintln!("[quill] prompt truncated: dropped its first {dropped} tokens");
            }
            Event::Prompt { .. } | Event::ContextShift { .. } => {}
            Event::Token { text, .. } => emit(out, &text)?,
            Event::Finished {
                reason,
                text,
                stats,
            } => {
                emit(out, &text)?;
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
                    load_ms,
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

fn token_text(tok: &Tokenizer, id: u32) -> String {
    tok.decode(&[id]).unwrap_or_default()
}

fn logprobs_json(tok: &Tokenizer, lp: &TokenLogprobs) -> serde_json::Value {
    let top: Vec<serde_json::Value> = lp
        .top
        .iter()
        .map(|&(id, l)| json!({"id": id, "token": token_text(tok, id), "logprob": l}))
        .collect();
    json!({"logprob": lp.logprob, "top_logprobs": top})
}

/// One JSON object per line for every token, then one for the end of the sequence.
fn run_json(gen: Generation<'_>, tok: &Tokenizer, out: &mut impl Write) -> anyhow::Result<()> {
    let mut full = String::new();
    for ev in gen {
        match ev? {
            Event::Token { id, text, logprobs } => {
                full.push_str(&text);
                let mut v = json!({"id": id, "token": token_text(tok, id), "text": text});
                if let Some(lp) = &logprobs {
                    if let (Some(o), serde_json::Value::Object(extra)) =
                        (v.as_object_mut(), logprobs_json(tok, lp))
                    {
                        o.extend(extra);
                    }
                }
                writeln!(out, "{v}")?;
            }
            Event::Finished {
                reason,
                text,
                stats,
            } => {
                full.push_str(&text);
                let v = json!({
                    "finish_reason": reason.as_str(),
                    "text": full,
                    "generated_tokens": stats.generated_tokens,
                });
                writeln!(out, "{v}")?;
                out.flush()?;
            }
            Event::Prompt { .. } | Event::ContextShift { .. } => {}
        }
    }
    Ok(())
}
