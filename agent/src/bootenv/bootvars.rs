//! The boot variables the update logic reads and writes, typed, and the trial-boot protocol
//! they implement with the bootloader.
//!
//! U-Boot semantics (with `CONFIG_BOOTCOUNT_LIMIT` and `CONFIG_BOOTCOUNT_ENV`):
//!
//! | variable | type | who writes it | meaning |
//! |---|---|---|---|
//! | `upgrade_available` | decimal, non-zero = true | agent | a trial is armed and not committed |
//! | `bootcount` | decimal | U-Boot, agent resets | U-Boot adds 1 and saves the env on every boot while `upgrade_available` is non-zero |
//! | `bootlimit` | decimal, 0 or unset = off | provisioning | when `bootcount > bootlimit`, U-Boot runs `altbootcmd` instead of `bootcmd` |
//! | `swell_slot` (name configurable) | `a` or `b` | agent, `altbootcmd` | the slot `bootcmd` boots; `altbootcmd` switches it to the other slot |
//!
//! So a trial gets `bootlimit` boots. If none of them reaches the agent's commit, the next boot
//! runs `altbootcmd`, which boots the old slot and clears the trial. GRUB has no built-in boot
//! counter; the `grub.cfg` in `docs/agent.md` implements the same protocol with `load_env` and
//! `save_env`.

pub use swell_proto::messages::Slot;

use super::{BootEnvStore, Env, Error, validate_name};

/// U-Boot's boot counter.
pub const BOOTCOUNT: &str = "bootcount";
/// The number of trial boots before the bootloader falls back.
pub const BOOTLIMIT: &str = "bootlimit";
/// Non-zero while a trial is armed and not committed.
pub const UPGRADE_AVAILABLE: &str = "upgrade_available";
/// The default name of the slot variable.
pub const DEFAULT_SLOT_VAR: &str = "swell_slot";
/// The kernel command-line parameter the sample boot scripts set to the slot they booted
/// (`swell.slot=a`), which is how the running system knows its own slot.
pub const CMDLINE_SLOT_PARAM: &str = "swell.slot";

/// Typed access to the boot variables; holds only the slot variable's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootVars {
    slot_var: String,
}

impl Default for BootVars {
    fn default() -> Self {
        Self {
            slot_var: DEFAULT_SLOT_VAR.to_owned(),
        }
    }
}

impl BootVars {
    /// Uses `slot_var` as the slot variable's name.
    pub fn new(slot_var: &str) -> Result<Self, Error> {
        validate_name(slot_var)?;
        Ok(Self {
            slot_var: slot_var.to_owned(),
        })
    }

    /// The slot variable's name.
    pub fn slot_var(&self) -> &str {
        &self.slot_var
    }

    /// `bootcount`; unset reads as 0, as U-Boot reads it.
    pub fn bootcount(&self, env: &Env) -> Result<u32, Error> {
        decimal(env, BOOTCOUNT)
    }

    /// Sets `bootcount`.
    pub fn set_bootcount(&self, env: &mut Env, count: u32) -> Result<(), Error> {
        env.set(BOOTCOUNT, &count.to_string())
    }

    /// `bootlimit`; 0 (or unset) means U-Boot never falls back.
    pub fn bootlimit(&self, env: &Env) -> Result<u32, Error> {
        decimal(env, BOOTLIMIT)
    }

    /// Sets `bootlimit`.
    pub fn set_bootlimit(&self, env: &mut Env, limit: u32) -> Result<(), Error> {
        env.set(BOOTLIMIT, &limit.to_string())
    }

    /// Whether a trial is armed: `upgrade_available` is non-zero.
    pub fn upgrade_available(&self, env: &Env) -> Result<bool, Error> {
        Ok(decimal(env, UPGRADE_AVAILABLE)? != 0)
    }

    /// Sets `upgrade_available` to `1` or `0`.
    pub fn set_upgrade_available(&self, env: &mut Env, on: bool) -> Result<(), Error> {
        env.set(UPGRADE_AVAILABLE, if on { "1" } else { "0" })
    }

    /// The slot the bootloader boots next, if the variable is set.
    pub fn slot(&self, env: &Env) -> Result<Option<Slot>, Error> {
        env.get(&self.slot_var)
            .map(|value| parse_slot(&self.slot_var, value))
            .transpose()
    }

    /// Sets the slot the bootloader boots next.
    pub fn set_slot(&self, env: &mut Env, slot: Slot) -> Result<(), Error> {
        env.set(&self.slot_var, slot_str(slot))
    }

