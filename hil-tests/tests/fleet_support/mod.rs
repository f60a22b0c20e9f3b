//! The end-to-end scenario shared by `fleet_enroll.rs` (embedded broker) and
//! `fleet_enroll_mosquitto_interop.rs` (Mosquitto with TLS, client certificates and the
//! per-device ACL): the real controller in-process, three `swell-agent` boards that enroll with
//! tokens, an uploaded release installed to committed, a revoked device refused.

// Each test file uses one broker variant, and `pub` here only means "visible to the tests".
#![allow(unreachable_pub, dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser as _;
use serde_json::Value;
use swell_agent::board;
use swell_controller::client::commands::{self, TokenArgs};
use swell_controller::client::{Client, Connection};
use swell_hil::fleet::{Controller, ProcessGroup};
use swell_proto::Timestamp;

const ADMIN: &str = "swell_e2e_admin_token";
const HARDWARE: &str = "sim-board";
const IMAGE_SIZE: usize = 64 * 1024;
const DEADLINE: Duration = Duration::from_secs(60);

fn now() -> Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Timestamp::from_unix(i64::try_from(secs).unwrap())
}

fn swellctl(args: &[&str]) -> String {
    let argv: Vec<&str> = std::iter::once("swellctl")
        .chain(args.iter().copied())
        .collect();
    let cli = swell_controller::cli::Cli::try_parse_from(argv).unwrap();
    let mut out = Vec::new();
    swell_controller::cli::run(cli, now(), &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A board and the agent it booted, killed together when dropped.
type Board = ProcessGroup;

fn start_board(dir: &Path, id: &str, mqtt: &str, http: &str, token: &str) -> Board {
    let d = dir.join(id);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("slot-a.img"), board::image("healthy", IMAGE_SIZE, 1)).unwrap();
    std::fs::write(d.join("slot-b.img"), b"").unwrap();
    let dd = d.display();
    let config = format!(
        "data_dir = \"{dd}/data\"\n\
         [device]\nid = \"{id}\"\nhardware = \"{HARDWARE}\"\nkey = \"{dd}/device-key.pem\"\n\
         [trust]\nroot = \"{root}\"\n\
         [mqtt]\nurl = \"{mqtt}\"\nheartbeat_secs = 1\n\
         [enroll]\nurl = \"{http}\"\ntoken = \"{token}\"\nzone = \"Europe/Berlin\"\n\
         [slots]\na = \"{dd}/slot-a.img\"\nb = \"{dd}/slot-b.img\"\n\
         [boot]\nbackend = \"simulated\"\nboard = \"{dd}/board\"\nbootlimit = 2\n\
         [health]\ndeadline_secs = 10\ninterval_secs = 1\n",
        root = dir.join("root.json").display(),
    );
    let path = d.join("agent.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_swell-demo"));
    cmd.args(["board", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("board.log")).unwrap());
    ProcessGroup::spawn(cmd).unwrap()
}

fn device(client: &Client, id: &str) -> Option<Value> {
    commands::device_show(client, id).ok().map(|a| a.json)
}

/// Where the devices' MQTT goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    /// The controller's embedded broker, plain MQTT on loopback.
    Embedded,
    /// A Mosquitto started here with `mosquitto-config`'s files: TLS, client certificates from
    /// the controller's CA (the agents' come from enrollment), the per-device ACL.
    Mosquitto,
}

struct Mosquitto(Child);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_mosquitto(dir: &Path) -> (Mosquitto, u16) {
    use swell_controller::service::{ca, mosquitto};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The same CA the controller opens from its data_dir at start.
    let ca = ca::DeviceCa::open_or_create(&dir.join("controller-data/ca"), now()).unwrap();
    let user = Command::new("id").arg("-un").output().unwrap().stdout;
    let opts = mosquitto::MosquittoOptions {
        out: dir.join("mosquitto"),
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        hosts: vec!["localhost".into()],
        user: Some(String::from_utf8(user).unwrap().trim().to_owned()),
    };
    let conf = mosquitto::write(&ca, &opts, now()).unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("mosquitto.log")).unwrap())
        .spawn()
        .expect("the Mosquitto scenario needs the mosquitto binary");
    eventually("mosquitto to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    (Mosquitto(child), port)
}

