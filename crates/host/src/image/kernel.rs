//! Kernels: what format a file is (bzImage or ELF), the version a bzImage
//! carries, and the ELF `vmlinux` inside a bzImage (Firecracker boots only
//! ELF kernels; Debian ships LZ4-compressed bzImages). The payload is
//! found through the x86 boot protocol's setup header, not by scanning.

use std::io::{self, Read, Write};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    BzImage,
    Elf,
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: io::Error },
    #[error("not a kernel: neither a bzImage nor an ELF file")]
    NotKernel,
    #[error("bzImage header is damaged: {0}")]
    Header(String),
    #[error("the kernel payload is {0}-compressed, which banger cannot unpack")]
    Compression(&'static str),
    #[error("cannot decompress the kernel payload: {0}")]
    Decompress(String),
    #[error("the unpacked kernel is not an ELF file")]
    NotElf,
}

const ELF_MAGIC: &[u8] = b"\x7fELF";
const HDRS_OFFSET: usize = 0x202;
const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

fn read_all(path: &Path) -> Result<Vec<u8>, KernelError> {
    std::fs::read(path).map_err(|source| KernelError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn format_of(bytes: &[u8]) -> Result<KernelFormat, KernelError> {
    if bytes.starts_with(ELF_MAGIC) {
        Ok(KernelFormat::Elf)
    } else if bytes.get(HDRS_OFFSET..HDRS_OFFSET + 4) == Some(b"HdrS") {
        Ok(KernelFormat::BzImage)
    } else {
        Err(KernelError::NotKernel)
    }
}

/// The format of the kernel at `path` (reads only its first page).
pub fn detect(path: &Path) -> Result<KernelFormat, KernelError> {
    let mut head = vec![0u8; 4096];
    let mut file = std::fs::File::open(path).map_err(|source| KernelError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mut filled = 0;
    while filled < head.len() {
        let n = file
            .read(&mut head[filled..])
            .map_err(|source| KernelError::Read {
                path: path.display().to_string(),
                source,
            })?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    format_of(&head[..filled])
}

fn u16_at(bytes: &[u8], at: usize) -> Result<u16, KernelError> {
    bytes
        .get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or_else(|| KernelError::Header(format!("file ends before offset {at:#x}")))
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, KernelError> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| KernelError::Header(format!("file ends before offset {at:#x}")))
}

/// The release (`uname -r`) a bzImage names in its header, if any.
pub fn version(path: &Path) -> Result<Option<String>, KernelError> {
    let bytes = read_all(path)?;
    if format_of(&bytes)? != KernelFormat::BzImage {
        return Ok(None);
    }
    let offset = u16_at(&bytes, 0x20e)? as usize;
    if offset == 0 {
        return Ok(None);
    }
    let start = offset + 0x200;
    let Some(text) = bytes.get(start..(start + 256).min(bytes.len())) else {
        return Ok(None);
    };
    let end = text.iter().position(|b| *b == 0).unwrap_or(text.len());
    let full = String::from_utf8_lossy(&text[..end]);
    Ok(full.split_whitespace().next().map(String::from))
}

/// The compressed payload of a bzImage, located by its setup header.
fn payload(bytes: &[u8]) -> Result<&[u8], KernelError> {
    let setup_sects = match bytes.get(0x1f1) {
        Some(0) => 4,
        Some(n) => *n as usize,
        None => return Err(KernelError::Header("too short".into())),
    };
    let protocol = u16_at(bytes, 0x206)?;
    if protocol < 0x0208 {
        return Err(KernelError::Header(format!(
            "boot protocol {protocol:#x} has no payload fields"
        )));
    }
    let offset = u32_at(bytes, 0x248)? as usize;
    let length = u32_at(bytes, 0x24c)? as usize;
    let start = (setup_sects + 1) * 512 + offset;
    bytes.get(start..start + length).ok_or_else(|| {
        KernelError::Header("payload lies past the end of the file (truncated?)".into())
    })
}

fn lz4_legacy(mut data: &[u8]) -> Result<Vec<u8>, KernelError> {
    let mut out = Vec::new();
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK];
    data = &data[4..];
    while data.len() >= 4 {
        if data[..4] == LZ4_LEGACY_MAGIC {
            data = &data[4..];
            continue;
        }
        let size = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        // What follows the last block is the kernel's size trailer.
        if size == 0 || size > data.len() - 4 {
            break;
        }
        let n = lz4_flex::block::decompress_into(&data[4..4 + size], &mut block)
            .map_err(|e| KernelError::Decompress(e.to_string()))?;
        out.extend_from_slice(&block[..n]);
        data = &data[4 + size..];
    }
    Ok(out)
}

fn decompress(data: &[u8]) -> Result<Vec<u8>, KernelError> {
    let failed = |e: io::Error| KernelError::Decompress(e.to_string());
    match data {
        [0x02, 0x21, 0x4c, 0x18, ..] => lz4_legacy(data),
        [0x1f, 0x8b, ..] => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .map_err(failed)?;
            Ok(out)
        }
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            let mut out = Vec::new();
            zstd::stream::read::Decoder::new(data)
                .map_err(failed)?
                .single_frame()
                .read_to_end(&mut out)
                .map_err(failed)?;
            Ok(out)
        }
        [0xfd, b'7', b'z', b'X', b'Z', ..] => Err(KernelError::Compression("xz")),
        [b'B', b'Z', b'h', ..] => Err(KernelError::Compression("bzip2")),
        [0x5d, 0x00, 0x00, ..] => Err(KernelError::Compression("lzma")),
        [0x89, b'L', b'Z', b'O', ..] => Err(KernelError::Compression("lzo")),
        _ => Err(KernelError::Compression("an unknown format")),
    }
}

