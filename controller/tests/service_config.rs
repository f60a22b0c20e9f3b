//! The configuration contract of `swell-controller`: what `serve` and `check-config` refuse
//! (one line on stderr, exit status 1), the `token` subcommand's output loading as config, and
//! a graceful stop on SIGTERM.

// Helpers outside #[test] functions panic on the unexpected, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod service_support;

use std::process::Command;

use service_support::*;

fn controller(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_swell-controller"))
        .args(args)
        .output()
        .unwrap()
}

fn check(fx: &Fixture) -> std::process::Output {
    controller(&["check-config", "--config", fx.config.to_str().unwrap()])
}

fn assert_refused(out: &std::process::Output, needle: &str) {
    assert!(
        !out.status.success(),
        "accepted: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "{err:?} does not contain {needle:?}");
}

fn rewrite(fx: &Fixture, from: &str, to: &str) {
    let text = std::fs::read_to_string(&fx.config).unwrap();
    assert!(text.contains(from), "{from:?} not in the config");
    std::fs::write(&fx.config, text.replace(from, to)).unwrap();
}

/// A valid config checks out; the embedded broker is refused on a non-loopback address
/// unless insecure_listen_any says so, because it cannot enforce per-device topic ACLs.
#[test]
fn embedded_broker_stays_on_loopback_unless_told() {
    let fx = Fixture::new();
    let ok = check(&fx);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    rewrite(
        &fx,
        "listen = \"127.0.0.1:0\"\n\n[trust]",
        "listen = \"0.0.0.0:0\"\n\n[trust]",
    );
    assert_refused(&check(&fx), "insecure_listen_any");
    let serve = controller(&["serve", "--config", fx.config.to_str().unwrap()]);
    assert_refused(&serve, "cannot enforce per-device topic ACLs");
    rewrite(
        &fx,
        "listen = \"0.0.0.0:0\"\n",
        "listen = \"0.0.0.0:0\"\ninsecure_listen_any = true\n",
    );
    assert!(check(&fx).status.success());
}

/// Unknown fields, a controller key outside the root's controller role, a broken token
/// digest, a bad address and an external broker without a URL are each refused by name.
#[test]
fn bad_configs_are_refused_by_name() {
    let fx = Fixture::with_config_extra("\n[extras]\ncolour = \"blue\"\n");
    assert_refused(&check(&fx), "unknown field");

    let fx = Fixture::new();
    std::fs::write(
        fx.path("controller.pem"),
        swell_proto::keys::pem::private_key_to_pem(&fx.keys.release).unwrap(),
    )
    .unwrap();
    assert_refused(&check(&fx), "not a key of the trust root's controller role");

    let fx = Fixture::new();
    rewrite(
        &fx,
        "role = \"viewer\"\nsha256 = \"",
        "role = \"viewer\"\nsha256 = \"zz",
    );
    assert_refused(&check(&fx), "api.token.sha256");

    let fx = Fixture::new();
    rewrite(
        &fx,
        "[http]\nlisten = \"127.0.0.1:0\"",
        "[http]\nlisten = \"localhost\"",
    );
    assert_refused(&check(&fx), "http.listen");

    let fx = Fixture::new();
    rewrite(
        &fx,
        "mode = \"embedded\"\nlisten = \"127.0.0.1:0\"",
        "mode = \"external\"",
    );
    assert_refused(&check(&fx), "broker.url: required");

    let fx = Fixture::new();
    rewrite(&fx, "role = \"viewer\"", "role = \"superuser\"");
    assert_refused(&check(&fx), "superuser");

    let fx = Fixture::new();
    std::fs::remove_file(fx.path("root.json")).unwrap();
    assert_refused(&check(&fx), "root.json");
}

/// `swell-controller token` prints a token and the config entry for it; with the entry in the
/// config, the token authenticates with its name and role; SIGTERM stops the service cleanly.
#[test]
fn generated_tokens_work_and_sigterm_stops_cleanly() {
    let out = controller(&["token", "--name", "ci-bot", "--role", "operator"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (token, entry) = text.split_once("\n\n").unwrap();
    assert!(token.starts_with("swell_") && token.len() == 70, "{token}");
    assert!(
        entry.starts_with("[[api.token]]\nname = \"ci-bot\"\nrole = \"operator\"\n"),
        "{entry}"
    );
    assert!(
        !entry.contains(token),
        "the config entry must not hold the token itself"
    );
    assert_refused(
        &controller(&["token", "--name", "a b", "--role", "admin"]),
        "token name",
    );

    let fx = Fixture::with_config_extra(&format!("\n{entry}"));
    let mut c = fx.start();
    let me = c.get_json("/v1/whoami", token);
    assert_eq!(
        me,
        serde_json::json!({"name": "ci-bot", "role": "operator"})
    );
    let health = c.request("GET", "/healthz", None).send(&[]);
    assert_eq!(health.status, 200);
    let spec = c.request("GET", "/v1/openapi.json", None).send(&[]);
    assert_eq!(spec.json()["openapi"], "3.1.0");
    c.request("GET", "/v1/nowhere", Some(token))
        .send(&[])
        .assert_error(404, "no route");
    c.request("DELETE", "/v1/devices", Some(token))
        .send(&[])
        .assert_error(405, "method not allowed");

    let status = Command::new("kill")
        .args(["-TERM", &c.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = c.wait();
    assert!(exit.success(), "exit {exit:?}; logs:\n{}", c.logs());
}
