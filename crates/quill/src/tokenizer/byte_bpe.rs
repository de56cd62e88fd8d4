//! A compact byte-level BPE model for the vocabularies GGUF files embed (`tokenizer.ggml.model =
//! "gpt2"`), plugged into the `tokenizers` pipeline in place of its `BPE` model.
//!
//! Why quill owns this: `tokenizers`' `BPE` keeps the vocabulary twice as hash maps of owned
//! strings (token → id and id → token), the merges as a third map keyed by id pairs, and a word
//! cache. For GPT-2's 50,257 tokens that is about 9 MB of heap, more than the whole rest of
//! quill's overhead over a 4-bit model's weights. Here the tokens live in one string with an
//! offset table, lookups by text go through an id array sorted by token text, and the merges are
//! one id-pair map: about 2 MB. Everything around the model — added and special tokens, the
//! byte-level pre-tokenizer and its regex, the decoder, post-processing — stays `tokenizers`'.
//!
//! Merging follows `tokenizers`' `BPE` exactly: the adjacent pair with the lowest merge rank
//! merges first, the leftmost on ties, one pair at a time with a heap (a long word costs
//! O(n log n)); a duplicated merge keeps its last rank and a duplicated token text maps to its
//! highest id, as `tokenizers` builds its maps. With `ignore_merges` (Llama 3), a pre-token that
//! is itself a token is taken whole. A character with no token of its own is an error, where
//! `tokenizers` drops it silently.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::{Path, PathBuf};

use ahash::AHashMap;
use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};
use tokenizers::{Model, Token, Trainer};

/// `tokenizers`' pipeline (added tokens, pre-tokenizer, decoder, post-processor) over [`ByteBpe`].
pub type BpeTokenizer = super::hf::HfImpl<ByteBpe>;

/// Byte-level BPE over a vocabulary stored compactly (see the module docs).
#[derive(Clone, Debug)]
pub struct ByteBpe {
    /// Every token's text, concatenated in id order.
    text: Box<str>,
    /// `ends[i]`: where token `i`'s text ends in `text` (it starts where token `i - 1` ends).
    ends: Box<[u32]>,
    /// Ids sorted by their text, one per distinct text (the highest id of duplicates).
    by_text: Box<[u32]>,
    /// Tokens of one character: where every word's merging starts.
    chars: AHashMap<char, u32>,
    /// `(left << 32) | right` → `(rank << 32) | merged`.
    merges: AHashMap<u64, u64>,
    ignore_merges: bool,
}

/// Why a vocabulary and merge list do not form a byte-level BPE.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the vocabulary's text is {0} bytes, more than 4 GiB")]
    TooLarge(usize),
    #[error("merge {rank} ({merge:?}) is not two tokens separated by a space")]
    BadMerge { rank: usize, merge: String },
    #[error("merge {rank} ({merge:?}) names {token:?}, which is not in the vocabulary")]
    MergeOutOfVocabulary {
        rank: usize,
        merge: String,
        token: String,
    },
}

