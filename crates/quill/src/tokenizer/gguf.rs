//! Tokenizers embedded in GGUF metadata, rebuilt as `tokenizers` pipelines so that encoding,
//! special tokens and streaming decode share the Hugging Face path.
//!
//! - `tokenizer.ggml.model = "gpt2"`: byte-level BPE from `tokenizer.ggml.tokens` and
//!   `tokenizer.ggml.merges`, with the pre-tokenizer llama.cpp uses for `tokenizer.ggml.pre`;
//!   the model is quill's compact [`ByteBpe`] (a fifth of the heap of `tokenizers`' `BPE`).
//! - `tokenizer.ggml.model = "llama"`: SentencePiece BPE from `tokens` and `scores`: merges are
//!   the vocabulary's own pieces, ranked by score (what llama.cpp's SPM tokenizer does), with
//!   `▁` for spaces, an optional leading `▁`, and `<0xNN>` byte fallback.
//!
//! Control tokens (`token_type` 3) become special added tokens (matched in text, hidden when
//! decoding); user-defined ones (4) become added tokens. BOS is prepended on
//! `encode(.., add_special = true)` when `tokenizer.ggml.add_bos_token` says so.

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, DecoderWrapper, Model, NormalizerWrapper, PreTokenizerWrapper,
    SplitDelimiterBehavior,
};

use super::byte_bpe::{BpeTokenizer, ByteBpe};
use super::hf::HfImpl;
use super::Tokenizer;
use crate::error::{Error, Result};
use crate::formats::gguf::GgufFile;

const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// Llama-3's pre-tokenizer regex.
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Builds the tokenizer the metadata describes; `None` when the file has no vocabulary.
pub(crate) fn from_gguf(g: &GgufFile) -> Result<Option<Tokenizer>> {
    let Some(model) = g.opt_str("tokenizer.ggml.model")? else {
        return Ok(None);
    };
    let bad = |detail: String| Error::format(&g.path, "GGUF", detail);
    let tokens = g.str_array("tokenizer.ggml.tokens")?;
    let types = match g.get("tokenizer.ggml.token_type") {
        None => vec![1; tokens.len()],
        Some(v) => v
            .as_array()
            .and_then(|a| a.iter().map(|x| x.as_i64()).collect::<Option<Vec<_>>>())
            .filter(|a| a.len() == tokens.len())
            .ok_or_else(|| {
                bad(format!(
                    "`tokenizer.ggml.token_type` is {}, expected {} integers",
                    v.describe(),
                    tokens.len()
                ))
            })?,
    };
    let tok = match model {
        "gpt2" => {
            let mut t = gpt2_bpe(g, &tokens)?;
            finish(g, &mut t, &tokens, &types, model)?;
            Tokenizer::Bpe(Box::new(t))
        }
        "llama" => {
            let mut t = spm(g, &tokens, &types)?;
            finish(g, &mut t, &tokens, &types, model)?;
            Tokenizer::Hf(Box::new(t))
        }
        "none" | "no_vocab" => return Ok(None),
        other => {
            return Err(Error::Unsupported {
                path: g.path.clone(),
                detail: format!(
                    "`tokenizer.ggml.model` `{other}`: quill reads `gpt2` (byte-level BPE) and \
                     `llama` (SentencePiece) vocabularies"
                ),
            })
        }
    };
    Ok(Some(tok))
}

/// Adds the control and user-defined tokens and, where the metadata asks for it, a BOS.
fn finish<M: Model>(
    g: &GgufFile,
    tok: &mut HfImpl<M>,
    tokens: &[&str],
    types: &[i64],
    model: &str,
) -> Result<()> {
    let bad = |detail: String| Error::format(&g.path, "GGUF", detail);
    let added: Vec<AddedToken> = tokens
        .iter()
        .zip(types)
        .filter(|(_, &t)| t == CONTROL || t == USER_DEFINED)
        .map(|(s, &t)| AddedToken::from(s.to_string(), t == CONTROL).normalized(false))
        .collect();
    tok.add_special_tokens(&added);

    let id = |key: &str| -> Result<Option<u32>> {
        match g.opt_usize(key)? {
            Some(i) if i < tokens.len() => Ok(Some(i as u32)),
            Some(i) => Err(bad(format!(
                "`{key}` is {i}, outside the vocabulary of {}",
                tokens.len()
            ))),
            None => Ok(None),
        }
    };
    let bos = id("tokenizer.ggml.bos_token_id")?;
    id("tokenizer.ggml.eos_token_id")?;
    // llama.cpp's default: SentencePiece vocabularies add BOS, BPE ones do not.
    let add_bos = g
        .opt_bool("tokenizer.ggml.add_bos_token")?
        .unwrap_or(model == "llama");
    if let (true, Some(bos)) = (add_bos, bos) {
        let name = tokens[bos as usize].to_string();
        let post = TemplateProcessing::builder()
            .try_single(format!("{name} $A"))
            .and_then(|b| b.try_pair(format!("{name} $A $B")))
            .map_err(|e| bad(format!("BOS template: {e}")))?
            .special_tokens(vec![(name, bos)])
            .build()
            .map_err(|e| bad(format!("BOS template: {e}")))?;
        tok.with_post_processor(Some(post));
    }
    Ok(())
}

