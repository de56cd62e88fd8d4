//! Text ↔ token ids. Three kinds, chosen by what the checkpoint ships with:
//! - any Hugging Face `tokenizer.json` (GPT-2 byte-level BPE, Llama SentencePiece-BPE, ...), or a
//!   GPT-2 `vocab.json` + `merges.txt` pair, through the `tokenizers` crate;
//! - a GGUF file's vocabulary: SentencePiece through `tokenizers`, byte-level BPE through
//!   `tokenizers`' pipeline over quill's compact [`ByteBpe`] model;
//! - GPT-2's BPE as tiktoken has it (nanoGPT's fallback when a checkpoint has no `meta.pkl`),
//!   through `tiktoken-rs`'s bundled `r50k_base` (identical to tiktoken's `gpt2`);
//! - nanoGPT's character-level vocabulary from `meta.pkl`;
//! - HipGPT's word-level BPE (`tokenizer.json` with `stoi_to_token` / `merge_rank`);
//! - llm.c's tokenizer `.bin` (byte strings per id; encodes only GPT-2's vocabulary).
//!
//! Decoding for display goes through [`TextStream`], which never emits a broken UTF-8 character.

mod byte_bpe;
mod char_level;
pub(crate) mod gguf;
mod hf;
mod hipgpt;
mod llmc;
mod stream;

pub use byte_bpe::{BpeTokenizer, ByteBpe};
pub use char_level::CharTokenizer;
pub use hipgpt::{is_hipgpt_json, HipGptTokenizer};
pub use llmc::{is_llmc_tokenizer, LlmcTokenizer};
pub use stream::TextStream;

use std::path::Path;

use crate::error::{Error, Result};

/// A tokenizer of any supported kind.
pub enum Tokenizer {
    /// The `tokenizers` crate over a `tokenizer.json` (or vocab/merges).
    Hf(Box<tokenizers::Tokenizer>),
    /// A GGUF file's byte-level BPE vocabulary: the same pipeline over quill's compact model.
    Bpe(Box<BpeTokenizer>),
    /// tiktoken's GPT-2 encoding (`<|endoftext|>` = 50256 allowed in text, as nanoGPT does).
    Gpt2Tiktoken(Box<tiktoken_rs::CoreBPE>),
    /// nanoGPT character-level vocabulary.
    Char(CharTokenizer),
    /// HipGPT word-level BPE.
    HipGpt(HipGptTokenizer),
    /// llm.c tokenizer `.bin`.
    Llmc(Box<LlmcTokenizer>),
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokenizer({})", self.describe())
    }
}

/// Size of tiktoken's GPT-2 vocabulary (50,000 merges + 256 bytes + `<|endoftext|>`).
pub const GPT2_VOCAB: usize = 50257;
/// GPT-2's end-of-text token.
pub const GPT2_EOT: u32 = 50256;

impl Tokenizer {
    /// GPT-2's BPE as tiktoken ships it, built into the binary.
    pub fn gpt2() -> Result<Self> {
        tiktoken_rs::r50k_base()
            .map(|b| Tokenizer::Gpt2Tiktoken(Box::new(b)))
            .map_err(|e| Error::Tokenizer(format!("built-in GPT-2 BPE: {e}")))
    }

    /// A Hugging Face `tokenizer.json`.
    pub fn from_tokenizer_json(path: &Path) -> Result<Self> {
        hf::from_tokenizer_json(path).map(|t| Tokenizer::Hf(Box::new(t)))
    }

    /// The vocabulary embedded in a GGUF file's metadata (`None` when it has none).
    pub fn from_gguf(path: &Path) -> Result<Option<Self>> {
        gguf::from_gguf(&crate::formats::gguf::GgufFile::open(path)?)
    }

    /// GPT-2 style `vocab.json` + `merges.txt`.
    pub fn from_vocab_merges(vocab: &Path, merges: &Path) -> Result<Self> {
        hf::from_vocab_merges(vocab, merges).map(|t| Tokenizer::Hf(Box::new(t)))
    }

