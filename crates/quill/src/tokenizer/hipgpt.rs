//! HipGPT's word-level BPE (`checkpoints/<run>/tokenizer.json`, not the Hugging Face format):
//! `{"stoi_to_token": [token, ...], "merge_rank": [[left, right, rank], ...]}`.
//!
//! Encoding, as HipGPT's `Tokenizer::encode`: split the text on ASCII whitespace (C++
//! `istringstream >>`), split each word into characters with `</w>` appended to the last one,
//! then repeatedly merge the adjacent pair of lowest rank (every occurrence of it, left to
//! right) until no ranked pair remains. Decoding shows a token ending in `</w>` as the word
//! followed by one space, any other token as itself.
//!
//! One difference: HipGPT silently drops a piece that is not in its vocabulary (a character
//! never seen in training); quill reports it as an error instead of changing the prompt.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};

/// The end-of-word marker of HipGPT's BPE.
pub const END_OF_WORD: &str = "</w>";

/// A HipGPT `tokenizer.json`.
#[derive(Debug, Clone)]
pub struct HipGptTokenizer {
    itos: Vec<String>,
    stoi: HashMap<String, u32>,
    /// Merge rank of each (left, right) pair of token ids.
    ranks: HashMap<(u32, u32), u32>,
}

/// Whether `v` looks like a HipGPT tokenizer file (has `stoi_to_token`).
pub fn is_hipgpt_json(v: &serde_json::Value) -> bool {
    v.get("stoi_to_token")
        .is_some_and(serde_json::Value::is_array)
}

fn bad(path: &Path, detail: impl Into<String>) -> Error {
    Error::format(path, "HipGPT tokenizer.json", detail)
}

