//! Hugging Face tokenizers through the `tokenizers` crate.

use std::path::Path;

use tokenizers::models::bpe::BPE;
use tokenizers::{
    AddedToken, DecoderWrapper, Model, ModelWrapper, NormalizerWrapper, PostProcessorWrapper,
    PreTokenizerWrapper, Tokenizer, TokenizerImpl,
};

use crate::error::{Error, Result};

/// A `tokenizers` pipeline with the standard components over model `M` (`tokenizers::Tokenizer`
/// derefs to `HfImpl<ModelWrapper>`).
pub type HfImpl<M> =
    TokenizerImpl<M, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>;

/// Encodes `text` to ids through any pipeline.
pub(super) fn encode<M: Model>(t: &HfImpl<M>, text: &str, add_special: bool) -> Result<Vec<u32>> {
    t.encode(text, add_special)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| Error::Tokenizer(format!("cannot encode: {e}")))
}

pub(super) fn from_tokenizer_json(path: &Path) -> Result<Tokenizer> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Tokenizer::from_bytes(&bytes).map_err(|e| Error::format(path, "tokenizer.json", e.to_string()))
}

/// GPT-2's byte-level BPE from `vocab.json` + `merges.txt`, configured as OpenAI's GPT-2:
/// no prefix space, byte-level decoding, `<|endoftext|>` special when the vocabulary has it.
pub(super) fn from_vocab_merges(vocab: &Path, merges: &Path) -> Result<Tokenizer> {
    use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    let to_str = |p: &Path| {
        p.to_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::config("tokenizer path", format!("{} is not UTF-8", p.display())))
    };
    let bpe = BPE::from_file(&to_str(vocab)?, &to_str(merges)?)
        .build()
        .map_err(|e| Error::format(vocab, "vocab.json/merges.txt", e.to_string()))?;
    let has_eot = bpe.token_to_id("<|endoftext|>").is_some();
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    if has_eot {
        tok.add_special_tokens(&[AddedToken::from("<|endoftext|>", true)]);
    }
    Ok(tok)
}

/// The number of distinct tokens: the model's vocabulary and the added tokens not in it, what
/// `tokenizers::Tokenizer::get_vocab_size(true)` counts, without its copy of the whole
/// vocabulary (50,000 strings for GPT-2: milliseconds and megabytes of heap per call).
pub(super) fn vocab_size<M: Model>(t: &HfImpl<M>) -> usize {
    let model = t.get_model();
    let added = t.get_added_vocabulary().get_vocab();
    let extra = added
        .keys()
        .filter(|content| model.token_to_id(content).is_none())
        .count();
    model.get_vocab_size() + extra
}

pub(super) fn model_kind(t: &Tokenizer) -> &'static str {
    match t.get_model() {
        ModelWrapper::BPE(_) => "BPE",
        ModelWrapper::WordPiece(_) => "WordPiece",
        ModelWrapper::WordLevel(_) => "WordLevel",
        ModelWrapper::Unigram(_) => "Unigram",
    }
}

/// Ids of the special tokens that conventionally end a sequence.
pub(super) fn eos_ids<M: Model>(t: &HfImpl<M>) -> Vec<u32> {
    const NAMES: [&str; 6] = [
        "<|endoftext|>",
        "</s>",
        "<|im_end|>",
        "<|end_of_text|>",
        "<|eot_id|>",
        "<eos>",
    ];
    let mut ids: Vec<u32> = NAMES.iter().filter_map(|n| t.token_to_id(n)).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}
