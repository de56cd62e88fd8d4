//! The small Python object model that quill's safe unpickler produces. Only the values found in
//! checkpoints are representable; anything else is an error at parse time, never code execution.

use crate::tensor::RawTensor;

/// A Python value decoded from a pickle.
#[derive(Debug, Clone)]
pub enum PyValue {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<PyValue>),
    Tuple(Vec<PyValue>),
    /// Insertion-ordered key/value pairs (`dict` and `collections.OrderedDict`).
    Dict(Vec<(PyValue, PyValue)>),
    /// A tensor rebuilt by `torch._utils._rebuild_tensor_v2` (or a parameter wrapping one).
    Tensor(RawTensor),
    /// An instance of a class quill does not interpret (e.g. a pickled dataclass such as
    /// Mini-LLM's `model.config.ModelArgs`): its qualified class name and the state set on it
    /// (usually a `Dict` of attributes).
    Object {
        class: String,
        state: Box<PyValue>,
    },
}

impl PyValue {
    /// Looks up a string key in a `Dict`.
    pub fn get(&self, key: &str) -> Option<&PyValue> {
        match self {
            PyValue::Dict(items) => items.iter().find_map(|(k, v)| match k {
                PyValue::Str(s) if s == key => Some(v),
                _ => None,
            }),
            // Attribute access on objects whose state is a dict.
            PyValue::Object { state, .. } => state.get(key),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            PyValue::Int(i) => Some(*i),
            PyValue::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            PyValue::Float(f) => Some(*f),
            PyValue::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            PyValue::Bool(b) => Some(*b),
            PyValue::Int(0) => Some(false),
            PyValue::Int(1) => Some(true),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            PyValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A short name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            PyValue::None => "None",
            PyValue::Bool(_) => "bool",
            PyValue::Int(_) => "int",
            PyValue::Float(_) => "float",
            PyValue::Str(_) => "str",
            PyValue::Bytes(_) => "bytes",
            PyValue::List(_) => "list",
            PyValue::Tuple(_) => "tuple",
            PyValue::Dict(_) => "dict",
            PyValue::Tensor(_) => "tensor",
            PyValue::Object { .. } => "object",
        }
    }
}
