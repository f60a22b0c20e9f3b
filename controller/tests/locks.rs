//! Deploy locks through the real controller and `swellctl lock`: create (plain, with `--until`,
//! with a freeze window `--during` and `--outside`), list with and without `--all`, whether
//! each holds, release, a second release refused with 409, refusals for bad requests and
//! roles, and the audit entries.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod service_support;

use serde_json::json;
use service_support::{Fixture, OPERATOR_TOKEN, VIEWER_TOKEN, failed, json, now, ok, swellctl};
use swell_proto::Timestamp;

/// The three-letter name of the UTC weekday `days_ahead` days from now.
fn utc_weekday(days_ahead: i64) -> &'static str {
    // 1970-01-01 was a Thursday.
    let days = now().unix().div_euclid(86_400) + days_ahead;
    ["thu", "fri", "sat", "sun", "mon", "tue", "wed"][usize::try_from(days % 7).unwrap()]
}

#[test]
fn locks_create_hold_list_release() {
    let fx = Fixture::new();
    let c = fx.start();
    let home = fx.dir.path();
    let url = c.http.as_str();
    let op = |args: &[&str]| swellctl(home, url, OPERATOR_TOKEN, args);

    // A viewer may list but not lock.
    let err = failed(&swellctl(
        home,
        url,
        VIEWER_TOKEN,
        &["lock", "create", "--reason", "x"],
    ));
    assert!(err.contains("needs operator"), "{err}");
    assert!(
        swellctl(home, url, VIEWER_TOKEN, &["lock", "list"])
            .status
            .success()
    );

    // A plain lock with an expiry holds now.
    let a = json(&op(&[
        "--output",
        "json",
        "lock",
        "create",
        "--reason",
        "quarter-end freeze",
        "--until",
        "2h",
    ]));
    let a = &a["lock"];
    assert_eq!(a["id"], "lock-1");
    assert_eq!(a["holding"], true);
    assert_eq!(a["created_by"], "olga");
    assert_eq!(a["reason"], "quarter-end freeze");
    let until = Timestamp::parse(a["until"].as_str().unwrap()).unwrap();
    let expected = now().plus_secs(7200).unix();
    assert!((until.unix() - expected).abs() <= 5, "until {until}");
    assert!(a["released"].is_null() && a["auto_from"].is_null());

    // Freeze windows on the day after tomorrow (UTC): `during` does not hold now, `outside`
    // does.
    let spec = format!("{} 00:00-23:59 UTC", utc_weekday(2));
    let during = json(&op(&[
        "--output",
        "json",
        "lock",
        "create",
        "--reason",
        "maintenance day",
        "--freeze",
        &spec,
        "--during",
    ]));
    assert_eq!(during["lock"]["id"], "lock-2");
    assert_eq!(during["lock"]["holding"], false);
    assert_eq!(
        during["lock"]["freeze"],
        json!({"days": [utc_weekday(2)], "start": "00:00", "end": "23:59", "zone": "UTC",
               "mode": "during"})
    );
    let table = ok(&op(&[
        "lock",
        "create",
        "--reason",
        "deploy only then",
        "--freeze",
        &spec,
        "--outside",
    ]));
    assert!(table.contains("lock-3"), "{table}");
    assert!(
        table.contains(&format!("outside {} 00:00-23:59 UTC", utc_weekday(2))),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("holding") && l.ends_with("yes")),
        "{table}"
    );
    let err = failed(&op(&["lock", "create", "--reason", "x", "--freeze", &spec]));
    assert!(err.contains("--outside or --during"), "{err}");
    let err = failed(&op(&[
        "lock",
        "create",
        "--reason",
        "x",
        "--freeze",
        "mon 09:00-17:00 Mars/Base",
    ]));
    assert!(err.contains("Mars/Base"), "{err}");

    // Listing: newest first, as JSON and as a table.
    let list = json(&op(&["--output", "json", "lock", "list"]));
    let ids: Vec<&str> = list["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["lock-3", "lock-2", "lock-1"]);
    let table = ok(&op(&["lock", "list"]));
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("ID") && header.contains("HOLDING"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("lock-2") && l.contains(" no ")),
        "{table}"
    );

    // Release, then a second release is refused.
    let r = json(&op(&[
        "--output",
        "json",
        "lock",
        "release",
        "lock-1",
        "--reason",
        "books closed",
    ]));
    assert_eq!(r["lock"]["holding"], false);
    assert_eq!(r["lock"]["released"]["by"], "olga");
    assert_eq!(r["lock"]["released"]["reason"], "books closed");
    let err = failed(&op(&["lock", "release", "lock-1", "--reason", "again"]));
    assert!(err.contains("already released by olga"), "{err}");
    let again = c.post_json(
        "/v1/locks/lock-1/release",
        OPERATOR_TOKEN,
        &json!({"reason": "again"}),
    );
    again.assert_error(409, "already released");
    c.post_json(
        "/v1/locks/lock-9/release",
        OPERATOR_TOKEN,
        &json!({"reason": "x"}),
    )
    .assert_error(404, "lock-9");

    let open = json(&op(&["--output", "json", "lock", "list"]));
    assert_eq!(open["locks"].as_array().unwrap().len(), 2);
    let all = json(&op(&["--output", "json", "lock", "list", "--all"]));
    assert_eq!(all["locks"].as_array().unwrap().len(), 3);
    assert_eq!(all["locks"][2]["released"]["reason"], "books closed");

    // The API refuses what the contract does not allow.
    c.post_json("/v1/locks", OPERATOR_TOKEN, &json!({"reason": ""}))
        .assert_error(400, "reason");
    c.post_json(
        "/v1/locks",
        OPERATOR_TOKEN,
        &json!({"reason": "x".repeat(501)}),
    )
    .assert_error(400, "500");
    c.post_json(
        "/v1/locks",
        OPERATOR_TOKEN,
        &json!({"reason": "x", "until": "2001-01-01T00:00:00Z"}),
    )
    .assert_error(400, "not in the future");
    c.post_json(
        "/v1/locks",
        OPERATOR_TOKEN,
        &json!({"reason": "x", "freeze": {"start": "09:00", "end": "17:00", "zone": "UTC",
                                          "mode": "sometimes"}}),
    )
    .assert_error(400, "freeze.mode");
    assert_eq!(
        c.post_json(
            "/v1/locks",
            OPERATOR_TOKEN,
            &json!({"reason": "x", "colour": "red"})
        )
        .status,
        422
    );
    assert_eq!(c.get("/v1/locks?all=maybe", VIEWER_TOKEN).status, 400);

    // Every change is in the audit log, with the lock's id and reason.
    let audit = c.get_json("/v1/audit", VIEWER_TOKEN);
    let entries: Vec<&serde_json::Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("lock."))
        .collect();
    let summary: Vec<(String, String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["details"]["id"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expect = |a: &str, id: &str| (a.to_owned(), id.to_owned(), "olga".to_owned());
    assert_eq!(
        summary,
        [
            expect("lock.create", "lock-1"),
            expect("lock.create", "lock-2"),
            expect("lock.create", "lock-3"),
            expect("lock.release", "lock-1"),
        ]
    );
    assert_eq!(entries[0]["details"]["reason"], "quarter-end freeze");
    assert_eq!(entries[1]["details"]["freeze"]["mode"], "during");
    assert_eq!(entries[3]["details"]["reason"], "books closed");
}

/// Locks and their ids survive a restart of the controller.
#[test]
fn locks_survive_a_restart() {
    let fx = Fixture::new();
    let home = fx.dir.path();
    {
        let c = fx.start();
        let o = swellctl(
            home,
            &c.http,
            OPERATOR_TOKEN,
            &["lock", "create", "--reason", "hold"],
        );
        ok(&o);
        c.kill();
    }
    let c = fx.start();
    let list = c.get_json("/v1/locks", VIEWER_TOKEN);
    assert_eq!(list["locks"][0]["id"], "lock-1");
    assert_eq!(list["locks"][0]["holding"], true);
    let second = json(&swellctl(
        home,
        &c.http,
        OPERATOR_TOKEN,
        &["--output", "json", "lock", "create", "--reason", "next"],
    ));
    assert_eq!(second["lock"]["id"], "lock-2");
}
