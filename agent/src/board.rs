//! The simulated board: two slot files, a U-Boot environment file, and a boot ROM.
//!
//! The boot ROM follows U-Boot's rules (`CONFIG_BOOTCOUNT_LIMIT` with the count in the
//! environment), so the fallback of an image that never comes up happens without the agent:
//!
//! 1. Read the environment. If `upgrade_available` is set, add 1 to `bootcount` and save.
//! 2. If `bootcount > bootlimit`, run "altbootcmd": switch `swell_slot` to the other slot,
//!    clear `upgrade_available` and `bootcount`, save.
//! 3. "Load the kernel" from the slot: the image must start with a simulated image header
//!    ([`IMAGE_MAGIC`]). An image without one, or one whose behaviour is `crash`, fails to
//!    boot: the ROM goes round again (so bootcount rises), as a watchdog reset would.
//! 4. Start the agent with the boot id and slot in its environment. Exit code
//!    [`REBOOT_EXIT_CODE`] is a reboot; death by a signal is a power cut; both go round again.
//!    A power-cut plan (`SWELL_FAULT_KILL_AT`) is passed to the agent of one boot only,
//!    `SWELL_FAULT_BOOT` (default 1), counting the boots that reach the agent.
//!
//! Every step goes to the board's serial console, [`CONSOLE_LOG`] in the board directory, one
//! line each with the wall-clock time in milliseconds ([`read_console`], [`reboots`]): tests
//! measure the simulated reboots from it.
//!
//! Image behaviours: `healthy`, `unhealthy` (boots, but its health check fails), `crash`
//! (never reaches the agent), `slow-<ms>` (boots after a delay), `noisy` (healthy, but while
//! it runs the board appends [`NOISY_LINE`] to the simulated system's application log,
//! [`APP_LOG`] in the board directory, once a second: an error the old image never printed,
//! for the agent's `[[signals.log]]` to turn into a new signature).

use std::io::Read as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use swell_proto::messages::Slot;

use crate::bootctl::{BOARD_BOOT_ID_ENV, BOARD_SLOT_ENV, BootCtlError, sim_env_store};
use crate::bootenv::{BootEnvStore, BootVars};
use crate::cli::REBOOT_EXIT_CODE;
use crate::config::{BootConfig, Config};
use crate::faults;

/// The first bytes of a simulated image.
pub const IMAGE_MAGIC: &str = "SWELLSIM1";

/// The environment variable that tells the booted agent its image's behaviour (the
/// simulated system's health checks read it).
pub const BEHAVIOUR_ENV: &str = "SWELL_BOARD_IMAGE_BEHAVIOUR";

/// The simulated system's application log, in the board directory.
pub const APP_LOG: &str = "app.log";

/// The error a `noisy` image logs every second (after a timestamp).
pub const NOISY_LINE: &str = "ERROR db: connection 10.0.0.7 refused after 3 retries";

/// The board's serial console log, in the board directory: `<unix ms> <event> [key=value ...]`
/// per line. Events: `power-on`; `rom slot=a|b trial=yes|no bootcount=N [fallback=yes]` (a
/// pass of the boot ROM); `no-boot slot=a|b` (the image did not start); `agent-start boot=ID
/// slot=a|b behaviour=B`; `agent-exit boot=ID reason=reboot|stopped|crashed|killed`.
pub const CONSOLE_LOG: &str = "console.log";

/// Failed boots in a row after which the board gives up: a real device would sit in a reset
/// loop; the simulation reports it as bricked.
pub const MAX_FAILED_BOOTS: u32 = 16;

/// Why the board stopped.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    /// The configuration's boot backend is not `simulated`.
    #[error("`swell-agent board` needs boot backend \"simulated\" in the config")]
    NotSimulated,
    /// The environment could not be used.
    #[error(transparent)]
    Boot(#[from] BootCtlError),
    /// The environment could not be used.
    #[error(transparent)]
    Env(#[from] crate::bootenv::Error),
    /// An I/O error on a board file.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The board kept failing to boot.
    #[error("board bricked: {0}")]
    Bricked(String),
    /// The first boot's command failed (for example an install that was refused).
    #[error("the agent's first boot failed with {0}")]
    FirstBoot(String),
}

/// One line of a board's [`CONSOLE_LOG`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleLine {
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened: `power-on`, `rom`, `no-boot`, `agent-start`, `agent-exit`.
    pub event: String,
    /// The line's `key=value` fields.
    pub fields: std::collections::BTreeMap<String, String>,
}