fn vocab_map(tokens: &[&str]) -> Vocab {
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect()
}

/// GPT-2-style byte-level BPE: quill's compact model (`ByteBpe`) in `tokenizers`' pipeline.
fn gpt2_bpe(g: &GgufFile, tokens: &[&str]) -> Result<BpeTokenizer> {
    let bad = |detail: String| Error::format(&g.path, "GGUF", detail);
    let merges = g.str_array("tokenizer.ggml.merges")?;
    let pre = g.opt_str("tokenizer.ggml.pre")?.unwrap_or("default");
    let llama3 = matches!(pre, "llama3" | "llama-v3" | "llama-bpe");
    // Llama 3 takes a pre-token that is itself in the vocabulary whole (llama.cpp's
    // `ignore_merges`).
    let bpe = ByteBpe::new(tokens, &merges, llama3)
        .map_err(|e| bad(format!("`tokenizer.ggml.merges`: {e}")))?;
    let mut tok = BpeTokenizer::new(bpe);
    let byte_level = |regex: bool| ByteLevel::new(false, true, regex);
    let pre_tok: PreTokenizerWrapper = match pre {
        "default" | "gpt-2" | "gpt2" | "phi-2" | "jina-es" | "jina-de" | "olmo" => {
            byte_level(true).into()
        }
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => {
            Sequence::new(vec![Digits::new(true).into(), byte_level(true).into()]).into()
        }
        "llama3" | "llama-v3" | "llama-bpe" => {
            let split = Split::new(
                SplitPattern::Regex(LLAMA3_REGEX.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| bad(format!("pre-tokenizer regex: {e}")))?;
            Sequence::new(vec![split.into(), byte_level(false).into()]).into()
        }
        other => {
            return Err(Error::Unsupported {
                path: g.path.clone(),
                detail: format!(
                    "`tokenizer.ggml.pre` `{other}`: quill knows gpt-2, smollm/starcoder-style \
                     and llama3 pre-tokenizers"
                ),
            })
        }
    };
    tok.with_pre_tokenizer(Some(pre_tok));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(tok)
}

/// SentencePiece (llama.cpp `llama` vocabulary): BPE whose merges are every pair of pieces that
/// concatenate to another piece, ranked by the merged piece's score.
fn spm(g: &GgufFile, tokens: &[&str], types: &[i64]) -> Result<tokenizers::Tokenizer> {
    let bad = |detail: String| Error::format(&g.path, "GGUF", detail);
    let scores = g.opt_f64_array("tokenizer.ggml.scores")?.ok_or_else(|| {
        bad("missing `tokenizer.ggml.scores` (a SentencePiece vocabulary)".into())
    })?;
    if scores.len() != tokens.len() {
        return Err(bad(format!(
            "`tokenizer.ggml.scores` has {} values for {} tokens",
            scores.len(),
            tokens.len()
        )));
    }
    let vocab = vocab_map(tokens);
    // Candidate merges: split every normal piece at every char boundary.
    let mut merges: Vec<(f64, u32, String, String)> = Vec::new();
    for (i, piece) in tokens.iter().enumerate() {
        if types[i] != 1 {
            continue;
        }
        for (at, _) in piece.char_indices().skip(1) {
            let (a, b) = piece.split_at(at);
            if let (Some(&ia), Some(&ib)) = (vocab.get(a), vocab.get(b)) {
                merges.push((scores[i], ia.max(ib), a.to_string(), b.to_string()));
            }
        }
    }
    merges.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    let merges = merges.into_iter().map(|m| (m.2, m.3)).collect();
    let unk = g
        .opt_usize("tokenizer.ggml.unknown_token_id")?
        .and_then(|i| tokens.get(i))
        .map(|s| s.to_string());
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(u) = unk {
        builder = builder.unk_token(u);
    }
    let bpe = builder
        .build()
        .map_err(|e| bad(format!("SentencePiece vocabulary: {e}")))?;
    let mut tok = tokenizers::Tokenizer::new(bpe);
    let add_space = g
        .opt_bool("tokenizer.ggml.add_space_prefix")?
        .unwrap_or(true);
    let mut norm: Vec<NormalizerWrapper> = Vec::new();
    if add_space {
        norm.push(Prepend::new("▁".into()).into());
    }
    norm.push(
        Replace::new(" ", "▁")
            .map_err(|e| bad(format!("normalizer: {e}")))?
            .into(),
    );
    tok.with_normalizer(Some(tokenizers::normalizers::Sequence::new(norm)));
    let mut dec: Vec<DecoderWrapper> = vec![
        Replace::new("▁", " ")
            .map_err(|e| bad(format!("decoder: {e}")))?
            .into(),
        ByteFallback::default().into(),
        Fuse::default().into(),
    ];
    if add_space {
        dec.push(Strip::new(' ', 1, 0).into());
    }
    tok.with_decoder(Some(DecoderSequence::new(dec)));
    Ok(tok)
}
