//! Tests over tiny torch-like zip archives written with the `zip` crate.

use std::io::Write;
use std::path::PathBuf;

use super::*;
use crate::formats::testutil::{Pk, TempDir};

/// Appends `_rebuild_tensor_v2(storage(key), offset, size, stride, False, OrderedDict())`.
fn tensor(
    pk: &mut Pk,
    storage: &str,
    key: &str,
    numel: i64,
    offset: i64,
    size: &[i64],
    stride: &[i64],
) {
    pk.global("torch._utils", "_rebuild_tensor_v2")
        .mark()
        .mark()
        .str("storage")
        .global("torch", storage)
        .str(key)
        .str("cpu")
        .int(numel)
        .tuple()
        .binpersid()
        .int(offset)
        .mark();
    for &s in size {
        pk.int(s);
    }
    pk.tuple().mark();
    for &s in stride {
        pk.int(s);
    }
    pk.tuple()
        .bool(false)
        .global("collections", "OrderedDict")
        .empty_tuple()
        .reduce()
        .tuple()
        .reduce();
}

/// `{'model': OrderedDict(wte.weight, lm_head.weight (tied, same storage), view (transposed
/// 2x2 view at offset 2 of storage 1), h.bias (a Parameter)), 'iter_num': 5,
/// 'model_args': {'n_layer': 1}}`.
fn checkpoint_pickle(numel1: i64, view_offset: i64) -> Vec<u8> {
    let mut pk = Pk::new(2);
    pk.empty_dict().mark().str("model");
    pk.global("collections", "OrderedDict")
        .empty_tuple()
        .reduce()
        .mark();
    pk.str("transformer.wte.weight");
    tensor(&mut pk, "FloatStorage", "0", 6, 0, &[2, 3], &[3, 1]);
    pk.str("lm_head.weight");
    tensor(&mut pk, "FloatStorage", "0", 6, 0, &[2, 3], &[3, 1]);
    pk.str("view");
    tensor(
        &mut pk,
        "FloatStorage",
        "1",
        numel1,
        view_offset,
        &[2, 2],
        &[1, 3],
    );
    pk.str("h.bias");
    pk.global("torch._utils", "_rebuild_parameter");
    tensor(&mut pk, "HalfStorage", "2", 2, 0, &[2], &[1]);
    pk.bool(true)
        .global("collections", "OrderedDict")
        .empty_tuple()
        .reduce()
        .tuple_n(3)
        .reduce();
    pk.setitems();
    pk.str("iter_num").int(5);
    pk.str("model_args")
        .empty_dict()
        .str("n_layer")
        .int(1)
        .setitem();
    pk.setitems().stop();
    pk.finish()
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

struct Zip {
    entries: Vec<(String, Vec<u8>)>,
    method: CompressionMethod,
}

impl Zip {
    fn torch(prefix: &str, pkl: Vec<u8>, storage1: Vec<u8>) -> Self {
        let h: Vec<u8> = [half::f16::from_f32(0.5), half::f16::from_f32(-1.0)]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        Zip {
            entries: vec![
                (format!("{prefix}/data.pkl"), pkl),
                (format!("{prefix}/byteorder"), b"little".to_vec()),
                (format!("{prefix}/data/0"), f32s(&[0., 1., 2., 3., 4., 5.])),
                (format!("{prefix}/data/1"), storage1),
                (format!("{prefix}/data/2"), h),
                (format!("{prefix}/version"), b"3\n".to_vec()),
            ],
            method: CompressionMethod::Stored,
        }
    }

    fn write(&self, path: &Path) {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default().compression_method(self.method);
        for (name, data) in &self.entries {
            w.start_file(name.as_str(), opts).unwrap();
            w.write_all(data).unwrap();
        }
        let bytes = w.finish().unwrap().into_inner();
        std::fs::write(path, bytes).unwrap();
    }
}

fn good_zip() -> Zip {
    Zip::torch(
        "archive",
        checkpoint_pickle(8, 2),
        f32s(&[10., 11., 12., 13., 14., 15., 16., 17.]),
    )
}

fn check_checkpoint(path: &Path, mapped: bool) {
    let v = load_torch_file(path).unwrap();
    assert_eq!(v.get("iter_num").and_then(PyValue::as_i64), Some(5));
    assert_eq!(
        v.get("model_args")
            .and_then(|a| a.get("n_layer"))
            .and_then(PyValue::as_i64),
        Some(1)
    );
    let store = state_dict_to_store(path, v.get("model").unwrap()).unwrap();
    assert_eq!(store.len(), 4);
    let wte = store.get("transformer.wte.weight").unwrap();
    let head = store.get("lm_head.weight").unwrap();
    assert_eq!(wte.bytes.is_mapped(), mapped);
    assert_eq!(wte.to_f32().unwrap(), vec![0., 1., 2., 3., 4., 5.]);
    // Tied weights share one storage, loaded once.
    assert_eq!(
        wte.bytes.as_slice().as_ptr(),
        head.bytes.as_slice().as_ptr()
    );
    assert_eq!(wte.offset, head.offset);
    // Elements [2 + i + 3j]: a transposed view at offset 2.
    let view = store.get("view").unwrap();
    assert_eq!(view.to_f32().unwrap(), vec![12., 15., 13., 16.]);
    assert!(!view.is_contiguous());
    let bias = store.get("h.bias").unwrap();
    assert_eq!(bias.dtype, DType::F16);
    assert_eq!(bias.to_f32().unwrap(), vec![0.5, -1.0]);
}

#[test]
fn loads_stored_checkpoint_zero_copy() {
    let dir = TempDir::new("torch");
    let path = dir.path().join("ckpt.pt");
    good_zip().write(&path);
    check_checkpoint(&path, true);
}

#[test]
fn loads_deflated_checkpoint_and_any_folder_name() {
    let dir = TempDir::new("torch-deflate");
    let path = dir.path().join("pytorch_model.bin");
    let mut z = good_zip();
    z.method = CompressionMethod::Deflated;
    z.write(&path);
    check_checkpoint(&path, false);
    let mut z = Zip::torch(
        "ckpt",
        checkpoint_pickle(8, 2),
        f32s(&[10., 11., 12., 13., 14., 15., 16., 17.]),
    );
    z.method = CompressionMethod::Stored;
    z.write(&path);
    check_checkpoint(&path, true);
}

fn expect_storage_error(path: &Path, key: &str) {
    let err = load_torch_file(path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Tensor { .. }), "{msg}");
    assert!(
        msg.contains(&format!("storage {key}")) && msg.contains("ckpt.pt"),
        "{msg}"
    );
}

