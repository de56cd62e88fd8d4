//! Checkpoint-file readers. Each reader checks sizes against the file and reports the file, the
//! field and what it expected; none panics on any input bytes.
//!
//! - [`sniff`]: tell formats apart by their magic bytes.
//! - [`pickle`]: a safe unpickler (no code execution) producing [`PyValue`]s.
//! - [`torch`]: PyTorch zip checkpoints (`torch.save` since 1.6).
//! - [`safetensors`]: single-file and sharded safetensors.
//! - [`gguf`]: llama.cpp's GGUF (metadata, tensor infos, quantized blocks; plus a writer).

pub mod gguf;
pub mod pickle;
pub mod pyobj;
pub mod safetensors;
pub mod sniff;
pub mod torch;

pub use pyobj::PyValue;

#[cfg(test)]
pub(crate) mod testutil;

/// Whether the row-major strides of `shape` (and its element count, with empty dimensions
/// counted as 1) fit in `usize`. Loaders check this before building a `RawTensor`, whose stride
/// arithmetic is unchecked.
pub(crate) fn shape_fits(shape: &[usize]) -> bool {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d.max(1)))
        .is_some()
}
