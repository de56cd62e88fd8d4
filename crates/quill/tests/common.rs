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

/// The opening of tiny Shakespeare (Coriolanus I.i), the corpus the embedded model was trained
/// on: 999 characters, every one in its 65-character vocabulary.
pub const SHAKESPEARE: &str = "First Citizen:
Before we proceed any further, hear me speak.

All:
Speak, speak.

First Citizen:
You are all resolved rather to die than to famish?

All:
Resolved. resolved.

First Citizen:
First, you know Caius Marcius is chief enemy to the people.

All:
We know't, we know't.

First Citizen:
Let us kill him, and we'll have corn at our own price.
Is't a verdict?

All:
No more talking on't; let it be done: away, away!

Second Citizen:
One word, good citizens.

First Citizen:
We are accounted poor citizens, the patricians good.
What authority surfeits on would relieve us: if they
would yield us but the superfluity, while it were
wholesome, we might guess they relieved us humanely;
but they think we are too dear: the leanness that
afflicts us, the object of our misery, is as an
inventory to particularise their abundance; our
sufferance is a gain to them Let us revenge this with
our pikes, ere we become rakes: for the gods know I
speak this in hunger for bread, not in thirst for revenge.
";
