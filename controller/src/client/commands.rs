//! The fleet commands: each builds one or two API calls and turns the answer into an
//! [`Answer`] (the controller's JSON for `--output json`, a table for people).

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Read, Write};
use std::path::Path;

use serde_json::{Value, json};

use super::view::{Answer, cell, columns, details};
use super::{Client, encode};
use crate::error::Error;

/// `KEY=VALUE` from the command line.
pub fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?}: expected KEY=VALUE")),
    }
}

/// The filters of `device list`.
#[derive(Debug, Default, Clone)]
pub struct DeviceFilter {
    /// `KEY=VALUE`, all must match.
    pub tags: Vec<(String, String)>,
    /// Cohort.
    pub cohort: Option<String>,
    /// Running version.
    pub version: Option<String>,
    /// Update state (or `unknown`).
    pub state: Option<String>,
    /// IANA zone.
    pub zone: Option<String>,
}

impl DeviceFilter {
    fn query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.tags {
            q.append_pair("tag", &format!("{k}={v}"));
        }
        for (name, v) in [
            ("cohort", &self.cohort),
            ("version", &self.version),
            ("state", &self.state),
            ("zone", &self.zone),
        ] {
            if let Some(v) = v {
                q.append_pair(name, v);
            }
        }
        let q = q.finish();
        if q.is_empty() { q } else { format!("?{q}") }
    }
}

fn list_of<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn field(v: &Value, path: &[&str]) -> String {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(next) => cur = next,
            None => return "-".to_owned(),
        }
    }
    cell(cur)
}

/// `device list`
pub fn device_list(client: &Client, filter: &DeviceFilter) -> Result<Answer, Error> {
    let json: Value = client.get(&format!("/v1/devices{}", filter.query()))?;
    let rows: Vec<Vec<String>> = list_of(&json, "devices")
        .iter()
        .map(|d| {
            let status = if d.get("revoked").is_some_and(|r| !r.is_null()) {
                "revoked"
            } else if d.get("online").and_then(Value::as_bool) == Some(true) {
                "online"
            } else {
                "offline"
            };
            vec![
                field(d, &["id"]),
                status.to_owned(),
                field(d, &["state"]),
                field(d, &["running", "version"]),
                field(d, &["cohort"]),
                field(d, &["zone"]),
                field(d, &["hardware"]),
                field(d, &["tags"]),
                field(d, &["last_seen"]),
            ]
        })
        .collect();
    let lines = columns(
        &[
            "ID",
            "STATUS",
            "STATE",
            "VERSION",
            "COHORT",
            "ZONE",
            "HARDWARE",
            "TAGS",
            "LAST SEEN",
        ],
        &rows,
        "no devices",
    );
    Ok(Answer { json, lines })
}

fn shown(json: Value) -> Answer {
    let lines = details(&json);
    Answer { json, lines }
}

/// `device show ID`
pub fn device_show(client: &Client, id: &str) -> Result<Answer, Error> {
    client
        .get(&format!("/v1/devices/{}", encode(id)))
        .map(shown)
}

/// What `device provision` registers.
#[derive(Debug, Clone)]
pub struct ProvisionArgs<'a> {
    /// Device id.
    pub id: &'a str,
    /// SPKI PEM file.
    pub public_key: &'a Path,
    /// Hardware id.
    pub hardware: &'a str,
    /// IANA zone.
    pub zone: &'a str,
    /// Cohort.
    pub cohort: Option<&'a str>,
    /// Tags.
    pub tags: &'a [(String, String)],
}

/// `device provision`
pub fn device_provision(client: &Client, a: &ProvisionArgs<'_>) -> Result<Answer, Error> {
    let pem = std::fs::read_to_string(a.public_key).map_err(Error::io("read", a.public_key))?;
    // A private key given by mistake must not travel: refuse anything but a public key here.
    let key = swell_proto::keys::pem::public_key_from_pem(&pem).map_err(|e| Error::Key {
        path: a.public_key.to_owned(),
        why: format!("not an SPKI PEM Ed25519 public key: {e}"),
    })?;
    let pem = swell_proto::keys::pem::public_key_to_pem(&key).map_err(|e| Error::Key {
        path: a.public_key.to_owned(),
        why: e.to_string(),
    })?;
    let tags: BTreeMap<&str, &str> = a
        .tags
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut body = json!({
        "id": a.id, "public_key": pem, "hardware": a.hardware, "zone": a.zone, "tags": tags,
    });
    if let Some(c) = a.cohort {
        body["cohort"] = json!(c);
    }
    client.send_json("POST", "/v1/devices", &body).map(shown)
}

