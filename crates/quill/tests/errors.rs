//! Every kind of bad input gives a clear, typed error that names what is wrong; none panics.

mod common;

use std::io::Write;
use std::path::Path;

use common::fixtures;
use quill::load::LoadOptions;
use quill::{Error, GenerateParams, Generation, ModelSource};

fn load_path(p: &Path) -> Result<quill::LoadedModel, Error> {
    quill::load(&ModelSource::Path(p.to_path_buf()), &LoadOptions::default())
}

fn err_text(r: Result<quill::LoadedModel, Error>) -> (Error, String) {
    let e = r.expect_err("loading must fail");
    let s = e.to_string();
    (e, s)
}

/// A copy of the `gpt2-bias-tanh` Hugging Face folder that a test may damage.
fn hf_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("models/gpt2-bias-tanh/hf-safetensors");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    dir
}

#[test]
fn missing_file_names_the_path() {
    let (e, s) = err_text(load_path(Path::new("/no/such/model.safetensors")));
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(s.contains("/no/such/model.safetensors"), "{s}");
}

#[test]
fn truncated_safetensors_is_a_format_error() {
    let dir = hf_copy();
    let f = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let (e, s) = err_text(load_path(dir.path()));
    assert!(matches!(e, Error::Format { .. }), "{e:?}");
    assert!(
        s.contains("model.safetensors") && s.contains("truncated"),
        "{s}"
    );
}

#[test]
fn zip_without_data_pkl_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ckpt.pt");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&p).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/version", opts).unwrap();
    z.write_all(b"3\n").unwrap();
    z.finish().unwrap();
    let (e, s) = err_text(load_path(&p));
    assert!(matches!(e, Error::Format { .. }), "{e:?}");
    assert!(s.contains("ckpt.pt") && s.contains("data.pkl"), "{s}");
}

#[test]
fn unknown_architecture_names_the_model_type() {
    let dir = hf_copy();
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("\"gpt2\"", "\"bert\"")).unwrap();
    let (e, s) = err_text(load_path(dir.path()));
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    assert!(s.contains("bert") && s.contains("config.json"), "{s}");
}

#[test]
fn missing_tensor_names_the_tensor() {
    let dir = hf_copy();
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["n_layer"] = serde_json::json!(json["n_layer"].as_u64().unwrap() + 1);
    std::fs::write(&cfg, json.to_string()).unwrap();
    let (e, s) = err_text(load_path(dir.path()));
    assert!(matches!(e, Error::Tensor { .. }), "{e:?}");
    assert!(
        s.contains("h.2.ln_1.weight") && s.contains("missing"),
        "{s}"
    );
}

#[test]
fn tokenizer_larger_than_the_model_vocabulary_is_refused() {
    let opts = LoadOptions {
        tokenizer: Some(fixtures().join("tokenizers/gpt2/tokenizer.json")),
        ..LoadOptions::default()
    };
    let src = ModelSource::Path(fixtures().join("models/gpt2-bias-tanh/hf-safetensors"));
    let e = quill::load(&src, &opts).expect_err("50257-token tokenizer on a 96-row model");
    let s = e.to_string();
    assert!(s.contains("50257") && s.contains("96"), "{s}");
}

#[test]
fn non_model_files_are_identified() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("weights.safetensors");
    std::fs::write(&junk, b"definitely not a model").unwrap();
    let (e, _) = err_text(load_path(&junk));
    assert!(matches!(e, Error::UnknownFormat { .. }), "{e:?}");
    let gguf = dir.path().join("m.bin");
    std::fs::write(&gguf, b"GGUF\x03\x00\x00\x00rest").unwrap();
    // GGUF is supported: a truncated one is a format error naming the file and the field.
    let (e, s) = err_text(load_path(&gguf));
    assert!(matches!(e, Error::Format { .. }), "{e:?}");
    assert!(s.contains("m.bin") && s.contains("tensor_count"), "{s}");
    let (e, s) = err_text(load_path(dir.path()));
    assert!(matches!(e, Error::UnknownFormat { .. }), "{e:?}");
    assert!(s.contains("config.json") && s.contains("ckpt.pt"), "{s}");
    let meta = fixtures().join("data/shakespeare_char/meta.pkl");
    let (e, s) = err_text(load_path(&meta));
    assert!(matches!(e, Error::UnknownFormat { .. }), "{e:?}");
    assert!(s.contains("pickle"), "{s}");
}

fn char_model() -> quill::LoadedModel {
    load_path(&fixtures().join("models/nanogpt-bias-f32/ckpt.pt")).unwrap()
}

#[test]
fn prompt_of_unknown_characters_is_refused() {
    let m = char_model();
    let tok = m
        .tokenizer
        .as_ref()
        .expect("meta.pkl found through config.dataset");
    let e = tok
        .encode("日本語", true)
        .expect_err("no CJK in Shakespeare's 65 characters");
    assert!(matches!(e, Error::Tokenizer(_)), "{e:?}");
    let s = e.to_string();
    assert!(s.contains("'日'") && s.contains("65"), "{s}");
}

#[test]
fn empty_prompt_is_refused() {
    let m = char_model();
    let tok = m.tokenizer.as_ref().unwrap();
    let e = Generation::new(&m.model, Some(tok), vec![], GenerateParams::default())
        .err()
        .expect("empty prompt");
    assert!(
        matches!(e, Error::Request(_)) && e.to_string().contains("empty"),
        "{e:?}"
    );
}

#[test]
fn prompt_longer_than_the_context_errors_unless_truncation_is_asked() {
    let m = char_model();
    let ctx = m.model.config().context_length;
    let prompt = vec![1u32; ctx + 5];
    let e = Generation::new(&m.model, None, prompt.clone(), GenerateParams::default())
        .err()
        .expect("too long");
    assert!(e.to_string().contains(&format!("{}", ctx + 5)), "{e}");
    let params = GenerateParams {
        truncate_prompt: true,
        max_new_tokens: 3,
        ..GenerateParams::default()
    };
    let mut g = Generation::new(&m.model, None, prompt, params).unwrap();
    match g.next().unwrap().unwrap() {
        quill::Event::Prompt { tokens, dropped } => assert_eq!((tokens, dropped), (ctx, 5)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn out_of_vocabulary_ids_and_bad_sampling_values_are_refused() {
    let m = char_model();
    let v = m.model.config().vocab_size as u32;
    let mut cache = m.model.new_cache(8);
    let e = m
        .model
        .forward(
            &[v],
            &mut cache,
            &mut Default::default(),
            quill::Logits::Last,
            None,
        )
        .expect_err("id == vocab");
    assert!(e.to_string().contains("vocabulary"), "{e}");
    assert_eq!(
        cache.len(),
        0,
        "a failed forward leaves the cache as it was"
    );
    for (t, k, p) in [
        (-0.5, None, None),
        (1.0, Some(0), None),
        (1.0, None, Some(1.01)),
    ] {
        let params = GenerateParams {
            sampler: quill::SamplerConfig {
                temperature: t,
                top_k: k,
                top_p: p,
                ..quill::SamplerConfig::default()
            },
            ..GenerateParams::default()
        };
        let r = Generation::new(&m.model, None, vec![1], params);
        assert!(matches!(r, Err(Error::Config { .. })), "{t} {k:?} {p:?}");
    }
}