impl ByteBpe {
    /// Builds the model from tokens in id order and merges (`"left right"`) in rank order.
    pub fn new<T: AsRef<str>, M: AsRef<str>>(
        tokens: &[T],
        merges: &[M],
        ignore_merges: bool,
    ) -> Result<Self, BuildError> {
        let total: usize = tokens.iter().map(|t| t.as_ref().len()).sum();
        if total > u32::MAX as usize {
            return Err(BuildError::TooLarge(total));
        }
        let mut text = String::with_capacity(total);
        let mut ends = Vec::with_capacity(tokens.len());
        for t in tokens {
            text.push_str(t.as_ref());
            ends.push(text.len() as u32);
        }
        let mut bpe = ByteBpe {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
            by_text: Box::default(),
            chars: AHashMap::new(),
            merges: AHashMap::new(),
            ignore_merges,
        };
        let mut by_text: Vec<u32> = (0..tokens.len() as u32).collect();
        // Sorted by text, then id: of equal texts the last (highest id) is kept.
        by_text.sort_by(|&a, &b| bpe.piece(a).cmp(bpe.piece(b)).then(a.cmp(&b)));
        by_text.dedup_by(|later, earlier| {
            let same = bpe.piece(*later) == bpe.piece(*earlier);
            if same {
                *earlier = *later;
            }
            same
        });
        bpe.by_text = by_text.into_boxed_slice();
        for &id in bpe.by_text.iter() {
            let mut cs = bpe.piece(id).chars();
            if let (Some(c), None) = (cs.next(), cs.next()) {
                bpe.chars.insert(c, id);
            }
        }
        let mut map = AHashMap::with_capacity(merges.len());
        let mut joined = String::new();
        for (rank, m) in merges.iter().enumerate() {
            let m = m.as_ref();
            let bad = || BuildError::BadMerge {
                rank,
                merge: m.to_string(),
            };
            let (a, b) = m.split_once(' ').ok_or_else(bad)?;
            let id = |token: &str| {
                bpe.id_of(token)
                    .ok_or_else(|| BuildError::MergeOutOfVocabulary {
                        rank,
                        merge: m.to_string(),
                        token: token.to_string(),
                    })
            };
            joined.clear();
            joined.push_str(a);
            joined.push_str(b);
            let key = (u64::from(id(a)?) << 32) | u64::from(id(b)?);
            map.insert(key, ((rank as u64) << 32) | u64::from(id(&joined)?));
        }
        map.shrink_to_fit();
        bpe.merges = map;
        Ok(bpe)
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Token `id`'s text (`id` < `len()`).
    fn piece(&self, id: u32) -> &str {
        let i = id as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    fn id_of(&self, token: &str) -> Option<u32> {
        self.by_text
            .binary_search_by(|&id| self.piece(id).cmp(token))
            .ok()
            .map(|at| self.by_text[at])
    }

    fn merge(&self, left: u32, right: u32) -> Option<(u32, u32)> {
        self.merges
            .get(&((u64::from(left) << 32) | u64::from(right)))
            .map(|&v| ((v >> 32) as u32, v as u32))
    }

    /// Merges in rank order, as (left, right) ids.
    fn ranked_merges(&self) -> Vec<(u32, u32)> {
        let mut m: Vec<(u64, u64)> = self.merges.iter().map(|(&k, &v)| (v >> 32, k)).collect();
        m.sort_unstable();
        m.into_iter()
            .map(|(_, k)| ((k >> 32) as u32, k as u32))
            .collect()
    }
}

/// One symbol of a word being merged: a token over `len` bytes from `start`, linked to its live
/// neighbours (`len == 0` once merged into its left neighbour).
#[derive(Clone, Copy)]
struct Symbol {
    id: u32,
    start: usize,
    len: usize,
    prev: usize,
    next: usize,
}

const NONE: usize = usize::MAX;

impl Model for ByteBpe {
    type Trainer = NotTrainable;

    fn tokenize(&self, word: &str) -> tokenizers::Result<Vec<Token>> {
        if word.is_empty() {
            return Ok(Vec::new());
        }
        if self.ignore_merges {
            if let Some(id) = self.id_of(word) {
                return Ok(vec![Token::new(id, word.to_string(), (0, word.len()))]);
            }
        }
        let mut syms = Vec::with_capacity(word.len());
        for (i, (start, c)) in word.char_indices().enumerate() {
            let id = *self.chars.get(&c).ok_or_else(|| {
                format!("{c:?} (U+{:04X}) has no token in the vocabulary", c as u32)
            })?;
            syms.push(Symbol {
                id,
                start,
                len: c.len_utf8(),
                prev: if i == 0 { NONE } else { i - 1 },
                next: i + 1,
            });
        }
        if let Some(last) = syms.last_mut() {
            last.next = NONE;
        }
        // Candidate merges as (rank, left position, merged id), lowest rank then leftmost first.
        let mut heap: BinaryHeap<Reverse<(u32, usize, u32)>> = syms
            .windows(2)
            .enumerate()
            .filter_map(|(i, w)| {
                self.merge(w[0].id, w[1].id)
                    .map(|(r, m)| Reverse((r, i, m)))
            })
            .collect();
        while let Some(Reverse((_, at, merged))) = heap.pop() {
            let (left, next) = (syms[at], syms[at].next);
            // Stale: the left symbol was merged away, is last, or its pair changed since.
            if left.len == 0 || next == NONE {
                continue;
            }
            let right = syms[next];
            if self.merge(left.id, right.id).map(|(_, m)| m) != Some(merged) {
                continue;
            }
            syms[at].id = merged;
            syms[at].len += right.len;
            syms[at].next = right.next;
            syms[next].len = 0;
            if right.next != NONE {
                syms[right.next].prev = at;
            }
            let cur = syms[at];
            if cur.prev != NONE {
                if let Some((r, m)) = self.merge(syms[cur.prev].id, cur.id) {
                    heap.push(Reverse((r, cur.prev, m)));
                }
            }
            if cur.next != NONE {
                if let Some((r, m)) = self.merge(cur.id, syms[cur.next].id) {
                    heap.push(Reverse((r, at, m)));
                }
            }
        }
        Ok(syms
            .iter()
            .filter(|s| s.len > 0)
            .map(|s| {
                Token::new(
                    s.id,
                    self.piece(s.id).to_string(),
                    (s.start, s.start + s.len),
                )
            })
            .collect())
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.id_of(token)
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        ((id as usize) < self.len()).then(|| self.piece(id).to_string())
    }

    fn get_vocab(&self) -> HashMap<String, u32> {
        self.by_text
            .iter()
            .map(|&id| (self.piece(id).to_string(), id))
            .collect()
    }

    fn get_vocab_size(&self) -> usize {
        self.len()
    }

    /// Writes `{prefix-}vocab.json` and `{prefix-}merges.txt`, as `tokenizers`' `BPE` does.
    fn save(&self, folder: &Path, prefix: Option<&str>) -> tokenizers::Result<Vec<PathBuf>> {
        let name = |f: &str| folder.join(prefix.map_or(f.to_string(), |p| format!("{p}-{f}")));
        let vocab = name("vocab.json");
        std::fs::write(&vocab, serde_json::to_string(&Vocab(self))?)?;
        let merges = name("merges.txt");
        let mut text = String::from("#version: 0.2\n");
        for (a, b) in self.ranked_merges() {
            text.push_str(self.piece(a));
            text.push(' ');
            text.push_str(self.piece(b));
            text.push('\n');
        }
        std::fs::write(&merges, text)?;
        Ok(vec![vocab, merges])
    }

    fn get_trainer(&self) -> NotTrainable {
        NotTrainable
    }
}

/// The vocabulary as a JSON object in id order.
struct Vocab<'a>(&'a ByteBpe);

impl Serialize for Vocab<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bpe = self.0;
        let mut m = s.serialize_map(Some(bpe.len()))?;
        for id in 0..bpe.len() as u32 {
            m.serialize_entry(bpe.piece(id), &id)?;
        }
        m.end()
    }
}

