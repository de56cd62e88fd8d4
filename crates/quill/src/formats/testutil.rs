//! Test helpers: a self-removing temporary folder and a tiny pickle assembler, so tests can build
//! their inputs by hand (no Python at test time).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::pickle::MAX_DEPTH;

/// A fresh folder under the system temp dir, removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("quill-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Assembles pickle opcodes. Methods mirror `pickletools` names.
#[derive(Default)]
pub(crate) struct Pk(pub Vec<u8>);

#[allow(dead_code)]
impl Pk {
    pub(crate) fn new(protocol: u8) -> Self {
        Pk(vec![0x80, protocol])
    }
    pub(crate) fn op(&mut self, b: u8) -> &mut Self {
        self.0.push(b);
        self
    }
    pub(crate) fn mark(&mut self) -> &mut Self {
        self.op(b'(')
    }
    pub(crate) fn stop(&mut self) -> &mut Self {
        self.op(b'.')
    }
    pub(crate) fn empty_dict(&mut self) -> &mut Self {
        self.op(b'}')
    }
    pub(crate) fn empty_list(&mut self) -> &mut Self {
        self.op(b']')
    }
    pub(crate) fn empty_tuple(&mut self) -> &mut Self {
        self.op(b')')
    }
    pub(crate) fn tuple(&mut self) -> &mut Self {
        self.op(b't')
    }
    pub(crate) fn tuple_n(&mut self, n: u8) -> &mut Self {
        self.op(0x84 + n)
    }
    pub(crate) fn setitem(&mut self) -> &mut Self {
        self.op(b's')
    }
    pub(crate) fn setitems(&mut self) -> &mut Self {
        self.op(b'u')
    }
    pub(crate) fn append(&mut self) -> &mut Self {
        self.op(b'a')
    }
    pub(crate) fn appends(&mut self) -> &mut Self {
        self.op(b'e')
    }
    pub(crate) fn none(&mut self) -> &mut Self {
        self.op(b'N')
    }
    pub(crate) fn bool(&mut self, b: bool) -> &mut Self {
        self.op(if b { 0x88 } else { 0x89 })
    }
    pub(crate) fn reduce(&mut self) -> &mut Self {
        self.op(b'R')
    }
    pub(crate) fn newobj(&mut self) -> &mut Self {
        self.op(0x81)
    }
    pub(crate) fn build(&mut self) -> &mut Self {
        self.op(b'b')
    }
    pub(crate) fn binpersid(&mut self) -> &mut Self {
        self.op(b'Q')
    }
    pub(crate) fn memoize(&mut self) -> &mut Self {
        self.op(0x94)
    }
    pub(crate) fn binput(&mut self, id: u8) -> &mut Self {
        self.0.extend_from_slice(&[b'q', id]);
        self
    }
    pub(crate) fn binget(&mut self, id: u8) -> &mut Self {
        self.0.extend_from_slice(&[b'h', id]);
        self
    }
    pub(crate) fn long_binput(&mut self, id: u32) -> &mut Self {
        self.op(b'r');
        self.0.extend_from_slice(&id.to_le_bytes());
        self
    }
    pub(crate) fn int(&mut self, v: i64) -> &mut Self {
        if (0..256).contains(&v) {
            self.0.extend_from_slice(&[b'K', v as u8]);
        } else if (0..65536).contains(&v) {
            self.op(b'M');
            self.0.extend_from_slice(&(v as u16).to_le_bytes());
        } else if i32::try_from(v).is_ok() {
            self.op(b'J');
            self.0.extend_from_slice(&(v as i32).to_le_bytes());
        } else {
            self.0.extend_from_slice(&[0x8a, 8]);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
        self
    }
    pub(crate) fn float(&mut self, v: f64) -> &mut Self {
        self.op(b'G');
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn str(&mut self, s: &str) -> &mut Self {
        if s.len() < 256 {
            self.0.extend_from_slice(&[0x8c, s.len() as u8]);
        } else {
            self.op(b'X');
            self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        }
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.op(b'B');
        self.0.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.0.extend_from_slice(b);
        self
    }
    pub(crate) fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.op(b'c');
        self.0
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        self
    }
    pub(crate) fn stack_global(&mut self, module: &str, name: &str) -> &mut Self {
        self.str(module).str(name).op(0x93)
    }
    pub(crate) fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

/// Deeper than the unpickler accepts.
pub(crate) const TOO_DEEP: usize = MAX_DEPTH as usize + 8;
