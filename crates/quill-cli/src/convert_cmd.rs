//! `quill convert`: write any loadable model to a Hugging Face safetensors folder or to GGUF.

use std::path::PathBuf;

use crate::ModelArgs;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Format {
    /// A folder with config.json, model.safetensors (float32) and tokenizer.json.
    Safetensors,
    /// One GGUF v3 file (float32 tensors, llama.cpp names and metadata).
    Gguf,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Output folder (safetensors) or file (gguf).
    #[arg(long, short = 'o', value_name = "PATH")]
    output: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Safetensors)]
    to: Format,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let loaded = a.model.load()?;
    match a.to {
        Format::Safetensors => quill::export::to_hf_folder(&loaded, &a.output)?,
        Format::Gguf => quill::export::to_gguf(&loaded, a.model.model.as_deref(), &a.output)?,
    }
    eprintln!("[quill] wrote {}", a.output.display());
    Ok(())
}
