//! Safetensors files (`model.safetensors`) and sharded checkpoints
//! (`model.safetensors.index.json`). The header is parsed by the `safetensors` crate over a memory
//! map; tensors point into the map (no copy).

use std::collections::BTreeMap;
use std::path::{Component, Path};
use std::sync::Arc;

use safetensors::tensor::Dtype as StDtype;
use safetensors::SafeTensors;

use crate::error::{Error, Result};
use crate::tensor::{Bytes, DType, RawTensor, TensorStore};

const FORMAT: &str = "safetensors";
const INDEX_FORMAT: &str = "safetensors index";

/// Memory-maps a whole file read-only.
pub(crate) fn map_file(path: &Path) -> Result<Arc<memmap2::Mmap>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only. As with every memory-mapped loader, the file must not be
    // truncated or rewritten by another process while quill holds the map.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    Ok(Arc::new(map))
}

fn dtype(path: &Path, name: &str, d: StDtype) -> Result<DType> {
    Ok(match d {
        StDtype::F32 => DType::F32,
        StDtype::F16 => DType::F16,
        StDtype::BF16 => DType::BF16,
        StDtype::F64 => DType::F64,
        StDtype::I64 => DType::I64,
        StDtype::I32 => DType::I32,
        StDtype::U8 => DType::U8,
        other => {
            return Err(Error::Unsupported {
                path: path.to_path_buf(),
                detail: format!(
                    "tensor `{name}` has dtype {other:?}; quill reads F32, F16, BF16, F64, I64, I32 and U8"
                ),
            })
        }
    })
}

/// Loads every tensor of a safetensors file (memory-mapped, no copy).
pub fn load_safetensors(path: &Path) -> Result<TensorStore> {
    Ok(load_safetensors_with_metadata(path)?.0)
}

/// Like [`load_safetensors`], also returning the header's `__metadata__` string map (empty if
/// absent).
pub fn load_safetensors_with_metadata(
    path: &Path,
) -> Result<(TensorStore, BTreeMap<String, String>)> {
    let map = map_file(path)?;
    parse_safetensors(path, Bytes::Mapped(map))
}

/// Parses safetensors held in `bytes` (a mapped file, or bytes compiled into the binary);
/// `path` names them in errors. Tensors view `bytes` without copying.
pub fn parse_safetensors(
    path: &Path,
    bytes: Bytes,
) -> Result<(TensorStore, BTreeMap<String, String>)> {
    let buf: &[u8] = bytes.as_slice();
    if buf.len() < 8 {
        return Err(Error::format(
            path,
            FORMAT,
            format!(
                "file is {} bytes; expected at least the 8-byte header length",
                buf.len()
            ),
        ));
    }
    let (n, meta) = SafeTensors::read_metadata(buf).map_err(|e| {
        Error::format(
            path,
            FORMAT,
            format!("bad header ({e:?}); expected a JSON header whose tensors exactly fill the file (truncated?)"),
        )
    })?;
    let data_start = n
        .checked_add(8)
        .ok_or_else(|| Error::format(path, FORMAT, "header length overflows"))?;
    let mut store = TensorStore::new(path);
    for (name, info) in meta.tensors() {
        let dt = dtype(path, &name, info.dtype)?;
        if !super::shape_fits(&info.shape) {
            return Err(Error::tensor(
                path,
                &name,
                format!("shape {:?} overflows", info.shape),
            ));
        }
        let offset = data_start
            .checked_add(info.data_offsets.0)
            .ok_or_else(|| Error::tensor(path, &name, "data offset overflows"))?;
        let t = RawTensor::contiguous(dt, info.shape.clone(), offset, bytes.clone());
        t.check_bounds(path, &name)?;
        store.insert(name, t);
    }
    let metadata = meta
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    Ok((store, metadata))
}

