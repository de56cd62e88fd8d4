//! A safe unpickler: a stack machine over the protocol 2–5 opcodes that `torch.save` and
//! `pickle.dump` emit. No code ever runs. Globals are names: a small allow-list is interpreted
//! (dicts, lists, `_codecs.encode`, torch's tensor rebuild functions; see `pickle/calls.rs`); any other
//! callable, when called, yields an inert [`PyValue::Object`].
//!
//! Representation conventions:
//! - a bare reference to a class or function (a GLOBAL that is not called, e.g. the storage type
//!   `torch.FloatStorage` in a persistent id, or the dtype `torch.float32`) is
//!   `Object { class: "module.Name", state: None }`;
//! - an instance of a class quill does not interpret is `Object { class, state }` where `state` is
//!   the tuple of constructor arguments until BUILD replaces it with the pickled state (usually a
//!   `Dict` of attributes);
//! - `set` and `frozenset` become `List`;
//! - dict items are kept in pickle order as written (a key repeated by a hostile file is kept
//!   twice; `PyValue::get` returns the first);
//! - a torch storage handed back by the persistent-load callback is made with [`torch_storage`].
//!
//! Limits against hostile input: every length is checked against the bytes that remain; nesting
//! is capped at [`MAX_DEPTH`]; values fetched from the memo more than once are copied, and the
//! total copied is capped in proportion to the input length (no "billion laughs").

mod calls;
mod memo;
mod opcodes;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::error::{Error, Result};
use crate::formats::pyobj::PyValue;

use opcodes::*;

pub use calls::{torch_storage, TORCH_STORAGE_CLASS};

use calls::merge_slot_state;

const FORMAT: &str = "pickle";

/// Deepest nesting of containers accepted (Python itself cannot pickle much deeper).
pub const MAX_DEPTH: u32 = 512;

/// Size bookkeeping for a value: nesting depth and an approximate node count.
#[derive(Debug, Clone, Copy)]
struct Meta {
    depth: u32,
    weight: usize,
}

impl Meta {
    const LEAF: Meta = Meta {
        depth: 0,
        weight: 1,
    };

    fn text(len: usize) -> Meta {
        Meta {
            depth: 0,
            weight: 1 + len / 64,
        }
    }

    /// A container holding values with the given metas.
    fn container<'m>(children: impl IntoIterator<Item = &'m Meta>) -> Meta {
        let mut m = Meta {
            depth: 1,
            weight: 1,
        };
        for c in children {
            m.absorb(c);
        }
        m
    }

    /// Accounts for `child` being placed inside this container.
    fn absorb(&mut self, child: &Meta) {
        self.depth = self.depth.max(child.depth.saturating_add(1));
        self.weight = self.weight.saturating_add(child.weight);
    }
}

/// A stack slot: a value, or a reference to a memo entry (resolved when consumed, so that
/// containers filled after being memoized are seen complete).
enum Item {
    Val(PyValue, Meta),
    Ref(u64),
}

struct MemoEntry {
    value: PyValue,
    meta: Meta,
    /// How many more times this entry will be consumed; the last consumer takes it by move.
    uses_left: u32,
}

/// The unpickler state. Create with [`Unpickler::new`], run with [`Unpickler::load`].
pub struct Unpickler<'a> {
    path: &'a Path,
    data: &'a [u8],
    stack: Vec<Item>,
    marks: Vec<usize>,
    memo: HashMap<u64, MemoEntry>,
    memo_keys: HashSet<u64>,
    /// How often each memo key is fetched (counted before running).
    gets: HashMap<u64, u32>,
    /// Weight that copies out of the memo may still add.
    copy_budget: usize,
    /// Offset and opcode of the instruction being run (for errors).
    at: usize,
    op: u8,
}

impl<'a> Unpickler<'a> {
    /// An unpickler over `data`; `path` names the file in errors.
    pub fn new(path: &'a Path, data: &'a [u8]) -> Self {
        Unpickler {
            path,
            data,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            memo_keys: HashSet::new(),
            gets: HashMap::new(),
            copy_budget: data.len().saturating_mul(2).saturating_add(1 << 20),
            at: 0,
            op: 0,
        }
    }

