//! Tensors as they are found in checkpoint files: a dtype, a shape, strides and an offset into a
//! storage that is either a memory-mapped file or an owned buffer. Nothing is converted until a
//! model asks for it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};

/// Element types quill reads from checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    U8,
    /// llama.cpp block formats (GGUF): 32-value blocks ...
    Q8_0,
    Q4_0,
    Q4_1,
    /// ... and 256-value K-quant super-blocks.
    Q4K,
    Q5K,
    Q6K,
}

impl DType {
    /// Size of one element in bytes; for a block-quantized type, of one block of
    /// [`DType::block_elems`] elements (use [`DType::bytes_for`] for a count of elements).
    pub fn size(self) -> usize {
        self.block_bytes()
    }

    /// Elements per block: 1 for plain types, 32 or 256 for block-quantized ones.
    pub fn block_elems(self) -> usize {
        match self {
            DType::Q8_0 | DType::Q4_0 | DType::Q4_1 => 32,
            DType::Q4K | DType::Q5K | DType::Q6K => 256,
            _ => 1,
        }
    }

    /// Bytes per block (per element for plain types).
    pub fn block_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::F64 | DType::I64 => 8,
            DType::U8 => 1,
            DType::Q8_0 => 34,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q4K => 144,
            DType::Q5K => 176,
            DType::Q6K => 210,
        }
    }

    /// Whether elements are stored in quantized blocks (not addressable one by one).
    pub fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }

    /// Bytes taken by `n` elements, or `None` if `n` is not a whole number of blocks (or
    /// overflows).
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        let be = self.block_elems();
        if !n.is_multiple_of(be) {
            return None;
        }
        (n / be).checked_mul(self.block_bytes())
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F64 => "f64",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::U8 => "u8",
            DType::Q8_0 => "q8_0",
            DType::Q4_0 => "q4_0",
            DType::Q4_1 => "q4_1",
            DType::Q4K => "q4_k",
            DType::Q5K => "q5_k",
            DType::Q6K => "q6_k",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The bytes behind one or more tensors. Cloning is cheap (reference counted).
#[derive(Clone)]
pub enum Bytes {
    /// A memory-mapped file, shared by every tensor that lives in it.
    Mapped(Arc<memmap2::Mmap>),
    /// A buffer read into memory (compressed archives, embedded models, tests).
    Owned(Arc<Vec<u8>>),
    /// Bytes compiled into the binary.
    Static(&'static [u8]),
}

impl Bytes {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
            Bytes::Static(s) => s,
        }
    }

    /// Whether these bytes come straight from a memory map (no copy was made).
    pub fn is_mapped(&self) -> bool {
        matches!(self, Bytes::Mapped(_))
    }

    /// Tells the OS that `len` bytes at `offset` will not be read again soon (their contents
    /// were copied elsewhere): a mapped file's pages leave the resident set, and would be read
    /// back from the file if touched. A no-op for other storage and where unsupported.
    pub fn release(&self, offset: usize, len: usize) {
        #[cfg(target_os = "linux")]
        if let Bytes::Mapped(m) = self {
            if offset.checked_add(len).is_some_and(|end| end <= m.len()) {
                // SAFETY: the map is a read-only file mapping; MADV_DONTNEED only drops its
                // page-table entries, and a later read faults the same file bytes back in, so
                // no reference ever observes different contents. Failure is harmless (the
                // pages stay resident), hence ignored.
                let _ = unsafe {
                    m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
                };
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (offset, len);
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Bytes::Mapped(_) => "Mapped",
            Bytes::Owned(_) => "Owned",
            Bytes::Static(_) => "Static",
        };
        write!(f, "{kind}({} bytes)", self.as_slice().len())
    }
}

/// A tensor exactly as a checkpoint stores it: possibly a strided view into a larger storage.
#[derive(Debug, Clone)]
pub struct RawTensor {
    pub dtype: DType,
    /// Logical shape, outermost dimension first.
    pub shape: Vec<usize>,
    /// Strides in elements, one per dimension.
    pub strides: Vec<usize>,
    /// Byte offset of element [0, 0, ...] inside `bytes`.
    pub offset: usize,
    /// The whole storage this tensor views.
    pub bytes: Bytes,
}