impl HipGptTokenizer {
    /// Reads a HipGPT `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(path, format!("not JSON: {e}")))?;
        Self::from_json(path, &v)
    }

    /// Builds the tokenizer from the parsed JSON of `path` (named in errors).
    pub fn from_json(path: &Path, v: &serde_json::Value) -> Result<Self> {
        let list = v
            .get("stoi_to_token")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| bad(path, "missing `stoi_to_token` (expected a list of strings)"))?;
        let mut itos = Vec::with_capacity(list.len());
        let mut stoi = HashMap::with_capacity(list.len());
        for (i, t) in list.iter().enumerate() {
            let s = t.as_str().ok_or_else(|| {
                bad(
                    path,
                    format!("`stoi_to_token[{i}]` is {t}, expected a string"),
                )
            })?;
            if s.is_empty() {
                return Err(bad(path, format!("`stoi_to_token[{i}]` is empty")));
            }
            let id = u32::try_from(i).map_err(|_| bad(path, "too many tokens"))?;
            // HipGPT's load keeps the last id of a duplicated string.
            stoi.insert(s.to_string(), id);
            itos.push(s.to_string());
        }
        if itos.is_empty() {
            return Err(bad(path, "`stoi_to_token` is empty"));
        }
        let mut ranks = HashMap::new();
        let merges = match v.get("merge_rank") {
            None | Some(serde_json::Value::Null) => &[][..],
            Some(m) => m
                .as_array()
                .map(Vec::as_slice)
                .ok_or_else(|| bad(path, "`merge_rank` is not a list of [left, right, rank]"))?,
        };
        for (i, m) in merges.iter().enumerate() {
            let triple = m.as_array().filter(|a| a.len() == 3);
            let parsed =
                triple.and_then(|a| Some((a[0].as_str()?, a[1].as_str()?, a[2].as_u64()?)));
            let (l, r, rank) = parsed.ok_or_else(|| {
                bad(
                    path,
                    format!("`merge_rank[{i}]` is {m}, expected [string, string, rank]"),
                )
            })?;
            // As HipGPT's loader: merges whose parts are not tokens are skipped.
            if let (Some(&a), Some(&b)) = (stoi.get(l), stoi.get(r)) {
                let rank = u32::try_from(rank)
                    .map_err(|_| bad(path, format!("`merge_rank[{i}]` rank is too large")))?;
                ranks.insert((a, b), rank);
            }
        }
        Ok(HipGptTokenizer { itos, stoi, ranks })
    }

    pub fn vocab_size(&self) -> usize {
        self.itos.len()
    }

    /// Number of merge rules.
    pub fn merges(&self) -> usize {
        self.ranks.len()
    }

    /// Encodes `text` as HipGPT does (see the module docs).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        for word in text
            .split([' ', '\t', '\n', '\x0B', '\x0C', '\r'])
            .filter(|w| !w.is_empty())
        {
            for piece in self.encode_word(word) {
                let id = self.stoi.get(&piece).ok_or_else(|| {
                    Error::Tokenizer(format!(
                        "{piece:?} (in the word {word:?}) is not in the HipGPT vocabulary of {} \
                         tokens (HipGPT itself would silently drop it)",
                        self.itos.len()
                    ))
                })?;
                out.push(*id);
            }
        }
        Ok(out)
    }

    fn encode_word(&self, word: &str) -> Vec<String> {
        let mut toks: Vec<String> = word.chars().map(String::from).collect();
        if let Some(last) = toks.last_mut() {
            last.push_str(END_OF_WORD);
        }
        while toks.len() > 1 {
            let mut best: Option<(u32, usize)> = None;
            for i in 0..toks.len() - 1 {
                let (Some(&a), Some(&b)) = (self.stoi.get(&toks[i]), self.stoi.get(&toks[i + 1]))
                else {
                    continue;
                };
                if let Some(&r) = self.ranks.get(&(a, b)) {
                    if best.is_none_or(|(br, _)| r < br) {
                        best = Some((r, i));
                    }
                }
            }
            let Some((_, at)) = best else { break };
            let (first, second) = (toks[at].clone(), toks[at + 1].clone());
            let mut merged = Vec::with_capacity(toks.len());
            let mut i = 0;
            while i < toks.len() {
                if i + 1 < toks.len() && toks[i] == first && toks[i + 1] == second {
                    merged.push(format!("{first}{second}"));
                    i += 2;
                } else {
                    merged.push(std::mem::take(&mut toks[i]));
                    i += 1;
                }
            }
            toks = merged;
        }
        toks
    }

    /// The text of one token as bytes: a word-final token ends in a space instead of `</w>`.
    pub fn token_bytes(&self, id: u32) -> Result<Vec<u8>> {
        let t = self.itos.get(id as usize).ok_or_else(|| {
            Error::Tokenizer(format!(
                "token id {id} is outside the HipGPT vocabulary of {}",
                self.itos.len()
            ))
        })?;
        Ok(match t.strip_suffix(END_OF_WORD) {
            Some(word) => format!("{word} ").into_bytes(),
            None => t.clone().into_bytes(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tok() -> HipGptTokenizer {
        let v = json!({
            "stoi_to_token": ["a", "b", "c", "a</w>", "b</w>", "c</w>", "ab", "ab</w>", "abc</w>"],
            "merge_rank": [["a", "b", 0], ["a", "b</w>", 1], ["ab", "c</w>", 2], ["x", "y", 3]]
        });
        HipGptTokenizer::from_json(Path::new("t.json"), &v).unwrap()
    }

    #[test]
    fn encodes_words_with_end_markers_by_merge_rank() {
        let t = tok();
        assert_eq!(t.merges(), 3, "merges of unknown tokens are skipped");
        // "abab": a b a b</w> -> (rank 0, all occurrences) ab a b</w> -> ab ab</w>.
        assert_eq!(t.encode("abab").unwrap(), vec![6, 7]);
        assert_eq!(t.encode("  abc\n\tc \x0Bb").unwrap(), vec![8, 5, 4]);
        assert_eq!(t.encode(" \n ").unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn decodes_word_ends_as_spaces_and_rejects_unknown_pieces() {
        let t = tok();
        let text: Vec<u8> = [6, 7, 2, 5]
            .iter()
            .flat_map(|&i| t.token_bytes(i).unwrap())
            .collect();
        assert_eq!(String::from_utf8(text).unwrap(), "abab cc ");
        let e = t.encode("abz").unwrap_err().to_string();
        assert!(e.contains("\"z</w>\""), "{e}");
        assert!(t.token_bytes(9).is_err());
    }

    #[test]
    fn malformed_files_name_the_field() {
        let p = Path::new("tok.json");
        for (v, want) in [
            (json!({}), "stoi_to_token"),
            (json!({"stoi_to_token": [1]}), "stoi_to_token[0]"),
            (json!({"stoi_to_token": []}), "empty"),
            (
                json!({"stoi_to_token": ["a"], "merge_rank": [["a", "a"]]}),
                "merge_rank[0]",
            ),
        ] {
            let e = HipGptTokenizer::from_json(p, &v).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("tok.json"), "{e}");
        }
    }
}