struct Merges<'a>(&'a ByteBpe);

impl Serialize for Merges<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bpe = self.0;
        let ranked = bpe.ranked_merges();
        let mut seq = s.serialize_seq(Some(ranked.len()))?;
        for (a, b) in ranked {
            seq.serialize_element(&[bpe.piece(a), bpe.piece(b)])?;
        }
        seq.end()
    }
}

/// Serializes as `tokenizers`' `BPE` model, so a saved `tokenizer.json` loads anywhere.
impl Serialize for ByteBpe {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("BPE", 10)?;
        m.serialize_field("type", "BPE")?;
        m.serialize_field("dropout", &None::<f32>)?;
        m.serialize_field("unk_token", &None::<String>)?;
        m.serialize_field("continuing_subword_prefix", &None::<String>)?;
        m.serialize_field("end_of_word_suffix", &None::<String>)?;
        m.serialize_field("fuse_unk", &false)?;
        m.serialize_field("byte_fallback", &false)?;
        m.serialize_field("ignore_merges", &self.ignore_merges)?;
        m.serialize_field("vocab", &Vocab(self))?;
        m.serialize_field("merges", &Merges(self))?;
        m.end()
    }
}

/// `tokenizers::Model` asks for a trainer; a vocabulary read from a model file is not trained.
pub struct NotTrainable;

const NOT_TRAINABLE: &str = "quill's byte-level BPE is read from model files, not trained";

impl Trainer for NotTrainable {
    type Model = ByteBpe;

    fn should_show_progress(&self) -> bool {
        false
    }

    fn train(&self, _: &mut ByteBpe) -> tokenizers::Result<Vec<tokenizers::AddedToken>> {
        Err(NOT_TRAINABLE.into())
    }

