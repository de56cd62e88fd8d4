//! UTF-8-safe incremental detokenization: push token ids one at a time, get back only text made
//! of complete characters. A character whose bytes are split across tokens (emoji, CJK under
//! byte-level BPE) comes out whole once its last byte arrives; spaces are preserved exactly.

use tokenizers::Model;

use super::hf::HfImpl;
use super::Tokenizer;
use crate::error::{Error, Result};

/// Hugging Face tokenizers hide special tokens (`<s>`, `<|endoftext|>`) in displayed text, as
/// their Python `decode` does by default. tiktoken and character vocabularies show every token.
const SKIP_SPECIAL: bool = true;

/// Streaming decoder state for one sequence.
pub struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    /// Byte tokenizers: bytes received but not yet emitted (an incomplete character).
    pending: Vec<u8>,
    /// `tokenizers` crate: ids not yet fully emitted, the text already emitted for the first
    /// `prefix_index` of them, as `tokenizers::step_decode_stream` keeps it.
    ids: Vec<u32>,
    prefix: String,
    prefix_index: usize,
}

impl<'a> TextStream<'a> {
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        TextStream {
            tokenizer,
            pending: Vec::new(),
            ids: Vec::new(),
            prefix: String::new(),
            prefix_index: 0,
        }
    }

    /// Adds one token; returns the text that became complete (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        match self.tokenizer {
            Tokenizer::Hf(t) => return self.hf_push(t, id),
            Tokenizer::Bpe(t) => return self.hf_push(t, id),
            _ => {}
        }
        let bytes = self
            .tokenizer
            .token_bytes(id)?
            .ok_or_else(|| Error::Tokenizer(format!("token {id} has no byte form")))?;
        self.pending.extend_from_slice(&bytes);
        Ok(take_complete(&mut self.pending))
    }

    /// Ends the stream: whatever is still held back is returned, with any bytes that never
    /// completed a character shown as U+FFFD.
    pub fn finish(&mut self) -> String {
        match self.tokenizer {
            Tokenizer::Hf(t) => return self.hf_finish(t),
            Tokenizer::Bpe(t) => return self.hf_finish(t),
            _ => {}
        }
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }

    /// `tokenizers` pipelines: decode the ids not yet fully emitted, emit what is new.
    fn hf_push<M: Model>(&mut self, t: &HfImpl<M>, id: u32) -> Result<String> {
        let step = tokenizers::step_decode_stream(
            t,
            id,
            SKIP_SPECIAL,
            &mut self.ids,
            &mut self.prefix,
            &mut self.prefix_index,
        )
        .map_err(|e| Error::Tokenizer(format!("cannot decode token {id}: {e}")))?;
        Ok(step.unwrap_or_default())
    }

    fn hf_finish<M: Model>(&mut self, t: &HfImpl<M>) -> String {
        let ids = std::mem::take(&mut self.ids);
        let prefix = std::mem::take(&mut self.prefix);
        self.prefix_index = 0;
        if ids.is_empty() {
            return String::new();
        }
        match t.decode(&ids, SKIP_SPECIAL) {
            Ok(s) if s.starts_with(&prefix) => s[prefix.len()..].to_string(),
            Ok(s) => s,
            Err(_) => String::new(),
        }
    }
}

/// Removes and returns the longest prefix of `buf` that is valid UTF-8 and cannot be the start
/// of a longer character; invalid bytes that can never complete become U+FFFD.
fn take_complete(buf: &mut Vec<u8>) -> String {
    let mut out = String::new();
    loop {
        match std::str::from_utf8(buf) {
            Ok(s) => {
                out.push_str(s);
                buf.clear();
                return out;
            }
            Err(e) => {
                let good = e.valid_up_to();
                // SAFETY-free: the prefix is valid UTF-8 by construction.
                out.push_str(&String::from_utf8_lossy(&buf[..good]));
                match e.error_len() {
                    // Incomplete character at the end: keep it for the next token.
                    None => {
                        buf.drain(..good);
                        return out;
                    }
                    // Bytes that can never form a character: replace and go on.
                    Some(bad) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        buf.drain(..good + bad);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::take_complete;

    #[test]
    fn split_emoji_is_held_until_complete() {
        let crab = "🦀".as_bytes();
        let mut buf = crab[..2].to_vec();
        assert_eq!(take_complete(&mut buf), "");
        buf.extend_from_slice(&crab[2..]);
        buf.extend_from_slice(b" x");
        assert_eq!(take_complete(&mut buf), "🦀 x");
        assert!(buf.is_empty());
    }

    #[test]
    fn invalid_bytes_become_replacement_without_stalling() {
        let mut buf = vec![b'a', 0xFF, b'b', 0xE4];
        assert_eq!(take_complete(&mut buf), "a\u{FFFD}b");
        assert_eq!(buf, vec![0xE4]);
    }
}
