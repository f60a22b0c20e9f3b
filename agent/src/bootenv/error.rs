//! The one error type of the boot-environment layer. Every I/O variant says what was being done
//! and on which file or device, so a log line alone tells an operator where to look.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why reading or writing a boot environment failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system call failed.
    #[error("{op} at {}{}: {source}", .path.display(), OffsetSuffix(*.offset))]
    Io {
        /// What was being done, e.g. "writing U-Boot env copy 2".
        op: String,
        /// The file, device or directory it was done on.
        path: PathBuf,
        /// The byte offset inside `path`, where one applies.
        offset: Option<u64>,
        /// The error the operating system reported.
        #[source]
        source: io::Error,
    },
    /// A variable name that U-Boot or GRUB cannot store.
    #[error("invalid boot variable name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A value that cannot be stored.
    #[error("invalid value for boot variable {name:?}: {reason}")]
    InvalidValue {
        /// The variable it was meant for.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The variables do not fit in the space the on-disk format has for them.
    #[error("{what} needs {needed} bytes but only {available} are available")]
    TooLarge {
        /// Which environment, e.g. "U-Boot env region" or "GRUB environment block".
        what: &'static str,
        /// Bytes the serialized variables need.
        needed: usize,
        /// Bytes the format has room for.
        available: usize,
    },
    /// No copy of the U-Boot environment has a correct CRC: the region was never written, or
    /// was overwritten by something else. U-Boot itself would fall back to its built-in
    /// default environment here.
    #[error("no valid U-Boot environment: {detail}")]
    NoValidEnv {
        /// What each copy looked like.
        detail: String,
    },
    /// Stored bytes that are not in the format they should be.
    #[error("malformed {what} at {}: {detail}", .path.display())]
    Malformed {
        /// What was being parsed.
        what: &'static str,
        /// Where it came from.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// A line of `fw_env.config`, or a region layout built in code, that cannot be used.
    #[error("U-Boot env config {}{}: {detail}", .path.display(), LineSuffix(*.line))]
    Config {
        /// The config file, or `<code>` for layouts built in code.
        path: PathBuf,
        /// The 1-based line number, where one applies.
        line: Option<usize>,
        /// What is wrong.
        detail: String,
    },
    /// A storage kind this layer does not drive (yet).
    #[error("unsupported U-Boot env device {}: {detail}", .path.display())]
    Unsupported {
        /// The device.
        path: PathBuf,
        /// Why, and what to use instead.
        detail: &'static str,
    },
    /// A typed boot variable holds something the bootloader would not read as that type.
    #[error("boot variable {name}={value:?} is not {expected}")]
    BadVariable {
        /// The variable.
        name: String,
        /// Its raw value.
        value: String,
        /// What it should be.
        expected: &'static str,
    },
    /// A trial boot was requested but the environment has no usable `bootlimit`, so the
    /// bootloader would never fall back: the new slot would get unlimited tries.
    #[error("cannot arm a trial boot: {detail}")]
    NoFallback {
        /// What is missing.
        detail: String,
    },
}

impl Error {
    /// Builds an [`Error::Io`]; a shorthand for the many call sites.
    pub(crate) fn io(
        op: impl Into<String>,
        path: impl Into<PathBuf>,
        offset: Option<u64>,
        source: io::Error,
    ) -> Self {
        Error::Io {
            op: op.into(),
            path: path.into(),
            offset,
            source,
        }
    }
}

/// Formats " offset 0x4000" when an offset is known, nothing otherwise.
struct OffsetSuffix(Option<u64>);

impl fmt::Display for OffsetSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(offset) => write!(f, " offset {offset:#x}"),
            None => Ok(()),
        }
    }
}

/// Formats " line 3" when a line is known, nothing otherwise.
struct LineSuffix(Option<usize>);

impl fmt::Display for LineSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, " line {line}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_error_names_operation_path_and_offset() {
        let err = Error::io(
            "writing U-Boot env copy 2",
            "/dev/mmcblk0boot1",
            Some(0x4000),
            io::Error::from_raw_os_error(28),
        );
        let text = err.to_string();
        assert!(
            text.starts_with("writing U-Boot env copy 2 at /dev/mmcblk0boot1 offset 0x4000: "),
            "{text}"
        );
        assert!(text.contains("No space left on device"), "{text}");
    }

    #[test]
    fn io_error_without_offset_has_no_offset_text() {
        let err = Error::io(
            "renaming",
            "/boot/grub/grubenv",
            None,
            io::ErrorKind::NotFound.into(),
        );
        assert_eq!(
            err.to_string(),
            "renaming at /boot/grub/grubenv: entity not found"
        );
    }
}
