//! Streaming SHA-256 of release images.
//!
//! Images can be many gigabytes, so they are never read whole: a fixed buffer is filled and
//! hashed until the end of the file. `sha2` picks the SHA-NI (x86) or SHA2 (ARMv8)
//! instructions at run time when the CPU has them, which is what lets this keep up with
//! `sha256sum` (see `benches/release_hash.rs`).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest as _, Sha256};
use swell_proto::Sha256Digest;

use crate::error::Error;

/// Read size while hashing. 1 MiB amortizes the system call per read to nothing next to the
/// hashing, while the memory used stays the same for any image size.
pub const BUFFER_BYTES: usize = 1 << 20;

/// The size and SHA-256 of an image, measured from the bytes actually read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measured {
    /// Bytes read.
    pub size: u64,
    /// Their SHA-256.
    pub sha256: Sha256Digest,
}

/// Hashes everything `reader` yields, [`BUFFER_BYTES`] at a time.
pub fn hash_reader(mut reader: impl Read) -> io::Result<Measured> {
    let mut buf = vec![0u8; BUFFER_BYTES];
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Measured {
        size,
        sha256: Sha256Digest::from_bytes(hasher.finalize().into()),
    })
}

/// Hashes the file at `path` as a stream (the function `release create` and `release verify`
/// use).
pub fn hash_file(path: &Path) -> Result<Measured, Error> {
    let file = File::open(path).map_err(Error::io("read", path))?;
    hash_reader(file).map_err(Error::io("read", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `step` bytes per call, to cross buffer boundaries.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn matches_one_shot_digest_across_buffer_boundaries() {
        let data: Vec<u8> = (0..(BUFFER_BYTES * 2 + 12_345))
            .map(|i| u8::try_from(i * 7 % 251).unwrap())
            .collect();
        let expected = Sha256Digest::of(&data);
        for step in [1 << 16, BUFFER_BYTES, BUFFER_BYTES + 1, usize::MAX] {
            let m = hash_reader(Trickle { data: &data, step }).unwrap();
            assert_eq!(
                m,
                Measured {
                    size: data.len() as u64,
                    sha256: expected
                },
                "step {step}"
            );
        }
    }

    #[test]
    fn empty_input_has_the_empty_digest() {
        let m = hash_reader(io::empty()).unwrap();
        assert_eq!(m.size, 0);
        assert_eq!(
            m.sha256.to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