    /// Number of ids the tokenizer can produce.
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Hf(t) => hf::vocab_size::<tokenizers::ModelWrapper>(t),
            Tokenizer::Bpe(t) => hf::vocab_size(t),
            Tokenizer::Gpt2Tiktoken(_) => GPT2_VOCAB,
            Tokenizer::Char(c) => c.vocab_size(),
            Tokenizer::HipGpt(t) => t.vocab_size(),
            Tokenizer::Llmc(t) => t.vocab_size(),
        }
    }

    /// A one-line description for `quill info`.
    pub fn describe(&self) -> String {
        match self {
            Tokenizer::Hf(t) => format!(
                "Hugging Face tokenizers ({} model, {} tokens)",
                hf::model_kind(t),
                hf::vocab_size::<tokenizers::ModelWrapper>(t)
            ),
            Tokenizer::Bpe(t) => format!(
                "byte-level BPE ({} tokens, `tokenizers` pipeline)",
                hf::vocab_size(t)
            ),
            Tokenizer::Gpt2Tiktoken(_) => "GPT-2 BPE (tiktoken gpt2, built in)".to_string(),
            Tokenizer::Char(c) => format!("character-level ({} characters)", c.vocab_size()),
            Tokenizer::HipGpt(t) => format!(
                "HipGPT word-level BPE ({} tokens, {} merges)",
                t.vocab_size(),
                t.merges()
            ),
            Tokenizer::Llmc(t) if t.can_encode() => format!(
                "llm.c tokenizer.bin ({} tokens; encoded with the built-in GPT-2 BPE)",
                t.vocab_size()
            ),
            Tokenizer::Llmc(t) => format!(
                "llm.c tokenizer.bin ({} tokens; decode only)",
                t.vocab_size()
            ),
        }
    }

    /// Encodes `text`. With `add_special`, the tokenizer's own post-processing applies (e.g. a
    /// Llama tokenizer prepends `<s>`); GPT-2 style tokenizers add nothing. Special-token text
    /// such as `<|endoftext|>` maps to its id, as nanoGPT's `sample.py` allows.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Hf(t) => hf::encode::<tokenizers::ModelWrapper>(t, text, add_special),
            Tokenizer::Bpe(t) => hf::encode(t, text, add_special),
            Tokenizer::Gpt2Tiktoken(b) => Ok(b.encode_with_special_tokens(text)),
            Tokenizer::Char(c) => c.encode(text),
            Tokenizer::HipGpt(t) => t.encode(text),
            Tokenizer::Llmc(t) => t.encode(text),
        }
    }

    /// Decodes ids to text (lossy only where the ids themselves end inside a character).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut s = self.stream();
        let mut out = String::new();
        for &id in ids {
            out.push_str(&s.push(id)?);
        }
        out.push_str(&s.finish());
        Ok(out)
    }

    /// The raw bytes of one token, for tokenizers whose tokens are byte strings.
    pub(crate) fn token_bytes(&self, id: u32) -> Result<Option<Vec<u8>>> {
        match self {
            Tokenizer::Hf(_) | Tokenizer::Bpe(_) => Ok(None),
            Tokenizer::Gpt2Tiktoken(b) => {
                if id as usize >= GPT2_VOCAB {
                    return Err(Error::Tokenizer(format!(
                        "token id {id} is outside GPT-2's vocabulary of {GPT2_VOCAB}"
                    )));
                }
                Ok(b._decode_native_and_split(vec![id]).next())
            }
            Tokenizer::Char(c) => c.token_bytes(id).map(Some),
            Tokenizer::HipGpt(t) => t.token_bytes(id).map(Some),
            Tokenizer::Llmc(t) => t.token_bytes(id).map(Some),
        }
    }

    /// A fresh UTF-8-safe streaming decoder.
    pub fn stream(&self) -> TextStream<'_> {
        TextStream::new(self)
    }

    /// End-of-sequence ids the tokenizer declares (e.g. `<|endoftext|>`, `</s>`).
    pub fn eos_ids(&self) -> Vec<u32> {
        match self {
            Tokenizer::Hf(t) => hf::eos_ids::<tokenizers::ModelWrapper>(t),
            Tokenizer::Bpe(t) => hf::eos_ids(t),
            Tokenizer::Gpt2Tiktoken(_) => vec![GPT2_EOT],
            Tokenizer::Char(_) | Tokenizer::HipGpt(_) => Vec::new(),
            Tokenizer::Llmc(t) => vec![t.eot()],
        }
    }
}
