//! llm.c's tokenizer file (`gpt2_tokenizer.bin`): a 256 × u32 little-endian header (magic
//! 20240328, version 1 or 2, vocabulary size, end-of-text id in version 2), then for every token
//! one length byte and that many raw bytes.
//!
//! The file holds only the byte string of each id: enough to decode (through the byte-level
//! [`super::TextStream`] path), not to encode, since it carries no merge rules. When the
//! vocabulary is exactly GPT-2's (50,257 tokens, each with the same bytes as tiktoken's `gpt2`,
//! end-of-text 50256) quill encodes with its built-in GPT-2 BPE, which is what llm.c's files
//! were made from; any other vocabulary cannot encode text and says so.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Magic number of an llm.c tokenizer file.
pub const LLMC_TOKENIZER_MAGIC: u32 = 20240328;
const HEADER_BYTES: usize = 256 * 4;

/// An llm.c tokenizer.
pub struct LlmcTokenizer {
    tokens: Vec<Vec<u8>>,
    eot: u32,
    /// GPT-2's BPE when the vocabulary is GPT-2's; `None` when text cannot be encoded.
    encoder: Option<Box<tiktoken_rs::CoreBPE>>,
    path: PathBuf,
}

/// Whether `head` (the first bytes of a file) starts with the llm.c tokenizer magic.
pub fn is_llmc_tokenizer(head: &[u8]) -> bool {
    head.len() >= 4
        && u32::from_le_bytes([head[0], head[1], head[2], head[3]]) == LLMC_TOKENIZER_MAGIC
}

fn bad(path: &Path, detail: impl Into<String>) -> Error {
    Error::format(path, "llm.c tokenizer", detail)
}

impl LlmcTokenizer {
    /// Reads an llm.c tokenizer file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, &bytes)
    }

    /// Parses the bytes of `path` (named in errors).
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        if bytes.len() < HEADER_BYTES {
            return Err(bad(
                path,
                format!(
                    "{} bytes, shorter than the {HEADER_BYTES}-byte header",
                    bytes.len()
                ),
            ));
        }
        let word = |i: usize| {
            u32::from_le_bytes([
                bytes[4 * i],
                bytes[4 * i + 1],
                bytes[4 * i + 2],
                bytes[4 * i + 3],
            ])
        };
        if word(0) != LLMC_TOKENIZER_MAGIC {
            return Err(bad(
                path,
                format!(
                    "magic is {}, expected {LLMC_TOKENIZER_MAGIC} (regenerate the file with \
                     llm.c's current train_gpt2.py)",
                    word(0)
                ),
            ));
        }
        let vocab = word(2) as usize;
        let eot = match word(1) {
            1 => 50256,
            2 => word(3),
            v => return Err(bad(path, format!("header version is {v}, expected 1 or 2"))),
        };
        if vocab == 0 || eot as usize >= vocab {
            return Err(bad(
                path,
                format!("vocabulary size {vocab} with end-of-text id {eot}"),
            ));
        }
        let mut tokens = Vec::with_capacity(vocab);
        let mut at = HEADER_BYTES;
        for id in 0..vocab {
            let len = *bytes.get(at).ok_or_else(|| {
                bad(
                    path,
                    format!("ends at token {id} of {vocab} (file truncated?)"),
                )
            })? as usize;
            let tok = bytes.get(at + 1..at + 1 + len).ok_or_else(|| {
                bad(
                    path,
                    format!("token {id} needs {len} bytes past the end of the file (truncated?)"),
                )
            })?;
            if len == 0 {
                return Err(bad(path, format!("token {id} has length 0")));
            }
            tokens.push(tok.to_vec());
            at += 1 + len;
        }
        if at != bytes.len() {
            return Err(bad(
                path,
                format!(
                    "{} bytes after the last of {vocab} tokens",
                    bytes.len() - at
                ),
            ));
        }
        let encoder = gpt2_encoder_if_same(&tokens, eot)?;
        Ok(LlmcTokenizer {
            tokens,
            eot,
            encoder,
            path: path.to_path_buf(),
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn eot(&self) -> u32 {
        self.eot
    }

    /// Whether text can be encoded (the vocabulary is GPT-2's).
    pub fn can_encode(&self) -> bool {
        self.encoder.is_some()
    }

    /// Encodes with GPT-2's BPE (`<|endoftext|>` allowed), or fails for other vocabularies.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match &self.encoder {
            Some(bpe) => Ok(bpe.encode_with_special_tokens(text)),
            None => Err(Error::Tokenizer(format!(
                "{}: llm.c tokenizer files hold no merge rules, so text cannot be encoded \
                 with this {}-token vocabulary (only GPT-2's 50257-token vocabulary is encoded, \
                 with quill's built-in GPT-2 BPE); pass --tokenizer with a tokenizer.json",
                self.path.display(),
                self.tokens.len()
            ))),
        }
    }

    pub fn token_bytes(&self, id: u32) -> Result<Vec<u8>> {
        self.tokens.get(id as usize).cloned().ok_or_else(|| {
            Error::Tokenizer(format!(
                "token id {id} is outside the llm.c vocabulary of {}",
                self.tokens.len()
            ))
        })
    }
}

