//! Webhook delivery against a real HTTP receiver on 127.0.0.1: signatures verify with the
//! documented recipe, failures are retried until a 2xx, every enqueued event arrives exactly
//! once and in order, hooks get only the events they asked for, an entry enqueued before a
//! restart is delivered after it (with a fresh delivery id), and an entry failing for longer
//! than the give-up time is dropped with an audit entry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use swell_controller::service::audit::AuditLog;
use swell_controller::service::config::WebhookConfig;
use swell_controller::service::db::Db;
use swell_controller::service::webhooks::{Event, RetryPolicy, Webhooks};
use swell_controller::service::{Clock, SystemClock};
use swell_controller::store::{Batch, Engine, Table};
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

const SECRET: &[u8] = b"0123456789abcdef-webhook-secret";

/// One request the receiver accepted.
#[derive(Debug, Clone)]
struct Received {
    headers: BTreeMap<String, String>,
    body: serde_json::Value,
}

/// A tiny HTTP/1.1 server: answers 500 to the first `fail_first` requests, then verifies each
/// request's signature and answers 204 (or 401 when it does not verify).
struct Receiver {
    addr: SocketAddr,
    attempts: Arc<AtomicUsize>,
    accepted: Arc<Mutex<Vec<Received>>>,
}

fn verify(headers: &BTreeMap<String, String>, body: &[u8]) -> bool {
    let (Some(ts), Some(sig)) = (
        headers.get("x-swell-timestamp"),
        headers.get("x-swell-signature"),
    ) else {
        return false;
    };
    let Some(hex) = sig.strip_prefix("sha256=") else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    expected == hex
}

impl Receiver {
    fn start(fail_first: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let attempts = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let (a, r) = (Arc::clone(&attempts), Arc::clone(&accepted));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() || !line.starts_with("POST ") {
                    continue;
                }
                let mut headers = BTreeMap::new();
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    let (k, v) = h.split_once(':').unwrap();
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                }
                let len: usize = headers["content-length"].parse().unwrap();
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                let n = a.fetch_add(1, Ordering::SeqCst) + 1;
                let status = if n <= fail_first {
                    "500 Internal Server Error"
                } else if verify(&headers, &body) {
                    r.lock().unwrap().push(Received {
                        headers,
                        body: serde_json::from_slice(&body).unwrap(),
                    });
                    "204 No Content"
                } else {
                    "401 Unauthorized"
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Receiver {
            addr,
            attempts,
            accepted,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn accepted(&self) -> Vec<Received> {
        self.accepted.lock().unwrap().clone()
    }
}

/// Polls `f` until it holds, failing after 30 s.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn hook(name: &str, url: &str, events: &[&str]) -> WebhookConfig {
    WebhookConfig {
        name: name.into(),
        url: url.into(),
        secret: Zeroizing::new(SECRET.to_vec()),
        events: events.iter().map(|e| (*e).to_owned()).collect(),
    }
}

fn event(kind: &str, n: u32) -> Event {
    Event {
        kind: kind.into(),
        at: SystemClock.now(),
        rollout: "r-1".into(),
        release: Some(
            serde_json::from_value(serde_json::json!({"name": "os", "version": "1.2.0"})).unwrap(),
        ),
        reason: format!("event {n}"),
        detail: serde_json::json!({ "n": n }),
    }
}

/// A short retry policy: the test waits milliseconds, not seconds.
fn fast() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(10),
        max: Duration::from_millis(40),
        give_up_s: 3600,
        timeout: Duration::from_secs(5),
    }
}

async fn open_store(path: &Path) -> (Db, AuditLog) {
    let path = path.to_owned();
    let store = tokio::task::spawn_blocking(move || Engine::Redb.open(&path))
        .await
        .unwrap()
        .unwrap();
    let db = Db::new(Arc::from(store));
    let audit = AuditLog::open(db.clone()).await.unwrap();
    (db, audit)
}

async fn outbox_len(db: &Db) -> usize {
    db.scan(Table::Rollouts, b"outbox/".to_vec())
        .await
        .unwrap()
        .len()
}