impl RawTensor {
    /// A contiguous row-major tensor over `bytes` starting at `offset`.
    pub fn contiguous(dtype: DType, shape: Vec<usize>, offset: usize, bytes: Bytes) -> Self {
        let strides = contiguous_strides(&shape);
        RawTensor {
            dtype,
            shape,
            strides,
            offset,
            bytes,
        }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the elements are laid out row-major without gaps.
    pub fn is_contiguous(&self) -> bool {
        self.numel() == 0 || self.strides == contiguous_strides(&self.shape)
    }

    /// Whether `other` views exactly the same elements of the same storage (a tied weight
    /// saved under two names).
    pub fn same_view(&self, other: &RawTensor) -> bool {
        let (a, b) = (self.bytes.as_slice(), other.bytes.as_slice());
        std::ptr::eq(a.as_ptr(), b.as_ptr())
            && a.len() == b.len()
            && self.offset == other.offset
            && self.dtype == other.dtype
            && self.shape == other.shape
            && self.strides == other.strides
    }

    /// Checks that every element the view can address lies inside the storage.
    pub fn check_bounds(&self, path: &Path, name: &str) -> Result<()> {
        if self.strides.len() != self.shape.len() {
            return Err(Error::tensor(
                path,
                name,
                format!(
                    "{} strides for {} dimensions",
                    self.strides.len(),
                    self.shape.len()
                ),
            ));
        }
        if self.numel() == 0 {
            return Ok(());
        }
        if self.dtype.is_quantized() {
            let cols = self.shape.last().copied().unwrap_or(1);
            let bytes = self
                .dtype
                .bytes_for(self.numel())
                .filter(|_| self.is_contiguous() && cols % self.dtype.block_elems() == 0)
                .ok_or_else(|| {
                    Error::tensor(
                        path,
                        name,
                        format!(
                            "{} rows must be contiguous whole blocks of {} values, shape {:?}",
                            self.dtype,
                            self.dtype.block_elems(),
                            self.shape
                        ),
                    )
                })?;
            return self.check_extent(bytes, path, name);
        }
        let mut last = 0usize;
        for (&d, &s) in self.shape.iter().zip(&self.strides) {
            last = (d - 1)
                .checked_mul(s)
                .and_then(|x| x.checked_add(last))
                .ok_or_else(|| Error::tensor(path, name, "shape and strides overflow"))?;
        }
        let extent = (last + 1)
            .checked_mul(self.dtype.size())
            .ok_or_else(|| Error::tensor(path, name, "offset overflows"))?;
        self.check_extent(extent, path, name)
    }

    /// Checks that `extent` bytes from `offset` lie inside the storage.
    fn check_extent(&self, extent: usize, path: &Path, name: &str) -> Result<()> {
        let end = self
            .offset
            .checked_add(extent)
            .ok_or_else(|| Error::tensor(path, name, "offset overflows"))?;
        let have = self.bytes.as_slice().len();
        if end > have {
            return Err(Error::tensor(
                path,
                name,
                format!("needs bytes up to {end} but its storage holds {have} (file truncated?)"),
            ));
        }
        Ok(())
    }

    /// Converts to a contiguous row-major `Vec<f32>`, honouring strides and offset.
    /// The caller must have called [`RawTensor::check_bounds`].
    /// Block-quantized tensors are not converted here (see `kernels::quant`): an error.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        if self.dtype.is_quantized() {
            return Err(Error::Request(format!(
                "a {} tensor is block-quantized; dequantize it with kernels::quant",
                self.dtype
            )));
        }
        let n = self.numel();
        let esz = self.dtype.size();
        let data = self.bytes.as_slice();
        let read = |elem: usize| -> f32 {
            let at = self.offset + elem * esz;
            let b = &data[at..at + esz];
            match self.dtype {
                DType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                DType::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
                DType::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
                DType::F64 => {
                    f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
                }
                DType::I64 => {
                    i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
                }
                DType::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
                DType::U8 => b[0] as f32,
                _ => 0.0,
            }
        };
        let mut out = Vec::with_capacity(n);
        if self.is_contiguous() {
            out.extend((0..n).map(read));
            return Ok(out);
        }
        // General strided walk (row-major logical order).
        let rank = self.shape.len();
        let mut idx = vec![0usize; rank];
        for _ in 0..n {
            let elem: usize = idx.iter().zip(&self.strides).map(|(i, s)| i * s).sum();
            out.push(read(elem));
            for d in (0..rank).rev() {
                idx[d] += 1;
                if idx[d] < self.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        Ok(out)
    }
}

/// Row-major strides (in elements) for `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}

/// A named collection of raw tensors from one checkpoint (possibly several files).
#[derive(Debug, Clone, Default)]
pub struct TensorStore {
    /// The file or folder the tensors came from (for error messages).
    pub source: PathBuf,
    pub tensors: std::collections::BTreeMap<String, RawTensor>,
}

impl TensorStore {
    pub fn new(source: impl Into<PathBuf>) -> Self {
        TensorStore {
            source: source.into(),
            tensors: Default::default(),
        }
    }

    /// Drops every resident page of the memory-mapped files behind these tensors (see
    /// [`Bytes::release`]). Meant for once the model is built: the copies have released their
    /// own stretches, but pages shared by neighbouring tensors and small tensors copied whole
    /// stay mapped; tensors still read from the map fault their pages back in as they are used.
    pub fn release_mapped_pages(&self) {
        let mut seen: Vec<*const u8> = Vec::new();
        for t in self.tensors.values() {
            let start = t.bytes.as_slice().as_ptr();
            if t.bytes.is_mapped() && !seen.contains(&start) {
                seen.push(start);
                t.bytes.release(0, t.bytes.as_slice().len());
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&RawTensor> {
        self.tensors.get(name)
    }

    pub fn insert(&mut self, name: String, t: RawTensor) {
        self.tensors.insert(name, t);
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Removes `prefix` from every name that starts with it (e.g. `_orig_mod.`).
    pub fn strip_prefix(&mut self, prefix: &str) {
        if !self.tensors.keys().any(|k| k.starts_with(prefix)) {
            return;
        }
        let old = std::mem::take(&mut self.tensors);
        self.tensors = old
            .into_iter()
            .map(|(k, v)| match k.strip_prefix(prefix) {
                Some(rest) => (rest.to_string(), v),
                None => (k, v),
            })
            .collect();
    }
}
