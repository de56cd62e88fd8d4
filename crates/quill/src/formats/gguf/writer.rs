//! Writes GGUF version 3 files (used by `quill convert` and by tests).

use std::collections::BTreeMap;
use std::io::Write;

use super::{ggml_type_of, GgufValue, DEFAULT_ALIGNMENT};
use crate::tensor::DType;

/// A tensor to write: its bytes must already be in `dtype`'s on-disk layout.
pub struct TensorOut<'a> {
    pub name: String,
    pub dtype: DType,
    /// Logical shape, outermost first.
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.push(*x as u8),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(*x as u8),
        GgufValue::Str(s) => put_str(out, s),
        GgufValue::Array(a) => {
            let ety = a.first().map_or(4, GgufValue::type_id);
            out.extend_from_slice(&ety.to_le_bytes());
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for x in a {
                put_value(out, x);
            }
        }
        GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

/// Serialises a GGUF v3 file to `w`. Arrays must hold values of one type. Returns an error
/// message for a dtype GGUF cannot hold.
pub fn write_gguf(
    w: &mut impl Write,
    metadata: &BTreeMap<String, GgufValue>,
    tensors: &[TensorOut<'_>],
) -> std::io::Result<()> {
    let align = DEFAULT_ALIGNMENT;
    let mut head = Vec::new();
    head.extend_from_slice(b"GGUF");
    head.extend_from_slice(&3u32.to_le_bytes());
    head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    let kvs: Vec<_> = metadata
        .iter()
        .filter(|(k, _)| k.as_str() != "general.alignment")
        .collect();
    head.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        put_str(&mut head, k);
        head.extend_from_slice(&v.type_id().to_le_bytes());
        put_value(&mut head, v);
    }
    let mut offset = 0u64;
    for t in tensors {
        let ty = ggml_type_of(t.dtype).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("GGUF has no type for {} (tensor `{}`)", t.dtype, t.name),
            )
        })?;
        put_str(&mut head, &t.name);
        head.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
        for &d in t.shape.iter().rev() {
            head.extend_from_slice(&(d as u64).to_le_bytes());
        }
        head.extend_from_slice(&ty.to_le_bytes());
        head.extend_from_slice(&offset.to_le_bytes());
        offset = (offset + t.data.len() as u64).div_ceil(align as u64) * align as u64;
    }
    head.resize(head.len().div_ceil(align) * align, 0);
    w.write_all(&head)?;
    for t in tensors {
        w.write_all(t.data)?;
        let pad = t.data.len().div_ceil(align) * align - t.data.len();
        w.write_all(&vec![0u8; pad])?;
    }
    Ok(())
}
