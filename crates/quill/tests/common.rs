//! Shared helpers for the integration tests: fixture paths, the JSON index and reference tensors.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

pub fn index() -> serde_json::Value {
    let p = std::env::var_os("QUILL_FIXTURE_INDEX")
        .map(PathBuf::from)
        .unwrap_or_else(|| fixtures().join("index.json"));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).expect("index.json parses")
}

/// A reference tensor as f32 or i64 values.
pub enum Ref {
    F32(Vec<usize>, Vec<f32>),
    I64(Vec<usize>, Vec<i64>),
}

impl Ref {
    pub fn f32(&self) -> (&[usize], &[f32]) {
        match self {
            Ref::F32(s, v) => (s, v),
            Ref::I64(..) => panic!("expected f32"),
        }
    }
    pub fn ids(&self) -> Vec<u32> {
        match self {
            Ref::I64(_, v) => v.iter().map(|&x| x as u32).collect(),
            Ref::F32(..) => panic!("expected i64"),
        }
    }
}

pub fn load_refs(rel: &str) -> HashMap<String, Ref> {
    let p = fixtures().join(rel);
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("reference safetensors");
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let shape = view.shape().to_vec();
            let data = view.data();
            let r = match view.dtype() {
                safetensors::Dtype::F32 => Ref::F32(
                    shape,
                    data.chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                ),
                safetensors::Dtype::I64 => Ref::I64(
                    shape,
                    data.chunks_exact(8)
                        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                        .collect(),
                ),
                d => panic!("unexpected dtype {d:?} in {rel}"),
            };
            (name, r)
        })
        .collect()
}

/// Largest |a - b| / (1 + |b|) over all elements (a relative error that stays meaningful for
/// values near zero).
pub fn max_rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs() / (1.0 + (y as f64).abs()))
        .fold(0.0, f64::max)
}
