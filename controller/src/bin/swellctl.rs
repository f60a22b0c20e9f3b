//! `swellctl`, the Swell operator CLI. Parsing, the clock and the exit status live here; every
//! command is in the library (`swell_controller::cli::run`).
//!
//! On failure swellctl prints exactly one line, `error: <reason>`, to standard error and exits
//! with status 1 (3 or 4 when `rollout watch` saw the rollout roll back or be superseded:
//! `Error::exit_status`); the reason is the error chain joined with ": ".

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser as _;
use clap::error::ErrorKind;
use swell_controller::cli::{Cli, run};
use swell_proto::Timestamp;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version: their text on standard output, success.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => return fail(&usage_reason(&e)),
    };
    let now = match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp::from_unix(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        Err(_) => return fail("the system clock is set before 1970"),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match run(cli, now, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let status = e.source.exit_status();
            fail(&chain(&anyhow::Error::new(e)));
            ExitCode::from(status)
        }
    }
}

/// The error and its causes joined with ": ". A cause whose text the message before it already
/// ends with is skipped: some error types print their source inside their own message.
fn chain(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// A clap usage error as one line: its message up to the first blank line (the usage and tips
/// that follow are for `--help`), with line breaks folded.
fn usage_reason(e: &clap::Error) -> String {
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return "a command is required; see 'swellctl --help'".to_owned();
    }
    let text = e.render().to_string();
    let head = text.split("\n\n").next().unwrap_or_default();
    let head = head.strip_prefix("error: ").unwrap_or(head);
    let words: Vec<&str> = head
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    format!("{}; see 'swellctl --help'", words.join(" "))
}

fn fail(reason: &str) -> ExitCode {
    let reason = reason.replace('\n', " ");
    let _ = writeln!(std::io::stderr().lock(), "error: {reason}");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("malformed JSON: {0}")]
    struct Repeats(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("duplicate key at byte 7")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("m.json")]
    struct Outer(#[source] Repeats);

    /// A source that its parent already printed is not printed twice.
    #[test]
    fn chain_skips_repeated_sources() {
        let err = anyhow::Error::new(Outer(Repeats(Inner)));
        assert_eq!(
            chain(&err),
            "m.json: malformed JSON: duplicate key at byte 7"
        );
    }

    /// Clap's multi-line usage errors fold into one line without the usage text.
    #[test]
    fn usage_errors_fold_to_one_line() {
        let e = Cli::try_parse_from(["swellctl", "key", "id"]).unwrap_err();
        assert_eq!(
            usage_reason(&e),
            "the following required arguments were not provided: <FILE>; see 'swellctl --help'"
        );
    }
}
