//! The rollout commands: each builds its API call (`/v1/rollouts...`) and turns the answer
//! into an [`Answer`] (the controller's JSON for `--output json`, the views of
//! [`super::rollout_view`] for people). Plans for simple cases are built here from flags
//! ([`simple_plan`]) and every plan is validated with the planner before it travels, so a bad
//! value fails locally, naming the flag or file.
//!
//! `watch` is a thin loop over [`super::rollout_view`]'s pure renderers: fetch, draw, decide
//! whether the rollout has ended, sleep.

use std::io::Write;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde_json::{Value, json};
use swell_proto::{ReleaseName, SemVer, Timestamp};

use super::rollout_view::{list_lines, show_lines, watch_lines, watch_screen};
use super::view::Answer;
use super::{Client, encode};
use crate::error::Error;
use crate::planner::{InvalidPlan, Plan};

/// `NAME@VERSION` of `--release`, both checked as proto checks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseArg {
    /// The release name (`os`).
    pub name: String,
    /// Its semantic version (`1.2.0`).
    pub version: String,
}

impl FromStr for ReleaseArg {
    type Err = String;

    fn from_str(s: &str) -> Result<ReleaseArg, String> {
        let (name, version) = s
            .rsplit_once('@')
            .ok_or_else(|| format!("{s:?}: expected NAME@VERSION, such as os@1.2.0"))?;
        ReleaseName::new(name).map_err(|e| e.to_string())?;
        SemVer::new(version).map_err(|e| e.to_string())?;
        Ok(ReleaseArg {
            name: name.to_owned(),
            version: version.to_owned(),
        })
    }
}

/// The flags of `rollout create` for simple cases, when there is no `--plan`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimplePlan {
    /// `--window 02:00-04:00`: the device-local maintenance window.
    pub window: String,
    /// `--canary-share 20%`: the first stage takes this share of the fleet, canary cohort
    /// first; without it, the first stage is the canary cohort alone.
    pub canary_share: Option<String>,
    /// `--waves 25%,50%`: one stage per wave after the canary, each a share of what is left;
    /// a last stage `rest` takes the remainder.
    pub waves: Vec<String>,
    /// `--max-in-flight`.
    pub max_in_flight: u32,
    /// `--starts-per-minute`.
    pub starts_per_minute: u32,
    /// `--device-timeout`.
    pub device_timeout: String,
    /// `--soak`.
    pub soak: String,
    /// `--tolerate`: failures tolerated per stage, `0` or a percentage.
    pub tolerate: String,
    /// `--approval`: an operator approves the stage after the canary.
    pub approval: bool,
}

impl Default for SimplePlan {
    /// The defaults `rollout create --help` shows (the window has none: it is required).
    fn default() -> SimplePlan {
        SimplePlan {
            window: String::new(),
            canary_share: None,
            waves: Vec::new(),
            max_in_flight: 10,
            starts_per_minute: 10,
            device_timeout: "45m".to_owned(),
            soak: "30m".to_owned(),
            tolerate: "0".to_owned(),
            approval: false,
        }
    }
}

/// A TOML string literal (basic string, escaped).
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A plan amount: bare digits are a count, anything else a string (`"20%"`) for the planner
/// to judge.
fn amount(s: &str) -> String {
    let s = s.trim();
    if !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit()) {
        s.to_owned()
    } else {
        quoted(s)
    }
}

/// The flag a plan field built from flags came from.
fn flag_of(field: &str) -> &'static str {
    match field {
        f if f.starts_with("window") => "--window",
        "limits.max_in_flight" => "--max-in-flight",
        f if f.starts_with("limits.max_starts_per_minute") => "--starts-per-minute",
        "defaults.device_timeout" => "--device-timeout",
        "defaults.success.soak" => "--soak",
        f if f.starts_with("defaults.failure") || f.starts_with("defaults.success") => "--tolerate",
        "step[1].stage[1].share" => "--canary-share",
        f if f.ends_with(".share") => "--waves",
        "name" => "--release",
        _ => "flags",
    }
}