/// Loads a sharded checkpoint from its `model.safetensors.index.json`: every shard named in
/// `weight_map` (relative to the index's folder) is loaded once and merged.
pub fn load_safetensors_index(index_path: &Path) -> Result<TensorStore> {
    let text = std::fs::read_to_string(index_path).map_err(|e| Error::io(index_path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(index_path, INDEX_FORMAT, format!("not valid JSON: {e}")))?;
    let Some(weight_map) = json.get("weight_map").and_then(|w| w.as_object()) else {
        return Err(Error::format(
            index_path,
            INDEX_FORMAT,
            "no `weight_map` object; expected {\"weight_map\": {tensor name: shard file}}",
        ));
    };
    let dir = index_path.parent().unwrap_or_else(|| Path::new("."));
    let mut wanted: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, shard) in weight_map {
        let Some(shard) = shard.as_str() else {
            return Err(Error::format(
                index_path,
                INDEX_FORMAT,
                format!("weight_map[`{name}`] is not a file name string"),
            ));
        };
        let rel = Path::new(shard);
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(Error::format(
                index_path,
                INDEX_FORMAT,
                format!(
                    "weight_map[`{name}`] = `{shard}`; expected a file name relative to the index's folder"
                ),
            ));
        }
        wanted.insert(name, shard);
    }
    let mut shards: BTreeMap<&str, TensorStore> = BTreeMap::new();
    for &shard in wanted.values() {
        if !shards.contains_key(shard) {
            shards.insert(shard, load_safetensors(&dir.join(shard))?);
        }
    }
    let mut store = TensorStore::new(index_path);
    for (name, shard) in wanted {
        let t = shards
            .get_mut(shard)
            .and_then(|s| s.tensors.remove(name))
            .ok_or_else(|| {
                Error::tensor(
                    index_path,
                    name,
                    format!("weight_map places it in shard `{shard}`, which does not contain it"),
                )
            })?;
        store.insert(name.to_string(), t);
    }
    // Tensors present in a shard but absent from weight_map are kept too.
    for (_, s) in shards {
        for (name, t) in s.tensors {
            store.tensors.entry(name).or_insert(t);
        }
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::testutil::TempDir;
    use safetensors::tensor::TensorView;
    use std::collections::HashMap;

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn write_st(path: &Path, tensors: &[(&str, StDtype, Vec<usize>, Vec<u8>)]) {
        let views: Vec<(String, TensorView<'_>)> = tensors
            .iter()
            .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
        let bytes = safetensors::serialize(views, &Some(meta)).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn loads_tensors_mapped_with_metadata() {
        let dir = TempDir::new("st");
        let p = dir.path().join("model.safetensors");
        let bf = [half::bf16::from_f32(1.5), half::bf16::from_f32(-2.0)];
        write_st(
            &p,
            &[
                (
                    "a",
                    StDtype::F32,
                    vec![2, 3],
                    f32_bytes(&[1., 2., 3., 4., 5., 6.]),
                ),
                (
                    "b",
                    StDtype::BF16,
                    vec![2],
                    bf.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ),
                ("ids", StDtype::I64, vec![1], 7i64.to_le_bytes().to_vec()),
            ],
        );
        let (store, meta) = load_safetensors_with_metadata(&p).unwrap();
        assert_eq!(meta.get("format").map(String::as_str), Some("pt"));
        assert_eq!(store.len(), 3);
        let a = store.get("a").unwrap();
        assert!(a.bytes.is_mapped());
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.to_f32().unwrap(), vec![1., 2., 3., 4., 5., 6.]);
        assert_eq!(store.get("b").unwrap().to_f32().unwrap(), vec![1.5, -2.0]);
        assert_eq!(store.get("ids").unwrap().to_f32().unwrap(), vec![7.0]);
    }

    #[test]
    fn truncated_and_garbage_files_are_format_errors() {
        let dir = TempDir::new("st-trunc");
        let p = dir.path().join("model.safetensors");
        write_st(
            &p,
            &[("a", StDtype::F32, vec![4], f32_bytes(&[1., 2., 3., 4.]))],
        );
        let full = std::fs::read(&p).unwrap();
        for cut in [0, 3, 8, 20, full.len() - 1] {
            let q = dir.path().join(format!("cut{cut}.safetensors"));
            std::fs::write(&q, &full[..cut]).unwrap();
            let err = load_safetensors(&q).unwrap_err();
            assert!(matches!(err, Error::Format { .. }), "cut {cut}: {err}");
            assert!(err.to_string().contains(&format!("cut{cut}")), "{err}");
        }
        let q = dir.path().join("garbage.safetensors");
        std::fs::write(&q, b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage").unwrap();
        assert!(matches!(load_safetensors(&q), Err(Error::Format { .. })));
    }

    #[test]
    fn unsupported_dtype_names_tensor() {
        let dir = TempDir::new("st-dtype");
        let p = dir.path().join("m.safetensors");
        write_st(&p, &[("q", StDtype::I8, vec![2], vec![1, 2])]);
        let err = load_safetensors(&p).unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err}");
        assert!(
            err.to_string().contains("`q`") && err.to_string().contains("I8"),
            "{err}"
        );
    }

    #[test]
    fn empty_tensor_with_overflowing_shape_is_an_error() {
        let dir = TempDir::new("st-overflow");
        let p = dir.path().join("m.safetensors");
        let big = 1usize << 40;
        write_st(&p, &[("e", StDtype::F32, vec![0, big, big], vec![])]);
        let err = load_safetensors(&p).unwrap_err().to_string();
        assert!(err.contains("`e`") && err.contains("overflows"), "{err}");
    }

    #[test]
    fn sharded_index_merges_and_checks_names() {
        let dir = TempDir::new("st-index");
        write_st(
            &dir.path().join("s1.safetensors"),
            &[("x", StDtype::F32, vec![1], f32_bytes(&[1.]))],
        );
        write_st(
            &dir.path().join("s2.safetensors"),
            &[
                ("y", StDtype::F32, vec![1], f32_bytes(&[2.])),
                ("z", StDtype::F32, vec![1], f32_bytes(&[3.])),
            ],
        );
        let idx = dir.path().join("model.safetensors.index.json");
        std::fs::write(
            &idx,
            r#"{"metadata":{"total_size":12},"weight_map":{"x":"s1.safetensors","y":"s2.safetensors","z":"s2.safetensors"}}"#,
        )
        .unwrap();
        let store = load_safetensors_index(&idx).unwrap();
        assert_eq!(store.len(), 3);
        assert_eq!(store.get("z").unwrap().to_f32().unwrap(), vec![3.0]);

        std::fs::write(&idx, r#"{"weight_map":{"x":"s2.safetensors"}}"#).unwrap();
        let err = load_safetensors_index(&idx).unwrap_err().to_string();
        assert!(
            err.contains("index.json") && err.contains("`x`") && err.contains("s2.safetensors"),
            "{err}"
        );
        std::fs::write(&idx, r#"{"weight_map":{"x":"../s1.safetensors"}}"#).unwrap();
        assert!(matches!(
            load_safetensors_index(&idx),
            Err(Error::Format { .. })
        ));
        std::fs::write(&idx, r#"{"weight_map":{"x":"missing.safetensors"}}"#).unwrap();
        let err = load_safetensors_index(&idx).unwrap_err().to_string();
        assert!(err.contains("missing.safetensors"), "{err}");
        std::fs::write(&idx, r#"{"metadata":{}}"#).unwrap();
        assert!(matches!(
            load_safetensors_index(&idx),
            Err(Error::Format { .. })
        ));
    }
}