/// Reads the console log of the board in `board` (its directory).
pub fn read_console(board: &Path) -> std::io::Result<Vec<ConsoleLine>> {
    let text = std::fs::read_to_string(board.join(CONSOLE_LOG))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut words = line.split(' ');
            let at_ms = words.next()?.parse().ok()?;
            let event = words.next()?.to_owned();
            let fields = words
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            Some(ConsoleLine {
                at_ms,
                event,
                fields,
            })
        })
        .collect())
}

/// A reboot the agent asked for, as the console saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reboot {
    /// When the agent exited to reboot (Unix milliseconds).
    pub at_ms: u64,
    /// From that exit to the next agent's start: the boot ROM, any failed boots in between,
    /// and the image's own start-up delay (the simulated bootloader and kernel).
    pub down_ms: u64,
    /// The slot the agent ran from.
    pub from: String,
    /// The slot the next agent runs from.
    pub to: String,
    /// Whether the new slot boots on trial (an install's reboot) rather than for good (a
    /// revert's, or a fallback's).
    pub trial: bool,
}

/// The reboots in console `lines`: each `agent-exit reason=reboot` with the `agent-start`
/// after it (a reboot cut short by a power cut has none and is left out).
pub fn reboots(lines: &[ConsoleLine]) -> Vec<Reboot> {
    let field = |l: &ConsoleLine, k: &str| l.fields.get(k).cloned().unwrap_or_default();
    let mut out = Vec::new();
    let mut slot = String::new();
    let mut exit: Option<(u64, String)> = None;
    let mut trial = false;
    for l in lines {
        match l.event.as_str() {
            "power-on" => exit = None,
            "rom" => trial = field(l, "trial") == "yes",
            "agent-start" => {
                let to = field(l, "slot");
                if let Some((at_ms, from)) = exit.take() {
                    out.push(Reboot {
                        at_ms,
                        down_ms: l.at_ms.saturating_sub(at_ms),
                        from,
                        to: to.clone(),
                        trial,
                    });
                }
                slot = to;
            }
            "agent-exit" if field(l, "reason") == "reboot" => exit = Some((l.at_ms, slot.clone())),
            _ => {}
        }
    }
    out
}

/// Appends events to the board's [`CONSOLE_LOG`].
struct Console(PathBuf);

impl Console {
    fn log(&self, event: std::fmt::Arguments<'_>) -> Result<(), BoardError> {
        use std::io::Write as _;
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.0)
            .and_then(|mut f| f.write_all(format!("{at_ms} {event}\n").as_bytes()))
            .map_err(|source| BoardError::Io {
                op: "writing the console log",
                path: self.0.clone(),
                source,
            })
    }
}

/// What one pass of the boot ROM decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RomPass {
    /// The slot it boots.
    slot: Slot,
    /// Whether that boot is a trial (`upgrade_available` set).
    trial: bool,
    /// The boot count after this pass.
    bootcount: u32,
    /// Whether the bootcount limit switched slots (altbootcmd).
    fell_back: bool,
}

fn slot_name(slot: Slot) -> &'static str {
    match slot {
        Slot::A => "a",
        Slot::B => "b",
    }
}

/// Builds a simulated image of `size` bytes (at least the header) with `behaviour`; the rest
/// is pseudo-random bytes derived from `seed`, so two releases differ.
pub fn image(behaviour: &str, size: usize, seed: u64) -> Vec<u8> {
    let mut out = format!("{IMAGE_MAGIC} behaviour={behaviour}\n").into_bytes();
    let header = out.len();
    let mut x = seed | 1;
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(size.max(header));
    out
}

