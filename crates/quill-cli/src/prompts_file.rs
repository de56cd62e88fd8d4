//! `quill generate --prompts-file FILE`: many prompts, generated together in batches, results
//! as JSON Lines. The file is either plain text (one prompt per line; `\n` and `\\` escapes
//! allowed) or JSON Lines (`{"prompt": "...", "max_new_tokens": 50, "seed": 3,
//! "temperature": 0.7, "num_samples": 2}`, every field but `prompt` optional).

use std::io::Write;

use anyhow::{bail, Context};
use quill::generate::Batch;
use quill::{Event, GenerateParams, LoadedModel};
use serde_json::json;

/// One prompt of the file with its own overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptSpec {
    pub prompt: String,
    pub max_new_tokens: Option<usize>,
    pub seed: Option<u64>,
    pub temperature: Option<f32>,
    pub num_samples: usize,
}

/// Parses the file's text: JSON Lines when every non-empty line is a JSON object, else one
/// prompt per line.
pub fn parse(text: &str) -> anyhow::Result<Vec<PromptSpec>> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    if lines.is_empty() {
        bail!("the prompts file has no prompts");
    }
    let jsonl = lines.iter().all(|(_, l)| l.trim_start().starts_with('{'));
    lines
        .into_iter()
        .map(|(i, l)| {
            if jsonl {
                parse_json(i + 1, l)
            } else {
                Ok(plain(l))
            }
        })
        .collect()
}

fn plain(line: &str) -> PromptSpec {
    let mut s = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some('n')) => {
                s.push('\n');
                chars.next();
            }
            ('\\', Some('\\')) => {
                s.push('\\');
                chars.next();
            }
            _ => s.push(c),
        }
    }
    PromptSpec {
        prompt: s,
        max_new_tokens: None,
        seed: None,
        temperature: None,
        num_samples: 1,
    }
}

fn parse_json(lineno: usize, line: &str) -> anyhow::Result<PromptSpec> {
    let v: serde_json::Value = serde_json::from_str(line)
        .with_context(|| format!("prompts file line {lineno}: not JSON"))?;
    let obj = v
        .as_object()
        .with_context(|| format!("prompts file line {lineno}: expected a JSON object"))?;
    const KNOWN: [&str; 5] = [
        "prompt",
        "max_new_tokens",
        "seed",
        "temperature",
        "num_samples",
    ];
    if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        bail!(
            "prompts file line {lineno}: unknown field `{k}` (known: {})",
            KNOWN.join(", ")
        );
    }
    let prompt = obj
        .get("prompt")
        .and_then(|p| p.as_str())
        .with_context(|| format!("prompts file line {lineno}: `prompt` must be a string"))?;
    let uint = |k: &str| -> anyhow::Result<Option<u64>> {
        match obj.get(k) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).with_context(|| {
                format!("prompts file line {lineno}: `{k}` must be a non-negative integer")
            }),
        }
    };
    let temperature = match obj.get("temperature") {
        None => None,
        Some(t) => Some(t.as_f64().with_context(|| {
            format!("prompts file line {lineno}: `temperature` must be a number")
        })? as f32),
    };
    let num_samples = uint("num_samples")?.unwrap_or(1) as usize;
    if num_samples == 0 {
        bail!("prompts file line {lineno}: `num_samples` must be >= 1");
    }
    Ok(PromptSpec {
        prompt: prompt.to_string(),
        max_new_tokens: uint("max_new_tokens")?.map(|n| n as usize),
        seed: uint("seed")?,
        temperature,
        num_samples,
    })
}

/// Generates every prompt × sample, `batch_size` sequences at a time, writing one JSON line per
/// finished sequence in input order. Sample `j` of a prompt uses seed `seed + j`.
pub fn run(
    loaded: &LoadedModel,
    specs: &[PromptSpec],
    base: &GenerateParams,
    batch_size: usize,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if batch_size == 0 {
        bail!("invalid --batch-size 0: must be >= 1");
    }
    let tok = loaded
        .tokenizer
        .as_ref()
        .context("no tokenizer found for the model; pass --tokenizer PATH")?;
    // Every (prompt index, sample index, ids, params) to run.
    let mut jobs = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let ids = tok
            .encode(&s.prompt, true)
            .with_context(|| format!("prompt {} ({:?})", i + 1, s.prompt))?;
        if ids.is_empty() {
            bail!("prompt {} is empty after tokenization", i + 1);
        }
        for j in 0..s.num_samples {
            let mut p = base.clone();
            if let Some(n) = s.max_new_tokens {
                p.max_new_tokens = n;
            }
            if let Some(t) = s.temperature {
                p.sampler.temperature = t;
            }
            p.sampler.seed = s.seed.unwrap_or(base.sampler.seed).wrapping_add(j as u64);
            p.sampler
                .validate()
                .with_context(|| format!("prompt {}", i + 1))?;
            jobs.push((i, j, ids.clone(), p));
        }
    }
    for chunk in jobs.chunks(batch_size) {
        let mut batch = Batch::new(&loaded.model, Some(tok));
        for (_, _, ids, p) in chunk {
            batch.add(ids.clone(), p.clone())?;
        }
        let mut texts = vec![String::new(); chunk.len()];
        let mut finish = vec![None; chunk.len()];
        while !batch.is_done() {
            for (k, ev) in batch.step()? {
                match ev {
                    Event::Token { text, .. } => texts[k].push_str(&text),
                    Event::Finished {
                        reason,
                        text,
                        stats,
                    } => {
                        texts[k].push_str(&text);
                        finish[k] = Some((reason, stats.generated_tokens));
                    }
                    _ => {}
                }
            }
        }
        for (k, (i, j, _, p)) in chunk.iter().enumerate() {
            let (reason, n) = finish[k].context("a sequence ended without finishing")?;
            let v = json!({
                "index": i,
                "sample": j,
                "prompt": specs[*i].prompt,
                "text": texts[k],
                "generated_tokens": n,
                "finish_reason": reason.as_str(),
                "seed": p.sampler.seed,
            });
            writeln!(out, "{v}")?;
        }
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_with_escapes_and_jsonl_with_overrides() {
        let p = parse("ROMEO:\\nO\n\nsecond \\\\ line\n").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].prompt, "ROMEO:\nO");
        assert_eq!(p[1].prompt, "second \\ line");
        let j = parse("{\"prompt\": \"A\", \"seed\": 4, \"num_samples\": 3}\n{\"prompt\": \"B\"}")
            .unwrap();
        assert_eq!(
            (j[0].seed, j[0].num_samples, j[1].num_samples),
            (Some(4), 3, 1)
        );
    }

    #[test]
    fn bad_files_are_rejected_with_line_numbers() {
        assert!(parse("\n  \n").is_err());
        let e = parse("{\"prompt\": 3}").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("prompt"), "{e}");
        let e = parse("{\"prompt\": \"a\", \"tempo\": 1}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `tempo`"), "{e}");
        let e = parse("{\"prompt\": \"a\"}\n{\"prompt\": \"b\", \"num_samples\": 0}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
