//! What calling a global means. Only an allow-list is interpreted; every other callable yields an
//! inert `PyValue::Object` naming it. Nothing is ever executed.
//!
//! Allow-list: `collections.OrderedDict`, `builtins.{dict,list,tuple,set,frozenset,bytes,bytearray}`,
//! `_codecs.encode`, `copyreg._reconstructor`, `copyreg.__newobj__`, `torch.Size`,
//! `torch._utils._rebuild_tensor(_v2)`, `torch._utils._rebuild_parameter(_with_state)`,
//! `torch._tensor._rebuild_from_type_v2`.

use super::{Meta, Unpickler};
use crate::error::{Error, Result};
use crate::formats::pyobj::PyValue;
use crate::tensor::RawTensor;

/// Class name of the value a persistent-load callback returns for a torch storage
/// (see [`torch_storage`]).
pub const TORCH_STORAGE_CLASS: &str = "quill.TorchStorage";

/// Wraps a torch storage for the unpickler: `storage` is a 1-D contiguous tensor whose shape is
/// the storage's element count and whose offset is where the storage starts in its bytes; `key`
/// names it in errors. `_rebuild_tensor_v2` turns it into views.
pub fn torch_storage(key: &str, storage: RawTensor) -> PyValue {
    PyValue::Object {
        class: TORCH_STORAGE_CLASS.to_string(),
        state: Box::new(PyValue::Tuple(vec![
            PyValue::Str(key.to_string()),
            PyValue::Tensor(storage),
        ])),
    }
}

/// A reference to `module.name`, with Python 2 module names mapped to Python 3 ones.
pub(super) fn class_ref(module: &str, name: &str) -> PyValue {
    let module = match module {
        "__builtin__" => "builtins",
        "copy_reg" => "copyreg",
        m => m,
    };
    PyValue::Object {
        class: format!("{module}.{name}"),
        state: Box::new(PyValue::None),
    }
}

fn obj(class: String, args: Vec<PyValue>) -> PyValue {
    PyValue::Object {
        class,
        state: Box::new(PyValue::Tuple(args)),
    }
}

fn with_args_meta(am: Meta) -> Meta {
    Meta {
        depth: am.depth.saturating_add(1),
        weight: am.weight.saturating_add(1),
    }
}

