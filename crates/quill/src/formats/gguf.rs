//! llama.cpp's GGUF format (versions 2 and 3), read from a memory map.
//!
//! Layout (little-endian): `"GGUF"`, `version: u32`, `tensor_count: u64`, `kv_count: u64`; then
//! `kv_count` metadata entries (`key: string`, `type: u32`, value); then `tensor_count` tensor
//! infos (`name: string`, `n_dims: u32`, `dims: [u64; n_dims]` fastest-varying first,
//! `ggml_type: u32`, `offset: u64` relative to the data section); then padding to
//! `general.alignment` (default 32) and the data section. A string is `len: u64` + UTF-8 bytes.
//!
//! Nothing is copied: tensors are views into the map. Every malformed or truncated field is
//! reported with the file, the key or tensor name, and what was expected.

mod value;
pub mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::tensor::{Bytes, DType, RawTensor, TensorStore};

use value::Cursor;
pub use value::GgufValue;

const MAGIC: &[u8; 4] = b"GGUF";
/// Alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
const FORMAT: &str = "GGUF";

/// One tensor's entry in the header.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// Dimensions as GGUF stores them: fastest-varying first (`[cols, rows]` for a matrix).
    pub dims: Vec<u64>,
    /// The ggml type number.
    pub ggml_type: u32,
    /// Byte offset from the start of the data section.
    pub offset: u64,
}

impl GgufTensorInfo {
    /// The logical shape, outermost first (`[rows, cols]` for a matrix).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// The ggml type numbers quill reads, with their names (for messages).
pub fn ggml_type_name(t: u32) -> &'static str {
    match t {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        30 => "BF16",
        _ => "unknown",
    }
}

/// The quill dtype of a ggml type number, if quill supports it.
pub fn dtype_of(t: u32) -> Option<DType> {
    Some(match t {
        0 => DType::F32,
        1 => DType::F16,
        2 => DType::Q4_0,
        3 => DType::Q4_1,
        8 => DType::Q8_0,
        12 => DType::Q4K,
        13 => DType::Q5K,
        14 => DType::Q6K,
        26 => DType::I32,
        27 => DType::I64,
        28 => DType::F64,
        30 => DType::BF16,
        _ => return None,
    })
}

/// The ggml type number of a quill dtype (for writing).
pub fn ggml_type_of(d: DType) -> Option<u32> {
    (0..31).find(|&t| dtype_of(t) == Some(d))
}

/// A parsed GGUF file.
#[derive(Debug, Clone)]
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, GgufValue>,
    pub tensors: Vec<GgufTensorInfo>,
    pub alignment: usize,
    /// Absolute byte offset of the data section.
    pub data_offset: usize,
    pub bytes: Bytes,
}

