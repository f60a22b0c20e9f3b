//! GRUB's environment block, byte-compatible with `grub-editenv` and GRUB's `load_env`/`save_env`.
//!
//! | offset | length | content |
//! |---|---|---|
//! | 0 | 25 | `# GRUB Environment Block\n` |
//! | 25 | varies | `name=value\n` per variable, in order |
//! | after the last line | rest of 1024 | `#` fill |
//!
//! In values, `\` and newline are escaped with a preceding `\`, exactly as GRUB's
//! `grub_envblk_set` does (`a\b` is stored `a\\b`, a newline as `\` + newline); a reader drops
//! the `\` before any character. Names are not escaped, so they may not contain a newline or
//! start with `#` (GRUB would skip the line as a comment). `grub-editenv set` on an existing
//! name rewrites it in place and appends new names; [`Env`] keeps the same order, so Swell
//! writes the same bytes the tool would.
//!
//! Writing never changes the block in place: the new block goes to a temp file in the same
//! directory, which is fsynced, renamed over the old file, and the directory fsynced. A crash
//! before the rename leaves the old block; after it, the new one.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::{BootEnvStore, Env, Error};

/// The block size `grub-editenv create` uses (GRUB's `DEFAULT_ENVBLK_SIZE`), and the only size
/// Swell reads or writes: GRUB's `save_env` can only rewrite a block in place, so the size is
/// fixed once the file exists.
pub const BLOCK_SIZE: usize = 1024;

/// The first line of every block (GRUB's `GRUB_ENVBLK_SIGNATURE`).
pub const SIGNATURE: &str = "# GRUB Environment Block\n";

/// Serializes `env` into a block of [`BLOCK_SIZE`] bytes.
pub fn encode(env: &Env) -> Result<Vec<u8>, Error> {
    let mut block = Vec::with_capacity(BLOCK_SIZE);
    block.extend_from_slice(SIGNATURE.as_bytes());
    for (name, value) in env.iter() {
        if name.starts_with('#') {
            return Err(Error::InvalidName {
                name: name.to_owned(),
                reason: "starts with '#', which GRUB reads as a comment",
            });
        }
        block.extend_from_slice(name.as_bytes());
        block.push(b'=');
        for byte in value.bytes() {
            if byte == b'\\' || byte == b'\n' {
                block.push(b'\\');
            }
            block.push(byte);
        }
        block.push(b'\n');
    }
    if block.len() > BLOCK_SIZE {
        return Err(Error::TooLarge {
            what: "GRUB environment block",
            needed: block.len(),
            available: BLOCK_SIZE,
        });
    }
    block.resize(BLOCK_SIZE, b'#');
    Ok(block)
}

/// Parses a block as GRUB's `grub_envblk_iterate` does: lines starting with `#` are skipped,
/// a line is `name=value` up to an unescaped newline. Where GRUB silently stops at a broken
/// line, Swell refuses the block, since it would otherwise drop variables when writing back.
pub fn decode(block: &[u8], path: &Path) -> Result<Env, Error> {
    let malformed = |detail: String| Error::Malformed {
        what: "GRUB environment block",
        path: path.to_owned(),
        detail,
    };
    if block.len() != BLOCK_SIZE {
        return Err(malformed(format!(
            "it is {} bytes; grub-editenv creates {BLOCK_SIZE}-byte blocks and Swell handles \
             only that size",
            block.len()
        )));
    }
    let Some(mut rest) = block.strip_prefix(SIGNATURE.as_bytes()) else {
        return Err(malformed(format!("it does not start with {SIGNATURE:?}")));
    };
    let mut env = Env::new();
    while let Some(&first) = rest.first() {
        let at = BLOCK_SIZE - rest.len();
        if first == b'#' {
            rest = after_line(rest);
            continue;
        }
        let Some(eq) = rest.iter().position(|&b| b == b'=') else {
            return Err(malformed(format!("the line at byte {at} has no '='")));
        };
        let (name, after) = (&rest[..eq], &rest[eq + 1..]);
        let mut value = Vec::new();
        let mut i = 0;
        loop {
            match after.get(i) {
                None => return Err(malformed(format!("the line at byte {at} has no end"))),
                Some(b'\n') => break,
                Some(b'\\') => {
                    let Some(&escaped) = after.get(i + 1) else {
                        return Err(malformed(format!("the line at byte {at} has no end")));
                    };
                    value.push(escaped);
                    i += 2;
                }
                Some(&byte) => {
                    value.push(byte);
                    i += 1;
                }
            }
        }
        rest = &after[i + 1..];
        let name = std::str::from_utf8(name)
            .map_err(|_| malformed(format!("the name at byte {at} is not UTF-8")))?;
        let value = String::from_utf8(value)
            .map_err(|_| malformed(format!("the value of {name:?} is not UTF-8")))?;
        env.set(name, &value)
            .map_err(|err| malformed(err.to_string()))?;
    }
    Ok(env)
}

