//! Boot control for the configured backend: the [`BootControl`] the driver arms, commits and
//! reverts through, and the [`BootInfo`] of the boot the agent is running in.
//!
//! Which slot is *running* comes from the kernel command line (`swell.slot=`, set by the boot
//! script) or, on the simulated board, from its boot ROM; the environment only says what boots
//! next. The boot id tells a reboot from a restart of the agent.

use std::fmt;
use std::path::Path;

use swell_proto::messages::Slot;

use crate::bootenv::bootvars::slot_from_cmdline;
use crate::bootenv::storage::FileStorage;
use crate::bootenv::uboot::{FlagScheme, Region, UbootEnvStore};
use crate::bootenv::{BootControl, BootEnvStore, BootVars, EnvBootControl, GrubEnvFile};
use crate::config::BootConfig;
use crate::faults;
use crate::update::{BootId, BootInfo};

/// The environment variable through which the simulated board's boot ROM names the boot.
pub const BOARD_BOOT_ID_ENV: &str = "SWELL_BOARD_BOOT_ID";
/// The environment variable through which the simulated board's boot ROM names the slot.
pub const BOARD_SLOT_ENV: &str = "SWELL_BOARD_SLOT";

/// The simulated board's environment: two redundant 16 KiB copies in one file, laid out like
/// a U-Boot environment at the start of an eMMC boot partition.
pub const SIM_ENV_FILE: &str = "uboot.env";
/// Size of one copy of the simulated board's environment.
pub const SIM_ENV_SIZE: usize = 0x4000;

/// Why boot control could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum BootCtlError {
    /// The environment could not be read or written.
    #[error(transparent)]
    Env(#[from] crate::bootenv::Error),
    /// The running boot could not be identified.
    #[error("identifying the running boot: {0}")]
    Identify(String),
    /// The reboot command failed.
    #[error("reboot command {command:?}: {detail}")]
    Reboot {
        /// The command.
        command: Vec<String>,
        /// What happened.
        detail: String,
    },
}

/// The boot control and the boot it found.
pub struct Boot {
    /// Arms, commits and reverts.
    pub control: Box<dyn BootControl + Send>,
    /// The running boot.
    pub info: BootInfo,
}

impl fmt::Debug for Boot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Boot")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Marks each environment change as a durable write point for power-cut tests.
struct FaultPoints<C>(C);

impl<C: BootControl> BootControl for FaultPoints<C> {
    fn next_slot(&mut self) -> Result<Option<Slot>, crate::bootenv::Error> {
        self.0.next_slot()
    }
    fn trial_armed(&mut self) -> Result<bool, crate::bootenv::Error> {
        self.0.trial_armed()
    }
    fn arm_trial(&mut self, slot: Slot) -> Result<(), crate::bootenv::Error> {
        self.0.arm_trial(slot)?;
        faults::durable_write("boot env: arm trial");
        Ok(())
    }
    fn commit(&mut self) -> Result<(), crate::bootenv::Error> {
        self.0.commit()?;
        faults::durable_write("boot env: commit");
        Ok(())
    }
    fn boot_normally(&mut self, slot: Slot) -> Result<(), crate::bootenv::Error> {
        self.0.boot_normally(slot)?;
        faults::durable_write("boot env: boot normally");
        Ok(())
    }
}

/// The simulated board's environment store in `board`.
pub fn sim_env_store(board: &Path) -> Result<UbootEnvStore<FileStorage>, BootCtlError> {
    let file = board.join(SIM_ENV_FILE);
    let region = |offset| Region {
        storage: FileStorage::new(&file),
        offset,
    };
    let store = UbootEnvStore::redundant(
        [region(0), region(SIM_ENV_SIZE as u64)],
        SIM_ENV_SIZE,
        FlagScheme::Incremental,
    )?;
    Ok(store.with_lock_file(board.join("fw_env.lock")))
}

/// Makes sure `bootlimit` in the environment is the configured one, so a trial can always
/// fall back.
fn provision_bootlimit(
    store: &mut dyn BootEnvStore,
    vars: &BootVars,
    limit: u32,
) -> Result<(), BootCtlError> {
    store.update(&mut |env| {
        if vars.bootlimit(env)? != limit {
            vars.set_bootlimit(env, limit)?;
        }
        Ok(())
    })?;
    Ok(())
}

