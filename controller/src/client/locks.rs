//! `swellctl lock create|list|release`: deploy locks on the controller (`/v1/locks`).
//!
//! A freeze window is written as one argument, `[DAYS] HH:MM-HH:MM ZONE`, where DAYS is a
//! comma-separated list of days and day ranges (`mon-fri`, `sat,sun`, `fri-mon`), every day if
//! left out: `--freeze "mon-fri 09:00-15:30 America/Los_Angeles" --outside`.

use std::io::Write;

use serde_json::{Value, json};
use swell_proto::Timestamp;

use super::cli::{Conn, LockCommand};
use super::view::{Answer, cell, columns, details};
use super::{Client, encode};
use crate::error::Error;
use crate::output::{OutputFormat, emit};
use crate::service::locks::{Freeze, FreezeSpec};
use crate::when::When;

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A `--freeze` argument: the window without its mode (`--outside` or `--during`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreezeArg {
    /// Days, Monday first, each once.
    pub days: Vec<String>,
    /// `HH:MM`.
    pub start: String,
    /// `HH:MM`.
    pub end: String,
    /// IANA zone.
    pub zone: String,
}

fn day_index(d: &str) -> Result<usize, String> {
    DAYS.iter()
        .position(|x| *x == d)
        .ok_or_else(|| format!("{d:?} is not a day (mon tue wed thu fri sat sun)"))
}

/// Parses `[DAYS] HH:MM-HH:MM ZONE`, checking it as the controller will.
pub fn parse_freeze(s: &str) -> Result<FreezeArg, String> {
    let words: Vec<&str> = s.split_whitespace().collect();
    let (days, hours, zone) = match words.as_slice() {
        [hours, zone] => (None, *hours, *zone),
        [days, hours, zone] => (Some(*days), *hours, *zone),
        _ => {
            return Err(format!(
                "{s:?}: expected \"[DAYS] HH:MM-HH:MM ZONE\", such as \
                 \"mon-fri 09:00-15:30 America/Los_Angeles\""
            ));
        }
    };
    let mut set = [false; 7];
    match days {
        None => set = [true; 7],
        Some(days) => {
            for item in days.split(',') {
                match item.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (day_index(a)?, day_index(b)?);
                        // A range may wrap over the weekend: fri-mon.
                        let mut i = a;
                        loop {
                            set[i] = true;
                            if i == b {
                                break;
                            }
                            i = (i + 1) % 7;
                        }
                    }
                    None => set[day_index(item)?] = true,
                }
            }
        }
    }
    let (start, end) = hours
        .split_once('-')
        .ok_or_else(|| format!("{hours:?}: expected HH:MM-HH:MM"))?;
    let arg = FreezeArg {
        days: DAYS
            .iter()
            .zip(set)
            .filter(|(_, on)| *on)
            .map(|(d, _)| (*d).to_owned())
            .collect(),
        start: start.to_owned(),
        end: end.to_owned(),
        zone: zone.to_owned(),
    };
    Freeze::from_spec(&arg.spec("during"))?;
    Ok(arg)
}

impl FreezeArg {
    fn spec(&self, mode: &str) -> FreezeSpec {
        FreezeSpec {
            days: Some(self.days.clone()),
            start: self.start.clone(),
            end: self.end.clone(),
            zone: self.zone.clone(),
            mode: mode.to_owned(),
        }
    }
}

