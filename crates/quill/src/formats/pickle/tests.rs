//! Unpickler tests over hand-assembled pickles (byte layouts as CPython's pickler writes them).

use super::*;
use crate::formats::testutil::{Pk, TempDir, TOO_DEEP};

fn p() -> &'static Path {
    Path::new("test.pkl")
}

fn load(data: &[u8]) -> Result<PyValue> {
    load_pickle_bytes(p(), data, &mut |_| {
        Err(Error::format(p(), "pickle", "no persistent ids here"))
    })
}

fn list_of(v: &PyValue) -> &[PyValue] {
    match v {
        PyValue::List(l) => l,
        other => panic!("expected list, got {other:?}"),
    }
}

/// `pickle.dumps({'n': 3, 'name': 'gpt', 'lr': 0.5, 'big': -2**40, 'xs': [1, 2, [3]],
/// 'flag': True, 'none': None, 'again': <same list as xs>}, protocol=2)` (hand-assembled).
fn sample_dict() -> Vec<u8> {
    Pk::new(2)
        .empty_dict()
        .binput(0)
        .mark()
        .str("n")
        .binput(1)
        .int(3)
        .str("name")
        .binput(2)
        .str("gpt")
        .binput(3)
        .str("lr")
        .binput(4)
        .float(0.5)
        .str("big")
        .binput(5)
        .int(-(1i64 << 40))
        .str("xs")
        .binput(6)
        .empty_list()
        .binput(7)
        .mark()
        .int(1)
        .int(2)
        .empty_list()
        .binput(8)
        .int(3)
        .append()
        .appends()
        .str("flag")
        .bool(true)
        .str("none")
        .none()
        .str("again")
        .binget(7)
        .setitems()
        .stop()
        .finish()
}

#[test]
fn protocol2_dict_with_scalars_nested_list_and_memo() {
    let v = load(&sample_dict()).unwrap();
    assert_eq!(v.get("n").and_then(PyValue::as_i64), Some(3));
    assert_eq!(v.get("name").and_then(PyValue::as_str), Some("gpt"));
    assert_eq!(v.get("lr").and_then(PyValue::as_f64), Some(0.5));
    assert_eq!(v.get("big").and_then(PyValue::as_i64), Some(-(1i64 << 40)));
    assert_eq!(v.get("flag").and_then(PyValue::as_bool), Some(true));
    assert!(matches!(v.get("none"), Some(PyValue::None)));
    // The list was memoized while empty and filled afterwards: BINGET must see it complete.
    for key in ["xs", "again"] {
        let xs = list_of(v.get(key).unwrap());
        assert_eq!(xs.len(), 3, "{key}");
        assert_eq!(xs[1].as_i64(), Some(2));
        assert_eq!(list_of(&xs[2])[0].as_i64(), Some(3));
    }
}

#[test]
fn ordered_dict_via_global_reduce() {
    // OrderedDict([('a', 1), ('b', 2)]) then an OrderedDict() filled by SETITEMS with a BUILD
    // of attributes (how torch pickles a state dict with `_metadata`).
    let data = Pk::new(2)
        .mark()
        .global("collections", "OrderedDict")
        .binput(0)
        .empty_list()
        .mark()
        .str("a")
        .int(1)
        .tuple_n(2)
        .str("b")
        .int(2)
        .tuple_n(2)
        .appends()
        .tuple_n(1)
        .reduce()
        .binget(0)
        .empty_tuple()
        .reduce()
        .mark()
        .str("w")
        .int(7)
        .setitems()
        .empty_dict()
        .mark()
        .str("_metadata")
        .empty_dict()
        .setitems()
        .build()
        .tuple()
        .stop()
        .finish();
    let v = load(&data).unwrap();
    let PyValue::Tuple(items) = v else {
        panic!("{v:?}")
    };
    assert_eq!(items[0].get("b").and_then(PyValue::as_i64), Some(2));
    assert_eq!(items[1].get("w").and_then(PyValue::as_i64), Some(7));
    assert!(items[1].get("_metadata").is_none());
}

