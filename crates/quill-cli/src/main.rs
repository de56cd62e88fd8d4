//! `quill`: the command-line front end. Parses and validates flags into the library's typed
//! parameters, then prints what the engine reports. No numerics live here.

mod bench_cmd;
mod chat_cmd;
mod convert_cmd;
mod generate_cmd;
mod hipgpt_args;
mod info_cmd;
mod output;
mod perplexity_cmd;
mod prompts_file;
mod sample_cmd;
mod sampling_args;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "quill",
    version,
    about = "Fast, correct text generation for GPT-style models",
    long_about = "Fast, correct text generation for GPT-style models.\n\nWith no --model, quill \
                  uses its embedded default: a small character-level GPT trained on tiny \
                  Shakespeare."
)]
struct Cli {
    /// Worker threads for the numeric kernels. [default: all cores]
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

/// Where the model comes from (shared by every subcommand).
#[derive(clap::Args, Debug, Clone)]
struct ModelArgs {
    /// Model file or folder: Hugging Face folder, model.safetensors, pytorch_model.bin, nanoGPT
    /// ckpt.pt or out_dir, Mini-LLM ckpt.pt, llm.c .bin, HipGPT run folder or its config JSON.
    /// The format is detected from the contents. Absent: the embedded default model.
    #[arg(long, short = 'm', value_name = "PATH")]
    model: Option<PathBuf>,
    /// Tokenizer to use instead of the one found with the model (tokenizer.json, vocab.json with
    /// merges.txt beside it, or a nanoGPT meta.pkl).
    #[arg(long, value_name = "PATH")]
    tokenizer: Option<PathBuf>,
    /// Run the weight matrices in this precision whatever the checkpoint stores: converted (or
    /// quantized, llama.cpp-style) once at load. Norms and biases stay f32. `quill perplexity`
    /// measures what a lower precision costs. [default: as stored]
    #[arg(long, value_name = "DTYPE", value_parser = dtype_parser(), ignore_case = true)]
    dtype: Option<quill::WeightDtype>,
}

/// `--dtype`: one of [`quill::WeightDtype::ALL`]'s names (clap lists them on a bad value).
fn dtype_parser() -> impl clap::builder::TypedValueParser<Value = quill::WeightDtype> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(quill::WeightDtype::ALL.map(|d| d.name()))
        .try_map(|s| s.parse::<quill::WeightDtype>())
}

/// `--kv-cache`: one of [`quill::KvDtype::ALL`]'s names.
fn kv_cache_parser() -> impl clap::builder::TypedValueParser<Value = quill::KvDtype> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(quill::KvDtype::ALL.map(|d| d.as_str()))
        .try_map(|s| s.parse::<quill::KvDtype>())
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, streamed to stdout as it is produced.
    Generate(Box<generate_cmd::Args>),
    /// Describe a model: format, architecture, parameters, dtype, tokenizer.
    Info(info_cmd::Args),
    /// Chat with a model through its chat template: one user turn per input line, with history.
    Chat(Box<chat_cmd::Args>),
    /// Write a loadable model to safetensors (a Hugging Face folder) or GGUF.
    Convert(convert_cmd::Args),
    /// Measure prefill and decode speed against the machine's memory-bandwidth roofline.
    Bench(bench_cmd::Args),
    /// Score a text file: the model's perplexity over it, with a sliding context window (compare
    /// --dtype choices or models on the same text).
    Perplexity(perplexity_cmd::Args),
    /// nanoGPT's sample.py: `--key=value` settings (init_from, out_dir, start, num_samples,
    /// max_new_tokens, temperature, top_k, seed, device, dtype, compile); `--help` lists them.
    Sample(sample_cmd::Args),
}

/// glibc raises its mmap threshold as large blocks are freed (up to 32 MB), after which
/// multi-megabyte buffers come from the heap and stay resident once freed: the metadata a GGUF
/// load parses and drops, a prompt's activations. A fixed threshold makes every block of 128 KiB
/// or more its own mapping, handed back whole when freed (GPT-2 q4_0, 128-token prompt: peak RSS
/// 105.7 -> 103.6 MB). Decode allocates nothing per token, so the extra mappings cost nothing
/// there. A process-wide policy, so the binary sets it, not the library.
fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes glibc's allocation policy for later blocks; it is called
    // before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

fn main() -> std::process::ExitCode {
    fixed_mmap_threshold();
    let cli = Cli::parse();
    if cli.threads == Some(0) {
        eprintln!("error: invalid --threads 0: must be >= 1");
        return std::process::ExitCode::FAILURE;
    }
    // The main thread's 8 MiB stack for the pool's threads, as the command runs on one of them.
    let mut pool = rayon::ThreadPoolBuilder::new().stack_size(8 << 20);
    if let Some(n) = cli.threads {
        pool = pool.num_threads(n);
    }
    if let Err(e) = pool.build_global() {
        eprintln!("error: cannot start the worker threads: {e}");
        return std::process::ExitCode::FAILURE;
    }
    // The command runs on a worker of the pool (rayon::scope from outside the pool runs its body
    // there). Before the kernels had their own helper threads (`kernels::crew`), their parallel
    // regions went to rayon, and called from the main thread each was injected into the pool
    // with the main thread asleep until it ended (GPT-2 q4_0 decode, batch 1: 403-413 -> 446-460
    // tokens/s on a worker, alternated runs); regions that find the helpers busy still do.
    let command = cli.command;
    let result = rayon::scope(move |_| match command {
        Command::Bench(a) => bench_cmd::run(a),
        Command::Generate(a) => generate_cmd::run(*a),
        Command::Info(a) => info_cmd::run(a),
        Command::Chat(a) => chat_cmd::run(*a),
        Command::Convert(a) => convert_cmd::run(a),
        Command::Sample(a) => sample_cmd::run(a),
        Command::Perplexity(a) => perplexity_cmd::run(a),
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if output::is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

impl ModelArgs {
    fn load(&self) -> anyhow::Result<quill::LoadedModel> {
        let source = match &self.model {
            Some(p) => quill::ModelSource::Path(p.clone()),
            None => quill::ModelSource::Embedded,
        };
        let opts = quill::load::LoadOptions {
            tokenizer: self.tokenizer.clone(),
            dtype: self.dtype,
        };
        Ok(quill::load(&source, &opts)?)
    }
}
