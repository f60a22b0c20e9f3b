//! The README's main job: the controller with its embedded broker and store drives a fleet of
//! simulated devices (real agents, real processes, real MQTT, real signatures) across four time
//! zones. A bad release stops at the canary cohort and goes back by itself; a good one goes
//! through every wave. Progress is printed live, as `swellctl rollout watch` prints it, then a
//! summary; the API stays up until Ctrl-C unless `--exit` is given.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::Value;
use swell_controller::client::rollout_view;
use swell_proto::Timestamp;

use crate::fleet::{DeviceSpec, Fleet, FleetSpec, now, unix_ms};

/// The zones, east to west, and where each one's local time stands when the demo starts.
const ZONES: [&str; 4] = [
    "Asia/Tokyo",
    "Asia/Kathmandu",
    "Europe/Berlin",
    "America/New_York",
];

/// The simulated clock starts at the next 05:00 in New York, when its window opens (the other
/// zones are inside theirs then). It must stay near real time: devices sign their
/// messages with their real clocks, and the controller refuses messages whose validity (30
/// days) its clock has left.
fn clock_start() -> Result<Timestamp> {
    let zone = swell_controller::planner::Zone::new("America/New_York")
        .map_err(|e| anyhow::anyhow!("{}", e.0))?;
    let real = jiff::Timestamp::from_second(now().unix())?;
    let local = real.to_zoned(zone.tz().clone());
    let mut at = local.date().at(5, 0, 0, 0).to_zoned(zone.tz().clone())?;
    if at.timestamp() <= real {
        at = at.tomorrow()?;
    }
    Ok(Timestamp::from_unix(at.timestamp().as_second()))
}

/// Simulated seconds per real second: the plan's minutes pass in fifths of a second.
const SPEED: u32 = 300;

/// Options of the fleet demo.
#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// Devices in the fleet (at least 8).
    #[arg(long, default_value_t = 50)]
    pub devices: usize,
    /// Work in this directory (created; default: a new one under the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the work directory afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Exit after the summary instead of keeping the API up until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
}

fn plan(name: &str) -> String {
    format!(
        r#"name = "{name}"
# Device-local time: New York's devices wait for 05:00 there.
[window]
start = "05:00"
end = "01:00"

[limits]
max_in_flight = 12
max_starts_per_minute = 20
# The two devices of a site are an HA pair: never both at once.
disruption_budget = {{ site = 1 }}

[defaults]
device_timeout = "60m"
success = {{ committed = "100%", soak = "5m" }}
failure = {{ tolerate = 0, action = "abort_and_rollback" }}

[[step]]
[[step.stage]]
name = "canary"
selector = {{ cohort = "canary" }}

[[step]]
[[step.stage]]
name = "wave-1"
share = "25%"
failure = {{ tolerate = "10%", action = "abort_and_rollback" }}

[[step]]
[[step.stage]]
name = "wave-2"
share = "50%"
failure = {{ tolerate = "10%", action = "abort_and_rollback" }}

[[step]]
[[step.stage]]
name = "wave-3"
failure = {{ tolerate = "10%", action = "abort_and_rollback" }}
"#
    )
}

fn devices(n: usize) -> Vec<DeviceSpec> {
    (0..n)
        .map(|i| {
            let zone = ZONES[i * ZONES.len() / n];
            DeviceSpec {
                id: format!("dev-{i:03}"),
                zone: zone.to_owned(),
                // One canary in ten, spread over the zones.
                cohort: (i % 10 == 3).then(|| "canary".to_owned()),
                tags: vec![("site".to_owned(), format!("site-{:02}", i / 2))],
            }
        })
        .collect()
}

/// What one rollout came to.
struct Outcome {
    id: String,
    release: String,
    status: String,
    counts: Value,
    rollback_ms: Option<u64>,
    real: Duration,
    simulated_s: i64,
}

/// Creates a rollout and prints its progress until it ends.
fn run_rollout(fleet: &Fleet, name: &str, version: &str, title: &str) -> Result<Outcome> {
    let started = Instant::now();
    let id = fleet.rollout(&plan(title), name, version)?;
    let mut prev: Option<Value> = None;
    let cur = loop {
        let cur = fleet.show(&id)?;
        // The controller's clock (simulated), so status lines and events share one timeline.
        let at = cur["now"]
            .as_str()
            .and_then(|t| Timestamp::parse(t).ok())
            .unwrap_or_else(now);
        for line in rollout_view::watch_lines(prev.as_ref(), &cur, at) {
            println!("   {line}");
        }
        let status = cur["status"].as_str().unwrap_or_default().to_owned();
        if ["completed", "rolled_back", "aborted", "superseded"].contains(&status.as_str()) {
            break cur;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("rollout {id} did not end within 10 minutes (status {status})");
        }
        prev = Some(cur);
        std::thread::sleep(Duration::from_millis(250));
    };
    let created = Timestamp::parse(cur["created_at"].as_str().unwrap_or_default()).ok();
    let last = cur["events"]
        .as_array()
        .and_then(|e| e.last())
        .and_then(|e| e["at"].as_str())
        .and_then(|t| Timestamp::parse(t).ok());
    Ok(Outcome {
        id,
        release: format!("{name} {version}"),
        status: cur["status"].as_str().unwrap_or_default().to_owned(),
        counts: cur["counts"].clone(),
        rollback_ms: cur["rollback"]["duration_ms"].as_u64(),
        real: started.elapsed(),
        simulated_s: created.zip(last).map_or(0, |(a, b)| b.unix() - a.unix()),
    })
}