/// `mon,tue,wed,thu,fri` as `mon-fri`; every day as `daily`.
fn days_text(days: &[Value]) -> String {
    let mut set = [false; 7];
    for d in days.iter().filter_map(Value::as_str) {
        if let Ok(i) = day_index(d) {
            set[i] = true;
        }
    }
    if set.iter().all(|x| *x) {
        return "daily".to_owned();
    }
    let mut parts = Vec::new();
    let mut i = 0;
    while i < 7 {
        if !set[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i + 1 < 7 && set[i + 1] {
            i += 1;
        }
        parts.push(match i - start {
            0 => DAYS[start].to_owned(),
            1 => format!("{},{}", DAYS[start], DAYS[i]),
            _ => format!("{}-{}", DAYS[start], DAYS[i]),
        });
        i += 1;
    }
    parts.join(",")
}

/// A freeze as one phrase: `outside mon-fri 09:00-15:30 America/Los_Angeles`.
fn freeze_text(f: &Value) -> String {
    if f.is_null() {
        return "-".to_owned();
    }
    let days = f["days"]
        .as_array()
        .map_or_else(|| "daily".to_owned(), |d| days_text(d));
    format!(
        "{} {days} {}-{} {}",
        cell(&f["mode"]),
        cell(&f["start"]),
        cell(&f["end"]),
        cell(&f["zone"])
    )
}

fn yes_no(v: &Value) -> String {
    if v.as_bool() == Some(true) {
        "yes"
    } else {
        "no"
    }
    .to_owned()
}

/// One lock as `label  value` lines.
fn shown(json: Value) -> Answer {
    let l = &json["lock"];
    let mut view = json!({
        "id": l["id"],
        "holding": yes_no(&l["holding"]),
        "reason": l["reason"],
        "created": format!("{} by {}", cell(&l["created_at"]), cell(&l["created_by"])),
        "until": l["until"],
        "freeze": freeze_text(&l["freeze"]),
    });
    if !l["auto_from"].is_null() {
        view["auto_from"] = l["auto_from"].clone();
    }
    if !l["released"].is_null() {
        let r = &l["released"];
        view["released"] = json!(format!(
            "{} by {}: {}",
            cell(&r["at"]),
            cell(&r["by"]),
            cell(&r["reason"])
        ));
    }
    let lines = details(&view);
    Answer { json, lines }
}

/// What `lock create` asks for.
#[derive(Debug, Clone)]
pub struct CreateArgs {
    /// Why.
    pub reason: String,
    /// When it stops holding by itself.
    pub until: Option<Timestamp>,
    /// The freeze window and its mode (`outside` or `during`).
    pub freeze: Option<(FreezeArg, &'static str)>,
}

/// `lock create`
pub fn lock_create(client: &Client, a: &CreateArgs) -> Result<Answer, Error> {
    let body = json!({
        "reason": a.reason,
        "until": a.until,
        "freeze": a.freeze.as_ref().map(|(f, mode)| f.spec(mode)),
    });
    client.send_json("POST", "/v1/locks", &body).map(shown)
}

/// `lock list [--all]`
pub fn lock_list(client: &Client, all: bool) -> Result<Answer, Error> {
    let path = if all {
        "/v1/locks?all=true"
    } else {
        "/v1/locks"
    };
    let json: Value = client.get(path)?;
    let rows: Vec<Vec<String>> = json["locks"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|l| {
            let released = if l["released"].is_null() {
                "-".to_owned()
            } else {
                format!(
                    "{} by {}",
                    cell(&l["released"]["at"]),
                    cell(&l["released"]["by"])
                )
            };
            vec![
                cell(&l["id"]),
                yes_no(&l["holding"]),
                cell(&l["until"]),
                freeze_text(&l["freeze"]),
                cell(&l["created_by"]),
                cell(&l["created_at"]),
                released,
                cell(&l["reason"]),
            ]
        })
        .collect();
    let lines = columns(
        &[
            "ID", "HOLDING", "UNTIL", "FREEZE", "BY", "CREATED", "RELEASED", "REASON",
        ],
        &rows,
        if all {
            "no locks"
        } else {
            "no locks (released ones: --all)"
        },
    );
    Ok(Answer { json, lines })
}

/// `lock release ID --reason R`
pub fn lock_release(client: &Client, id: &str, reason: &str) -> Result<Answer, Error> {
    client
        .send_json(
            "POST",
            &format!("/v1/locks/{}/release", encode(id)),
            &json!({ "reason": reason }),
        )
        .map(shown)
}

type Outcome = (&'static str, Result<(), Error>);

/// Runs a `lock` command.
pub fn run(
    cmd: LockCommand,
    format: OutputFormat,
    now: Timestamp,
    conn: &Conn,
    out: &mut dyn Write,
) -> Outcome {
    match cmd {
        LockCommand::Create {
            reason,
            until,
            freeze,
            outside,
            during,
        } => ("lock create", {
            create_args(reason, until, freeze, outside, during, now).and_then(|a| {
                let c = conn.client()?;
                emit(out, format, &lock_create(&c, &a)?)
            })
        }),
        LockCommand::List { all } => (
            "lock list",
            conn.client()
                .and_then(|c| emit(out, format, &lock_list(&c, all)?)),
        ),
        LockCommand::Release { id, reason } => (
            "lock release",
            conn.client()
                .and_then(|c| emit(out, format, &lock_release(&c, &id, &reason)?)),
        ),
    }
}

fn create_args(
    reason: String,
    until: Option<When>,
    freeze: Option<FreezeArg>,
    outside: bool,
    during: bool,
    now: Timestamp,
) -> Result<CreateArgs, Error> {
    let until = match until.map(|w| w.resolve(now)) {
        Some(t) if t <= now => {
            return Err(Error::Argument {
                arg: "--until",
                reason: format!("{t} is not in the future (now {now})"),
            });
        }
        other => other,
    };
    let freeze = match (freeze, outside, during) {
        (None, false, false) => None,
        (Some(f), true, false) => Some((f, "outside")),
        (Some(f), false, true) => Some((f, "during")),
        (Some(_), false, false) => {
            return Err(Error::Argument {
                arg: "--freeze",
                reason: "say whether the lock holds --outside or --during those hours".into(),
            });
        }
        _ => {
            return Err(Error::Argument {
                arg: "--freeze",
                reason: "--outside and --during go with one --freeze".into(),
            });
        }
    };
    Ok(CreateArgs {
        reason,
        until,
        freeze,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freeze_arguments() {
        let f = parse_freeze("mon-fri 09:00-15:30 America/Los_Angeles").unwrap();
        assert_eq!(f.days, ["mon", "tue", "wed", "thu", "fri"]);
        assert_eq!((f.start.as_str(), f.end.as_str()), ("09:00", "15:30"));
        assert_eq!(f.zone, "America/Los_Angeles");
        assert_eq!(
            parse_freeze("fri-mon,wed 22:00-06:00 UTC").unwrap().days,
            ["mon", "wed", "fri", "sat", "sun"]
        );
        assert_eq!(parse_freeze("09:00-10:00 UTC").unwrap().days.len(), 7);
        for bad in [
            "mon-fri 09:00 UTC",
            "mon-fri 09:00-15:30",
            "monday 09:00-15:30 UTC",
            "mon 09:00-09:00 UTC",
            "mon 09:00-15:30 Nowhere/City",
            "a b c d",
        ] {
            assert!(parse_freeze(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn freezes_read_as_one_phrase() {
        let f = json!({"days": ["mon","tue","wed","thu","fri"], "start": "09:00", "end": "15:30",
            "zone": "America/Los_Angeles", "mode": "outside"});
        assert_eq!(
            freeze_text(&f),
            "outside mon-fri 09:00-15:30 America/Los_Angeles"
        );
        let d = |v: Value| days_text(v.as_array().unwrap());
        assert_eq!(d(json!(["sat", "sun"])), "sat,sun");
        assert_eq!(
            d(json!(["mon", "wed", "thu", "fri", "sun"])),
            "mon,wed-fri,sun"
        );
        assert_eq!(d(json!(DAYS)), "daily");
    }

    #[test]
    fn mode_flags_go_with_a_freeze() {
        let now = Timestamp::parse("2027-01-01T00:00:00Z").unwrap();
        let f = parse_freeze("mon 09:00-10:00 UTC").unwrap();
        let a = create_args("r".into(), None, Some(f.clone()), true, false, now).unwrap();
        assert_eq!(a.freeze.unwrap().1, "outside");
        assert!(create_args("r".into(), None, Some(f), false, false, now).is_err());
        assert!(create_args("r".into(), None, None, true, false, now).is_err());
        let past = Some(When::At(now));
        assert!(create_args("r".into(), past, None, false, false, now).is_err());
        let a = create_args("r".into(), Some(When::In(3600)), None, false, false, now).unwrap();
        assert_eq!(a.until.unwrap().to_string(), "2027-01-01T01:00:00Z");
    }
}