/// The whole scenario against `broker`.
pub fn scenario(broker: Broker) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let p = |n: &str| dir.join(n).display().to_string();
    for k in ["root", "release", "controller"] {
        swellctl(&["key", "generate", "--out", &p(k)]);
    }
    swellctl(&[
        "root",
        "init",
        "--out",
        &p("root.json"),
        "--expires",
        "30d",
        "--root-key",
        &p("root.pub.pem"),
        "--release-key",
        &p("release.pub.pem"),
        "--controller-key",
        &p("controller.pub.pem"),
        "--root-threshold",
        "1",
        "--release-threshold",
        "1",
        "--controller-threshold",
        "1",
    ]);
    swellctl(&["root", "sign", &p("root.json"), "--key", &p("root.pem")]);
    let digest = swell_controller::service::auth::digest_of(ADMIN).to_hex();
    let (_mosquitto, broker_section) = match broker {
        Broker::Embedded => (
            None,
            "mode = \"embedded\"\nlisten = \"127.0.0.1:0\"".to_owned(),
        ),
        Broker::Mosquitto => {
            let (m, port) = start_mosquitto(dir);
            let section = format!(
                "mode = \"external\"\nurl = \"mqtts://localhost:{port}\"\n\
                 ca = \"mosquitto/ca.pem\"\ncert = \"mosquitto/controller.pem\"\n\
                 key = \"mosquitto/controller.key\""
            );
            (Some((m, port)), section)
        }
    };
    std::fs::write(
        dir.join("controller.toml"),
        format!(
            "data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [broker]\n{broker_section}\n\
             [trust]\nroot = \"root.json\"\ncontroller_key = \"controller.pem\"\n\
             [[api.token]]\nname = \"alice\"\nrole = \"admin\"\nsha256 = \"{digest}\"\n",
            p("controller-data")
        ),
    )
    .unwrap();

    // The controller, in-process: the same `Service` that `swell-controller serve` runs.
    let controller = Controller::start(&dir.join("controller.toml")).unwrap();
    let addrs = controller.addresses();
    let http = format!("http://{}", addrs.http);
    let mqtt = match &_mosquitto {
        None => format!("mqtt://{}", addrs.mqtt.unwrap()),
        // The agents' CA and client certificate come from their enrollment.
        Some((_, port)) => format!("mqtts://localhost:{port}"),
    };
    let client = Client::new(Connection {
        base: http.clone(),
        token: Some(ADMIN.into()),
    });

    // Tokens: one canary device, two others.
    let token = |cohort: Option<&str>, uses| {
        let a = TokenArgs {
            cohort: cohort.map(str::to_owned),
            tags: vec![("site".into(), "lab".into())],
            ttl_s: 3600,
            uses,
        };
        let t = commands::enroll_token_create(&client, &a).unwrap().json;
        t["token"].as_str().unwrap().to_owned()
    };
    let canary = token(Some("canary"), 1);
    let fleet = token(None, 2);
    let _boards: Vec<Board> = [("dev-0", &canary), ("dev-1", &fleet), ("dev-2", &fleet)]
        .iter()
        .map(|(id, t)| start_board(dir, id, &mqtt, &http, t))
        .collect();
    for id in ["dev-0", "dev-1", "dev-2"] {
        eventually(&format!("{id} enrolled and online"), || {
            device(&client, id).filter(|d| d["online"] == true)
        });
        assert!(dir.join(id).join("data/device.crt.pem").exists());
    }
    let canaries = commands::device_list(
        &client,
        &commands::DeviceFilter {
            cohort: Some("canary".into()),
            ..Default::default()
        },
    )
    .unwrap()
    .json;
    assert_eq!(canaries["devices"].as_array().unwrap().len(), 1);
    assert_eq!(canaries["devices"][0]["id"], "dev-0");

    // A release, uploaded and installed on every device.
    std::fs::write(dir.join("os.img"), board::image("healthy", IMAGE_SIZE, 2)).unwrap();
    swellctl(&[
        "release",
        "create",
        "--image",
        &p("os.img"),
        "--name",
        "os",
        "--version",
        "1.1.0",
        "--security-version",
        "1",
        "--hardware",
        HARDWARE,
        "--expires",
        "30d",
        "--key",
        &p("release.pem"),
    ]);
    commands::release_upload(
        &client,
        &dir.join("os.img.manifest.json"),
        &dir.join("os.img"),
        None,
    )
    .unwrap();
    for id in ["dev-0", "dev-1", "dev-2"] {
        commands::device_install(&client, id, "os", "1.1.0").unwrap();
    }
    for id in ["dev-0", "dev-1", "dev-2"] {
        eventually(&format!("{id} committed 1.1.0"), || {
            device(&client, id)
                .filter(|d| d["state"] == "committed" && d["running"]["version"] == "1.1.0")
        });
    }

    // Revoked: commands refused, and its heartbeats dropped as `revoked`.
    commands::device_revoke(&client, "dev-2", "test").unwrap();
    let e = commands::device_install(&client, "dev-2", "os", "1.1.0").unwrap_err();
    assert!(e.to_string().contains("HTTP 409"), "{e}");
    eventually("a report from the revoked device refused", || {
        let text = ureq::get(format!("{http}/metrics"))
            .header("Authorization", format!("Bearer {ADMIN}"))
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()?;
        text.lines()
            .any(|l| {
                l.starts_with("swell_messages_dropped_total{reason=\"revoked\"}")
                    && !l.ends_with(" 0")
            })
            .then_some(())
    });

    controller.stop().unwrap();
}
