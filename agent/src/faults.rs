//! Fault injection for power-cut tests.
//!
//! Every write that matters for crash safety calls [`durable_write`] right after it reaches
//! the disk. With `SWELL_FAULT_KILL_AT=N` in the environment, the agent kills itself with a
//! real SIGKILL at the N-th such point, so a test can cut power at every durable write in
//! turn (MCUboot's simulator does the same for flash operations). With
//! `SWELL_FAULT_TRACE=1`, each point is printed to stderr, which is how a test learns how many
//! points an update has. Unset, each call costs one atomic increment.
//!
//! Points are counted per process, that is per boot of the agent. On the simulated board the
//! plan applies to one boot only, `SWELL_FAULT_BOOT` (default 1, the first agent the board
//! starts); the boot ROM removes it from the others, so the reboots after the cut recover.

use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable naming the write point to die at.
pub const KILL_AT_ENV: &str = "SWELL_FAULT_KILL_AT";

/// The environment variable naming the board boot (1 = the first agent the simulated board
/// starts) whose agent [`KILL_AT_ENV`] applies to.
pub const BOOT_ENV: &str = "SWELL_FAULT_BOOT";

/// The environment variable that turns on tracing of write points.
pub const TRACE_ENV: &str = "SWELL_FAULT_TRACE";

static COUNT: AtomicU64 = AtomicU64::new(0);

struct Plan {
    kill_at: Option<u64>,
    trace: bool,
}

fn plan() -> &'static Plan {
    static PLAN: OnceLock<Plan> = OnceLock::new();
    PLAN.get_or_init(|| Plan {
        kill_at: std::env::var(KILL_AT_ENV).ok().and_then(|v| v.parse().ok()),
        trace: std::env::var_os(TRACE_ENV).is_some(),
    })
}

/// Marks a durable write point named `what`.
pub fn durable_write(what: &str) {
    let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    let plan = plan();
    if plan.trace {
        eprintln!("fault-point {n} {what}");
    }
    if plan.kill_at == Some(n) {
        eprintln!("fault-injection: SIGKILL at write point {n} ({what})");
        // `kill -KILL` delivers a real SIGKILL; this process blocks in `status()` until the
        // signal lands, so nothing after this point runs.
        let pid = std::process::id().to_string();
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        // The kill command could not run: stop anyway, without unwinding or cleanup.
        std::process::abort();
    }
}