    /// Arms a trial of `slot`: boot it next, count boots, fall back after `bootlimit` of them.
    /// Refuses when `bootlimit` is 0 or unset, since the bootloader would then never fall back.
    pub fn arm_trial(&self, env: &mut Env, slot: Slot) -> Result<(), Error> {
        if self.bootlimit(env)? == 0 {
            return Err(Error::NoFallback {
                detail: format!(
                    "{BOOTLIMIT} is 0 or unset, so the bootloader would never fall back"
                ),
            });
        }
        self.set_slot(env, slot)?;
        self.set_bootcount(env, 0)?;
        self.set_upgrade_available(env, true)
    }

    /// Commits the running trial: the slot stays, counting stops.
    pub fn commit(&self, env: &mut Env) -> Result<(), Error> {
        self.set_upgrade_available(env, false)?;
        self.set_bootcount(env, 0)
    }

    /// Boots `slot` from now on with no trial (a revert, or a commit of the other slot).
    pub fn boot_normally(&self, env: &mut Env, slot: Slot) -> Result<(), Error> {
        self.set_slot(env, slot)?;
        self.commit(env)
    }
}

/// The slot named by `swell.slot=` on a kernel command line (`/proc/cmdline`); the last one
/// wins, as for kernel parameters.
pub fn slot_from_cmdline(cmdline: &str) -> Result<Option<Slot>, Error> {
    let prefix = format!("{CMDLINE_SLOT_PARAM}=");
    cmdline
        .split_ascii_whitespace()
        .filter_map(|word| word.strip_prefix(&prefix))
        .next_back()
        .map(|value| parse_slot(CMDLINE_SLOT_PARAM, value))
        .transpose()
}

fn slot_str(slot: Slot) -> &'static str {
    match slot {
        Slot::A => "a",
        Slot::B => "b",
    }
}

fn parse_slot(name: &str, value: &str) -> Result<Slot, Error> {
    match value {
        "a" => Ok(Slot::A),
        "b" => Ok(Slot::B),
        _ => Err(Error::BadVariable {
            name: name.to_owned(),
            value: value.to_owned(),
            expected: "a slot (\"a\" or \"b\")",
        }),
    }
}

/// A decimal variable, unset = 0. U-Boot's `env_get_ulong` would read leading digits and
/// ignore the rest; Swell refuses anything but digits, because such a value was not written by
/// U-Boot or Swell and guessing could arm or skip a fallback.
fn decimal(env: &Env, name: &str) -> Result<u32, Error> {
    let Some(value) = env.get(name) else {
        return Ok(0);
    };
    value
        .parse::<u32>()
        .ok()
        .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| Error::BadVariable {
            name: name.to_owned(),
            value: value.to_owned(),
            expected: "a decimal number",
        })
}

/// What the update state machine asks of the bootloader, over any [`BootEnvStore`].
///
/// A sketch the driver will grow into; each call is one locked read-modify-write of the
/// environment. The *running* slot is not here: it comes from the kernel command line
/// ([`slot_from_cmdline`]), because the environment only says what boots next.
pub trait BootControl {
    /// The slot the bootloader boots next.
    fn next_slot(&mut self) -> Result<Option<Slot>, Error>;
    /// Whether a trial is armed and not yet committed.
    fn trial_armed(&mut self) -> Result<bool, Error>;
    /// Boots `slot` on trial next ([`BootVars::arm_trial`]).
    fn arm_trial(&mut self, slot: Slot) -> Result<(), Error>;
    /// Commits the running trial ([`BootVars::commit`]).
    fn commit(&mut self) -> Result<(), Error>;
    /// Boots `slot` normally from now on ([`BootVars::boot_normally`]).
    fn boot_normally(&mut self, slot: Slot) -> Result<(), Error>;
}

/// [`BootControl`] over a U-Boot or GRUB environment store.
#[derive(Debug)]
pub struct EnvBootControl<S> {
    store: S,
    vars: BootVars,
}

impl<S: BootEnvStore> EnvBootControl<S> {
    /// Boot control over `store` with the variable names in `vars`.
    pub fn new(store: S, vars: BootVars) -> Self {
        Self { store, vars }
    }

    /// The store underneath.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }
}

impl<S: BootEnvStore> BootControl for EnvBootControl<S> {
    fn next_slot(&mut self) -> Result<Option<Slot>, Error> {
        self.vars.slot(&self.store.load()?)
    }

    fn trial_armed(&mut self) -> Result<bool, Error> {
        self.vars.upgrade_available(&self.store.load()?)
    }

    fn arm_trial(&mut self, slot: Slot) -> Result<(), Error> {
        let vars = &self.vars;
        self.store
            .update(&mut |env| vars.arm_trial(env, slot))
            .map(drop)
    }

