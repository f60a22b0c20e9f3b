//! swellctl's side of the controller's HTTP API: where the controller is and which token to
//! present ([`Connection`]), a small blocking client ([`Client`]) whose every failure is one
//! line (the server's `{"error"}` text and the status), and the fleet commands built on it
//! ([`commands`]).
//!
//! The connection comes from, in order: `--controller`/`--token`, the environment
//! (`SWELL_CONTROLLER`, `SWELL_TOKEN`), then `$XDG_CONFIG_HOME/swell/swellctl.toml` (or
//! `~/.config/swell/swellctl.toml`) with `controller = "..."` and `token = "..."`.

pub mod cli;
pub mod commands;
pub mod locks;
pub mod rollout_view;
pub mod rollouts;
pub mod view;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::Error;

/// Longest response body read: the largest listing (10 000 audit entries) fits well.
pub const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

/// How long one request may take, connection included, except image uploads (no limit: the
/// image may be large and the link slow; the controller cuts off a stalled upload).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// `swellctl.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    controller: Option<String>,
    token: Option<String>,
}

/// Where the controller is and how to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// Base URL, without a trailing slash: `http://127.0.0.1:8080`.
    pub base: String,
    /// The bearer token, if any (enrollment and health need none).
    pub token: Option<String>,
}

/// The default config file: `$XDG_CONFIG_HOME/swell/swellctl.toml`, else
/// `$HOME/.config/swell/swellctl.toml`.
pub fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("swell").join("swellctl.toml"))
}

impl Connection {
    /// Resolves the connection from flags, then `env`, then the config file at `file` (if it
    /// exists).
    pub fn resolve(
        controller: Option<String>,
        token: Option<String>,
        env: impl Fn(&str) -> Option<String>,
        file: Option<&Path>,
    ) -> Result<Connection, Error> {
        let settings = match file {
            Some(path) if path.exists() => {
                let text = std::fs::read_to_string(path).map_err(Error::io("read", path))?;
                toml::from_str::<FileSettings>(&text).map_err(|e| Error::Argument {
                    arg: "swellctl.toml",
                    reason: format!("{}: {}", path.display(), e.message()),
                })?
            }
            _ => FileSettings::default(),
        };
        let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let base = nonempty(controller)
            .or_else(|| nonempty(env("SWELL_CONTROLLER")))
            .or_else(|| nonempty(settings.controller))
            .ok_or_else(|| Error::Argument {
                arg: "--controller",
                reason: "no controller URL: pass --controller URL, set SWELL_CONTROLLER, or \
                         put controller = \"URL\" in ~/.config/swell/swellctl.toml"
                    .into(),
            })?;
        let base = base.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Argument {
                arg: "--controller",
                reason: format!("{base:?} is not an http:// or https:// URL"),
            });
        }
        let token = nonempty(token)
            .or_else(|| nonempty(env("SWELL_TOKEN")))
            .or_else(|| nonempty(settings.token))
            .map(|t| t.trim().to_owned());
        Ok(Connection { base, token })
    }
}

/// A blocking client of the controller's API.
#[derive(Debug, Clone)]
pub struct Client {
    conn: Connection,
    agent: ureq::Agent,
    upload_agent: ureq::Agent,
}

fn agent(timeout: Option<Duration>) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(timeout)
        .build()
        .new_agent()
}

/// Percent-encodes one path segment or query value.
pub fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

impl Client {
    /// A client for `conn`.
    pub fn new(conn: Connection) -> Client {
        Client {
            conn,
            agent: agent(Some(REQUEST_TIMEOUT)),
            upload_agent: agent(None),
        }
    }

