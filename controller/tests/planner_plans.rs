//! Plan files: every example in `tests/data/plans/` parses and validates, and every file in
//! `tests/data/plans/invalid/` is refused with an error that names the field (or, for TOML
//! shape errors, the line and the key).
// The file walk panics on the unexpected, like the tests that call it.
#![allow(clippy::unwrap_used)]

mod planner_common;

use std::fmt::Write as _;

use expect_test::expect;
use planner_common::plan_path;
use swell_controller::planner::Plan;

fn files(dir: &str) -> Vec<(String, String)> {
    let dir = plan_path(dir);
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// The example plans (the field pipeline, a weekly on-prem rollout, a midnight-crossing
/// window in an explicit zone order) are valid; the summary shows what each validated to.
#[test]
fn example_plans_are_valid() {
    let mut out = String::new();
    for (name, text) in files("") {
        let plan = Plan::from_toml(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let stages: Vec<String> = plan
            .stages()
            .map(|(step, s)| format!("{}:{}", step + 1, s.name))
            .collect();
        writeln!(
            out,
            "{name}: window {}, selector {}, stages {}",
            plan.window(),
            plan.selector(),
            stages.join(" ")
        )
        .unwrap();
    }
    expect![[r#"
        field-pipeline.toml: window 02:00-04:00, selector hardware gw-arm|gw-x86, version >=1.4.0, <1.5.0, stages 1:dev 1:test 2:edu 2:sandbox 2:staging 3:canary 4:wave-1 5:wave-2 6:wave-3
        night-shift.toml: window 23:00-01:30, selector all, stages 1:everyone
        weekly-by-zone.toml: window 01:00-05:00 tue,wed,thu, selector tags product=appliance, stages 1:canary 2:fleet
    "#]].assert_eq(&out);
}

/// Each invalid plan is refused, and the one-line reason says which field and why.
#[test]
fn invalid_plans_name_the_field() {
    let mut out = String::new();
    for (name, text) in files("invalid") {
        match Plan::from_toml(&text) {
            Ok(_) => panic!("{name} was accepted"),
            Err(e) => writeln!(out, "{name}: {e}").unwrap(),
        }
    }
    expect![[r#"
        bad-tag.toml: step[1].stage[1].selector.tags: "site id" is not a label: 1 to 64 of letters, digits, '.', '_', '-', starting with a letter or digit
        bad-weekday.toml: window.days: "funday" is not one of mon tue wed thu fri sat sun
        duplicate-stage.toml: step[2].stage[1].name: "dev" is already the name of step[1].stage[1]
        empty-step.toml: step[1].stage: a step needs at least one [[step.stage]]
        empty-window.toml: window.end: end equals start; a window must have a length (end before start crosses midnight)
        missing-timeout.toml: step[1].stage[1].device_timeout: missing: set it in the stage or in [defaults]
        ramp-above-max.toml: limits.ramp.initial_per_minute: must not exceed limits.max_starts_per_minute
        share-zero.toml: step[1].stage[1].share: "0%" is neither a count nor a percentage from 1% to 100%
        unknown-action.toml: line 17: unknown variant `rollback`, expected `pause` or `abort_and_rollback` (in `failure = { tolerate = "10%", action = "rollback" }`)
        unknown-stage-field.toml: line 17: unknown field `shar`, expected one of `name`, `selector`, `share`, `approval`, `device_timeout`, `success`, `failure`, `verification` (in `shar = "20%"`)
        unknown-zone.toml: zone_order: "Atlantis/Capital" is not an IANA time zone name (such as Europe/Berlin)
    "#]].assert_eq(&out);
}

fn rollouts_doc() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/rollouts.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// docs/rollouts.md shows the example plans verbatim, so the worked examples are the files the
/// tests plan.
#[test]
fn docs_quote_the_example_plans_verbatim() {
    let doc = rollouts_doc();
    for name in ["field-pipeline.toml", "weekly-by-zone.toml"] {
        let text = std::fs::read_to_string(plan_path(name)).unwrap();
        assert!(
            doc.contains(&format!("```toml\n{text}```")),
            "docs/rollouts.md does not quote {name} as it is"
        );
    }
}

/// Every complete plan in docs/rollouts.md (a TOML block with a `[window]` and a `[[step]]`)
/// is valid.
#[test]
fn docs_plans_are_valid() {
    let doc = rollouts_doc();
    let mut n = 0;
    for block in doc.split("```toml\n").skip(1) {
        let text = block.split("```").next().unwrap();
        if text.contains("[window]") && text.contains("[[step]]") {
            Plan::from_toml(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            n += 1;
        }
    }
    assert_eq!(n, 3, "the first plan and the two worked examples");
}
