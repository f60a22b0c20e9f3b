//! Following log files: new lines since the agent started, across rotation and truncation.
//!
//! A file is read from its end as it was when the agent started (what was logged before is
//! history the batch intervals do not cover). Each poll reads what was appended since. When the
//! name points at another file than the one open (logrotate's rename and create), the rest of
//! the old file is read first, then the new one from its start; when the file shrank
//! (copytruncate), it is read again from its start. A file that does not exist yet is read
//! from its start once it appears.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use swell_proto::signals::MAX_LINE_BYTES;

/// Most bytes read from one file in one poll: a runaway logger costs a bounded slice of each
/// tick, and the rest is read in the following ticks.
pub const MAX_READ_PER_POLL: u64 = 1024 * 1024;

/// One followed file.
#[derive(Debug)]
pub struct LogTail {
    path: PathBuf,
    open: Option<(File, u64)>,
    offset: u64,
    partial: Vec<u8>,
}

impl LogTail {
    /// Starts following `path` from its current end.
    pub fn from_end(path: &Path) -> LogTail {
        let mut tail = LogTail {
            path: path.to_path_buf(),
            open: None,
            offset: 0,
            partial: Vec::new(),
        };
        if let Ok(file) = File::open(path)
            && let Ok(meta) = file.metadata()
        {
            tail.offset = meta.len();
            tail.open = Some((file, meta.ino()));
        }
        tail
    }

    /// The followed path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Calls `line` with every complete line appended since the last poll (without its line
    /// ending; invalid UTF-8 replaced). A line longer than the templating reads is cut.
    pub fn poll(&mut self, line: &mut dyn FnMut(&str)) {
        let current = std::fs::metadata(&self.path).ok();
        let rotated = match (&self.open, &current) {
            (Some((_, ino)), Some(meta)) => meta.ino() != *ino,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if rotated {
            // Drain what the old file got before it was renamed away, then switch.
            self.read_open(line);
            self.flush_partial(line);
            self.open = None;
            self.offset = 0;
        }
        if self.open.is_none() {
            if let Ok(file) = File::open(&self.path)
                && let Ok(meta) = file.metadata()
            {
                self.open = Some((file, meta.ino()));
                self.offset = 0;
            } else {
                return;
            }
        }
        if let Some((file, _)) = &self.open
            && let Ok(meta) = file.metadata()
            && meta.len() < self.offset
        {
            // Truncated in place: start again from the top.
            self.offset = 0;
            self.partial.clear();
        }
        self.read_open(line);
    }

    fn read_open(&mut self, line: &mut dyn FnMut(&str)) {
        let Some((file, _)) = &mut self.open else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut bytes = Vec::new();
        let Ok(n) = file.take(MAX_READ_PER_POLL).read_to_end(&mut bytes) else {
            return;
        };
        self.offset += n as u64;
        let mut rest = bytes.as_slice();
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            self.push(&rest[..end]);
            emit(&self.partial, line);
            self.partial.clear();
            rest = &rest[end + 1..];
        }
        self.push(rest);
    }

    /// Appends to the unfinished line, keeping at most what templating reads.
    fn push(&mut self, bytes: &[u8]) {
        let room = MAX_LINE_BYTES.saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// A rotated file's last line may lack its newline: it is complete all the same.
    fn flush_partial(&mut self, line: &mut dyn FnMut(&str)) {
        if !self.partial.is_empty() {
            emit(&self.partial, line);
            self.partial.clear();
        }
    }
}

fn emit(bytes: &[u8], line: &mut dyn FnMut(&str)) {
    let text = String::from_utf8_lossy(bytes);
    line(text.trim_end_matches('\r'));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn lines(tail: &mut LogTail) -> Vec<String> {
        let mut out = Vec::new();
        tail.poll(&mut |l| out.push(l.to_string()));
        out
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// Old lines are skipped; new ones come whole, a partial line once it ends; rotation by
    /// rename drains the old file first; truncation starts again from the top.
    #[test]
    fn follows_appends_rotation_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "old line\n");
        let mut tail = LogTail::from_end(&path);
        assert!(lines(&mut tail).is_empty());
        append(&path, "one\ntw");
        assert_eq!(lines(&mut tail), ["one"]);
        append(&path, "o\r\nthree");
        assert_eq!(lines(&mut tail), ["two"]);
        std::fs::rename(&path, dir.path().join("app.log.1")).unwrap();
        append(&path, "four\n");
        assert_eq!(lines(&mut tail), ["three", "four"]);
        std::fs::write(&path, "").unwrap();
        append(&path, "5\n");
        assert_eq!(lines(&mut tail), ["5"]);
    }

    /// A file that appears after the start is read from its beginning.
    #[test]
    fn a_new_file_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("late.log");
        let mut tail = LogTail::from_end(&path);
        assert!(lines(&mut tail).is_empty());
        append(&path, "first\n");
        assert_eq!(lines(&mut tail), ["first"]);
    }
}
