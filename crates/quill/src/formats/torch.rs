//! PyTorch zip checkpoints (`torch.save` since 1.6: nanoGPT's `ckpt.pt`, HF `pytorch_model.bin`).
//!
//! The archive holds `<prefix>/data.pkl` (the pickled object graph) and one entry
//! `<prefix>/data/<key>` per storage. Persistent ids `('storage', storage_type, key, location,
//! numel)` name the storages; `_rebuild_tensor_v2` makes views of them. Stored (uncompressed)
//! entries are sliced straight out of the memory map; compressed ones are read into memory. Each
//! storage is loaded once however many tensors view it (tied weights).

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::Path;
use std::sync::Arc;

use zip::{CompressionMethod, ZipArchive};

use super::pickle::{load_pickle_bytes, torch_storage};
use super::pyobj::PyValue;
use super::safetensors::map_file;
use crate::error::{Error, Result};
use crate::tensor::{Bytes, DType, RawTensor, TensorStore};

const FORMAT: &str = "PyTorch checkpoint";

/// First bytes of a legacy (pre-1.6) `torch.save` file: a pickle of the magic number
/// 0x1950a86a20f9469cfc6c (PROTO 2, LONG1 10 bytes).
const LEGACY_MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";

/// The element type a legacy storage class name stands for.
fn storage_dtype(class: &str) -> Option<DType> {
    Some(match class.strip_prefix("torch.")? {
        "FloatStorage" => DType::F32,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "DoubleStorage" => DType::F64,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        // Bool is one byte per element, 0 or 1.
        "ByteStorage" | "BoolStorage" | "UntypedStorage" => DType::U8,
        _ => return None,
    })
}

/// An archive entry's bytes: `bytes[start..start + len]`.
struct Entry {
    bytes: Bytes,
    start: usize,
    len: usize,
}

impl Entry {
    fn slice(&self) -> &[u8] {
        let all = self.bytes.as_slice();
        // Checked when the entry was made; an empty slice can only follow a bug.
        all.get(self.start..self.start.saturating_add(self.len))
            .unwrap_or_default()
    }
}

struct Archive<'m> {
    path: &'m Path,
    map: &'m Arc<memmap2::Mmap>,
    zip: ZipArchive<Cursor<&'m [u8]>>,
}

impl Archive<'_> {
    fn entry(&mut self, index: usize, name: &str) -> Result<Entry> {
        let path = self.path;
        let zerr = |e: zip::result::ZipError| {
            Error::format(path, FORMAT, format!("archive entry `{name}`: {e}"))
        };
        let (method, size, csize, data_start, encrypted) = {
            let f = self.zip.by_index_raw(index).map_err(zerr)?;
            (
                f.compression(),
                f.size(),
                f.compressed_size(),
                f.data_start(),
                f.encrypted(),
            )
        };
        if encrypted {
            return Err(Error::Unsupported {
                path: path.to_path_buf(),
                detail: format!("archive entry `{name}` is encrypted"),
            });
        }
        let file_len = self.map.len() as u64;
        if method == CompressionMethod::Stored {
            let fits = data_start.checked_add(size).is_some_and(|e| e <= file_len);
            if size != csize || !fits {
                return Err(Error::format(
                    path,
                    FORMAT,
                    format!(
                        "archive entry `{name}` claims {size} bytes at offset {data_start} but the \
                         file is {file_len} bytes (truncated?)"
                    ),
                ));
            }
            return Ok(Entry {
                bytes: Bytes::Mapped(self.map.clone()),
                start: data_start as usize,
                len: size as usize,
            });
        }
        // Deflate expands at most ~1032:1; refuse sizes no real entry of this length can have.
        if size > csize.saturating_mul(1100).saturating_add(1024)
            || size > file_len.saturating_mul(1100)
        {
            return Err(Error::format(
                path,
                FORMAT,
                format!("archive entry `{name}` claims {size} bytes from {csize} compressed bytes"),
            ));
        }
        let mut buf = Vec::with_capacity(size.min(1 << 26) as usize);
        let f = self.zip.by_index(index).map_err(zerr)?;
        // Read one byte past the declared size so the CRC check at end of entry runs.
        f.take(size + 1)
            .read_to_end(&mut buf)
            .map_err(|e| Error::format(path, FORMAT, format!("archive entry `{name}`: {e}")))?;
        if buf.len() as u64 != size {
            return Err(Error::format(
                path,
                FORMAT,
                format!(
                    "archive entry `{name}` decompressed to {} bytes; its header says {size}",
                    buf.len()
                ),
            ));
        }
        let len = buf.len();
        Ok(Entry {
            bytes: Bytes::Owned(Arc::new(buf)),
            start: 0,
            len,
        })
    }
}