    /// Runs the pickle to its STOP opcode and returns the value it built. `persistent` is
    /// called for each BINPERSID/PERSID with the persistent id.
    pub fn load(
        mut self,
        persistent: &mut dyn FnMut(&PyValue) -> Result<PyValue>,
    ) -> Result<PyValue> {
        self.count_gets()?;
        let mut pos = 0usize;
        loop {
            let ins = opcodes::decode(self.data, &mut pos).map_err(|e| self.decode_err(e))?;
            self.at = ins.pos;
            self.op = ins.op;
            if ins.op == STOP {
                let (v, _) = self.pop_value()?;
                return Ok(v);
            }
            self.exec(ins.op, ins.arg, persistent)?;
        }
    }

    fn decode_err(&self, e: opcodes::DecodeError) -> Error {
        let op = match e.op {
            Some(op) => format!(" ({})", op_name(op)),
            None => String::new(),
        };
        Error::format(
            self.path,
            FORMAT,
            format!("at byte {}{op}: {}", e.pos, e.detail),
        )
    }

    fn err(&self, detail: impl std::fmt::Display) -> Error {
        Error::format(
            self.path,
            FORMAT,
            format!("at byte {} ({}): {detail}", self.at, op_name(self.op)),
        )
    }

    /// First pass: decode every instruction up to STOP (so a truncated or malformed stream fails
    /// before anything is built) and count how often each memo key is fetched.
    fn count_gets(&mut self) -> Result<()> {
        let mut keys: HashSet<u64> = HashSet::new();
        let mut pos = 0usize;
        loop {
            let ins = opcodes::decode(self.data, &mut pos).map_err(|e| self.decode_err(e))?;
            match (ins.op, ins.arg) {
                (STOP, _) => return Ok(()),
                (PUT | BINPUT | LONG_BINPUT, Arg::Id(id)) => {
                    keys.insert(id);
                }
                (MEMOIZE, _) => {
                    keys.insert(keys.len() as u64);
                }
                (GET | BINGET | LONG_BINGET, Arg::Id(id)) => {
                    let n = self.gets.entry(id).or_insert(0);
                    *n = n.saturating_add(1);
                }
                _ => {}
            }
        }
    }