/// Writes the ELF kernel inside the bzImage at `bzimage` to `out`
/// (through a temporary file and a rename).
pub fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<(), KernelError> {
    let bytes = read_all(bzimage)?;
    if format_of(&bytes)? != KernelFormat::BzImage {
        return Err(KernelError::Header("not a bzImage".into()));
    }
    let elf = decompress(payload(&bytes)?)?;
    if !elf.starts_with(ELF_MAGIC) {
        return Err(KernelError::NotElf);
    }
    let tmp = out.with_extension("partial");
    let write_err = |source| KernelError::Write {
        path: out.display().to_string(),
        source,
    };
    let mut file = std::fs::File::create(&tmp).map_err(write_err)?;
    file.write_all(&elf).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    std::fs::rename(&tmp, out).map_err(write_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_magic() {
        let mut bz = vec![0u8; 4096];
        bz[HDRS_OFFSET..HDRS_OFFSET + 4].copy_from_slice(b"HdrS");
        assert_eq!(format_of(&bz).unwrap(), KernelFormat::BzImage);
        assert_eq!(format_of(b"\x7fELF\x02").unwrap(), KernelFormat::Elf);
        assert!(matches!(format_of(b"hello"), Err(KernelError::NotKernel)));
    }

    #[test]
    fn lz4_legacy_frames_decode() {
        let original: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let block = lz4_flex::block::compress(&original);
        let mut frame = LZ4_LEGACY_MAGIC.to_vec();
        frame.extend_from_slice(&(block.len() as u32).to_le_bytes());
        frame.extend_from_slice(&block);
        frame.extend_from_slice(&(original.len() as u32).to_le_bytes());
        assert_eq!(lz4_legacy(&frame).unwrap(), original);
    }

    #[test]
    fn unsupported_compression_is_named() {
        let err = decompress(b"\xfd7zXZ\x00rest").unwrap_err().to_string();
        assert_eq!(
            err,
            "the kernel payload is xz-compressed, which banger cannot unpack"
        );
    }
}