impl Unpickler<'_> {
    fn class_name(&self, v: PyValue, what: &str) -> Result<String> {
        match v {
            PyValue::Object { class, state } if matches!(*state, PyValue::None) => Ok(class),
            other => Err(self.err(format!(
                "{what}: expected a class or function, found a {}",
                other.type_name()
            ))),
        }
    }

    /// REDUCE: `callable(*args)`.
    pub(super) fn call(
        &mut self,
        callable: PyValue,
        args: Vec<PyValue>,
        am: Meta,
    ) -> Result<(PyValue, Meta)> {
        let class = self.class_name(callable, "REDUCE")?;
        let meta = with_args_meta(am);
        let v = match class.as_str() {
            "collections.OrderedDict" | "builtins.dict" => self.dict_from_args(&class, args)?,
            "builtins.list" | "builtins.set" | "builtins.frozenset" => {
                PyValue::List(self.seq_from_args(&class, args)?)
            }
            "builtins.tuple" => PyValue::Tuple(self.seq_from_args(&class, args)?),
            "torch.Size" => PyValue::Tuple(self.seq_from_args(&class, args)?),
            "builtins.bytes" | "builtins.bytearray" => self.bytes_from_args(&class, args)?,
            "_codecs.encode" => self.codecs_encode(args)?,
            "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => {
                let t = self.rebuild_tensor(&class, args)?;
                let rank = t.shape.len();
                return Ok((
                    PyValue::Tensor(t),
                    Meta {
                        depth: 1,
                        weight: 1 + rank,
                    },
                ));
            }
            "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => {
                match args.into_iter().next() {
                    Some(t @ PyValue::Tensor(_)) => t,
                    other => {
                        return Err(self.err(format!(
                            "{class}: argument 0 is {}, expected a tensor",
                            other.as_ref().map_or("missing", PyValue::type_name)
                        )))
                    }
                }
            }
            "torch._tensor._rebuild_from_type_v2" => {
                // (func, new_type, args, state): rebuild with `func`, ignore the subclass.
                let mut it = args.into_iter();
                match (it.next(), it.next(), it.next()) {
                    (Some(func), Some(_), Some(PyValue::Tuple(inner))) => {
                        return self.call(func, inner, am);
                    }
                    _ => {
                        return Err(self.err(format!(
                            "{class}: expected (func, type, args, state) arguments"
                        )))
                    }
                }
            }
            "copyreg._reconstructor" => {
                // (cls, base, base_state): an instance of `cls`; BUILD sets its state.
                let cls = args.into_iter().next().unwrap_or(PyValue::None);
                let cls = self.class_name(cls, "copyreg._reconstructor")?;
                obj(cls, Vec::new())
            }
            "copyreg.__newobj__" => {
                let mut it = args.into_iter();
                let cls = it.next().unwrap_or(PyValue::None);
                return self.new_obj(cls, it.collect(), am);
            }
            _ => obj(class, args),
        };
        Ok((v, meta))
    }

    /// NEWOBJ: `cls.__new__(cls, *args)`.
    pub(super) fn new_obj(
        &mut self,
        cls: PyValue,
        args: Vec<PyValue>,
        am: Meta,
    ) -> Result<(PyValue, Meta)> {
        let class = self.class_name(cls, "NEWOBJ")?;
        let v = match class.as_str() {
            "collections.OrderedDict" | "builtins.dict" => PyValue::Dict(Vec::new()),
            "builtins.list" | "builtins.set" | "builtins.frozenset" => PyValue::List(Vec::new()),
            "builtins.tuple" => PyValue::Tuple(self.seq_from_args(&class, args)?),
            _ => obj(class, args),
        };
        Ok((v, with_args_meta(am)))
    }

    fn dict_from_args(&self, class: &str, args: Vec<PyValue>) -> Result<PyValue> {
        let Some(arg) = args.into_iter().next() else {
            return Ok(PyValue::Dict(Vec::new()));
        };
        match arg {
            PyValue::Dict(d) => Ok(PyValue::Dict(d)),
            PyValue::List(items) | PyValue::Tuple(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        PyValue::Tuple(kv) | PyValue::List(kv) if kv.len() == 2 => {
                            let mut kv = kv.into_iter();
                            if let (Some(k), Some(v)) = (kv.next(), kv.next()) {
                                out.push((k, v));
                            }
                        }
                        other => {
                            return Err(self.err(format!(
                                "{class}: expected (key, value) pairs, found a {}",
                                other.type_name()
                            )))
                        }
                    }
                }
                Ok(PyValue::Dict(out))
            }
            other => Err(self.err(format!(
                "{class}: expected a dict or a list of pairs, found a {}",
                other.type_name()
            ))),
        }
    }

    fn seq_from_args(&self, class: &str, args: Vec<PyValue>) -> Result<Vec<PyValue>> {
        match args.into_iter().next() {
            None => Ok(Vec::new()),
            Some(PyValue::List(v) | PyValue::Tuple(v)) => Ok(v),
            Some(other) => Err(self.err(format!(
                "{class}: expected a list or tuple, found a {}",
                other.type_name()
            ))),
        }
    }

    fn bytes_from_args(&self, class: &str, args: Vec<PyValue>) -> Result<PyValue> {
        match args.into_iter().next() {
            None => Ok(PyValue::Bytes(Vec::new())),
            Some(PyValue::Bytes(b)) => Ok(PyValue::Bytes(b)),
            Some(other) => Err(self.err(format!(
                "{class}: expected bytes, found a {}",
                other.type_name()
            ))),
        }
    }

    /// `_codecs.encode(text, encoding)`: how protocol 2 pickles `bytes`.
    fn codecs_encode(&self, args: Vec<PyValue>) -> Result<PyValue> {
        let mut it = args.into_iter();
        let (text, enc) = match (it.next(), it.next()) {
            (Some(PyValue::Str(t)), Some(PyValue::Str(e))) => (t, e),
            (Some(PyValue::Str(t)), None) => (t, "utf-8".to_string()),
            _ => {
                return Err(
                    self.err("_codecs.encode: expected (str, encoding) arguments".to_string())
                )
            }
        };
        match enc.to_ascii_lowercase().replace('_', "-").as_str() {
            "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1" => {
                let mut out = Vec::with_capacity(text.len());
                for c in text.chars() {
                    let b = u8::try_from(u32::from(c)).map_err(|_| {
                        self.err(format!(
                            "_codecs.encode: character U+{:04X} is not Latin-1",
                            u32::from(c)
                        ))
                    })?;
                    out.push(b);
                }
                Ok(PyValue::Bytes(out))
            }
            "utf-8" | "utf8" => Ok(PyValue::Bytes(text.into_bytes())),
            other => Err(self.err(format!(
                "_codecs.encode: encoding `{other}`; expected latin1 or utf-8"
            ))),
        }
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks, ...)`.
    fn rebuild_tensor(&self, class: &str, args: Vec<PyValue>) -> Result<RawTensor> {
        if args.len() < 4 {
            return Err(self.err(format!(
                "{class}: {} arguments; expected (storage, storage_offset, size, stride, ...)",
                args.len()
            )));
        }
        let mut it = args.into_iter();
        let (Some(storage), Some(offset), Some(size), Some(stride)) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(self.err(format!("{class}: missing arguments")));
        };
        let (key, storage) = match storage {
            PyValue::Object { class: c, state } if c == TORCH_STORAGE_CLASS => match *state {
                PyValue::Tuple(mut t) if t.len() == 2 => match (t.pop(), t.pop()) {
                    (Some(PyValue::Tensor(s)), Some(PyValue::Str(k))) => (k, s),
                    _ => return Err(self.err(format!("{class}: malformed storage"))),
                },
                _ => return Err(self.err(format!("{class}: malformed storage"))),
            },
            other => {
                return Err(self.err(format!(
                    "{class}: argument 0 is a {}, expected a storage from a persistent id",
                    other.type_name()
                )))
            }
        };
        let storage_offset = self.usize_arg(class, "storage_offset", &offset)?;
        let shape = self.usize_tuple(class, "size", size)?;
        let strides = self.usize_tuple(class, "stride", stride)?;
        let name = format!("storage {key}");
        if shape.len() != strides.len() {
            return Err(Error::tensor(
                self.path,
                name,
                format!(
                    "view has {} sizes but {} strides",
                    shape.len(),
                    strides.len()
                ),
            ));
        }
        if !crate::formats::shape_fits(&shape) {
            return Err(Error::tensor(
                self.path,
                name,
                format!("view size {shape:?} overflows"),
            ));
        }
        let esz = storage.dtype.size();
        let storage_numel = storage.numel();
        let needed = view_extent(&shape, &strides)
            .and_then(|e| {
                if e == 0 {
                    Some(0)
                } else {
                    e.checked_add(storage_offset)
                }
            })
            .ok_or_else(|| Error::tensor(self.path, &name, "view size overflows"))?;
        if needed > storage_numel {
            return Err(Error::tensor(
                self.path,
                &name,
                format!(
                    "view (offset {storage_offset}, size {shape:?}, stride {strides:?}) needs \
                     {needed} elements but the storage holds {storage_numel} (file truncated?)"
                ),
            ));
        }
        let offset = storage_offset
            .checked_mul(esz)
            .and_then(|b| b.checked_add(storage.offset))
            .ok_or_else(|| Error::tensor(self.path, &name, "storage offset overflows"))?;
        let t = RawTensor {
            dtype: storage.dtype,
            shape,
            strides,
            offset,
            bytes: storage.bytes,
        };
        t.check_bounds(self.path, &name)?;
        Ok(t)
    }

    fn usize_arg(&self, class: &str, field: &str, v: &PyValue) -> Result<usize> {
        match v {
            PyValue::Int(i) => usize::try_from(*i).map_err(|_| {
                self.err(format!(
                    "{class}: {field} is {i}, expected a non-negative integer"
                ))
            }),
            other => Err(self.err(format!(
                "{class}: {field} is a {}, expected an integer",
                other.type_name()
            ))),
        }
    }

    fn usize_tuple(&self, class: &str, field: &str, v: PyValue) -> Result<Vec<usize>> {
        match v {
            PyValue::Tuple(items) | PyValue::List(items) => items
                .iter()
                .map(|i| self.usize_arg(class, field, i))
                .collect(),
            other => Err(self.err(format!(
                "{class}: {field} is a {}, expected a tuple of integers",
                other.type_name()
            ))),
        }
    }
}

/// BUILD state may be `(dict_state, slot_state)` for classes with `__slots__`: merge the two.
pub(super) fn merge_slot_state(state: PyValue) -> PyValue {
    match state {
        PyValue::Tuple(mut t)
            if t.len() == 2
                && matches!(t[0], PyValue::None | PyValue::Dict(_))
                && matches!(t[1], PyValue::None | PyValue::Dict(_)) =>
        {
            let slots = t.pop();
            let main = t.pop();
            let mut out = Vec::new();
            for part in [main, slots].into_iter().flatten() {
                if let PyValue::Dict(d) = part {
                    out.extend(d);
                }
            }
            PyValue::Dict(out)
        }
        other => other,
    }
}

/// Number of elements a view with `shape` and `strides` spans in its storage (index of its last
/// element + 1), or `None` on overflow. Zero for an empty view.
pub(crate) fn view_extent(shape: &[usize], strides: &[usize]) -> Option<usize> {
    if shape.contains(&0) {
        return Some(0);
    }
    let mut last = 0usize;
    for (&d, &s) in shape.iter().zip(strides) {
        last = last.checked_add((d - 1).checked_mul(s)?)?;
    }
    last.checked_add(1)
}