/// Loads a PyTorch zip checkpoint into its object graph, tensors included (as views of memory-
/// mapped storages).
pub fn load_torch_file(path: &Path) -> Result<PyValue> {
    let map = map_file(path)?;
    let head: &[u8] = &map[..map.len().min(LEGACY_MAGIC.len())];
    if !head.starts_with(b"PK\x03\x04") {
        if head.starts_with(LEGACY_MAGIC) || head.first() == Some(&0x80) {
            return Err(Error::Unsupported {
                path: path.to_path_buf(),
                detail: "legacy torch.save format; re-save with torch>=1.6".into(),
            });
        }
        return Err(Error::format(
            path,
            FORMAT,
            "not a zip archive; expected the bytes PK\\x03\\x04 at offset 0",
        ));
    }
    let zip = ZipArchive::new(Cursor::new(&map[..])).map_err(|e| {
        Error::format(
            path,
            FORMAT,
            format!("not a valid zip archive ({e}); truncated?"),
        )
    })?;
    let mut ar = Archive {
        path,
        map: &map,
        zip,
    };
    // The archive folder's name varies ("archive/", "ckpt/", ...): prefer the shallowest.
    let pkl_name = ar
        .zip
        .file_names()
        .filter(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
        .min_by_key(|n| (n.matches('/').count(), n.len()))
        .map(str::to_owned)
        .ok_or_else(|| Error::format(path, FORMAT, "no data.pkl entry in the archive"))?;
    let prefix = pkl_name[..pkl_name.len() - "data.pkl".len()].to_string();
    if let Some(i) = ar.zip.index_for_name(&format!("{prefix}byteorder")) {
        let e = ar.entry(i, "byteorder")?;
        let order = e.slice();
        if order != b"little" {
            return Err(Error::Unsupported {
                path: path.to_path_buf(),
                detail: format!(
                    "byteorder `{}`; quill reads little-endian checkpoints",
                    String::from_utf8_lossy(order)
                ),
            });
        }
    }
    let pkl_index = ar
        .zip
        .index_for_name(&pkl_name)
        .ok_or_else(|| Error::format(path, FORMAT, "no data.pkl entry in the archive"))?;
    let pkl = ar.entry(pkl_index, &pkl_name)?;
    let pkl_bytes = pkl.slice();

    let mut storages: HashMap<String, PyValue> = HashMap::new();
    let mut persistent = |pid: &PyValue| -> Result<PyValue> {
        let (dtype, class, key, numel) = parse_storage_id(path, pid)?;
        if let Some(s) = storages.get(&key) {
            return Ok(s.clone());
        }
        let name = format!("storage {key}");
        let dtype = dtype.ok_or_else(|| Error::Unsupported {
            path: path.to_path_buf(),
            detail: format!("{name} has type {class}; quill reads Float, Half, BFloat16, Double, Long, Int, Byte and Bool storages"),
        })?;
        let entry_name = format!("{prefix}data/{key}");
        let index = ar.zip.index_for_name(&entry_name).ok_or_else(|| {
            Error::tensor(
                path,
                &name,
                format!("archive entry `{entry_name}` is missing"),
            )
        })?;
        let e = ar.entry(index, &entry_name)?;
        let need = numel
            .checked_mul(dtype.size())
            .ok_or_else(|| Error::tensor(path, &name, format!("{numel} elements overflow")))?;
        if e.len < need {
            return Err(Error::tensor(
                path,
                &name,
                format!(
                    "archive entry `{entry_name}` holds {} bytes but {numel} {dtype} elements need \
                     {need} (file truncated?)",
                    e.len
                ),
            ));
        }
        let raw = RawTensor::contiguous(dtype, vec![numel], e.start, e.bytes);
        raw.check_bounds(path, &name)?;
        let v = torch_storage(&key, raw);
        storages.insert(key, v.clone());
        Ok(v)
    };
    load_pickle_bytes(path, pkl_bytes, &mut persistent)
}

/// Parses `('storage', storage_type, key, location, numel)`.
fn parse_storage_id(path: &Path, pid: &PyValue) -> Result<(Option<DType>, String, String, usize)> {
    let bad = || {
        Error::format(
            path,
            FORMAT,
            format!(
                "persistent id is a {}; expected ('storage', storage_type, key, location, numel)",
                pid.type_name()
            ),
        )
    };
    let PyValue::Tuple(items) = pid else {
        return Err(bad());
    };
    match items.as_slice() {
        [PyValue::Str(tag), PyValue::Object { class, .. }, key, _location, PyValue::Int(numel)]
            if tag == "storage" =>
        {
            let key = match key {
                PyValue::Str(s) => s.clone(),
                PyValue::Int(i) => i.to_string(),
                _ => return Err(bad()),
            };
            if key.is_empty() || key.contains(['/', '\\']) || key.contains("..") {
                return Err(Error::format(
                    path,
                    FORMAT,
                    format!("storage key `{key}`; expected a plain entry name"),
                ));
            }
            let numel = usize::try_from(*numel).map_err(|_| {
                Error::format(
                    path,
                    FORMAT,
                    format!("storage {key}: numel {numel} is negative"),
                )
            })?;
            Ok((storage_dtype(class), class.clone(), key, numel))
        }
        _ => Err(bad()),
    }
}

/// Collects the tensors of a state dict (`name → tensor`); other values are skipped.
pub fn state_dict_to_store(path: &Path, v: &PyValue) -> Result<TensorStore> {
    let items = match v {
        PyValue::Dict(items) => items,
        PyValue::Object { state, .. } if matches!(**state, PyValue::Dict(_)) => {
            return state_dict_to_store(path, state)
        }
        other => {
            return Err(Error::format(
                path,
                FORMAT,
                format!(
                    "state dict is a {}; expected a dict of tensor name → tensor",
                    other.type_name()
                ),
            ))
        }
    };
    let mut store = TensorStore::new(path);
    for (k, val) in items {
        let PyValue::Tensor(t) = val else { continue };
        let PyValue::Str(name) = k else {
            return Err(Error::format(
                path,
                FORMAT,
                format!(
                    "state dict key is a {}; expected a tensor name string",
                    k.type_name()
                ),
            ));
        };
        store.insert(name.clone(), t.clone());
    }
    Ok(store)
}

#[cfg(test)]
#[path = "torch_tests.rs"]
mod tests;