#[test]
fn truncated_storage_names_its_key() {
    let dir = TempDir::new("torch-trunc-storage");
    let path = dir.path().join("ckpt.pt");
    // Entry holds 5 floats but the persistent id says 8.
    Zip::torch(
        "archive",
        checkpoint_pickle(8, 2),
        f32s(&[1., 2., 3., 4., 5.]),
    )
    .write(&path);
    expect_storage_error(&path, "1");
    // The storage is complete but the view reaches past its end (offset 4 + extent 5 > 8):
    // bounds are checked against the storage entry, not the whole file.
    Zip::torch("archive", checkpoint_pickle(8, 4), f32s(&[0.; 8])).write(&path);
    expect_storage_error(&path, "1");
}

#[test]
fn overflowing_view_sizes_are_errors() {
    let dir = TempDir::new("torch-overflow");
    let path = dir.path().join("ckpt.pt");
    let big = 1i64 << 40;
    for (size, stride) in [
        (vec![0, big, big], vec![1, 1, 1]),
        (vec![big, big], vec![big, 1]),
        (vec![2, 2], vec![i64::MAX, 1]),
    ] {
        let mut pk = Pk::new(2);
        tensor(&mut pk, "FloatStorage", "0", 6, 0, &size, &stride);
        pk.stop();
        Zip::torch("archive", pk.finish(), vec![]).write(&path);
        expect_storage_error(&path, "0");
    }
    // Negative sizes are rejected too.
    let mut pk = Pk::new(2);
    tensor(&mut pk, "FloatStorage", "0", 6, 0, &[-1], &[1]);
    pk.stop();
    Zip::torch("archive", pk.finish(), vec![]).write(&path);
    assert!(load_torch_file(&path).is_err());
}