    fn feed<I, S, F>(&mut self, _: I, _: F) -> tokenizers::Result<()>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
        F: Fn(&str) -> tokenizers::Result<Vec<String>> + Sync,
    {
        Err(NOT_TRAINABLE.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::models::bpe::BPE;

    /// The same vocabulary and merges through `tokenizers`' `BPE`.
    fn reference(tokens: &[&str], merges: &[&str], ignore_merges: bool) -> BPE {
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let merges = merges
            .iter()
            .map(|m| {
                let (a, b) = m.split_once(' ').unwrap();
                (a.to_string(), b.to_string())
            })
            .collect();
        BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(ignore_merges)
            .build()
            .unwrap()
    }

    fn ids(m: &impl Model, word: &str) -> Vec<(u32, (usize, usize))> {
        m.tokenize(word)
            .unwrap()
            .into_iter()
            .map(|t| (t.id, t.offsets))
            .collect()
    }

    /// A small vocabulary whose merges disagree with the order their products appear in (a
    /// merge that makes a pair with its left neighbour, "a bc", and its right, "c ab"), a
    /// duplicated merge (the later rank counts) and a duplicated token text (the higher id).
    fn toy() -> (Vec<&'static str>, Vec<&'static str>) {
        let tokens = vec![
            "a", "b", "c", "é", "ab", "bc", "abc", "aa", "aaa", "ca", "cab", "bb", "ab", "éa",
        ];
        let merges = vec![
            "b c", "a bc", "a b", "a a", "aa a", "c a", "c ab", "b b", "ab c", "é a", "a b",
        ];
        (tokens, merges)
    }

    #[test]
    fn merges_as_tokenizers_bpe_does() {
        let (tokens, merges) = toy();
        for ignore in [false, true] {
            let ours = ByteBpe::new(&tokens, &merges, ignore).unwrap();
            let theirs = reference(&tokens, &merges, ignore);
            for word in [
                "a",
                "ab",
                "abc",
                "aaaa",
                "aaaaaaa",
                "cabab",
                "bbbbb",
                "abcabcabc",
                "cccc",
                "éaé",
                "aéab",
                "bcab",
                "caabbcc",
                "abababababab",
            ] {
                assert_eq!(
                    ids(&ours, word),
                    ids(&theirs, word),
                    "{word:?} ignore={ignore}"
                );
            }
            for t in &tokens {
                assert_eq!(ours.token_to_id(t), theirs.token_to_id(t), "{t:?}");
            }
            assert_eq!(ours.token_to_id("zz"), None);
            assert_eq!(ours.id_to_token(12).as_deref(), Some("ab"));
            assert_eq!(ours.id_to_token(14), None);
            assert_eq!(ours.get_vocab(), theirs.get_vocab());
        }
    }

    /// Every word over a 3-letter alphabet up to length 7 merges as `tokenizers` does.
    #[test]
    fn exhaustive_short_words_match() {
        let (tokens, merges) = toy();
        let ours = ByteBpe::new(&tokens, &merges, false).unwrap();
        let theirs = reference(&tokens, &merges, false);
        let alphabet = ['a', 'b', 'c'];
        let mut words = vec![String::new()];
        for _ in 0..7 {
            words = words
                .iter()
                .flat_map(|w| alphabet.iter().map(move |c| format!("{w}{c}")))
                .collect();
            for w in &words {
                assert_eq!(ids(&ours, w), ids(&theirs, w), "{w:?}");
            }
        }
    }

    #[test]
    fn unknown_characters_and_bad_merges_are_errors() {
        let (tokens, merges) = toy();
        let bpe = ByteBpe::new(&tokens, &merges, false).unwrap();
        let e = bpe.tokenize("abz").unwrap_err().to_string();
        assert!(e.contains("'z'") && e.contains("U+007A"), "{e}");
        let e = ByteBpe::new(&tokens, &["a c"], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"ac\"") && e.contains("merge 0"), "{e}");
        let e = ByteBpe::new(&tokens, &["a b", "abc"], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("merge 1") && e.contains("space"), "{e}");
        let e = ByteBpe::new(&tokens, &["a z"], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"z\""), "{e}");
    }

    /// What `save` and `Serialize` write loads back into `tokenizers`' `BPE` with the same ids.
    #[test]
    fn saved_files_load_as_tokenizers_bpe() {
        let (tokens, merges) = toy();
        let bpe = ByteBpe::new(&tokens, &merges, false).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = bpe.save(dir.path(), Some("t")).unwrap();
        let files: Vec<&str> = files.iter().map(|p| p.to_str().unwrap()).collect();
        let from_files = BPE::from_file(files[0], files[1]).build().unwrap();
        let json = serde_json::to_string(&bpe).unwrap();
        let from_json: tokenizers::models::ModelWrapper = serde_json::from_str(&json).unwrap();
        for word in ["abcabc", "aaaaa", "cabbc", "éaab"] {
            assert_eq!(ids(&from_files, word), ids(&bpe, word), "{word:?} (files)");
            assert_eq!(ids(&from_json, word), ids(&bpe, word), "{word:?} (json)");
        }
    }
}
