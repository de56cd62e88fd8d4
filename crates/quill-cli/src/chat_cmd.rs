//! `quill chat`: a conversation with a model through its own chat template. Reads one user turn
//! per line from standard input (a terminal or a pipe), keeps the history, and streams each
//! reply; generation stops at the template's end-of-turn tokens. `/reset` forgets the history,
//! `/exit` (or end of input) quits.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;
use quill::chat::Message;
use quill::{Event, Generation};

use crate::output::emit;
use crate::sampling_args::SamplingArgs;
use crate::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// A system message that opens the conversation.
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let (seed, _) = a.sampling.seed();
    let sampler = a.sampling.sampler(seed)?;
    let loaded = a.model.load()?;
    let tokenizer = loaded
        .tokenizer
        .as_ref()
        .with_context(|| format!("no tokenizer found for {}", loaded.info.path))?;
    let template = loaded.chat.as_ref().with_context(|| {
        format!(
            "{} has no chat template (GGUF `tokenizer.chat_template`); use `quill generate`",
            loaded.info.path
        )
    })?;
    let eos = loaded.eos_ids();

    let start: Vec<Message> = a
        .system
        .iter()
        .map(|s| Message::new("system", s.clone()))
        .collect();
    let mut history = start.clone();
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("[quill] chatting with {} (/reset, /exit)", loaded.info.path);
    }
    let mut out = std::io::stdout().lock();
    let mut turn = 0u64;
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading standard input")?;
        let text = line.trim();
        match text {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history = start.clone();
                continue;
            }
            _ => {}
        }
        history.push(Message::new("user", text));
        let ids = template.encode(tokenizer, &history, true)?;
        let mut sampler = sampler.clone();
        sampler.seed = seed.wrapping_add(turn);
        turn += 1;
        let params = a.sampling.params(sampler, eos.clone())?;
        let gen = Generation::new(&loaded.model, Some(tokenizer), ids, params)?;
        let mut reply = String::new();
        if interactive {
            emit(&mut out, "assistant> ")?;
        }
        for ev in gen {
            match ev? {
                Event::Token { text, .. } | Event::Finished { text, .. } => {
                    emit(&mut out, &text)?;
                    reply.push_str(&text);
                }
                _ => {}
            }
        }
        writeln!(out)?;
        out.flush()?;
        history.push(Message::new("assistant", reply.trim()));
    }
    Ok(())
}