/// The behaviour in an image's header, if it has one.
pub fn behaviour(path: &Path) -> Option<String> {
    let mut head = [0u8; 128];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .ok()?;
    let line = head[..n].split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let rest = line
        .strip_prefix(IMAGE_MAGIC)?
        .strip_prefix(" behaviour=")?;
    Some(rest.to_string())
}

/// Runs the board until the agent exits cleanly (or, with `until_settled`, settles).
/// `first_boot` are the agent's arguments for the first boot; later boots run the daemon.
pub async fn run(
    config_path: &Path,
    config: &Config,
    until_settled: bool,
    first_boot: &[String],
) -> Result<(), BoardError> {
    let BootConfig::Simulated { board, bootlimit } = &config.boot else {
        return Err(BoardError::NotSimulated);
    };
    std::fs::create_dir_all(board).map_err(|source| BoardError::Io {
        op: "creating board directory",
        path: board.clone(),
        source,
    })?;
    let env_file = board.join(crate::bootctl::SIM_ENV_FILE);
    if !env_file.exists() {
        // A new board's environment partition: erased, no valid copy yet.
        std::fs::write(&env_file, vec![0u8; 2 * crate::bootctl::SIM_ENV_SIZE]).map_err(
            |source| BoardError::Io {
                op: "creating",
                path: env_file.clone(),
                source,
            },
        )?;
    }
    let console = Console(board.join(CONSOLE_LOG));
    console.log(format_args!("power-on"))?;
    let mut store = sim_env_store(board)?;
    let vars = BootVars::default();
    provision(&mut store, &vars, *bootlimit)?;
    let exe = std::env::current_exe().map_err(|source| BoardError::Io {
        op: "locating",
        path: "swell-agent".into(),
        source,
    })?;
    let mut first = (!first_boot.is_empty()).then(|| first_boot.to_vec());
    let mut failed_boots = 0;
    // The agent start that a power-cut plan applies to (see `faults`).
    let fault_boot: u32 = std::env::var(faults::BOOT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut agent_starts = 0u32;
    loop {
        let pass = boot_rom(&mut store, &vars)?;
        let slot = pass.slot;
        console.log(format_args!(
            "rom slot={} trial={} bootcount={}{}",
            slot_name(slot),
            if pass.trial { "yes" } else { "no" },
            pass.bootcount,
            if pass.fell_back { " fallback=yes" } else { "" },
        ))?;
        let slot_path = match slot {
            Slot::A => &config.slots.a,
            Slot::B => &config.slots.b,
        };
        let behaviour = behaviour(slot_path).filter(|b| b != "crash");
        let Some(behaviour) = behaviour else {
            console.log(format_args!("no-boot slot={}", slot_name(slot)))?;
            failed_boots += 1;
            if failed_boots >= MAX_FAILED_BOOTS {
                return Err(BoardError::Bricked(format!(
                    "{failed_boots} boots in a row failed; slot {slot:?} ({}) is not bootable",
                    slot_path.display()
                )));
            }
            continue;
        };
        failed_boots = 0;
        if let Some(ms) = behaviour
            .strip_prefix("slow-")
            .and_then(|ms| ms.parse().ok())
        {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let boot_id = next_boot_id(board)?;
        let is_first = first.is_some();
        let args = first.take().unwrap_or_else(|| {
            let mut args = vec!["run".to_string(), "--config".to_string()];
            args.push(config_path.display().to_string());
            if until_settled {
                args.push("--until-settled".to_string());
            }
            args
        });
        let mut command = tokio::process::Command::new(&exe);
        command
            .args(&args)
            .env(BOARD_BOOT_ID_ENV, &boot_id)
            .env(BOARD_SLOT_ENV, slot_name(slot))
            .env(BEHAVIOUR_ENV, &behaviour)
            .kill_on_drop(true);
        agent_starts += 1;
        if agent_starts != fault_boot {
            // A power-cut plan applies to one boot only; the reboots must recover.
            command.env_remove(faults::KILL_AT_ENV);
        }
        let mut child = command.spawn().map_err(|source| BoardError::Io {
            op: "starting",
            path: exe.clone(),
            source,
        })?;
        console.log(format_args!(
            "agent-start boot={boot_id} slot={} behaviour={behaviour}",
            slot_name(slot)
        ))?;
        let noise = (behaviour == "noisy").then(|| tokio::spawn(log_noise(board.join(APP_LOG))));
        let status = child.wait().await.map_err(|source| BoardError::Io {
            op: "waiting for",
            path: exe.clone(),
            source,
        });
        if let Some(noise) = noise {
            noise.abort();
        }
        let status = status?;
        let reason = match (status.code(), status.signal()) {
            (Some(0), _) => "stopped",
            (Some(code), _) if code == i32::from(REBOOT_EXIT_CODE) => "reboot",
            (None, Some(_)) => "killed",
            _ => "crashed",
        };
        console.log(format_args!("agent-exit boot={boot_id} reason={reason}"))?;
        match (status.code(), status.signal()) {
            (Some(0), _) => return Ok(()),
            (Some(code), _) if code == i32::from(REBOOT_EXIT_CODE) => {}
            // Killed: a power cut. The board powers up again.
            (None, Some(_)) => {}
            (Some(code), _) if is_first => {
                return Err(BoardError::FirstBoot(format!("exit code {code}")));
            }
            // The agent crashed on a normal boot: the watchdog resets the board.
            _ => {}
        }
    }
}

/// What a `noisy` image does while it runs: one [`NOISY_LINE`] a second in the application
/// log, behind a timestamp (which templating masks).
async fn log_noise(path: PathBuf) {
    use std::io::Write as _;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        // One short append to a local file: not worth a blocking-pool round trip.
        let line = format!("{} {NOISY_LINE}\n", crate::signer::now());
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            let _ = file.write_all(line.as_bytes());
        }
    }
}