    /// The connection.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.conn.base)
    }

    fn unreachable(&self, e: &ureq::Error) -> Error {
        Error::Unreachable {
            url: self.conn.base.clone(),
            reason: e.to_string(),
        }
    }

    fn authorize<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.conn.token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    /// `GET path` → the JSON body.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        let req = self.authorize(self.agent.get(self.url(path)));
        let resp = req.call().map_err(|e| self.unreachable(&e))?;
        self.finish(resp)
    }

    /// `method path` with a JSON body → the JSON body.
    pub fn send_json<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &Value,
    ) -> Result<T, Error> {
        let bytes = serde_json::to_vec(body).map_err(|e| Error::Argument {
            arg: "request",
            reason: e.to_string(),
        })?;
        let url = self.url(path);
        let req = match method {
            "PUT" => self.agent.put(url),
            _ => self.agent.post(url),
        };
        let resp = self
            .authorize(req)
            .header("Content-Type", "application/json")
            .send(&bytes[..])
            .map_err(|e| self.unreachable(&e))?;
        self.finish(resp)
    }

    /// `PUT path` with `bytes` as the body → the JSON body.
    pub fn send_bytes_put<T: DeserializeOwned>(
        &self,
        path: &str,
        bytes: &[u8],
    ) -> Result<T, Error> {
        let resp = self
            .authorize(self.agent.put(self.url(path)))
            .header("Content-Type", "application/json")
            .send(bytes)
            .map_err(|e| self.unreachable(&e))?;
        self.finish(resp)
    }

    /// `PUT path` with `len` bytes read from `body` (streamed, not buffered) → the JSON body.
    pub fn put_stream<T: DeserializeOwned>(
        &self,
        path: &str,
        content_type: &str,
        len: u64,
        body: &mut dyn Read,
    ) -> Result<T, Error> {
        let req = self
            .authorize(self.upload_agent.put(self.url(path)))
            .header("Content-Type", content_type)
            .header("Content-Length", len.to_string());
        let resp = req
            .send(ureq::SendBody::from_reader(body))
            .map_err(|e| self.unreachable(&e))?;
        self.finish(resp)
    }

    fn finish<T: DeserializeOwned>(
        &self,
        mut resp: ureq::http::Response<ureq::Body>,
    ) -> Result<T, Error> {
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_string()
            .map_err(|e| self.unreachable(&e))?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| {
                    let t = text.trim();
                    if t.is_empty() {
                        "the controller refused the request".to_owned()
                    } else {
                        t.chars().take(200).collect()
                    }
                });
            return Err(Error::Api { status, message });
        }
        serde_json::from_str(&text).map_err(|e| Error::Api {
            status,
            message: format!("the controller's answer is not the expected JSON: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    /// Flags beat the environment, which beats the file; a trailing slash is dropped.
    #[test]
    fn resolution_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("swellctl.toml");
        std::fs::write(&file, "controller = \"http://file:1/\"\ntoken = \"ft\"\n").unwrap();
        let c = Connection::resolve(None, None, env_of(&[]), Some(&file)).unwrap();
        assert_eq!(c.base, "http://file:1");
        assert_eq!(c.token.as_deref(), Some("ft"));
        let env = env_of(&[("SWELL_CONTROLLER", "http://env:2"), ("SWELL_TOKEN", "et")]);
        let c = Connection::resolve(None, None, &env, Some(&file)).unwrap();
        assert_eq!(
            (c.base.as_str(), c.token.as_deref()),
            ("http://env:2", Some("et"))
        );
        let c = Connection::resolve(
            Some("https://flag:3".into()),
            Some("t".into()),
            &env,
            Some(&file),
        )
        .unwrap();
        assert_eq!(
            (c.base.as_str(), c.token.as_deref()),
            ("https://flag:3", Some("t"))
        );
        let err = Connection::resolve(None, None, env_of(&[]), None).unwrap_err();
        assert!(err.to_string().contains("SWELL_CONTROLLER"), "{err}");
        let err = Connection::resolve(Some("ftp://x".into()), None, env_of(&[]), None).unwrap_err();
        assert!(err.to_string().contains("not an http"), "{err}");
        std::fs::write(&file, "controler = 1\n").unwrap();
        assert!(Connection::resolve(None, None, env_of(&[]), Some(&file)).is_err());
    }

    #[test]
    fn encodes_segments() {
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
        assert_eq!(encode("k=v"), "k%3Dv");
    }
}