    fn commit(&mut self) -> Result<(), Error> {
        let vars = &self.vars;
        self.store.update(&mut |env| vars.commit(env)).map(drop)
    }

    fn boot_normally(&mut self, slot: Slot) -> Result<(), Error> {
        let vars = &self.vars;
        self.store
            .update(&mut |env| vars.boot_normally(env, slot))
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootenv::storage::MemStorage;
    use crate::bootenv::uboot::{FlagScheme, Region, UbootEnvStore};

    #[test]
    fn typed_getters_and_defaults() {
        let vars = BootVars::default();
        let mut env = Env::new();
        assert_eq!(vars.bootcount(&env).unwrap(), 0);
        assert_eq!(vars.bootlimit(&env).unwrap(), 0);
        assert!(!vars.upgrade_available(&env).unwrap());
        assert_eq!(vars.slot(&env).unwrap(), None);
        env.set("upgrade_available", "2").unwrap();
        assert!(vars.upgrade_available(&env).unwrap());
        for bad in ["", "-1", "+1", "3x", "0x3", " 3", "4294967296"] {
            env.set("bootcount", bad).unwrap();
            let err = vars.bootcount(&env).unwrap_err();
            assert!(matches!(err, Error::BadVariable { .. }), "{bad:?}");
        }
        env.set("swell_slot", "c").unwrap();
        assert_eq!(
            vars.slot(&env).unwrap_err().to_string(),
            "boot variable swell_slot=\"c\" is not a slot (\"a\" or \"b\")"
        );
    }

    #[test]
    fn trial_commit_and_revert_set_the_documented_variables() {
        let vars = BootVars::new("rootfs_slot").unwrap();
        let mut env = Env::new();
        assert!(matches!(
            vars.arm_trial(&mut env, Slot::B),
            Err(Error::NoFallback { .. })
        ));
        vars.set_bootlimit(&mut env, 3).unwrap();
        vars.set_slot(&mut env, Slot::A).unwrap();
        vars.arm_trial(&mut env, Slot::B).unwrap();
        assert_eq!(
            env.sorted(),
            [
                ("bootcount", "0"),
                ("bootlimit", "3"),
                ("rootfs_slot", "b"),
                ("upgrade_available", "1")
            ]
        );
        vars.set_bootcount(&mut env, 2).unwrap();
        vars.commit(&mut env).unwrap();
        assert_eq!(
            (
                env.get("rootfs_slot"),
                env.get("upgrade_available"),
                env.get("bootcount")
            ),
            (Some("b"), Some("0"), Some("0"))
        );
        vars.arm_trial(&mut env, Slot::A).unwrap();
        vars.boot_normally(&mut env, Slot::B).unwrap();
        assert_eq!(
            (env.get("rootfs_slot"), env.get("upgrade_available")),
            (Some("b"), Some("0"))
        );
        assert!(BootVars::new("a=b").is_err());
    }

    #[test]
    fn slot_from_kernel_cmdline() {
        assert_eq!(
            slot_from_cmdline("console=ttyS0 root=/dev/mmcblk0p3 swell.slot=b rw").unwrap(),
            Some(Slot::B)
        );
        assert_eq!(
            slot_from_cmdline("swell.slot=a swell.slot=b").unwrap(),
            Some(Slot::B)
        );
        assert_eq!(slot_from_cmdline("quiet").unwrap(), None);
        assert!(slot_from_cmdline("swell.slot=").is_err());
    }

    #[test]
    fn boot_control_over_a_uboot_store() {
        let dev = MemStorage::new("<sim>", vec![0; 512]);
        let region = |offset| Region {
            storage: dev.clone(),
            offset,
        };
        let mut store =
            UbootEnvStore::redundant([region(0), region(256)], 256, FlagScheme::Incremental)
                .unwrap();
        store
            .store(&Env::try_from(&[("bootlimit", "3"), ("swell_slot", "a")][..]).unwrap())
            .unwrap();
        let mut control = EnvBootControl::new(store, BootVars::default());
        assert_eq!(control.next_slot().unwrap(), Some(Slot::A));
        control.arm_trial(Slot::B).unwrap();
        assert!(control.trial_armed().unwrap());
        assert_eq!(control.next_slot().unwrap(), Some(Slot::B));
        control.commit().unwrap();
        assert!(!control.trial_armed().unwrap());
        control.boot_normally(Slot::A).unwrap();
        assert_eq!(control.next_slot().unwrap(), Some(Slot::A));
        assert_eq!(
            control.store_mut().load().unwrap().get("bootlimit"),
            Some("3")
        );
    }
}