/// Builds plan TOML from the simple-case flags and validates it with the planner; an error
/// names the flag. The plan: one step per stage: `canary` (the canary cohort, or
/// `--canary-share` of the fleet canary cohort first), `wave-1` .. `wave-N` (`--waves`, each a
/// share of what is left), then `rest`; failures beyond `--tolerate` abort and roll back.
pub fn simple_plan(p: &SimplePlan, release: &ReleaseArg) -> Result<String, Error> {
    let (start, end) = p
        .window
        .trim()
        .split_once('-')
        .ok_or_else(|| Error::Argument {
            arg: "--window",
            reason: format!(
                "{:?}: expected START-END in device-local time, such as 02:00-04:00",
                p.window
            ),
        })?;
    let tolerate = p.tolerate.trim();
    // A stage passes when `committed` of its devices are committed. With `tolerate` failures
    // allowed, `committed` must leave room for them or a stage with a tolerated failure could
    // never pass: 100% - tolerate, exact for percentages (the planner rounds one up and the
    // other down). A count has no percentage equal to it at every stage size.
    let committed = match tolerate.strip_suffix('%') {
        None if tolerate == "0" => "100%".to_owned(),
        None => {
            return Err(Error::Argument {
                arg: "--tolerate",
                reason: format!(
                    "{tolerate:?}: give 0 or a percentage such as 5% (a count above 0 fits no \
                     committed share at every stage size; write a plan with --plan for that)"
                ),
            });
        }
        Some(digits) => match digits.parse::<u8>() {
            Ok(n) if n < 100 => format!("{}%", 100 - n),
            _ => {
                return Err(Error::Argument {
                    arg: "--tolerate",
                    reason: format!("{tolerate:?}: a percentage from 0% to 99%"),
                });
            }
        },
    };

    let mut t = String::new();
    t.push_str("# Made by swellctl rollout create from flags; pass an edited copy with --plan.\n");
    t.push_str(&format!(
        "name = {}\n\n",
        quoted(&format!("{} {}", release.name, release.version))
    ));
    t.push_str(&format!(
        "[window]\nstart = {}\nend = {}\n\n",
        quoted(start.trim()),
        quoted(end.trim())
    ));
    t.push_str(&format!(
        "[limits]\nmax_in_flight = {}\nmax_starts_per_minute = {}\n\n",
        p.max_in_flight, p.starts_per_minute
    ));
    t.push_str(&format!(
        "[defaults]\ndevice_timeout = {}\nsuccess = {{ committed = {}, soak = {} }}\n\
         failure = {{ tolerate = {}, action = \"abort_and_rollback\" }}\n",
        quoted(p.device_timeout.trim()),
        quoted(&committed),
        quoted(p.soak.trim()),
        amount(tolerate)
    ));
    t.push_str("\n[[step]]\n[[step.stage]]\nname = \"canary\"\n");
    match &p.canary_share {
        Some(share) => {
            t.push_str("# The canary cohort first, then others to make up the share.\n");
            t.push_str(&format!("share = {}\n", amount(share)));
        }
        None => t.push_str("selector = { cohort = \"canary\" }\n"),
    }
    let mut names: Vec<(String, Option<&str>)> = p
        .waves
        .iter()
        .enumerate()
        .map(|(i, w)| (format!("wave-{}", i + 1), Some(w.as_str())))
        .collect();
    names.push(("rest".to_owned(), None));
    for (i, (name, share)) in names.iter().enumerate() {
        t.push_str(&format!(
            "\n[[step]]\n[[step.stage]]\nname = {}\n",
            quoted(name)
        ));
        if let Some(share) = share {
            t.push_str(&format!("share = {}\n", amount(share)));
        }
        if i == 0 && p.approval {
            t.push_str("approval = true\n");
        }
    }

    Plan::from_toml(&t).map_err(|e| match e {
        InvalidPlan::Field { field, reason } => Error::Argument {
            arg: flag_of(&field),
            reason,
        },
        InvalidPlan::Toml(reason) => Error::Argument {
            arg: "flags",
            reason,
        },
    })?;
    Ok(t)
}

/// Reads a `--plan` file and validates it with the planner, so a bad plan fails here with the
/// file and field named.
pub fn read_plan(path: &Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(path).map_err(Error::io("read", path))?;
    Plan::from_toml(&text).map_err(|e| Error::Argument {
        arg: "--plan",
        reason: format!("{}: {e}", path.display()),
    })?;
    Ok(text)
}

/// `rollout create --print-plan`: the plan, as TOML for people and `{"plan": "..."}` in JSON.
pub fn print_plan(plan: &str) -> Answer {
    Answer {
        json: json!({ "plan": plan }),
        lines: plan.lines().map(str::to_owned).collect(),
    }
}

