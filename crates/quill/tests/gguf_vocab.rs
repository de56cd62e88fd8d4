//! Token ids against llama.cpp's own vocabulary test vectors (`ggml-vocab-*.gguf` with
//! `.inp`/`.out`, from the `llama-cpp-python==0.3.36` sdist, `vendor/llama.cpp/models/`).
//! The `.inp` file holds texts separated by `\n__ggml_vocab_test__\n`; the `.out` file one line
//! of ids per text, produced by llama.cpp's `test-tokenizer-0` (no BOS, special text not parsed).
//! gpt-2 and llama-spm are committed in `fixtures/gguf/vocab/`; others (starcoder = SmolLM2's
//! pre-tokenizer, llama-bpe) are used from `target/models/vocab/` when the fetch script put them
//! there, and skipped otherwise.

use std::path::PathBuf;

use quill::Tokenizer;

fn find(name: &str) -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let file = format!("ggml-vocab-{name}.gguf");
    let dirs = [
        root.join("fixtures/gguf/vocab"),
        std::env::var_os("QUILL_MODELS_DIR")
            .map(|d| PathBuf::from(d).join("vocab"))
            .unwrap_or_else(|| root.join("target/models/vocab")),
    ];
    let found = dirs.iter().map(|d| d.join(&file)).find(|p| p.is_file());
    if found.is_none() {
        eprintln!("SKIPPED: {file} not found (run fixtures/gguf/fetch_smollm2.sh)");
    }
    found
}

fn check(name: &str) {
    let Some(path) = find(name) else { return };
    let tok = Tokenizer::from_gguf(&path).unwrap().unwrap();
    let inp = std::fs::read_to_string(path.with_extension("gguf.inp")).unwrap();
    let out = std::fs::read_to_string(path.with_extension("gguf.out")).unwrap();
    let texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    let expected: Vec<&str> = out.lines().collect();
    assert!(texts.len() >= expected.len() && !expected.is_empty());
    let mut failures = Vec::new();
    for (text, line) in texts.iter().zip(&expected) {
        let want: Vec<u32> = line
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        let got = tok.encode(text, false).unwrap();
        if got != want {
            failures.push(format!("{text:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} differ:\n{}",
        failures.len(),
        expected.len(),
        failures.join("\n")
    );
}

#[test]
fn gpt2_vocab_matches_llama_cpp() {
    check("gpt-2");
}

#[test]
fn starcoder_vocab_matches_llama_cpp() {
    check("starcoder");
}

#[test]
fn llama_bpe_vocab_matches_llama_cpp() {
    check("llama-bpe");
}

#[test]
fn llama_spm_vocab_matches_llama_cpp() {
    check("llama-spm");
}

/// A GGUF byte-level vocabulary runs on quill's compact `ByteBpe`; what it saves as a
/// `tokenizer.json` is an ordinary Hugging Face tokenizer with the same ids, and both decode
/// every text back exactly.
#[test]
fn byte_level_vocabularies_save_as_hf_tokenizers_with_the_same_ids() {
    for name in ["gpt-2", "starcoder", "llama-bpe"] {
        let Some(path) = find(name) else { continue };
        let tok = Tokenizer::from_gguf(&path).unwrap().unwrap();
        let Tokenizer::Bpe(t) = &tok else {
            panic!("{name}: {tok:?} is not the compact byte-level BPE")
        };
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("tokenizer.json");
        t.save(&json, false).unwrap();
        let hf = Tokenizer::from_tokenizer_json(&json).unwrap();
        assert_eq!(hf.vocab_size(), tok.vocab_size(), "{name}");
        let inp = std::fs::read_to_string(path.with_extension("gguf.inp")).unwrap();
        for text in inp.split("\n__ggml_vocab_test__\n") {
            let ids = tok.encode(text, false).unwrap();
            assert_eq!(hf.encode(text, false).unwrap(), ids, "{name}: {text:?}");
            assert_eq!(tok.decode(&ids).unwrap(), text, "{name}: {text:?}");
            assert_eq!(hf.decode(&ids).unwrap(), text, "{name}: {text:?}");
        }
    }
}
