//! Detects a checkpoint's format from its first bytes (never from its file name).

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// The formats quill can tell apart by content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// 8-byte little-endian header length, then a JSON header starting with `{`.
    Safetensors,
    /// A zip archive (`PK\x03\x04`): `torch.save` since PyTorch 1.6.
    TorchZip,
    /// A bare pickle, protocol 2 to 5 (nanoGPT `meta.pkl`, legacy `torch.save`).
    Pickle,
    /// llama.cpp's GGUF (`GGUF`).
    Gguf,
    /// llm.c model file (int32 magic 20240326).
    LlmcModel,
    Unknown,
}

/// Magic number at the start of an llm.c model checkpoint.
pub const LLMC_MODEL_MAGIC: i32 = 20240326;

/// Number of leading bytes [`sniff_bytes`] looks at.
pub const SNIFF_LEN: usize = 16;

/// Reads the start of `path` and classifies it.
pub fn sniff_file(path: &Path) -> Result<FileKind> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut head = Vec::with_capacity(SNIFF_LEN);
    (&mut f)
        .take(SNIFF_LEN as u64)
        .read_to_end(&mut head)
        .map_err(|e| Error::io(path, e))?;
    Ok(sniff_bytes(&head, len))
}

/// Classifies a file from its first bytes (`head`, up to [`SNIFF_LEN`]) and its total length.
pub fn sniff_bytes(head: &[u8], file_len: u64) -> FileKind {
    if head.len() >= 9 {
        let mut n = [0u8; 8];
        n.copy_from_slice(&head[..8]);
        let n = u64::from_le_bytes(n);
        if n >= 2 && n <= file_len.saturating_sub(8) && head[8] == b'{' {
            return FileKind::Safetensors;
        }
    }
    if head.starts_with(b"PK\x03\x04") {
        return FileKind::TorchZip;
    }
    if head.starts_with(b"GGUF") {
        return FileKind::Gguf;
    }
    if head.len() >= 4
        && i32::from_le_bytes([head[0], head[1], head[2], head[3]]) == LLMC_MODEL_MAGIC
    {
        return FileKind::LlmcModel;
    }
    if head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]) {
        return FileKind::Pickle;
    }
    FileKind::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::testutil::TempDir;

    #[test]
    fn sniffs_each_magic() {
        let mut st = 10u64.to_le_bytes().to_vec();
        st.extend_from_slice(b"{\"a\":1}   ");
        assert_eq!(
            sniff_bytes(&st[..16], st.len() as u64),
            FileKind::Safetensors
        );
        assert_eq!(sniff_bytes(b"PK\x03\x04rest", 100), FileKind::TorchZip);
        assert_eq!(sniff_bytes(b"GGUF\x03\0\0\0", 100), FileKind::Gguf);
        let llmc = LLMC_MODEL_MAGIC.to_le_bytes();
        assert_eq!(sniff_bytes(&llmc, 1024), FileKind::LlmcModel);
        assert_eq!(sniff_bytes(b"\x80\x02}q\x00.", 6), FileKind::Pickle);
        assert_eq!(sniff_bytes(b"\x80\x05\x95", 3), FileKind::Pickle);
    }

    #[test]
    fn rejects_near_misses_and_garbage() {
        // Safetensors header length larger than the file.
        let mut st = 1000u64.to_le_bytes().to_vec();
        st.extend_from_slice(b"{\"a\":1}");
        assert_eq!(sniff_bytes(&st, st.len() as u64), FileKind::Unknown);
        // Header length 1 is not sane.
        let mut st = 1u64.to_le_bytes().to_vec();
        st.push(b'{');
        assert_eq!(sniff_bytes(&st, 100), FileKind::Unknown);
        // Pickle protocol 1 and 6 are not pickles quill reads.
        assert_eq!(sniff_bytes(b"\x80\x01", 2), FileKind::Unknown);
        assert_eq!(sniff_bytes(b"\x80\x06", 2), FileKind::Unknown);
        assert_eq!(sniff_bytes(b"", 0), FileKind::Unknown);
        assert_eq!(sniff_bytes(b"P", 1), FileKind::Unknown);
        assert_eq!(
            sniff_bytes(b"hello world, not a model", 24),
            FileKind::Unknown
        );
        let mut x = 0x1234_5678u32;
        for len in 0..64 {
            let garbage: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = sniff_bytes(&garbage[..garbage.len().min(SNIFF_LEN)], len as u64);
        }
    }

    #[test]
    fn sniffs_files_by_content_not_name() {
        let dir = TempDir::new("sniff");
        let p = dir.path().join("model.safetensors");
        std::fs::write(&p, b"PK\x03\x04 actually a zip").unwrap();
        assert_eq!(sniff_file(&p).unwrap(), FileKind::TorchZip);
        let p = dir.path().join("empty.bin");
        std::fs::write(&p, b"").unwrap();
        assert_eq!(sniff_file(&p).unwrap(), FileKind::Unknown);
        let missing = dir.path().join("missing.pt");
        let err = sniff_file(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.pt"), "{err}");
    }
}
