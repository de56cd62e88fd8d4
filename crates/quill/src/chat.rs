//! Chat templates: turning a conversation into the prompt text a model was trained on, with the
//! model's own Jinja template (GGUF `tokenizer.chat_template`), rendered by `minijinja` with the
//! variables Hugging Face and llama.cpp pass: `messages`, `add_generation_prompt`, `bos_token`,
//! `eos_token`, and a `raise_exception` function. Python string methods (`.strip()`,
//! `.startswith()`, ...) are available, as many templates use them.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::formats::gguf::GgufFile;
use crate::tokenizer::Tokenizer;

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A model's chat template and the tokens that end an assistant turn.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
    stop_ids: Vec<u32>,
}

/// Token texts that end a turn in common chat formats (llama.cpp treats them as end-of-generation
/// when the vocabulary marks them as control tokens).
const END_OF_TURN: [&str; 9] = [
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|return|>",
    "</s>",
    "<|eom_id|>",
];

impl ChatTemplate {
    /// A template from its Jinja source; fails if it does not compile.
    pub fn new(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
        stop_ids: Vec<u32>,
    ) -> Result<Self> {
        let t = ChatTemplate {
            source: source.into(),
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
            stop_ids,
        };
        env().template_from_str(&t.source).map_err(template_error)?;
        Ok(t)
    }

    /// The template of a GGUF file: BOS/EOS texts from `tokenizer.ggml.bos/eos_token_id`; stop
    /// ids are EOS, `tokenizer.ggml.eot_token_id`/`eom_token_id`, and control tokens spelled
    /// like an end of turn.
    pub(crate) fn from_gguf(g: &GgufFile, source: &str, _tok: &Tokenizer) -> Result<Self> {
        let tokens = g.str_array("tokenizer.ggml.tokens")?;
        let types: Vec<i64> = g
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().map(|x| x.as_i64().unwrap_or(1)).collect())
            .unwrap_or_default();
        let text = |key: &str| -> Result<(Option<u32>, String)> {
            Ok(match g.opt_usize(key)? {
                Some(i) if i < tokens.len() => (Some(i as u32), tokens[i].to_string()),
                _ => (None, String::new()),
            })
        };
        let (bos_id, bos) = text("tokenizer.ggml.bos_token_id")?;
        let (eos_id, eos) = text("tokenizer.ggml.eos_token_id")?;
        let mut stop: Vec<u32> = eos_id.into_iter().collect();
        for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            stop.extend(text(key)?.0);
        }
        for (i, t) in tokens.iter().enumerate() {
            if END_OF_TURN.contains(t) && types.get(i).is_none_or(|&ty| ty == 3) {
                stop.push(i as u32);
            }
        }
        stop.retain(|&i| Some(i) != bos_id || eos_id == bos_id);
        stop.sort_unstable();
        stop.dedup();
        ChatTemplate::new(source, bos, eos, stop).map_err(|e| {
            Error::format(
                &g.path,
                "GGUF",
                format!("`tokenizer.chat_template` does not compile: {e}"),
            )
        })
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Ids that end an assistant turn (generation stops at them).
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    /// Renders `messages`; with `add_generation_prompt`, ends with the opening of an assistant
    /// turn.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let env = env();
        let t = env
            .template_from_str(&self.source)
            .map_err(template_error)?;
        t.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(template_error)
    }

    /// Renders and tokenizes a conversation. BOS is added as the tokenizer's metadata says
    /// unless the rendered text already starts with it.
    pub fn encode(
        &self,
        tokenizer: &Tokenizer,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>> {
        let text = self.render(messages, add_generation_prompt)?;
        let has_bos = !self.bos_token.is_empty() && text.starts_with(&self.bos_token);
        tokenizer.encode(&text, !has_bos)
    }
}

fn template_error(e: minijinja::Error) -> Error {
    let mut msg = format!("chat template: {e}");
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    Error::Request(msg)
}

fn env() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str =
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + \
        message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}\
        {{ '<|im_start|>assistant\\n' }}{% endif %}";

    #[test]
    fn renders_chatml_with_generation_prompt() {
        let t = ChatTemplate::new(CHATML, "", "<|im_end|>", vec![2]).unwrap();
        let s = t.render(&[Message::new("user", "Hi")], true).unwrap();
        assert_eq!(s, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
        let s = t.render(&[Message::new("user", "Hi")], false).unwrap();
        assert_eq!(s, "<|im_start|>user\nHi<|im_end|>\n");
    }

    #[test]
    fn python_methods_and_raise_exception() {
        let t = ChatTemplate::new(
            "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system') }}{% endif %}\
             {{ bos_token }}{{ messages[0]['content'].strip() }}",
            "<s>",
            "</s>",
            vec![],
        )
        .unwrap();
        assert_eq!(
            t.render(&[Message::new("user", "  x ")], false).unwrap(),
            "<s>x"
        );
        let e = t.render(&[Message::new("system", "x")], false).unwrap_err();
        assert!(e.to_string().contains("no system"), "{e}");
    }

    #[test]
    fn bad_template_is_an_error() {
        assert!(ChatTemplate::new("{% for %}", "", "", vec![]).is_err());
    }
}