/// GPT-2's BPE when `tokens` are byte for byte its vocabulary.
fn gpt2_encoder_if_same(tokens: &[Vec<u8>], eot: u32) -> Result<Option<Box<tiktoken_rs::CoreBPE>>> {
    if tokens.len() != super::GPT2_VOCAB || eot != super::GPT2_EOT {
        return Ok(None);
    }
    let bpe = tiktoken_rs::r50k_base()
        .map_err(|e| Error::Tokenizer(format!("built-in GPT-2 BPE: {e}")))?;
    let ids: Vec<u32> = (0..super::GPT2_VOCAB as u32).collect();
    let same = bpe
        ._decode_native_and_split(ids)
        .zip(tokens)
        .all(|(a, b)| &a == b);
    Ok(same.then(|| Box::new(bpe)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(version: u32, toks: &[&[u8]], eot: u32) -> Vec<u8> {
        let mut h = vec![0u32; 256];
        h[0] = LLMC_TOKENIZER_MAGIC;
        h[1] = version;
        h[2] = toks.len() as u32;
        h[3] = eot;
        let mut b: Vec<u8> = h.iter().flat_map(|w| w.to_le_bytes()).collect();
        for t in toks {
            b.push(t.len() as u8);
            b.extend_from_slice(t);
        }
        b
    }

    #[test]
    fn reads_tokens_and_refuses_to_encode_a_custom_vocabulary() {
        let p = Path::new("tok.bin");
        let t = LlmcTokenizer::from_bytes(p, &file(2, &[b"a", b" b", b"\xE2\x82", b"\xAC"], 1))
            .unwrap();
        assert_eq!(t.vocab_size(), 4);
        assert_eq!(t.eot(), 1);
        assert_eq!(t.token_bytes(2).unwrap(), b"\xE2\x82");
        assert!(t.token_bytes(4).is_err());
        assert!(!t.can_encode());
        let e = t.encode("a").unwrap_err().to_string();
        assert!(e.contains("tok.bin") && e.contains("merge rules"), "{e}");
    }

    #[test]
    fn malformed_headers_and_bodies_are_errors() {
        let p = Path::new("tok.bin");
        let good = file(2, &[b"a", b"b"], 1);
        let mut bad_magic = good.clone();
        bad_magic[0] ^= 1;
        let mut bad_version = good.clone();
        bad_version[4] = 7;
        let mut zero_len = good.clone();
        zero_len[HEADER_BYTES] = 0;
        let mut trailing = good.clone();
        trailing.push(0);
        for (bytes, want) in [
            (&good[..100], "header"),
            (&bad_magic[..], "magic"),
            (&bad_version[..], "version is 7"),
            (&good[..good.len() - 1], "truncated"),
            (&zero_len[..], "length 0"),
            (&trailing[..], "after the last"),
            (&file(2, &[b"a"], 3)[..], "end-of-text id 3"),
        ] {
            let e = LlmcTokenizer::from_bytes(p, bytes)
                .err()
                .unwrap_or_else(|| panic!("accepted ({want})"))
                .to_string();
            assert!(e.contains(want) && e.contains("tok.bin"), "{want}: {e}");
        }
    }
}