/// Polls the store until the outbox is empty, failing after 30 s.
async fn until_outbox_empty(db: &Db, what: &str) {
    let start = Instant::now();
    while outbox_len(db).await > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Three events for an all-events hook whose receiver fails twice, and one `rollout.aborted`
/// for a hook that wants only that; then a restart with one entry left undelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_once_signed_in_order_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("state.redb");
    let flaky = Receiver::start(2);
    let aborts = Receiver::start(0);
    let hooks = vec![
        hook("ops", &flaky.url(), &[]),
        hook("pager", &aborts.url(), &["rollout.aborted"]),
    ];
    {
        let (db, audit) = open_store(&store).await;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let webhooks = Webhooks::open(db.clone(), audit, hooks.clone(), clock)
            .await
            .unwrap()
            .with_retry(fast());
        let token = CancellationToken::new();
        let driver = tokio::spawn(webhooks.clone().run(token.clone()));

        let mut batch = Batch::new();
        webhooks.enqueue(&mut batch, &event("rollout.started", 1));
        webhooks.enqueue(&mut batch, &event("rollout.paused", 2));
        db.commit(batch).await.unwrap();
        webhooks.notify();
        let mut batch = Batch::new();
        webhooks.enqueue(&mut batch, &event("rollout.aborted", 3));
        db.commit(batch).await.unwrap();
        webhooks.notify();

        until("three deliveries to ops", || flaky.accepted().len() == 3).await;
        until("one delivery to pager", || aborts.accepted().len() == 1).await;
        until_outbox_empty(&db, "an empty outbox").await;
        token.cancel();
        driver.await.unwrap();

        assert_eq!(flaky.attempts.load(Ordering::SeqCst), 5, "2 failures + 3");
        let got = flaky.accepted();
        let ids: Vec<&str> = got
            .iter()
            .map(|r| r.body["delivery"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["ops-1", "ops-2", "ops-3"]);
        for (r, (kind, n)) in got.iter().zip([
            ("rollout.started", 1),
            ("rollout.paused", 2),
            ("rollout.aborted", 3),
        ]) {
            assert_eq!(r.body["event"], kind);
            assert_eq!(r.headers["x-swell-event"], kind);
            assert_eq!(
                r.headers["x-swell-delivery"],
                r.body["delivery"].as_str().unwrap()
            );
            assert_eq!(r.headers["content-type"], "application/json");
            assert_eq!(r.body["rollout"], "r-1");
            assert_eq!(r.body["release"]["version"], "1.2.0");
            assert_eq!(r.body["reason"], format!("event {n}"));
            assert_eq!(r.body["detail"]["n"], n);
            let ts: i64 = r.headers["x-swell-timestamp"].parse().unwrap();
            assert!((SystemClock.now().unix() - ts).abs() < 60);
        }
        let pager = aborts.accepted();
        assert_eq!(pager[0].body["delivery"], "pager-1");
        assert_eq!(pager[0].body["event"], "rollout.aborted");

        // Enqueued and committed, but the driver is stopped: it waits in the store.
        let mut batch = Batch::new();
        webhooks.enqueue(&mut batch, &event("rollout.completed", 4));
        db.commit(batch).await.unwrap();
        assert_eq!(outbox_len(&db).await, 1);
    }

    let (db, audit) = open_store(&store).await;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let webhooks = Webhooks::open(db.clone(), audit, hooks, clock)
        .await
        .unwrap()
        .with_retry(fast());
    let token = CancellationToken::new();
    let driver = tokio::spawn(webhooks.clone().run(token.clone()));
    until("the delivery from before the restart", || {
        flaky.accepted().len() == 4
    })
    .await;
    until_outbox_empty(&db, "an empty outbox").await;
    let last = flaky.accepted().pop().unwrap();
    // The sequence continues: delivery ids are never reused, so receivers can dedupe on them.
    assert_eq!(last.body["delivery"], "ops-4");
    assert_eq!(last.body["event"], "rollout.completed");
    assert_eq!(
        aborts.accepted().len(),
        1,
        "pager wants only rollout.aborted"
    );
    token.cancel();
    driver.await.unwrap();
    assert_eq!(flaky.attempts.load(Ordering::SeqCst), 6);
}

/// A hook that never answers 2xx loses its entry once the give-up time has passed, and the
/// audit log says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_failing_past_the_give_up_time_is_dropped_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let down = Receiver::start(usize::MAX);
    let (db, audit) = open_store(&dir.path().join("state.redb")).await;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let webhooks = Webhooks::open(
        db.clone(),
        audit.clone(),
        vec![hook("ops", &down.url(), &[])],
        clock,
    )
    .await
    .unwrap()
    .with_retry(RetryPolicy {
        give_up_s: 0,
        ..fast()
    });
    let token = CancellationToken::new();
    let driver = tokio::spawn(webhooks.clone().run(token.clone()));
    let mut batch = Batch::new();
    webhooks.enqueue(&mut batch, &event("rollout.aborted", 1));
    db.commit(batch).await.unwrap();
    webhooks.notify();
    until_outbox_empty(&db, "the entry to be dropped").await;
    token.cancel();
    driver.await.unwrap();
    let entries = audit.list().await.unwrap();
    let dropped: Vec<_> = entries
        .iter()
        .filter(|e| e.action == "webhook.dropped")
        .collect();
    assert_eq!(dropped.len(), 1);
    let d = dropped[0].to_json();
    assert_eq!(d["details"]["delivery"], "ops-1");
    assert_eq!(d["details"]["hook"], "ops");
    assert_eq!(d["details"]["last_error"], "HTTP status 500");
    assert!(down.accepted().is_empty());
}