#[test]
fn truncated_or_corrupt_archives_are_errors() {
    let dir = TempDir::new("torch-trunc");
    let path = dir.path().join("ckpt.pt");
    good_zip().write(&path);
    let full = std::fs::read(&path).unwrap();
    let cut_path = dir.path().join("cut.pt");
    for cut in (0..full.len()).step_by(7).chain([full.len() - 1]) {
        std::fs::write(&cut_path, &full[..cut]).unwrap();
        let err = load_torch_file(&cut_path).unwrap_err();
        assert!(err.to_string().contains("cut.pt"), "cut {cut}: {err}");
    }
    // Flipped bytes anywhere: an error or a value, never a panic.
    for i in (0..full.len()).step_by(3) {
        let mut d = full.clone();
        d[i] ^= 0x5a;
        std::fs::write(&cut_path, &d).unwrap();
        let _ = load_torch_file(&cut_path);
    }
}

#[test]
fn zip_without_data_pkl() {
    let dir = TempDir::new("torch-nopkl");
    let path = dir.path().join("ckpt.pt");
    let z = Zip {
        entries: vec![("archive/data/0".into(), f32s(&[1.]))],
        method: CompressionMethod::Stored,
    };
    z.write(&path);
    let err = load_torch_file(&path).unwrap_err();
    assert!(matches!(err, Error::Format { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("ckpt.pt") && msg.contains("no data.pkl entry"),
        "{msg}"
    );
}

#[test]
fn missing_storage_entry_and_bad_persistent_id() {
    let dir = TempDir::new("torch-missing");
    let path = dir.path().join("ckpt.pt");
    let mut z = good_zip();
    z.entries.retain(|(n, _)| n != "archive/data/2");
    z.write(&path);
    let msg = load_torch_file(&path).unwrap_err().to_string();
    assert!(
        msg.contains("storage 2") && msg.contains("archive/data/2"),
        "{msg}"
    );

    let mut pk = Pk::new(2);
    pk.str("storage")
        .str("not a class")
        .str("0")
        .str("cpu")
        .int(1)
        .tuple_n(3);
    pk.binpersid().stop();
    Zip::torch("archive", pk.finish(), vec![]).write(&path);
    let msg = load_torch_file(&path).unwrap_err().to_string();
    assert!(msg.contains("persistent id"), "{msg}");

    let mut pk = Pk::new(2);
    tensor(&mut pk, "ComplexFloatStorage", "0", 1, 0, &[1], &[1]);
    pk.stop();
    Zip::torch("archive", pk.finish(), vec![]).write(&path);
    let err = load_torch_file(&path).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("ComplexFloatStorage"), "{err}");
}

#[test]
fn legacy_and_non_zip_files() {
    let dir = TempDir::new("torch-legacy");
    let path = dir.path().join("old.pt");
    let mut legacy = LEGACY_MAGIC.to_vec();
    legacy.extend_from_slice(b".");
    std::fs::write(&path, &legacy).unwrap();
    let err = load_torch_file(&path).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    assert!(
        err.to_string().contains("legacy torch.save format"),
        "{err}"
    );
    std::fs::write(&path, b"GGUF....").unwrap();
    assert!(matches!(load_torch_file(&path), Err(Error::Format { .. })));
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(load_torch_file(&path), Err(Error::Format { .. })));
}

#[test]
fn state_dict_rejects_non_dicts_and_skips_non_tensors() {
    let p = Path::new("x.pt");
    assert!(state_dict_to_store(p, &PyValue::Int(1)).is_err());
    let sd = PyValue::Dict(vec![(PyValue::Str("a".into()), PyValue::Int(1))]);
    assert!(state_dict_to_store(p, &sd).unwrap().is_empty());
}

/// Real PyTorch-made checkpoints, when the fixtures exist (not required).
#[test]
fn loads_real_fixtures_if_present() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models");
    let Ok(dirs) = std::fs::read_dir(&root) else {
        return;
    };
    for d in dirs.flatten() {
        let ckpt = d.path().join("ckpt.pt");
        if !ckpt.exists() {
            continue;
        }
        let v = load_torch_file(&ckpt).unwrap_or_else(|e| panic!("{e}"));
        let sd = v.get("model").unwrap_or(&v);
        let store = state_dict_to_store(&ckpt, sd).unwrap_or_else(|e| panic!("{e}"));
        assert!(!store.is_empty(), "{}", ckpt.display());
        for (name, t) in &store.tensors {
            t.check_bounds(&ckpt, name).unwrap();
            t.to_f32().unwrap();
        }
    }
}
