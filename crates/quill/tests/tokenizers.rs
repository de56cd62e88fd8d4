//! Tokenizer parity, token for token, against tiktoken (`gpt2`) and Hugging Face `tokenizers`
//! on the varied texts in `fixtures/tokenizers/cases.json` (made by the fixture script), plus
//! streaming decode that never breaks a character.

mod common;

use common::fixtures;
use quill::Tokenizer;

fn cases() -> serde_json::Value {
    let p = fixtures().join("tokenizers/cases.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn texts(c: &serde_json::Value) -> Vec<String> {
    c["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

/// Decodes through the streaming detokenizer, checking that no chunk holds a broken character.
fn stream_decode(tok: &Tokenizer, ids: &[u32]) -> String {
    let mut s = tok.stream();
    let mut out = String::new();
    for &id in ids {
        let chunk = s.push(id).unwrap();
        assert!(
            !chunk.contains('\u{FFFD}'),
            "broken character streamed: {chunk:?}"
        );
        out.push_str(&chunk);
    }
    out.push_str(&s.finish());
    out
}

fn gpt2_tokenizers() -> Vec<(&'static str, Tokenizer)> {
    let dir = fixtures().join("tokenizers/gpt2");
    vec![
        ("tiktoken built-in", Tokenizer::gpt2().unwrap()),
        (
            "tokenizer.json",
            Tokenizer::from_tokenizer_json(&dir.join("tokenizer.json")).unwrap(),
        ),
        (
            "vocab.json+merges.txt",
            Tokenizer::from_vocab_merges(&dir.join("vocab.json"), &dir.join("merges.txt")).unwrap(),
        ),
    ]
}

#[test]
fn gpt2_ids_match_tiktoken_and_hf() {
    let c = cases();
    let texts = texts(&c);
    let want_tiktoken = c["gpt2"]["tiktoken"].as_array().unwrap();
    let want_hf = c["gpt2"]["hf"].as_array().unwrap();
    assert!(texts.len() >= 25);
    for (name, tok) in gpt2_tokenizers() {
        assert_eq!(tok.vocab_size(), 50257, "{name}");
        for (i, text) in texts.iter().enumerate() {
            let got = tok.encode(text, true).unwrap();
            assert_eq!(
                got,
                ids(&want_tiktoken[i]),
                "{name} vs tiktoken on {text:?}"
            );
            assert_eq!(got, ids(&want_hf[i]), "{name} vs HF on {text:?}");
        }
    }
}

/// `vocab_size` counts what `tokenizers`' own `get_vocab_size(true)` counts (the model's
/// vocabulary and the added tokens not in it) without copying the vocabulary: for the GPT-2
/// files, after adding a token the vocabulary already has, and after adding a new one.
#[test]
fn hf_vocab_size_counts_as_tokenizers_does() {
    for (name, tok) in gpt2_tokenizers() {
        let Tokenizer::Hf(mut t) = tok else { continue };
        assert_eq!(
            Tokenizer::Hf(t.clone()).vocab_size(),
            t.get_vocab_size(true),
            "{name}"
        );
        t.add_special_tokens(&[tokenizers::AddedToken::from("hello", true)]);
        assert_eq!(
            Tokenizer::Hf(t.clone()).vocab_size(),
            50257,
            "{name}: in the vocabulary"
        );
        t.add_special_tokens(&[tokenizers::AddedToken::from("<|quill-new|>", true)]);
        let n = Tokenizer::Hf(t.clone()).vocab_size();
        assert_eq!(
            (n, n),
            (t.get_vocab_size(true), 50258),
            "{name}: a new token"
        );
    }
}

#[test]
fn gpt2_streaming_decode_round_trips_exactly() {
    let c = cases();
    for (name, tok) in gpt2_tokenizers() {
        for text in texts(&c) {
            let ids = tok.encode(&text, true).unwrap();
            // Hugging Face tokenizers hide special tokens when decoding for display.
            let want = match tok {
                Tokenizer::Hf(_) => text.replace("<|endoftext|>", ""),
                _ => text.clone(),
            };
            assert_eq!(stream_decode(&tok, &ids), want, "{name}");
            assert_eq!(tok.decode(&ids).unwrap(), want, "{name}");
        }
    }
}

#[test]
fn llama_sentencepiece_ids_match_hf() {
    let c = cases();
    let tok =
        Tokenizer::from_tokenizer_json(&fixtures().join("tokenizers/llama-sp/tokenizer.json"))
            .unwrap();
    let lc = &c["llama-sp"];
    for (i, text) in texts(&c).iter().enumerate() {
        assert_eq!(
            tok.encode(text, false).unwrap(),
            ids(&lc["hf"][i]),
            "without specials: {text:?}"
        );
        let with = ids(&lc["hf_with_special"][i]);
        assert_eq!(
            tok.encode(text, true).unwrap(),
            with,
            "with specials: {text:?}"
        );
        let want = lc["decoded"][i].as_str().unwrap();
        assert_eq!(tok.decode(&with).unwrap(), want, "decode of {text:?}");
        assert_eq!(
            stream_decode(&tok, &with),
            want,
            "stream decode of {text:?}"
        );
    }
    assert_eq!(tok.eos_ids(), vec![2]);
}

#[test]
fn emoji_split_across_byte_tokens_streams_whole() {
    let tok = Tokenizer::gpt2().unwrap();
    let ids = tok.encode("🦀", false).unwrap();
    assert!(
        ids.len() > 1,
        "the crab emoji is several byte tokens in GPT-2"
    );
    let mut s = tok.stream();
    let chunks: Vec<String> = ids.iter().map(|&i| s.push(i).unwrap()).collect();
    assert!(
        chunks[..chunks.len() - 1].iter().all(String::is_empty),
        "{chunks:?}"
    );
    assert_eq!(chunks.last().unwrap(), "🦀");
}

#[test]
fn char_tokenizer_from_meta_pkl() {
    let meta = fixtures().join("data/shakespeare_char/meta.pkl");
    let tok = quill::load::tokenizer_from_file(&meta).unwrap();
    assert_eq!(tok.vocab_size(), 65);
    let text = "ROMEO:\nBut, soft!";
    let ids = tok.encode(text, true).unwrap();
    assert_eq!(ids.len(), text.chars().count());
    assert_eq!(tok.decode(&ids).unwrap(), text);
    // '\n' is id 0 and ' ' id 1 in nanoGPT's sorted character vocabulary.
    assert_eq!(tok.encode("\n ", false).unwrap(), vec![0, 1]);
}