/// Sets up a fresh board's environment: boot slot A, no trial, the configured bootlimit.
fn provision(
    store: &mut dyn BootEnvStore,
    vars: &BootVars,
    bootlimit: u32,
) -> Result<(), BoardError> {
    if store.load().is_ok() {
        return Ok(());
    }
    let mut env = crate::bootenv::Env::new();
    vars.set_slot(&mut env, Slot::A)?;
    vars.set_bootlimit(&mut env, bootlimit)?;
    vars.set_bootcount(&mut env, 0)?;
    vars.set_upgrade_available(&mut env, false)?;
    store.store(&env)?;
    Ok(())
}

/// One pass of the boot ROM's bootcount logic: the slot to boot, and why.
fn boot_rom(store: &mut dyn BootEnvStore, vars: &BootVars) -> Result<RomPass, BoardError> {
    let mut fell_back = false;
    let env = store.update(&mut |env| {
        if vars.upgrade_available(env)? {
            let count = vars.bootcount(env)? + 1;
            vars.set_bootcount(env, count)?;
            if count > vars.bootlimit(env)? {
                // altbootcmd: boot the other slot and end the trial.
                let current = vars.slot(env)?.unwrap_or(Slot::A);
                vars.boot_normally(env, current.other())?;
                fell_back = true;
            }
        }
        Ok(())
    })?;
    Ok(RomPass {
        slot: vars.slot(&env)?.unwrap_or(Slot::A),
        trial: vars.upgrade_available(&env)?,
        bootcount: vars.bootcount(&env)?,
        fell_back,
    })
}