/// What `rollout create` sends.
#[derive(Debug, Clone)]
pub struct CreateRequest<'a> {
    /// The plan's TOML text.
    pub plan: &'a str,
    /// The release to roll out.
    pub release: &'a ReleaseArg,
    /// Plan only: the controller answers with the schedule and creates nothing.
    pub dry_run: bool,
    /// The active rollout this one replaces.
    pub supersedes: Option<&'a str>,
    /// With `dry_run`: print the per-device starts too.
    pub starts: bool,
}

/// `rollout create`: the new rollout, or with `dry_run` the controller's schedule table (and
/// with `starts` its per-device starts).
pub fn create(client: &Client, req: &CreateRequest<'_>) -> Result<Answer, Error> {
    let body = json!({
        "plan": req.plan,
        "release": {"name": req.release.name, "version": req.release.version},
        "dry_run": req.dry_run,
        "supersedes": req.supersedes,
    });
    let json: Value = client.send_json("POST", "/v1/rollouts", &body)?;
    if req.dry_run {
        let mut lines: Vec<String> = json["table"]
            .as_str()
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        if req.starts {
            lines.push(String::new());
            lines.extend(
                json["starts"]
                    .as_str()
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_owned),
            );
        }
        let current: Vec<&str> = json["already_current"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !current.is_empty() {
            lines.push(String::new());
            lines.push(format!(
                "already on {} {} (left out): {}",
                req.release.name,
                req.release.version,
                current.join(", ")
            ));
        }
        return Ok(Answer { json, lines });
    }
    Ok(rollout_answer(json, false))
}

fn rollout_answer(json: Value, devices: bool) -> Answer {
    let lines = show_lines(&json["rollout"], devices);
    Answer { json, lines }
}

/// `rollout list`, newest first.
pub fn list(client: &Client) -> Result<Answer, Error> {
    let json: Value = client.get("/v1/rollouts")?;
    let lines = list_lines(&json);
    Ok(Answer { json, lines })
}

/// `GET /v1/rollouts/{id}`: the whole answer, `{"rollout": ROLLOUT}`.
pub fn fetch(client: &Client, id: &str) -> Result<Value, Error> {
    client.get(&format!("/v1/rollouts/{}", encode(id)))
}

/// `rollout show ID [--devices]`.
pub fn show(client: &Client, id: &str, devices: bool) -> Result<Answer, Error> {
    fetch(client, id).map(|json| rollout_answer(json, devices))
}

fn act(client: &Client, id: &str, action: &str, body: &Value) -> Result<Answer, Error> {
    client
        .send_json(
            "POST",
            &format!("/v1/rollouts/{}/{action}", encode(id)),
            body,
        )
        .map(|json| rollout_answer(json, false))
}

/// `rollout pause ID --reason R`: no new starts until resumed.
pub fn pause(client: &Client, id: &str, reason: &str) -> Result<Answer, Error> {
    act(client, id, "pause", &json!({ "reason": reason }))
}

/// `rollout resume ID [--reason R]`.
pub fn resume(client: &Client, id: &str, reason: &str) -> Result<Answer, Error> {
    act(client, id, "resume", &json!({ "reason": reason }))
}

/// `rollout abort ID --reason R`: stop and roll back every device that took the release.
pub fn abort(client: &Client, id: &str, reason: &str) -> Result<Answer, Error> {
    act(client, id, "abort", &json!({ "reason": reason }))
}

/// `rollout approve ID [--stage S] [--reason R]`: without a stage, every stage awaiting
/// approval.
pub fn approve(
    client: &Client,
    id: &str,
    stage: Option<&str>,
    reason: &str,
) -> Result<Answer, Error> {
    act(
        client,
        id,
        "approve",
        &json!({ "stage": stage, "reason": reason }),
    )
}

/// How a watched rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `completed`: exit status 0.
    Completed,
    /// `rolled_back` or `aborted`: exit status 3.
    RolledBack,
    /// `superseded`: exit status 4.
    Superseded,
}

/// The ending of a rollout in `status`, or `None` while it has not ended.
pub fn ending(status: &str) -> Option<Ending> {
    match status {
        "completed" => Some(Ending::Completed),
        "rolled_back" | "aborted" => Some(Ending::RolledBack),
        "superseded" => Some(Ending::Superseded),
        _ => None,
    }
}

