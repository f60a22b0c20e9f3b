//! Health checks after a trial boot.
//!
//! Semantics: rounds of checks run every `interval` from the trial boot. A freshly booted
//! system may need a while to come up, so a failing round before the first passing one is not
//! final; the image gets until the deadline to pass. Once every check passes, the soak period
//! starts, and a single failure during the soak is final. The image is committed when the
//! soak completes; if the deadline comes first, the last failure is the reason it is reverted.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use swell_proto::Timestamp;

use crate::config::{HealthCheck, HealthConfig};
use crate::signer::now;
use crate::update::Event;

/// The verdict of the health phase, as a state-machine event.
pub async fn run(config: HealthConfig, deadline: Timestamp, connected: Arc<AtomicBool>) -> Event {
    let interval = Duration::from_secs(config.interval_secs);
    let soak = i64::try_from(config.soak_secs).unwrap_or(i64::MAX);
    let mut passing_since: Option<Timestamp> = None;
    let mut last_failure = String::from("no round of health checks completed");
    loop {
        let round = check_all(&config.checks, &connected).await;
        let t = now();
        match (round, passing_since) {
            (Ok(()), None) => passing_since = Some(t),
            (Ok(()), Some(_)) => {}
            (Err(reason), Some(_)) => return Event::HealthFailed(format!("during soak: {reason}")),
            (Err(reason), None) => last_failure = reason,
        }
        if let Some(since) = passing_since
            && t.unix() - since.unix() >= soak
        {
            return Event::HealthPassed;
        }
        if t >= deadline {
            return Event::HealthFailed(format!(
                "health checks did not pass by the deadline {deadline}: {last_failure}"
            ));
        }
        tokio::time::sleep(interval).await;
    }
}

/// Runs every check once; the first failure is the round's result.
pub(crate) async fn check_all(
    checks: &[HealthCheck],
    connected: &AtomicBool,
) -> Result<(), String> {
    for check in checks {
        check_one(check, connected).await?;
    }
    Ok(())
}

async fn check_one(check: &HealthCheck, connected: &AtomicBool) -> Result<(), String> {
    match check {
        HealthCheck::Command {
            command,
            expect_exit,
            timeout_secs,
        } => {
            let (program, args) = command.split_first().ok_or("empty health command")?;
            let child = tokio::process::Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .status();
            let name = command.join(" ");
            match tokio::time::timeout(Duration::from_secs(*timeout_secs), child).await {
                Err(_) => Err(format!("health command `{name}` took over {timeout_secs}s")),
                Ok(Err(e)) => Err(format!("health command `{name}` could not run: {e}")),
                Ok(Ok(status)) if status.code() == Some(*expect_exit) => Ok(()),
                Ok(Ok(status)) => Err(format!(
                    "health command `{name}` exited with {status}, expected {expect_exit}"
                )),
            }
        }
        HealthCheck::Http {
            url,
            expect_status,
            timeout_secs,
        } => {
            let (url, expect, secs) = (url.clone(), *expect_status, *timeout_secs);
            tokio::task::spawn_blocking(move || http_probe(&url, expect, secs))
                .await
                .map_err(|e| format!("health probe task failed: {e}"))?
        }
        HealthCheck::Controller => {
            if connected.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(String::from(
                    "the controller is not reachable (not connected to the broker)",
                ))
            }
        }
    }
}

fn http_probe(url: &str, expect: u16, secs: u64) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(secs)))
        .http_status_as_error(false)
        .build()
        .into();
    match agent.get(url).call() {
        Ok(response) if response.status().as_u16() == expect => Ok(()),
        Ok(response) => Err(format!(
            "health probe {url} answered {}, expected {expect}",
            response.status().as_u16()
        )),
        Err(e) => Err(format!("health probe {url} failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(checks: Vec<HealthCheck>, soak_secs: u64) -> HealthConfig {
        HealthConfig {
            deadline_secs: 60,
            soak_secs,
            interval_secs: 1,
            checks,
        }
    }

    fn cmd(script: &str) -> HealthCheck {
        HealthCheck::Command {
            command: vec!["sh".into(), "-c".into(), script.into()],
            expect_exit: 0,
            timeout_secs: 5,
        }
    }

    /// Passing checks with no soak commit at once.
    #[tokio::test]
    async fn passing_checks_pass() {
        let ev = run(
            config(vec![cmd("true")], 0),
            now().plus_secs(60),
            Arc::default(),
        )
        .await;
        assert_eq!(ev, Event::HealthPassed);
    }

    /// A check that never passes fails at the deadline, naming the command and its exit code.
    #[tokio::test]
    async fn failing_check_fails_at_the_deadline() {
        let ev = run(config(vec![cmd("exit 3")], 0), now(), Arc::default()).await;
        let Event::HealthFailed(reason) = ev else {
            panic!("expected a failure")
        };
        assert!(
            reason.contains("deadline") && reason.contains("exit status: 3"),
            "{reason}"
        );
    }

    /// The controller check follows the broker connection.
    #[tokio::test]
    async fn controller_check_needs_a_connection() {
        let offline = run(
            config(vec![HealthCheck::Controller], 0),
            now(),
            Arc::default(),
        )
        .await;
        assert!(matches!(offline, Event::HealthFailed(r) if r.contains("not reachable")));
        let online = Arc::new(AtomicBool::new(true));
        let ev = run(config(vec![HealthCheck::Controller], 0), now(), online).await;
        assert_eq!(ev, Event::HealthPassed);
    }

    /// An HTTP probe of a closed port fails with the URL in the reason.
    #[tokio::test]
    async fn http_probe_failure_names_the_url() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/healthz", listener.local_addr().unwrap());
        drop(listener);
        let check = HealthCheck::Http {
            url: url.clone(),
            expect_status: 200,
            timeout_secs: 2,
        };
        let ev = run(config(vec![check], 0), now(), Arc::default()).await;
        assert!(matches!(ev, Event::HealthFailed(r) if r.contains(&url)));
    }
}