#[test]
fn dataclass_via_stack_global_newobj_build() {
    // Protocol 4, as `pickle.dumps(ModelArgs(dim=64, n_layers=2, dropout=0.0), protocol=4)`.
    let body = Pk(Vec::new())
        .stack_global("model.config", "ModelArgs")
        .memoize()
        .empty_tuple()
        .newobj()
        .memoize()
        .empty_dict()
        .memoize()
        .mark()
        .str("dim")
        .memoize()
        .int(64)
        .str("n_layers")
        .memoize()
        .int(2)
        .str("dropout")
        .memoize()
        .float(0.0)
        .setitems()
        .build()
        .stop()
        .finish();
    let mut data = vec![0x80, 4, 0x95];
    data.extend_from_slice(&(body.len() as u64).to_le_bytes());
    data.extend_from_slice(&body);
    let v = load(&data).unwrap();
    match &v {
        PyValue::Object { class, .. } => assert_eq!(class, "model.config.ModelArgs"),
        other => panic!("{other:?}"),
    }
    assert_eq!(v.get("dim").and_then(PyValue::as_i64), Some(64));
    assert_eq!(v.get("n_layers").and_then(PyValue::as_i64), Some(2));
}

#[test]
fn malicious_reduce_is_inert() {
    let marker = std::env::temp_dir().join(format!("quill-pwned-{}", std::process::id()));
    let cmd = format!("touch {}", marker.display());
    for data in [
        Pk::new(2)
            .global("os", "system")
            .str(&cmd)
            .tuple_n(1)
            .reduce()
            .stop()
            .finish(),
        Pk::new(4)
            .stack_global("builtins", "eval")
            .str("__import__('os').system('true')")
            .tuple_n(1)
            .reduce()
            .stop()
            .finish(),
    ] {
        let v = load(&data).unwrap();
        match v {
            PyValue::Object { class, state } => {
                assert!(class == "os.system" || class == "builtins.eval", "{class}");
                assert!(matches!(*state, PyValue::Tuple(ref t) if t.len() == 1));
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(!marker.exists());
    // Calling something that is not a class is an error, not a crash.
    let data = Pk::new(2).int(1).empty_tuple().reduce().stop().finish();
    let err = load(&data).unwrap_err().to_string();
    assert!(err.contains("test.pkl") && err.contains("REDUCE"), "{err}");
}

#[test]
fn bytes_in_protocol_2_and_3() {
    let data = Pk::new(2)
        .global("_codecs", "encode")
        .str("\u{0}\u{ff}A")
        .str("latin1")
        .tuple_n(2)
        .reduce()
        .global("__builtin__", "bytes")
        .empty_tuple()
        .reduce()
        .bytes(b"\x01\x02")
        .tuple_n(3)
        .stop()
        .finish();
    let PyValue::Tuple(t) = load(&data).unwrap() else {
        panic!()
    };
    assert!(matches!(&t[0], PyValue::Bytes(b) if b == b"\x00\xffA"));
    assert!(matches!(&t[1], PyValue::Bytes(b) if b.is_empty()));
    assert!(matches!(&t[2], PyValue::Bytes(b) if b == b"\x01\x02"));
}

#[test]
fn wide_integers() {
    // LONG1 with 9 bytes that still fit (sign extension), and one that does not.
    let ok = Pk::new(2)
        .raw(&[
            0x8a, 9, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ])
        .stop()
        .finish();
    assert_eq!(load(&ok).unwrap().as_i64(), Some(-2));
    let big = Pk::new(2)
        .raw(&[0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        .stop()
        .finish();
    let err = load(&big).unwrap_err().to_string();
    assert!(err.contains("64 bits") && err.contains("LONG1"), "{err}");
}

#[test]
fn every_truncation_is_an_error() {
    for data in [sample_dict(), {
        let mut d = vec![0x80, 4, 0x95];
        let body = Pk(Vec::new())
            .stack_global("m", "C")
            .empty_tuple()
            .newobj()
            .empty_dict()
            .str("k")
            .bytes(b"abc")
            .setitem()
            .build()
            .stop()
            .finish();
        d.extend_from_slice(&(body.len() as u64).to_le_bytes());
        d.extend_from_slice(&body);
        d
    }] {
        assert!(load(&data).is_ok());
        for cut in 0..data.len() {
            assert!(load(&data[..cut]).is_err(), "prefix of {cut} bytes loaded");
        }
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    let data = sample_dict();
    for i in 0..data.len() {
        for b in [0x00, 0x28, 0x2e, 0x71, 0x68, 0x80, 0xff, data[i] ^ 0x01] {
            let mut d = data.clone();
            d[i] = b;
            let _ = load(&d);
        }
    }
}

#[test]
fn memo_expansion_is_capped() {
    // x0 = [0]; x(i+1) = [xi, xi]: 2^40 elements from a few hundred bytes.
    let mut pk = Pk::new(2);
    pk.empty_list().binput(0).int(0).append();
    for i in 0..40u8 {
        pk.empty_list()
            .binput(i + 1)
            .mark()
            .binget(i)
            .binget(i)
            .appends();
    }
    pk.stop();
    let err = load(&pk.finish()).unwrap_err().to_string();
    assert!(err.contains("memo expansion"), "{err}");
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let mut pk = Pk::new(2);
    for _ in 0..TOO_DEEP {
        pk.empty_list();
    }
    for _ in 1..TOO_DEEP {
        pk.append();
    }
    pk.stop();
    let err = load(&pk.finish()).unwrap_err().to_string();
    assert!(err.contains("nested deeper"), "{err}");
    // 100k unclosed marks and values: a long stack, no recursion.
    let mut pk = Pk::new(2);
    for _ in 0..100_000 {
        pk.mark().none();
    }
    pk.stop();
    assert!(load(&pk.finish()).is_ok());
}

#[test]
fn errors_name_file_offset_and_opcode() {
    let err = load(b"\x80\x02\xfe.").unwrap_err().to_string();
    assert!(
        err.contains("test.pkl") && err.contains("byte 2") && err.contains("0xfe"),
        "{err}"
    );
    let err = load(b"\x80\x02h\x05.").unwrap_err().to_string();
    assert!(
        err.contains("BINGET") && err.contains("memo key 5"),
        "{err}"
    );
    let err = load(b"\x80\x02X\xff\xff\xff\x7f").unwrap_err().to_string();
    assert!(err.contains("truncated"), "{err}");
    let err = load(b"\x80\x02s.").unwrap_err().to_string();
    assert!(err.contains("SETITEM"), "{err}");
    assert!(load(b"").is_err());
    assert!(load(b"\x80\x07N.").is_err());
}

#[test]
fn plain_pickle_file_like_nanogpt_meta() {
    let dir = TempDir::new("pickle");
    let path = dir.path().join("meta.pkl");
    let data = Pk::new(4)
        .empty_dict()
        .memoize()
        .mark()
        .str("vocab_size")
        .memoize()
        .int(2)
        .str("itos")
        .memoize()
        .empty_dict()
        .memoize()
        .mark()
        .int(0)
        .str("\n")
        .memoize()
        .int(1)
        .str("a")
        .memoize()
        .setitems()
        .str("stoi")
        .memoize()
        .empty_dict()
        .memoize()
        .mark()
        .binget(4)
        .int(0)
        .binget(5)
        .int(1)
        .setitems()
        .setitems()
        .stop()
        .finish();
    std::fs::write(&path, &data).unwrap();
    let v = load_pickle_file(&path).unwrap();
    assert_eq!(v.get("vocab_size").and_then(PyValue::as_i64), Some(2));
    assert_eq!(
        v.get("stoi")
            .and_then(|s| s.get("a"))
            .and_then(PyValue::as_i64),
        Some(1)
    );
    let PyValue::Dict(itos) = v.get("itos").unwrap() else {
        panic!()
    };
    assert_eq!(itos[0].1.as_str(), Some("\n"));

    // A persistent id in a plain pickle is an error naming the file.
    let data = Pk::new(2).str("x").binpersid().stop().finish();
    std::fs::write(&path, &data).unwrap();
    let err = load_pickle_file(&path).unwrap_err().to_string();
    assert!(
        err.contains("meta.pkl") && err.contains("persistent id"),
        "{err}"
    );
}