/// Parses `--interval`: `1s`, `500ms`, `2m`, at least 10 ms and at most an hour.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?}: expected a duration such as 1s, 500ms or 2m");
    let (digits, unit_ms) = if let Some(d) = s.strip_suffix("ms") {
        (d, 1)
    } else if let Some(d) = s.strip_suffix('s') {
        (d, 1_000)
    } else if let Some(d) = s.strip_suffix('m') {
        (d, 60_000)
    } else {
        return Err(bad());
    };
    if digits.is_empty() || digits.len() > 7 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let ms: u64 = digits.parse::<u64>().map_err(|_| bad())? * unit_ms;
    if !(10..=3_600_000).contains(&ms) {
        return Err(format!("{s:?}: from 10ms to 60m"));
    }
    Ok(Duration::from_millis(ms))
}

/// How `watch` draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    /// Redraw the screen in place (ANSI clear and home) on every poll: a terminal.
    Screen,
    /// One line per change and per new event: a pipe or a file.
    Lines,
    /// The rollout's JSON, one compact object per line, whenever it changes (`--output json`).
    Json,
}

/// What `watch` needs besides the client.
#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// Time between polls.
    pub interval: Duration,
    /// How to draw.
    pub mode: WatchMode,
}

/// Consecutive polls that may fail to reach the controller before `watch` gives up: a
/// restarting controller or a network blip should not end a watch of a day-long rollout.
pub const WATCH_UNREACHABLE_POLLS: u32 = 10;

/// ANSI: clear the screen and move the cursor home.
const CLEAR: &str = "\x1b[2J\x1b[H";

/// `rollout watch ID`: polls the rollout every `interval` until it ends, drawing it each time.
/// `Ok` when it completed; [`Error::RolloutEnded`] when it rolled back, was aborted or
/// superseded (exit status 3 or 4). `now` stamps the lines and `sleep` waits between polls
/// (inputs, so the loop runs under test without a real clock).
pub fn watch(
    client: &Client,
    id: &str,
    opts: WatchOptions,
    out: &mut dyn Write,
    now: &mut dyn FnMut() -> Timestamp,
    sleep: &mut dyn FnMut(Duration),
) -> Result<(), Error> {
    let every = format!("{:?}", opts.interval);
    let mut prev: Option<Value> = None;
    let mut unreachable = 0;
    loop {
        let json = match fetch(client, id) {
            Ok(json) => {
                unreachable = 0;
                json
            }
            Err(Error::Unreachable { .. }) if unreachable + 1 < WATCH_UNREACHABLE_POLLS => {
                unreachable += 1;
                sleep(opts.interval);
                continue;
            }
            Err(e) => return Err(e),
        };
        let r = &json["rollout"];
        let text = match opts.mode {
            WatchMode::Screen => {
                let mut s = CLEAR.to_owned();
                for l in watch_screen(r, now(), &every) {
                    s.push_str(&l);
                    s.push('\n');
                }
                s
            }
            WatchMode::Lines => {
                let mut s = String::new();
                for l in watch_lines(prev.as_ref(), r, now()) {
                    s.push_str(&l);
                    s.push('\n');
                }
                s
            }
            WatchMode::Json if prev.as_ref() != Some(r) => format!("{r}\n"),
            WatchMode::Json => String::new(),
        };
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(Error::Output)?;
        let status = r["status"].as_str().unwrap_or_default();
        match ending(status) {
            Some(Ending::Completed) => return Ok(()),
            Some(_) => {
                return Err(Error::RolloutEnded {
                    id: id.to_owned(),
                    status: status.to_owned(),
                    reason: r["status_reason"].as_str().map(str::to_owned),
                });
            }
            None => {}
        }
        prev = Some(r.clone());
        sleep(opts.interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_name_at_version() {
        let r: ReleaseArg = "os@1.2.0".parse().unwrap();
        assert_eq!((r.name.as_str(), r.version.as_str()), ("os", "1.2.0"));
        assert!("os".parse::<ReleaseArg>().is_err());
        assert!("os@one".parse::<ReleaseArg>().is_err());
        assert!("@1.2.0".parse::<ReleaseArg>().is_err());
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_interval("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("1").is_err());
        assert!(parse_interval("1h").is_err());
    }

    #[test]
    fn endings() {
        assert_eq!(ending("completed"), Some(Ending::Completed));
        assert_eq!(ending("aborted"), Some(Ending::RolledBack));
        assert_eq!(ending("rolled_back"), Some(Ending::RolledBack));
        assert_eq!(ending("superseded"), Some(Ending::Superseded));
        assert_eq!(ending("paused"), None);
        assert_eq!(ending("rolling_back"), None);
    }
}
