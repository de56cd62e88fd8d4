use std::collections::BTreeMap;
use std::path::Path;

use super::writer::{write_gguf, TensorOut};
use super::*;

fn sample() -> Vec<u8> {
    let mut md = BTreeMap::new();
    md.insert(
        "general.architecture".into(),
        GgufValue::Str("llama".into()),
    );
    md.insert("llama.block_count".into(), GgufValue::U32(2));
    md.insert(
        "tokenizer.ggml.tokens".into(),
        GgufValue::Array(vec![GgufValue::Str("a".into()), GgufValue::Str("b".into())]),
    );
    let w: Vec<u8> = (0..34 * 2).map(|i| i as u8).collect();
    let f: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
    let tensors = [
        TensorOut {
            name: "w".into(),
            dtype: DType::Q8_0,
            shape: vec![2, 32],
            data: &w,
        },
        TensorOut {
            name: "n".into(),
            dtype: DType::F32,
            shape: vec![2],
            data: &f,
        },
    ];
    let mut out = Vec::new();
    write_gguf(&mut out, &md, &tensors).unwrap();
    out
}

#[test]
fn round_trips_metadata_and_tensors() {
    let bytes = sample();
    let g = GgufFile::parse(Path::new("x.gguf"), Bytes::Owned(bytes.into())).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.str("general.architecture").unwrap(), "llama");
    assert_eq!(g.usize("llama.block_count").unwrap(), 2);
    assert_eq!(g.str_array("tokenizer.ggml.tokens").unwrap(), ["a", "b"]);
    let store = g.to_store().unwrap();
    let w = store.get("w").unwrap();
    assert_eq!((w.dtype, w.shape.clone()), (DType::Q8_0, vec![2, 32]));
    assert_eq!(store.get("n").unwrap().to_f32().unwrap(), [1.0, 2.0]);
}

#[test]
fn every_truncation_is_an_error_naming_the_file() {
    let bytes = sample();
    let g = GgufFile::parse(Path::new("t.gguf"), Bytes::Owned(bytes.clone().into())).unwrap();
    // The end of the last tensor's data (what follows is alignment padding).
    let end = g.data_offset + g.tensors[1].offset as usize + 8;
    for n in 0..end {
        let r = GgufFile::parse(
            Path::new("t.gguf"),
            Bytes::Owned(bytes[..n].to_vec().into()),
        )
        .and_then(|g| g.to_store().map(|_| ()));
        let e = r.expect_err(&format!("truncated at {n}"));
        assert!(e.to_string().contains("t.gguf"), "{e}");
    }
}

#[test]
fn rejects_bad_magic_version_and_types() {
    let mut b = sample();
    b[0] = b'X';
    let e = GgufFile::parse(Path::new("m.gguf"), Bytes::Owned(b.into())).unwrap_err();
    assert!(e.to_string().contains("magic"), "{e}");
    let mut b = sample();
    b[4] = 1;
    let e = GgufFile::parse(Path::new("v.gguf"), Bytes::Owned(b.into())).unwrap_err();
    assert!(e.to_string().contains("version 1"), "{e}");
    let g = GgufFile::parse(Path::new("k.gguf"), Bytes::Owned(sample().into())).unwrap();
    let e = g.usize("general.architecture").unwrap_err();
    assert!(e.to_string().contains("general.architecture"), "{e}");
}

#[test]
fn random_bytes_never_panic() {
    let base = sample();
    let mut state = 0x9e3779b97f4a7c15u64;
    for _ in 0..2000 {
        let mut b = base.clone();
        for _ in 0..4 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let i = (state as usize) % b.len();
            b[i] = (state >> 32) as u8;
        }
        if let Ok(g) = GgufFile::parse(Path::new("r.gguf"), Bytes::Owned(b.into())) {
            let _ = g.to_store();
        }
    }
}