/// `device revoke ID`
pub fn device_revoke(client: &Client, id: &str, reason: &str) -> Result<Answer, Error> {
    client
        .send_json(
            "POST",
            &format!("/v1/devices/{}/revoke", encode(id)),
            &json!({ "reason": reason }),
        )
        .map(shown)
}

/// `device install ID --release NAME --version V`
pub fn device_install(
    client: &Client,
    id: &str,
    release: &str,
    version: &str,
) -> Result<Answer, Error> {
    client
        .send_json(
            "POST",
            &format!("/v1/devices/{}/commands", encode(id)),
            &json!({"kind": "install", "release": release, "version": version}),
        )
        .map(shown)
}

/// `release list`
pub fn release_list(client: &Client) -> Result<Answer, Error> {
    let json: Value = client.get("/v1/releases")?;
    let rows: Vec<Vec<String>> = list_of(&json, "releases")
        .iter()
        .map(|r| {
            vec![
                field(r, &["name"]),
                field(r, &["version"]),
                field(r, &["security_version"]),
                field(r, &["hardware"]),
                field(r, &["expires"]),
                field(r, &["accepted_by"]),
            ]
        })
        .collect();
    let lines = columns(
        &["NAME", "VERSION", "SECURITY", "HARDWARE", "EXPIRES", "BY"],
        &rows,
        "no releases",
    );
    Ok(Answer { json, lines })
}

/// `release show NAME VERSION`
pub fn release_show(client: &Client, name: &str, version: &str) -> Result<Answer, Error> {
    client
        .get(&format!(
            "/v1/releases/{}/{}",
            encode(name),
            encode(version)
        ))
        .map(shown)
}

/// Reports upload progress on standard error as a percentage line, when that is a terminal.
#[derive(Debug)]
struct Progress<R> {
    inner: R,
    done: u64,
    total: u64,
    shown: Option<u64>,
    tty: bool,
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.tty {
            let pct = (self.done * 100).checked_div(self.total).unwrap_or(100);
            if self.shown != Some(pct) {
                self.shown = Some(pct);
                let mut err = std::io::stderr().lock();
                let _ = write!(
                    err,
                    "\ruploading {pct:>3}% ({} of {} bytes)",
                    self.done, self.total
                );
                let _ = err.flush();
            }
        }
        Ok(n)
    }
}

/// `release upload MANIFEST IMAGE [--target T]`: the manifest, then the image, streamed.
pub fn release_upload(
    client: &Client,
    manifest_path: &Path,
    image_path: &Path,
    target: Option<&str>,
) -> Result<Answer, Error> {
    let manifest = std::fs::read(manifest_path).map_err(Error::io("read", manifest_path))?;
    let doc: Value = serde_json::from_slice(&manifest).map_err(|e| Error::Argument {
        arg: "MANIFEST",
        reason: format!("{}: not JSON: {e}", manifest_path.display()),
    })?;
    let signed = &doc["signed"];
    let (Some(name), Some(version)) = (signed["name"].as_str(), signed["release_version"].as_str())
    else {
        return Err(Error::Argument {
            arg: "MANIFEST",
            reason: format!(
                "{}: not a release manifest (no signed.name and signed.release_version)",
                manifest_path.display()
            ),
        });
    };
    let targets: Vec<&str> = list_of(signed, "artifacts")
        .iter()
        .filter_map(|a| a["target"].as_str())
        .collect();
    let target = match (target, targets.as_slice()) {
        (Some(t), _) => t.to_owned(),
        (None, [only]) => (*only).to_owned(),
        (None, _) => {
            return Err(Error::Argument {
                arg: "--target",
                reason: format!(
                    "the manifest lists {} artifacts ({}); say which one IMAGE is",
                    targets.len(),
                    targets.join(", ")
                ),
            });
        }
    };
    let base = format!("/v1/releases/{}/{}", encode(name), encode(version));
    let staged: Value = client.send_bytes_put(&format!("{base}/manifest"), &manifest)?;
    if staged["status"] == "staged" {
        let file = std::fs::File::open(image_path).map_err(Error::io("open", image_path))?;
        let len = file
            .metadata()
            .map_err(Error::io("read", image_path))?
            .len();
        let tty = std::io::stderr().is_terminal();
        let mut reader = Progress {
            inner: std::io::BufReader::with_capacity(256 * 1024, file),
            done: 0,
            total: len,
            shown: None,
            tty,
        };
        let result: Result<Value, Error> = client.put_stream(
            &format!("{base}/image?target={}", encode(&target)),
            "application/octet-stream",
            len,
            &mut reader,
        );
        if tty {
            eprintln!();
        }
        result?;
    }
    release_show(client, name, version)
}

