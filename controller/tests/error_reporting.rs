//! The failure contract: on any failure swellctl prints exactly one line `error: <reason>` on
//! standard error, nothing on standard output, and exits with status 1; help is not a failure.

mod common;

use common::{Scratch, one_error_line};

/// Usage errors (unknown option, missing argument, bad value, no command) are one line too,
/// not clap's multi-line usage text.
#[test]
fn usage_errors_are_one_line() {
    let s = Scratch::new();
    let err = s.fails("release verify");
    assert_eq!(
        err,
        "error: the following required arguments were not provided: --root <ROOT> <MANIFEST>; \
         see 'swellctl --help'"
    );
    let err = s.fails("key id --bogus x");
    assert!(
        err.starts_with("error: unexpected argument '--bogus' found"),
        "{err}"
    );
    let err = s.fails(
        "release create --image a --name bad/name --version 1.0.0 \
                       --security-version 1 --hardware hw --expires 1d",
    );
    assert!(
        err.starts_with(
            "error: invalid value 'bad/name' for '--name <NAME>': invalid release name"
        ),
        "{err}"
    );
    let err = s.fails("root verify r.json --at tomorrow");
    assert!(
        err.contains("expected RFC 3339 UTC such as 2027-01-31T00:00:00Z"),
        "{err}"
    );
    let err = s.fails("root init --out r.json --expires 1w");
    assert!(err.contains("neither RFC 3339 UTC"), "{err}");
    assert_eq!(
        s.fails(""),
        "error: a command is required; see 'swellctl --help'"
    );
}

/// `--help` and `--version` print to standard output and succeed.
#[test]
fn help_is_not_a_failure() {
    let s = Scratch::new();
    let out = s.ok("release verify --help");
    assert!(out.contains("--installed-security-version"), "{out}");
    let out = s.ok("--version");
    assert!(out.starts_with("swellctl "), "{out}");
}

/// I/O failures name the action and the file, with the operating system's reason.
#[test]
fn io_errors_name_the_file() {
    let s = Scratch::new();
    s.key("k");
    let err = s.fails("release sign nowhere/m.json --key k.pem");
    assert_eq!(
        err,
        "error: release sign: cannot read nowhere/m.json: No such file or directory (os error 2)"
    );
    let err = s.fails("release sign m.json --key missing.pem");
    assert_eq!(
        err,
        "error: release sign: cannot read missing.pem: No such file or directory (os error 2)"
    );
}

/// A document larger than the limit is refused before it is parsed.
#[test]
fn oversized_documents_are_refused() {
    let s = Scratch::new();
    s.write("big.json", &vec![b' '; 200 * 1024]);
    let out = s.run(&["release", "show", "big.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        one_error_line(&out.stderr),
        "error: release show: big.json: document is 204800 bytes, over the 131072-byte limit"
    );
}