fn linux_boot_id() -> Result<BootId, BootCtlError> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| BootId(s.trim().to_string()))
        .map_err(|e| BootCtlError::Identify(format!("/proc/sys/kernel/random/boot_id: {e}")))
}

fn linux_slot(control: &mut dyn BootControl) -> Result<Slot, BootCtlError> {
    let cmdline = std::fs::read_to_string("/proc/cmdline")
        .map_err(|e| BootCtlError::Identify(format!("/proc/cmdline: {e}")))?;
    match slot_from_cmdline(&cmdline)? {
        Some(slot) => Ok(slot),
        // Without `swell.slot=` the next-boot slot is the best evidence of the running one.
        None => Ok(control.next_slot()?.unwrap_or(Slot::A)),
    }
}

fn finish<S: BootEnvStore + Send + 'static>(
    mut store: S,
    limit: u32,
    identify: impl FnOnce(&mut dyn BootControl) -> Result<(BootId, Slot), BootCtlError>,
) -> Result<Boot, BootCtlError> {
    let vars = BootVars::default();
    provision_bootlimit(&mut store, &vars, limit)?;
    let mut control = FaultPoints(EnvBootControl::new(store, vars));
    let (boot_id, slot) = identify(&mut control)?;
    // A trial is running only if this boot came from the slot under trial.
    let trial = control.trial_armed()? && control.next_slot()? == Some(slot);
    Ok(Boot {
        control: Box::new(control),
        info: BootInfo {
            boot_id,
            slot,
            trial,
        },
    })
}

/// Opens boot control for `config` and identifies the running boot.
pub fn open(config: &BootConfig) -> Result<Boot, BootCtlError> {
    match config {
        BootConfig::Uboot {
            fw_env_config,
            bootlimit,
            ..
        } => finish(UbootEnvStore::open(fw_env_config)?, *bootlimit, |c| {
            Ok((linux_boot_id()?, linux_slot(c)?))
        }),
        BootConfig::Grub { env, bootlimit, .. } => {
            finish(GrubEnvFile::new(env.clone()), *bootlimit, |c| {
                Ok((linux_boot_id()?, linux_slot(c)?))
            })
        }
        BootConfig::Simulated { board, bootlimit } => {
            finish(sim_env_store(board)?, *bootlimit, |_| board_identity())
        }
    }
}

fn board_identity() -> Result<(BootId, Slot), BootCtlError> {
    let missing = |name: &str| {
        BootCtlError::Identify(format!(
            "{name} is not set: an agent on the simulated board is started by `swell-agent board`"
        ))
    };
    let id = std::env::var(BOARD_BOOT_ID_ENV).map_err(|_| missing(BOARD_BOOT_ID_ENV))?;
    let slot = match std::env::var(BOARD_SLOT_ENV)
        .map_err(|_| missing(BOARD_SLOT_ENV))?
        .as_str()
    {
        "a" => Slot::A,
        "b" => Slot::B,
        other => {
            return Err(BootCtlError::Identify(format!(
                "{BOARD_SLOT_ENV}={other:?}"
            )));
        }
    };
    Ok((BootId(id), slot))
}

/// What a reboot request resolves to.
#[derive(Debug, Clone)]
pub struct Rebooter(BootConfig);

impl Rebooter {
    /// The rebooter for `config`.
    pub fn new(config: &BootConfig) -> Self {
        Self(config.clone())
    }

    /// Reboots: runs the reboot command on real hardware (returns `None`), or returns the exit
    /// code that asks the simulated board to reboot.
    pub fn reboot(&self) -> Result<Option<u8>, BootCtlError> {
        let command = match &self.0 {
            BootConfig::Simulated { .. } => return Ok(Some(crate::cli::REBOOT_EXIT_CODE)),
            BootConfig::Uboot { reboot_command, .. } | BootConfig::Grub { reboot_command, .. } => {
                reboot_command
            }
        };
        let fail = |detail: String| BootCtlError::Reboot {
            command: command.clone(),
            detail,
        };
        let (program, args) = command.split_first().ok_or_else(|| fail("empty".into()))?;
        let status = std::process::Command::new(program)
            .args(args)
            .status()
            .map_err(|e| fail(e.to_string()))?;
        if status.success() {
            Ok(None)
        } else {
            Err(fail(status.to_string()))
        }
    }
}