/// Skips to the byte after the next unescaped newline (GRUB's `find_next_line`).
fn after_line(mut rest: &[u8]) -> &[u8] {
    loop {
        match rest {
            [] => return rest,
            [b'\\', _, tail @ ..] => rest = tail,
            [b'\n', tail @ ..] => return tail,
            [_, tail @ ..] => rest = tail,
        }
    }
}

/// A GRUB environment file, usually `/boot/grub/grubenv`.
#[derive(Debug, Clone)]
pub struct GrubEnvFile {
    path: PathBuf,
}

impl GrubEnvFile {
    /// The block at `path`; nothing is read until [`BootEnvStore::load`].
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temp file a write goes through: beside the target, so the rename stays on one
    /// filesystem.
    pub fn temp_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_owned();
        name.push(".swell-tmp");
        self.path.with_file_name(name)
    }

    /// First half of a write: encodes `env` and writes it, fsynced, to the temp file. Nothing
    /// a reader sees has changed until [`PreparedWrite::commit`]. Dropping the result without
    /// committing removes the temp file.
    pub fn prepare(&self, env: &Env) -> Result<PreparedWrite, Error> {
        let block = encode(env)?;
        let temp = self.temp_path();
        let io = |op: &str| {
            let temp = temp.clone();
            let op = op.to_owned();
            move |err| Error::io(op, temp, None, err)
        };
        // The new file takes the old one's permissions (grubenv is often 0600 or 0644).
        let permissions = fs::metadata(&self.path).ok().map(|m| m.permissions());
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(io("creating GRUB env temp file"))?;
        let prepared = PreparedWrite {
            temp: temp.clone(),
            target: self.path.clone(),
            done: false,
        };
        if let Some(permissions) = permissions {
            file.set_permissions(permissions)
                .map_err(io("setting permissions of GRUB env temp file"))?;
        }
        file.write_all(&block)
            .map_err(io("writing GRUB env temp file"))?;
        file.sync_all().map_err(io("syncing GRUB env temp file"))?;
        Ok(prepared)
    }

    fn read_block(&self) -> Result<Vec<u8>, Error> {
        fs::read(&self.path)
            .map_err(|err| Error::io("reading GRUB env block", &self.path, None, err))
    }
}

/// A block written to the temp file, not yet renamed into place.
#[derive(Debug)]
pub struct PreparedWrite {
    temp: PathBuf,
    target: PathBuf,
    done: bool,
}

impl PreparedWrite {
    /// Second half of a write: renames the temp file over the block and fsyncs the directory,
    /// so the rename itself survives a power cut.
    pub fn commit(mut self) -> Result<(), Error> {
        fs::rename(&self.temp, &self.target).map_err(|err| {
            Error::io(
                "renaming GRUB env temp file into place",
                &self.target,
                None,
                err,
            )
        })?;
        self.done = true;
        let dir = match self.target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|err| Error::io("syncing directory", dir, None, err))
    }
}

impl Drop for PreparedWrite {
    fn drop(&mut self) {
        if !self.done {
            // Best effort: a leftover temp file is harmless and the next write replaces it.
            let _ = fs::remove_file(&self.temp);
        }
    }
}

impl BootEnvStore for GrubEnvFile {
    fn load(&mut self) -> Result<Env, Error> {
        decode(&self.read_block()?, &self.path)
    }

    /// Writes `env` as a new block, creating the file if needed.
    fn store(&mut self, env: &Env) -> Result<(), Error> {
        self.prepare(env)?.commit()
    }