/// A boot id unique across the board's life: a counter in the board directory.
fn next_boot_id(board: &Path) -> Result<String, BoardError> {
    let path = board.join("boot-counter");
    let io = |op| {
        let path = path.clone();
        move |source| BoardError::Io { op, path, source }
    };
    let n: u64 = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().unwrap_or(0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io("reading")(e)),
    } + 1;
    std::fs::write(&path, n.to_string()).map_err(io("writing"))?;
    Ok(format!("boot-{n}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootenv::Env;
    use crate::bootenv::storage::MemStorage;
    use crate::bootenv::uboot::{FlagScheme, Region, UbootEnvStore};

    fn store() -> UbootEnvStore<MemStorage> {
        let mem = MemStorage::new("sim", vec![0; 0x2000]);
        UbootEnvStore::redundant(
            [
                Region {
                    storage: mem.clone(),
                    offset: 0,
                },
                Region {
                    storage: mem,
                    offset: 0x1000,
                },
            ],
            0x1000,
            FlagScheme::Incremental,
        )
        .unwrap()
    }

    /// A trial gets `bootlimit` boots of the new slot; the next boot falls back to the old
    /// slot and ends the trial, without the agent.
    #[test]
    fn boot_rom_falls_back_after_bootlimit() {
        let mut s = store();
        let vars = BootVars::default();
        provision(&mut s, &vars, 2).unwrap();
        let pass = |slot, trial, bootcount, fell_back| RomPass {
            slot,
            trial,
            bootcount,
            fell_back,
        };
        assert_eq!(
            boot_rom(&mut s, &vars).unwrap(),
            pass(Slot::A, false, 0, false)
        );
        s.update(&mut |env: &mut Env| vars.arm_trial(env, Slot::B))
            .unwrap();
        assert_eq!(
            boot_rom(&mut s, &vars).unwrap(),
            pass(Slot::B, true, 1, false)
        );
        assert_eq!(
            boot_rom(&mut s, &vars).unwrap(),
            pass(Slot::B, true, 2, false)
        );
        assert_eq!(
            boot_rom(&mut s, &vars).unwrap(),
            pass(Slot::A, false, 0, true)
        );
        let env = s.load().unwrap();
        assert!(!vars.upgrade_available(&env).unwrap());
        assert_eq!(
            boot_rom(&mut s, &vars).unwrap(),
            pass(Slot::A, false, 0, false)
        );
    }

    /// The console's reboots: an exit to reboot and the next start, with the slots and
    /// whether the new one is on trial; a power cut in between is not a reboot.
    #[test]
    fn console_reboots() {
        let dir = tempfile::tempdir().unwrap();
        let text = "100 power-on\n\
                    101 rom slot=a trial=no bootcount=0\n\
                    102 agent-start boot=boot-1 slot=a behaviour=healthy\n\
                    500 agent-exit boot=boot-1 reason=reboot\n\
                    503 rom slot=b trial=yes bootcount=1\n\
                    540 agent-start boot=boot-2 slot=b behaviour=slow-30\n\
                    900 agent-exit boot=boot-2 reason=reboot\n\
                    901 rom slot=a trial=no bootcount=0\n\
                    905 agent-start boot=boot-3 slot=a behaviour=healthy\n\
                    950 agent-exit boot=boot-3 reason=reboot\n\
                    2000 power-on\n\
                    2001 rom slot=a trial=no bootcount=0\n\
                    2002 agent-start boot=boot-4 slot=a behaviour=healthy\n";
        std::fs::write(dir.path().join(CONSOLE_LOG), text).unwrap();
        let lines = read_console(dir.path()).unwrap();
        assert_eq!(lines.len(), 13);
        assert_eq!(lines[1].fields["trial"], "no");
        let r = reboots(&lines);
        let slots: Vec<(&str, &str, bool, u64)> = r
            .iter()
            .map(|r| (r.from.as_str(), r.to.as_str(), r.trial, r.down_ms))
            .collect();
        assert_eq!(slots, [("a", "b", true, 40), ("b", "a", false, 5)]);
        assert_eq!(r[1].at_ms, 900);
    }

    /// Images carry their behaviour in the header; other bytes are not bootable.
    #[test]
    fn images_carry_behaviour() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let img = image("unhealthy", 4096, 9);
        assert_eq!(img.len(), 4096);
        std::fs::write(&path, &img).unwrap();
        assert_eq!(behaviour(&path).as_deref(), Some("unhealthy"));
        std::fs::write(&path, b"random bytes").unwrap();
        assert_eq!(behaviour(&path), None);
        assert_ne!(image("healthy", 64, 1), image("healthy", 64, 2));
    }
}
