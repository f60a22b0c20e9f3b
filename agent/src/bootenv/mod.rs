//! The boot-environment layer: the variables the bootloader and the agent share, stored in the
//! formats the bootloaders and their Linux tools read.
//!
//! - [`Env`]: an ordered set of validated `name=value` pairs, independent of any format.
//! - [`uboot`]: the U-Boot environment as libubootenv's `fw_printenv`/`fw_setenv` and U-Boot
//!   itself read and write it (CRC, redundant copies, flag byte, `fw_env.config`).
//! - [`grub`]: GRUB's 1024-byte environment block as `grub-editenv` and `load_env` read it.
//! - [`storage`]: positioned reads and writes under the U-Boot store, with a power-cut
//!   simulation for tests.
//! - [`bootvars`]: typed access to `bootcount`, `bootlimit`, `upgrade_available` and the slot.
//!
//! Architecture invariant: nothing in this module decides *when* to change a variable; it only
//! stores what it is given, completely or not at all (see each format's write sequence).

pub mod bootvars;
mod error;
pub mod grub;
pub mod storage;
pub mod uboot;

pub use bootvars::{BootControl, BootVars, EnvBootControl, Slot};
pub use error::Error;
pub use grub::GrubEnvFile;
pub use uboot::UbootEnvStore;

/// An ordered set of boot variables.
///
/// Order is insertion order: setting an existing variable keeps its place, a new one goes at the
/// end, removing one closes the gap. That is exactly what `grub-editenv set`/`unset` do to the
/// GRUB block, so a Swell write of the same changes gives the same bytes. The U-Boot format
/// sorts by name when it writes, as U-Boot and libubootenv do. `==` compares the order too;
/// compare [`Env::sorted`] to compare only the variables.
///
/// Names and values are checked when they go in (see [`validate_name`] and
/// [`validate_value`]), so every `Env` can be written in both formats unless a format-specific
/// rule or the size limit says otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    vars: Vec<(String, String)>,
}

impl Env {
    /// An empty environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `name` to `value`, keeping the variable's place if it exists.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), Error> {
        validate_name(name)?;
        validate_value(name, value)?;
        match self.vars.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => value.clone_into(v),
            None => self.vars.push((name.to_owned(), value.to_owned())),
        }
        Ok(())
    }

    /// Removes `name`; returns its value if it was set.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let index = self.vars.iter().position(|(n, _)| n == name)?;
        Some(self.vars.remove(index).1)
    }

    /// The variables in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// How many variables are set.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// Whether no variable is set.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// The variables sorted by name (byte order, as C's `strcmp`), for comparing environments
    /// regardless of order.
    pub fn sorted(&self) -> Vec<(&str, &str)> {
        let mut vars: Vec<_> = self.iter().collect();
        vars.sort_unstable();
        vars
    }
}

/// Builds an environment from pairs; a shorthand for tests and defaults.
impl<'a> TryFrom<&[(&'a str, &'a str)]> for Env {
    type Error = Error;

    fn try_from(pairs: &[(&'a str, &'a str)]) -> Result<Self, Error> {
        let mut env = Env::new();
        for (name, value) in pairs {
            env.set(name, value)?;
        }
        Ok(env)
    }
}

/// Checks a variable name against the rules both formats share: not empty (libubootenv refuses
/// it and U-Boot would drop the whole environment for its default), no `=` (it ends the name in
/// both formats), no NUL (it ends the entry in U-Boot) and no newline (it ends the line in GRUB,
/// and GRUB does not escape names).
pub fn validate_name(name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.contains('=') {
        "contains '='"
    } else if name.contains('\0') {
        "contains NUL"
    } else if name.contains('\n') {
        "contains a newline"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// Checks a value: no NUL, which ends the entry in U-Boot and the string in GRUB. Newlines and
/// backslashes are allowed; the GRUB format escapes them as `grub-editenv` does.
pub fn validate_value(name: &str, value: &str) -> Result<(), Error> {
    if value.contains('\0') {
        return Err(Error::InvalidValue {
            name: name.to_owned(),
            reason: "contains NUL",
        });
    }
    Ok(())
}

/// Loading and storing a whole environment, whatever the format.
///
/// Implementations write completely or not at all: after a crash at any point of
/// [`BootEnvStore::store`], the next [`BootEnvStore::load`] returns either the old or the new
/// environment (the U-Boot single-copy layout is the documented exception).
pub trait BootEnvStore {
    /// Reads the current environment.
    fn load(&mut self) -> Result<Env, Error>;

    /// Replaces the stored environment with `env`.
    fn store(&mut self, env: &Env) -> Result<(), Error>;

    /// Reads, lets `change` edit, and writes back, holding whatever lock the format's own
    /// tools use for the whole sequence. Returns the environment as written.
    fn update(
        &mut self,
        change: &mut dyn FnMut(&mut Env) -> Result<(), Error>,
    ) -> Result<Env, Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_keeps_place_and_new_names_append() {
        let mut env = Env::try_from(&[("a", "1"), ("b", "2")][..]).unwrap();
        env.set("a", "3").unwrap();
        env.set("c", "4").unwrap();
        assert_eq!(
            env.iter().collect::<Vec<_>>(),
            [("a", "3"), ("b", "2"), ("c", "4")]
        );
        assert_eq!(env.remove("b").as_deref(), Some("2"));
        assert_eq!(env.remove("b"), None);
        assert_eq!(env.iter().collect::<Vec<_>>(), [("a", "3"), ("c", "4")]);
        assert_eq!(env.get("c"), Some("4"));
        assert_eq!(env.len(), 2);
    }

    #[test]
    fn names_are_validated() {
        for (name, reason) in [
            ("", "empty"),
            ("a=b", "contains '='"),
            ("a\0", "contains NUL"),
            ("a\nb", "contains a newline"),
        ] {
            match Env::new().set(name, "v") {
                Err(Error::InvalidName { reason: r, .. }) => assert_eq!(r, reason, "{name:?}"),
                other => panic!("{name:?}: {other:?}"),
            }
        }
        Env::new().set("bootcmd_mmc0.x-y", "v").unwrap();
    }

    #[test]
    fn values_with_nul_are_refused_other_bytes_are_kept() {
        let err = Env::new().set("a", "x\0y").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value for boot variable \"a\": contains NUL"
        );
        let mut env = Env::new();
        env.set("script", "echo a\\b\nboot; =").unwrap();
        env.set("empty", "").unwrap();
        assert_eq!(env.get("script"), Some("echo a\\b\nboot; ="));
        assert_eq!(env.get("empty"), Some(""));
    }

    #[test]
    fn sorted_is_byte_order() {
        let env = Env::try_from(&[("b", "1"), ("B", "2"), ("a", "3")][..]).unwrap();
        assert_eq!(env.sorted(), [("B", "2"), ("a", "3"), ("b", "1")]);
    }
}