    fn exec(
        &mut self,
        op: u8,
        arg: Arg<'a>,
        persistent: &mut dyn FnMut(&PyValue) -> Result<PyValue>,
    ) -> Result<()> {
        match op {
            PROTO => {
                if let Arg::Id(v) = arg {
                    if v > 5 {
                        return Err(self.err(format!("pickle protocol {v}; expected 2 to 5")));
                    }
                }
            }
            FRAME => {}
            MARK => self.marks.push(self.stack.len()),
            POP => {
                if self.stack.pop().is_none() {
                    return Err(self.err("stack is empty"));
                }
            }
            POP_MARK => {
                self.pop_mark()?;
            }
            DUP => {
                let top = match self.stack.last() {
                    Some(Item::Ref(id)) => {
                        let id = *id;
                        if let Some(e) = self.memo.get_mut(&id) {
                            e.uses_left = e.uses_left.saturating_add(1);
                        }
                        Item::Ref(id)
                    }
                    Some(Item::Val(v, m)) => {
                        let (v, m) = (v.clone(), *m);
                        self.charge_copy(m)?;
                        Item::Val(v, m)
                    }
                    None => return Err(self.err("stack is empty")),
                };
                self.stack.push(top);
            }
            NONE => self.push(PyValue::None, Meta::LEAF),
            NEWTRUE => self.push(PyValue::Bool(true), Meta::LEAF),
            NEWFALSE => self.push(PyValue::Bool(false), Meta::LEAF),
            BININT | BININT1 | BININT2 | LONG1 | LONG4 | INT | LONG | FLOAT | BINFLOAT => {
                let v = match arg {
                    Arg::Int(i) => PyValue::Int(i),
                    Arg::Bool(b) => PyValue::Bool(b),
                    Arg::Float(f) => PyValue::Float(f),
                    _ => return Err(self.err("missing argument")),
                };
                self.push(v, Meta::LEAF);
            }
            SHORT_BINUNICODE | BINUNICODE | BINUNICODE8 | SHORT_BINSTRING | BINSTRING => {
                let s = self.text(arg)?;
                let m = Meta::text(s.len());
                self.push(PyValue::Str(s), m);
            }
            SHORT_BINBYTES | BINBYTES | BINBYTES8 | BYTEARRAY8 => {
                let Arg::Bytes(b) = arg else {
                    return Err(self.err("missing argument"));
                };
                self.push(PyValue::Bytes(b.to_vec()), Meta::text(b.len()));
            }
            EMPTY_DICT => self.push(PyValue::Dict(Vec::new()), Meta::container([])),
            EMPTY_LIST | EMPTY_SET => self.push(PyValue::List(Vec::new()), Meta::container([])),
            EMPTY_TUPLE => self.push(PyValue::Tuple(Vec::new()), Meta::container([])),
            TUPLE1 | TUPLE2 | TUPLE3 => {
                let n = (op - TUPLE1 + 1) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop_value()?);
                }
                items.reverse();
                self.push_container(items, PyValue::Tuple)?;
            }
            TUPLE => {
                let items = self.pop_mark()?;
                self.push_container(items, PyValue::Tuple)?;
            }
            LIST | FROZENSET => {
                let items = self.pop_mark()?;
                self.push_container(items, PyValue::List)?;
            }
            DICT => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                let m = Meta::container(pairs.iter().flat_map(|(_, km, _, vm)| [km, vm]));
                self.check_depth(&m)?;
                let d = pairs.into_iter().map(|(k, _, v, _)| (k, v)).collect();
                self.push(PyValue::Dict(d), m);
            }
            APPEND => {
                let v = self.pop_value()?;
                self.extend_top(vec![v], false)?;
            }
            APPENDS | ADDITEMS => {
                let items = self.pop_mark()?;
                self.extend_top(items, false)?;
            }
            SETITEM => {
                let v = self.pop_value()?;
                let k = self.pop_value()?;
                self.extend_top(vec![k, v], true)?;
            }
            SETITEMS => {
                let items = self.pop_mark()?;
                self.extend_top(items, true)?;
            }
            PUT | BINPUT | LONG_BINPUT | MEMOIZE => {
                let id = match arg {
                    Arg::Id(id) => id,
                    _ => self.memo_keys.len() as u64,
                };
                self.memoize(id)?;
            }
            GET | BINGET | LONG_BINGET => {
                let Arg::Id(id) = arg else {
                    return Err(self.err("missing argument"));
                };
                if !self.memo.contains_key(&id) {
                    return Err(self.err(format!("memo key {id} was never stored")));
                }
                self.stack.push(Item::Ref(id));
            }
            GLOBAL => {
                let Arg::Global(module, name) = arg else {
                    return Err(self.err("missing argument"));
                };
                let module = self.ascii(module, "module name")?;
                let name = self.ascii(name, "global name")?;
                self.push(calls::class_ref(&module, &name), Meta::LEAF);
            }
            STACK_GLOBAL => {
                let (name, _) = self.pop_value()?;
                let (module, _) = self.pop_value()?;
                match (module, name) {
                    (PyValue::Str(module), PyValue::Str(name)) => {
                        self.push(calls::class_ref(&module, &name), Meta::LEAF)
                    }
                    (m, n) => {
                        return Err(self.err(format!(
                            "expected module and name strings, found {} and {}",
                            m.type_name(),
                            n.type_name()
                        )))
                    }
                }
            }
            REDUCE => {
                let (args, am) = self.pop_value()?;
                let (callable, _) = self.pop_value()?;
                let args = self.tuple_items(args, "REDUCE arguments")?;
                let (v, m) = self.call(callable, args, am)?;
                self.push(v, m);
            }
            NEWOBJ | NEWOBJ_EX => {
                if op == NEWOBJ_EX {
                    self.pop_value()?; // keyword arguments: not interpreted
                }
                let (args, am) = self.pop_value()?;
                let (cls, _) = self.pop_value()?;
                let args = self.tuple_items(args, "NEWOBJ arguments")?;
                let (v, m) = self.new_obj(cls, args, am)?;
                self.push(v, m);
            }
            BUILD => {
                let (state, sm) = self.pop_value()?;
                self.build_top(state, sm)?;
            }
            BINPERSID | PERSID => {
                let pid = if let Arg::Utf8(b) = arg {
                    PyValue::Str(self.ascii(b, "persistent id")?)
                } else {
                    self.pop_value()?.0
                };
                let v = persistent(&pid)?;
                let m = match &v {
                    PyValue::Tensor(_) | PyValue::Object { .. } => Meta {
                        depth: 2,
                        weight: 4,
                    },
                    _ => Meta::LEAF,
                };
                self.push(v, m);
            }
            _ => return Err(self.err("opcode not supported")),
        }
        Ok(())
    }

    fn text(&self, arg: Arg<'_>) -> Result<String> {
        match arg {
            Arg::Utf8(b) => std::str::from_utf8(b)
                .map(str::to_owned)
                .map_err(|e| self.err(format!("string is not valid UTF-8: {e}"))),
            Arg::Latin1(b) => Ok(b.iter().map(|&c| c as char).collect()),
            _ => Err(self.err("missing argument")),
        }
    }

    fn ascii(&self, b: &[u8], what: &str) -> Result<String> {
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| self.err(format!("{what} is not valid UTF-8")))
    }

    fn push(&mut self, v: PyValue, m: Meta) {
        self.stack.push(Item::Val(v, m));
    }

    fn check_depth(&self, m: &Meta) -> Result<()> {
        if m.depth > MAX_DEPTH {
            return Err(self.err(format!("values nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    fn push_container(
        &mut self,
        items: Vec<(PyValue, Meta)>,
        make: fn(Vec<PyValue>) -> PyValue,
    ) -> Result<()> {
        let m = Meta::container(items.iter().map(|(_, m)| m));
        self.check_depth(&m)?;
        self.push(make(items.into_iter().map(|(v, _)| v).collect()), m);
        Ok(())
    }

    fn pop_value(&mut self) -> Result<(PyValue, Meta)> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(self.err("expected a value on the stack, found a MARK"));
        }
        match self.stack.pop() {
            Some(item) => self.resolve(item),
            None => Err(self.err("stack is empty")),
        }
    }

    /// Pops everything above the most recent MARK.
    fn pop_mark(&mut self) -> Result<Vec<(PyValue, Meta)>> {
        let Some(m) = self.marks.pop() else {
            return Err(self.err("no MARK on the stack"));
        };
        if m > self.stack.len() {
            return Err(self.err("MARK was popped from under the stack"));
        }
        let items = self.stack.split_off(m);
        items.into_iter().map(|it| self.resolve(it)).collect()
    }

    #[allow(clippy::type_complexity)]
    fn pairs(&self, items: Vec<(PyValue, Meta)>) -> Result<Vec<(PyValue, Meta, PyValue, Meta)>> {
        if items.len() & 1 == 1 {
            return Err(self.err(format!(
                "odd number of items ({}) for key/value pairs",
                items.len()
            )));
        }
        let mut out = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some((k, km)), Some((v, vm))) = (it.next(), it.next()) {
            out.push((k, km, v, vm));
        }
        Ok(out)
    }

    fn tuple_items(&self, v: PyValue, what: &str) -> Result<Vec<PyValue>> {
        match v {
            PyValue::Tuple(items) => Ok(items),
            other => Err(self.err(format!(
                "{what}: expected a tuple, found {}",
                other.type_name()
            ))),
        }
    }

    /// The value in the top stack slot (in place, or in the memo it refers to).
    fn top_mut(&mut self) -> Result<(&mut PyValue, &mut Meta)> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("no target value on the stack"));
        }
        let missing = match self.stack.last() {
            Some(Item::Ref(id)) if !self.memo.contains_key(id) => Some(*id),
            _ => None,
        };
        if let Some(id) = missing {
            return Err(self.err(format!("memo key {id} vanished")));
        }
        match self.stack.last_mut() {
            Some(Item::Val(v, m)) => Ok((v, m)),
            Some(Item::Ref(id)) => match self.memo.get_mut(id) {
                Some(e) => Ok((&mut e.value, &mut e.meta)),
                None => Err(Error::format(self.path, FORMAT, "memo entry vanished")),
            },
            None => Err(Error::format(self.path, FORMAT, "stack is empty")),
        }
    }

    /// APPEND(S)/ADDITEMS (`dict == false`) or SETITEM(S) (`dict == true`) on the top value.
    fn extend_top(&mut self, items: Vec<(PyValue, Meta)>, dict: bool) -> Result<()> {
        if dict && items.len() & 1 == 1 {
            return Err(self.err(format!(
                "odd number of items ({}) for key/value pairs",
                items.len()
            )));
        }
        let (target, meta) = self.top_mut()?;
        let mut new_meta = *meta;
        for (_, m) in &items {
            new_meta.absorb(m);
        }
        // An instance of an uninterpreted class (a dict or list subclass): keep the items in
        // its state.
        let target = match target {
            PyValue::Object { state, .. } => {
                let fresh = matches!(&**state, PyValue::None)
                    || matches!(&**state, PyValue::Tuple(t) if t.is_empty());
                if fresh {
                    **state = if dict {
                        PyValue::Dict(Vec::new())
                    } else {
                        PyValue::List(Vec::new())
                    };
                }
                &mut **state
            }
            other => other,
        };
        let failed = match target {
            PyValue::Dict(d) if dict => {
                let mut it = items.into_iter().map(|(v, _)| v);
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
                None
            }
            PyValue::List(l) if !dict => {
                l.extend(items.into_iter().map(|(v, _)| v));
                None
            }
            t => Some(t.type_name()),
        };
        if failed.is_none() {
            *meta = new_meta;
        }
        match failed {
            Some(name) => Err(self.err(format!(
                "cannot {} a {name}",
                if dict { "set items on" } else { "append to" }
            ))),
            None => self.check_depth(&new_meta),
        }
    }

    /// BUILD: sets the state of an uninterpreted object; ignored for anything else (e.g. the
    /// `_metadata` attribute torch attaches to a state dict).
    fn build_top(&mut self, state: PyValue, sm: Meta) -> Result<()> {
        let (target, meta) = self.top_mut()?;
        if let PyValue::Object { state: s, .. } = target {
            **s = merge_slot_state(state);
            meta.absorb(&sm);
            let m = *meta;
            return self.check_depth(&m);
        }
        Ok(())
    }
}

/// Unpickles `data` (read from `path`, named in errors). `persistent` resolves persistent ids
/// (BINPERSID), e.g. torch storages.
pub fn load_pickle_bytes(
    path: &Path,
    data: &[u8],
    persistent: &mut dyn FnMut(&PyValue) -> Result<PyValue>,
) -> Result<PyValue> {
    Unpickler::new(path, data).load(persistent)
}

/// Unpickles a plain pickle file such as nanoGPT's `meta.pkl`. Persistent ids are an error.
pub fn load_pickle_file(path: &Path) -> Result<PyValue> {
    let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    load_pickle_bytes(path, &data, &mut |pid| {
        Err(Error::format(
            path,
            FORMAT,
            format!(
                "persistent id ({}) in a plain pickle; expected no external references \
                 (is this a torch checkpoint? load it with load_torch_file)",
                pid.type_name()
            ),
        ))
    })
}

#[cfg(test)]
mod tests;