/// Runs the fleet demo.
pub fn run(args: &FleetArgs, agent: &std::path::Path) -> Result<()> {
    if args.devices < 8 {
        bail!("--devices: at least 8 (got {})", args.devices);
    }
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("swell-demo-{}", std::process::id())),
    };
    if dir.exists() {
        bail!("{} exists; pass a new --dir", dir.display());
    }
    let result = story(args, &dir, agent);
    if args.keep || result.is_err() {
        println!("\nThe work directory is kept: {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn story(args: &FleetArgs, dir: &std::path::Path, agent: &std::path::Path) -> Result<()> {
    let specs = devices(args.devices);
    println!(
        "Swell demo: one controller, {} devices, two releases",
        specs.len()
    );
    println!("work directory: {}\n", dir.display());
    let start = clock_start()?;
    println!(
        "1. Keys and a trust root; the controller with its embedded MQTT broker, redb store and\n   \
         HTTP API, on a simulated clock starting {start} (05:00 in New York), {SPEED}x real time."
    );
    let t0 = Instant::now();
    let fleet = Fleet::start(
        FleetSpec {
            dir: dir.to_path_buf(),
            devices: specs.clone(),
            clock_start: start,
            speed: SPEED,
            image_size: 256 * 1024,
        },
        agent,
    )?;
    let mut by_zone: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &specs {
        *by_zone.entry(d.zone.as_str()).or_default() += 1;
    }
    let canaries = specs.iter().filter(|d| d.cohort.is_some()).count();
    println!(
        "2. {} devices enrolled with one-time tokens and online in {:.1} s: real agents on\n   \
         simulated A/B boards, each in its own processes. Zones: {}.\n   \
         {canaries} are in the canary cohort; sites of two devices are HA pairs.",
        specs.len(),
        t0.elapsed().as_secs_f64(),
        by_zone
            .iter()
            .map(|(z, n)| format!("{z} ({n})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    fleet.release("demo-os", "1.1.0", "unhealthy")?;
    fleet.release("demo-os", "1.1.1", "healthy")?;
    println!(
        "3. Two releases signed and uploaded: demo-os 1.1.0, whose image fails its health check\n   \
         after booting, and demo-os 1.1.1, a good one."
    );
    println!(
        "4. Rolling out demo-os 1.1.0: the canary cohort first, then three waves, 05:00-01:00 in\n   \
         each device's own time, one device per site at a time. Any canary failure aborts and\n   \
         rolls back.\n"
    );
    let bad_began_ms = unix_ms();
    let bad = run_rollout(&fleet, "demo-os", "1.1.0", "demo-os 1.1.0 (bad)")?;
    let mut reboots: Vec<u64> = fleet
        .reboots_back(bad_began_ms)?
        .iter()
        .map(|r| r.down_ms)
        .collect();
    reboots.sort_unstable();
    println!("\n5. Rolling out demo-os 1.1.1 with the same plan.\n");
    let good = run_rollout(&fleet, "demo-os", "1.1.1", "demo-os 1.1.1 (good)")?;

    let on: BTreeMap<String, usize> = fleet.devices()?.iter().fold(BTreeMap::new(), |mut m, d| {
        let v = d["running"]["version"].as_str().unwrap_or("factory image");
        *m.entry(v.to_owned()).or_default() += 1;
        m
    });
    println!("\nSummary\n");
    println!(
        "  {:<6} {:<14} {:<12} {:>9} {:>7} {:>12} {:>10} {:>10}",
        "ROLLOUT", "RELEASE", "STATUS", "SUCCEEDED", "FAILED", "ROLLBACK", "REAL", "SIMULATED"
    );
    for o in [&bad, &good] {
        println!(
            "  {:<6} {:<14} {:<12} {:>9} {:>7} {:>12} {:>9.1}s {:>10}",
            o.id,
            o.release,
            o.status,
            o.counts["succeeded"].as_u64().unwrap_or(0),
            o.counts["failed"].as_u64().unwrap_or(0),
            o.rollback_ms
                .map_or_else(|| "-".to_owned(), rollout_view::duration_ms),
            o.real.as_secs_f64(),
            rollout_view::duration_s(u64::try_from(o.simulated_s).unwrap_or(0)),
        );
    }
    println!(
        "\n  The fleet now runs: {}",
        on.iter()
            .map(|(v, n)| format!("{v} on {n} devices"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let ok = bad.status == "rolled_back" && good.status == "completed";
    if let Some(ms) = bad.rollback_ms {
        println!(
            "  The bad release stopped at the canaries; from the first failing report to the last\n  \
             canary back on its previous image took {}, the devices' own reboots included.",
            rollout_view::duration_ms(ms)
        );
    }
    if let (Some(min), Some(max)) = (reboots.first(), reboots.last()) {
        println!(
            "  Apart from that: {} simulated reboots back into the previous slot, {}-{} each\n  \
             (from the agent's exit to the old image's agent starting, in the boards' console\n  \
             logs). A real device adds its own reboot time; the devices reboot in parallel.",
            reboots.len(),
            rollout_view::duration_ms(*min),
            rollout_view::duration_ms(*max)
        );
    }
    if !ok {
        bail!(
            "unexpected outcome: {} ended {}, {} ended {}",
            bad.id,
            bad.status,
            good.id,
            good.status
        );
    }
    println!("  Every outcome is the one expected.");
    if args.exit {
        return Ok(());
    }
    println!(
        "\nThe controller keeps running: try\n  \
         swellctl --controller http://{} --token {} rollout list\n\
         Press Ctrl-C to stop.",
        fleet.addresses.http,
        fleet.admin_token()
    );
    fleet.wait_for_interrupt();
    Ok(())
}
