//! `quill perplexity`: the model's perplexity over a text file (sliding window, each token
//! scored once; see `quill::eval`), to weigh a `--dtype` or a model against another on the
//! same text.

use std::path::PathBuf;

use anyhow::{bail, Context};
use quill::KvDtype;
use serde_json::json;

use crate::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// UTF-8 text file to score.
    #[arg(long, short = 'f', value_name = "PATH")]
    file: PathBuf,
    /// Window length in tokens, 2 to the model's context length: each forward pass reads at
    /// most N tokens, so a token is predicted from at most N − 1 before it.
    /// [default: the model's context length]
    #[arg(long, value_name = "N")]
    context: Option<usize>,
    /// Tokens each window moves past the previous one (1 to context − 1); later windows score
    /// only their last N tokens, so each of those sees at least context − N tokens.
    /// [default: context / 2]
    #[arg(long, value_name = "N")]
    stride: Option<usize>,
    /// Print a JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
    /// How the KV cache stores keys and values (f16: measure what the rounding costs).
    #[arg(long, value_name = "TYPE", value_parser = crate::kv_cache_parser(), ignore_case = true, default_value = "f32")]
    kv_cache: KvDtype,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let path = &a.file;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --file {}", path.display()))?;
    if text.is_empty() {
        bail!("{} is empty: there is nothing to score", path.display());
    }
    let loaded = a.model.load()?;
    let ctx = loaded.model.config().context_length;
    let context = a.context.unwrap_or(ctx);
    if context < 2 || context > ctx {
        bail!(
            "invalid --context {context}: must be between 2 and the model's context length {ctx}"
        );
    }
    let stride = a.stride.unwrap_or(context / 2);
    if stride == 0 || stride >= context {
        bail!(
            "invalid --stride {stride}: must be between 1 and {} (less than the context of \
             {context} tokens)",
            context - 1
        );
    }
    let tok = loaded.tokenizer.as_ref().with_context(|| {
        format!(
            "no tokenizer belongs with {}: pass --tokenizer",
            loaded.info.path
        )
    })?;
    let ids = tok
        .encode(&text, true)
        .with_context(|| format!("tokenizing {}", path.display()))?;
    let kv = a.kv_cache;
    let r = quill::perplexity_with(&loaded.model, &ids, context, stride, kv)
        .with_context(|| format!("scoring {}", path.display()))?;
    let info = &loaded.info;
    if a.json {
        let v = json!({
            "perplexity": r.ppl,
            "nll_mean": r.nll_mean,
            "tokens_scored": r.tokens_scored,
            "windows": r.windows,
            "context": context,
            "stride": stride,
            "file": path.display().to_string(),
            "model": info.path,
            "stored_dtype": info.stored_dtype,
            "run_dtype": info.run_dtype,
            "kv_cache": kv.as_str(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "perplexity: {:.4} over {} tokens (mean NLL {:.4} nats/token; {} window{} of up to {context} \
         tokens, stride {stride}; weights {}, KV cache {kv})",
        r.ppl,
        r.tokens_scored,
        r.nll_mean,
        r.windows,
        if r.windows == 1 { "" } else { "s" },
        info.run_dtype
    );
    Ok(())
}
