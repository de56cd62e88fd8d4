//! nanoGPT's character-level tokenizer (`data/<dataset>/meta.pkl`: `stoi`, `itos`).

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::formats::PyValue;

/// One id per character.
#[derive(Debug, Clone)]
pub struct CharTokenizer {
    stoi: HashMap<char, u32>,
    /// `itos[id]` is the character with that id.
    itos: Vec<char>,
}

impl CharTokenizer {
    /// Builds the vocabulary from the unpickled `meta.pkl` dict.
    pub fn from_meta(path: &Path, meta: &PyValue) -> Result<Self> {
        let bad = |d: String| Error::format(path, "meta.pkl", d);
        let itos = meta
            .get("itos")
            .ok_or_else(|| bad("no `itos` key (expected a dict {id: char})".into()))?;
        let PyValue::Dict(items) = itos else {
            return Err(bad(format!(
                "`itos` is a {}, expected a dict",
                itos.type_name()
            )));
        };
        let mut pairs = Vec::with_capacity(items.len());
        for (k, v) in items {
            let id = k
                .as_i64()
                .filter(|&i| i >= 0)
                .ok_or_else(|| bad(format!("`itos` key {k:?} is not a non-negative int")))?;
            let s = v
                .as_str()
                .ok_or_else(|| bad(format!("`itos[{id}]` is a {}, expected str", v.type_name())))?;
            let mut chars = s.chars();
            let (Some(c), None) = (chars.next(), chars.next()) else {
                return Err(bad(format!("`itos[{id}]` = {s:?} is not one character")));
            };
            pairs.push((id as usize, c));
        }
        pairs.sort_unstable();
        let mut table = Vec::with_capacity(pairs.len());
        for (i, (id, c)) in pairs.into_iter().enumerate() {
            if id != i {
                return Err(bad(format!(
                    "`itos` ids are not 0..{}: id {i} is missing",
                    items.len()
                )));
            }
            table.push(c);
        }
        if let Some(vs) = meta.get("vocab_size").and_then(PyValue::as_i64) {
            if vs as usize != table.len() {
                return Err(bad(format!(
                    "`vocab_size` is {vs} but `itos` has {} entries",
                    table.len()
                )));
            }
        }
        Ok(Self::from_chars(table))
    }

    /// A vocabulary where character `chars[i]` has id `i`.
    pub fn from_chars(chars: Vec<char>) -> Self {
        let stoi = chars
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, i as u32))
            .collect();
        CharTokenizer { stoi, itos: chars }
    }

    pub fn vocab_size(&self) -> usize {
        self.itos.len()
    }

    /// Every character must be in the vocabulary; otherwise the error lists those that are not.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len());
        let mut unknown: Vec<char> = Vec::new();
        for c in text.chars() {
            match self.stoi.get(&c) {
                Some(&id) => ids.push(id),
                None if !unknown.contains(&c) => unknown.push(c),
                None => {}
            }
        }
        if !unknown.is_empty() {
            let list: Vec<String> = unknown.iter().take(10).map(|c| format!("{c:?}")).collect();
            return Err(Error::Tokenizer(format!(
                "the character-level vocabulary ({} characters) has no {}",
                self.itos.len(),
                list.join(", ")
            )));
        }
        Ok(ids)
    }

    pub fn token_bytes(&self, id: u32) -> Result<Vec<u8>> {
        let c = self.itos.get(id as usize).ok_or_else(|| {
            Error::Tokenizer(format!(
                "token id {id} is outside the character vocabulary of {}",
                self.itos.len()
            ))
        })?;
        Ok(c.to_string().into_bytes())
    }
}