impl GgufFile {
    /// Memory-maps and parses `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let map = super::safetensors::map_file(path)?;
        Self::parse(path, Bytes::Mapped(map))
    }

    /// Parses GGUF `bytes` (read from `path`, named in errors).
    pub fn parse(path: &Path, bytes: Bytes) -> Result<Self> {
        let err = |d: String| Error::format(path, FORMAT, d);
        let data = bytes.as_slice();
        let mut c = Cursor::new(path, data);
        let magic = c.take(4, "magic")?;
        if magic != MAGIC {
            return Err(err(format!("magic {magic:?}, expected \"GGUF\"")));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(err(format!(
                "version {version}; quill reads GGUF versions 2 and 3"
            )));
        }
        let n_tensors = c.u64("tensor_count")?;
        let n_kv = c.u64("kv_count")?;
        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key #{i}"))?;
            let ty = c.u32(&key)?;
            let v = c.value(ty, &key, 0)?;
            metadata.insert(key, v);
        }
        let mut tensors = Vec::with_capacity((n_tensors as usize).min(c.remaining() / 24));
        for i in 0..n_tensors {
            let name = c.string(&format!("tensor info #{i} name"))?;
            let n_dims = c.u32(&name)?;
            if n_dims > 4 {
                return Err(Error::tensor(
                    path,
                    &name,
                    format!("{n_dims} dimensions, expected at most 4"),
                ));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&name)?);
            }
            let ggml_type = c.u32(&name)?;
            let offset = c.u64(&name)?;
            tensors.push(GgufTensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a as usize,
                _ => {
                    return Err(err(format!(
                        "`general.alignment` is {v:?}, expected a power of two"
                    )))
                }
            },
        };
        let mut data_offset = c.pos().div_ceil(alignment) * alignment;
        if tensors.is_empty() {
            // Vocabulary-only files end right after the header, unpadded.
            data_offset = data_offset.min(data.len());
        }
        if data_offset > data.len() {
            return Err(err(format!(
                "the data section starts at byte {data_offset} but the file has {} bytes \
                 (truncated?)",
                data.len()
            )));
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
            bytes,
        })
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    fn wrong(&self, key: &str, v: &GgufValue, expected: &str) -> Error {
        Error::format(
            &self.path,
            FORMAT,
            format!("`{key}` is {}, expected {expected}", v.describe()),
        )
    }

    fn missing(&self, key: &str, expected: &str) -> Error {
        Error::format(&self.path, FORMAT, format!("missing `{key}` ({expected})"))
    }

    /// A required string.
    pub fn str(&self, key: &str) -> Result<&str> {
        let v = self.get(key).ok_or_else(|| self.missing(key, "a string"))?;
        v.as_str().ok_or_else(|| self.wrong(key, v, "a string"))
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        self.get(key)
            .map(|v| v.as_str().ok_or_else(|| self.wrong(key, v, "a string")))
            .transpose()
    }

    /// A required non-negative integer (any integer type).
    pub fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| self.missing(key, "an integer"))
    }

    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .and_then(|x| usize::try_from(x).ok())
                    .ok_or_else(|| self.wrong(key, v, "a non-negative integer"))
            })
            .transpose()
    }

    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .map(|x| x as f32)
                    .ok_or_else(|| self.wrong(key, v, "a number"))
            })
            .transpose()
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.wrong(key, v, "true or false"))
            })
            .transpose()
    }

    /// A required array of strings.
    pub fn str_array(&self, key: &str) -> Result<Vec<&str>> {
        let v = self
            .get(key)
            .ok_or_else(|| self.missing(key, "an array of strings"))?;
        let arr = v
            .as_array()
            .ok_or_else(|| self.wrong(key, v, "an array of strings"))?;
        arr.iter()
            .map(|x| {
                x.as_str()
                    .ok_or_else(|| self.wrong(key, v, "an array of strings"))
            })
            .collect()
    }

    /// An optional array of numbers.
    pub fn opt_f64_array(&self, key: &str) -> Result<Option<Vec<f64>>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let arr = v
            .as_array()
            .ok_or_else(|| self.wrong(key, v, "an array of numbers"))?;
        arr.iter()
            .map(|x| {
                x.as_f64()
                    .ok_or_else(|| self.wrong(key, v, "an array of numbers"))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// Every tensor as a view into the file, checked against the file's size.
    pub fn to_store(&self) -> Result<TensorStore> {
        let mut store = TensorStore::new(&self.path);
        for t in &self.tensors {
            let dtype = dtype_of(t.ggml_type).ok_or_else(|| Error::Unsupported {
                path: self.path.clone(),
                detail: format!(
                    "tensor `{}` has ggml type {} ({}); quill reads F32, F16, BF16, Q8_0, \
                         Q4_0, Q4_1, Q4_K, Q5_K and Q6_K",
                    t.name,
                    ggml_type_name(t.ggml_type),
                    t.ggml_type
                ),
            })?;
            let shape = t.shape();
            let bad = |d: String| Error::tensor(&self.path, &t.name, d);
            if !super::shape_fits(&shape) || t.dims.iter().any(|&d| d > usize::MAX as u64) {
                return Err(bad(format!("dimensions {:?} overflow", t.dims)));
            }
            if t.offset % self.alignment as u64 != 0 {
                return Err(bad(format!(
                    "data offset {} is not a multiple of the alignment {}",
                    t.offset, self.alignment
                )));
            }
            let offset = usize::try_from(t.offset)
                .ok()
                .and_then(|o| o.checked_add(self.data_offset))
                .ok_or_else(|| bad(format!("data offset {} overflows", t.offset)))?;
            let rt = RawTensor::contiguous(dtype, shape, offset, self.bytes.clone());
            rt.check_bounds(&self.path, &t.name)?;
            store.insert(t.name.clone(), rt);
        }
        Ok(store)
    }
}

#[cfg(test)]
mod tests;