/// `audit list`
pub fn audit_list(client: &Client, after: u64, limit: Option<u64>) -> Result<Answer, Error> {
    let mut path = format!("/v1/audit?after={after}");
    if let Some(l) = limit {
        path.push_str(&format!("&limit={l}"));
    }
    let json: Value = client.get(&path)?;
    let rows: Vec<Vec<String>> = list_of(&json, "entries")
        .iter()
        .map(|e| {
            vec![
                field(e, &["seq"]),
                field(e, &["time"]),
                field(e, &["actor"]),
                field(e, &["action"]),
                field(e, &["details"]),
            ]
        })
        .collect();
    let lines = columns(
        &["SEQ", "TIME", "ACTOR", "ACTION", "DETAILS"],
        &rows,
        "no entries",
    );
    Ok(Answer { json, lines })
}

/// `audit verify`: the report, and whether the log is intact.
pub fn audit_verify(client: &Client) -> Result<(Answer, bool), Error> {
    let json: Value = client.get("/v1/audit/verify")?;
    let ok = json["ok"].as_bool() == Some(true);
    let mut lines = vec![
        format!("ok       {}", if ok { "yes" } else { "no" }),
        format!("entries  {}", cell(&json["entries"])),
        format!(
            "head     {} {}",
            cell(&json["head"]["seq"]),
            cell(&json["head"]["hash"])
        ),
    ];
    for p in list_of(&json, "problems") {
        lines.push(format!(
            "problem  {} {}: {}",
            cell(&p["seq"]),
            cell(&p["kind"]),
            cell(&p["detail"])
        ));
    }
    Ok((Answer { json, lines }, ok))
}

/// What `enroll-token create` asks for.
#[derive(Debug, Clone, Default)]
pub struct TokenArgs {
    /// Cohort of the devices enrolled with it.
    pub cohort: Option<String>,
    /// Their tags.
    pub tags: Vec<(String, String)>,
    /// Lifetime in seconds.
    pub ttl_s: u64,
    /// How many devices may enroll with it.
    pub uses: u32,
}

/// `enroll-token create`
pub fn enroll_token_create(client: &Client, a: &TokenArgs) -> Result<Answer, Error> {
    let tags: BTreeMap<&str, &str> = a
        .tags
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut body = json!({"tags": tags, "ttl_s": a.ttl_s, "uses": a.uses});
    if let Some(c) = &a.cohort {
        body["cohort"] = json!(c);
    }
    let json: Value = client.send_json("POST", "/v1/enroll-tokens", &body)?;
    // The token first and alone on its line, so `TOKEN=$(swellctl enroll-token create | head -1)`
    // works; it is shown once and only its digest is stored.
    let mut lines = vec![cell(&json["token"]), String::new()];
    let mut rest = json.clone();
    if let Some(m) = rest.as_object_mut() {
        m.remove("token");
    }
    lines.extend(details(&rest));
    Ok(Answer { json, lines })
}

/// `enroll-token list`
pub fn enroll_token_list(client: &Client) -> Result<Answer, Error> {
    let json: Value = client.get("/v1/enroll-tokens")?;
    let rows: Vec<Vec<String>> = list_of(&json, "tokens")
        .iter()
        .map(|t| {
            vec![
                field(t, &["id"]),
                field(t, &["cohort"]),
                field(t, &["tags"]),
                field(t, &["uses_left"]),
                field(t, &["expires"]),
                field(t, &["created_by"]),
            ]
        })
        .collect();
    let lines = columns(
        &["ID", "COHORT", "TAGS", "USES LEFT", "EXPIRES", "BY"],
        &rows,
        "no enrollment tokens",
    );
    Ok(Answer { json, lines })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_a_query() {
        let f = DeviceFilter {
            tags: vec![("site".into(), "north hall".into())],
            cohort: Some("canary".into()),
            ..DeviceFilter::default()
        };
        assert_eq!(f.query(), "?tag=site%3Dnorth+hall&cohort=canary");
        assert_eq!(DeviceFilter::default().query(), "");
    }

    #[test]
    fn tags_need_key_and_value() {
        assert_eq!(parse_tag("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_tag("a").is_err());
        assert!(parse_tag("=b").is_err());
    }
}
