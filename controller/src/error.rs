//! The error type of swellctl's commands. Every variant names the file or argument it is about,
//! so the one line an operator sees says what failed and where; the reason a signed document
//! was refused is the proto [`swell_proto::Error`] kept as the source.

use std::io;
use std::path::PathBuf;

use swell_proto::KeyId;

/// Why a swellctl command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading, writing or syncing a file failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done: `read`, `write`, `rename into place`, ...
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
    /// A new file would replace an existing one.
    #[error("{} already exists; refusing to overwrite it", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// A signed document, or an image checked against one, was refused.
    #[error("{}", path.display())]
    Document {
        /// The document or image.
        path: PathBuf,
        /// Why proto refused it.
        #[source]
        source: swell_proto::Error,
    },
    /// A key file does not hold a usable Ed25519 key.
    #[error("{}: {why}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A signature file is not a raw 64-byte Ed25519 signature.
    #[error("{}: expected a raw 64-byte Ed25519 signature, found {len} bytes", path.display())]
    SignatureLength {
        /// The signature file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// An externally made signature does not verify over the document's payload.
    #[error(
        "{}: the signature does not verify with key {keyid} over the payload of {}; \
         it was made over other bytes or with another key",
        signature.display(),
        document.display()
    )]
    SignatureInvalid {
        /// The signature file.
        signature: PathBuf,
        /// The key it was checked with.
        keyid: KeyId,
        /// The document whose payload it was checked over.
        document: PathBuf,
    },
    /// A command-line value is missing or unusable.
    #[error("{arg}: {reason}")]
    Argument {
        /// The option, such as `--expires`.
        arg: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The operating system could not supply randomness for a new key.
    #[error("cannot get randomness from the operating system: {0}")]
    Random(String),
    /// The controller answered with an error status; the message is its `{"error"}` text.
    #[error("{message} (HTTP {status})")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The controller's reason.
        message: String,
    },
    /// The controller could not be reached, or the connection broke.
    #[error("cannot reach the controller at {url}: {reason}")]
    Unreachable {
        /// The controller's base URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// `audit verify` found problems (printed above the error line).
    #[error("the audit log has {0} problem(s)")]
    AuditBroken(usize),
    /// `rollout watch` saw the rollout end other than completed (its last state is printed
    /// above the error line); the exit status says how ([`Error::exit_status`]).
    #[error("rollout {id} ended {status}{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    RolloutEnded {
        /// The rollout.
        id: String,
        /// `rolled_back`, `aborted` or `superseded`.
        status: String,
        /// The controller's status reason.
        reason: Option<String>,
    },
    /// Writing the command's output failed (for example, a closed pipe).
    #[error("cannot write output")]
    Output(#[source] io::Error),
}

impl Error {
    /// swellctl's exit status for this error: 3 when a watched rollout rolled back or was
    /// aborted, 4 when it was superseded, 1 for everything else.
    pub fn exit_status(&self) -> u8 {
        match self {
            Error::RolloutEnded { status, .. } if status == "superseded" => 4,
            Error::RolloutEnded { .. } => 3,
            _ => 1,
        }
    }

    /// An [`Error::Io`] maker for `map_err`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }

    /// An [`Error::Document`] maker for `map_err`.
    pub fn document(path: impl Into<PathBuf>) -> impl FnOnce(swell_proto::Error) -> Self {
        let path = path.into();
        move |source| Error::Document { path, source }
    }
}