    /// `grub-editenv` takes no lock, so neither does this; it does not write when `change`
    /// leaves the variables as they were.
    fn update(
        &mut self,
        change: &mut dyn FnMut(&mut Env) -> Result<(), Error>,
    ) -> Result<Env, Error> {
        let before = self.load()?;
        let mut env = before.clone();
        change(&mut env)?;
        if env != before {
            self.store(&env)?;
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::try_from(pairs).unwrap()
    }

    #[test]
    fn empty_block_is_header_and_fill() {
        let block = encode(&Env::new()).unwrap();
        assert_eq!(block.len(), 1024);
        assert!(block.starts_with(b"# GRUB Environment Block\n#"));
        assert!(block[25..].iter().all(|&b| b == b'#'));
        assert!(decode(&block, Path::new("g")).unwrap().is_empty());
    }

    #[test]
    fn lines_in_order_with_escapes() {
        let e = env(&[
            ("saved_entry", "1>2"),
            ("path", "C:\\x"),
            ("script", "a\nb"),
            ("e", ""),
        ]);
        let block = encode(&e).unwrap();
        let text = b"# GRUB Environment Block\nsaved_entry=1>2\npath=C:\\\\x\nscript=a\\\nb\ne=\n#";
        assert_eq!(&block[..text.len()], text);
        assert_eq!(decode(&block, Path::new("g")).unwrap(), e);
    }

    #[test]
    fn exactly_full_block_fits_one_more_byte_does_not() {
        // Header 25 + "v=" 2 + value + "\n" 1 = 1024.
        let fits = "x".repeat(1024 - 28);
        let block = encode(&env(&[("v", &fits)])).unwrap();
        assert_eq!(block.last(), Some(&b'\n'));
        assert_eq!(
            decode(&block, Path::new("g")).unwrap().get("v"),
            Some(fits.as_str())
        );
        let over = "x".repeat(1024 - 27);
        let err = encode(&env(&[("v", &over)])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "GRUB environment block needs 1025 bytes but only 1024 are available"
        );
        // Escapes count: 500 backslashes take 1000 bytes.
        assert!(encode(&env(&[("v", &"\\".repeat(500))])).is_err());
    }

    #[test]
    fn comment_names_are_refused() {
        assert!(matches!(
            encode(&env(&[("#x", "1")])),
            Err(Error::InvalidName { .. })
        ));
    }

    #[test]
    fn comments_inside_the_block_are_skipped() {
        let mut block = b"# GRUB Environment Block\n# a comment=1\na=1\n".to_vec();
        block.resize(1024, b'#');
        assert_eq!(decode(&block, Path::new("g")).unwrap(), env(&[("a", "1")]));
    }

    #[test]
    fn broken_blocks_are_refused() {
        let path = Path::new("/boot/grub/grubenv");
        let with = |body: &[u8]| {
            let mut block = body.to_vec();
            block.resize(1024, b'#');
            block
        };
        let cases: [(Vec<u8>, &str); 5] = [
            (
                with(b"# GRUB Environment Block\n").split_off(1),
                "it is 1023 bytes",
            ),
            (with(b"# GRUB Env Block\n"), "does not start with"),
            (with(b"# GRUB Environment Block\nnoequals\n"), "no '='"),
            (
                with(b"# GRUB Environment Block\n\na=1\n"),
                "contains a newline",
            ),
            (with(b"# GRUB Environment Block\n=1\n"), "empty"),
        ];
        for (block, want) in cases {
            let err = decode(&block, path).unwrap_err().to_string();
            assert!(
                err.starts_with("malformed GRUB environment block at /boot/grub/grubenv: "),
                "{err}"
            );
            assert!(err.contains(want), "{want}: {err}");
        }
        let mut unterminated = SIGNATURE.as_bytes().to_vec();
        unterminated.extend(std::iter::repeat_n(b'a', 10));
        unterminated.push(b'=');
        unterminated.resize(1024, b'v');
        assert!(
            decode(&unterminated, path)
                .unwrap_err()
                .to_string()
                .contains("has no end")
        );
    }

    #[test]
    fn file_round_trip_keeps_permissions_and_leaves_no_temp() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grubenv");
        let mut file = GrubEnvFile::new(&path);
        assert!(
            file.load()
                .unwrap_err()
                .to_string()
                .starts_with("reading GRUB env block at ")
        );
        file.store(&env(&[("a", "1")])).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let written = file.update(&mut |e| e.set("b", "2")).unwrap();
        assert_eq!(written, env(&[("a", "1"), ("b", "2")]));
        assert_eq!(file.load().unwrap(), written);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!file.temp_path().exists());
        assert_eq!(file.temp_path(), dir.path().join("grubenv.swell-tmp"));
    }

    #[test]
    fn dropped_prepared_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = GrubEnvFile::new(dir.path().join("grubenv"));
        file.store(&env(&[("a", "1")])).unwrap();
        let prepared = file.prepare(&env(&[("a", "2")])).unwrap();
        assert_eq!(file.load().unwrap().get("a"), Some("1"));
        drop(prepared);
        assert!(!file.temp_path().exists());
        assert_eq!(file.load().unwrap().get("a"), Some("1"));
    }
}
