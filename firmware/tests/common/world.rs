//! The update and revert scenarios, written so that they resume from whatever state the
//! flash is in: every boot runs the real boot logic, and the "application" then does what a
//! real one would in the phase it finds (receive the image from the gateway, confirm a trial,
//! or crash before confirming).

use std::sync::OnceLock;

use swell_firmware::transfer::{Device, SendError, Sender};
use swell_firmware::update::{Config, Updater};
use swell_firmware::{Booted, Bootloader, Layout, Phase};

use super::link::{Faults, Loopback};
use super::{
    Flash, NEW, OLD, Spec, anchor_static, hardware, image, large, provision, region, small,
};

/// What the new image does once booted on trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// It passes its checks and confirms itself: the update must end committed.
    Update,
    /// It crashes before confirming, every time: the update must end reverted.
    Revert,
}

/// How a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The scenario reached its end state.
    Done,
    /// The power was cut.
    Cut,
}

/// Trial boots allowed. Each power cut can use up at most one (a cut after the ATTEMPT marker
/// and before the confirmation), so with two cuts per run three attempts still commit.
pub const MAX_ATTEMPTS: u8 = 3;

pub struct Images {
    pub old: Vec<u8>,
    pub new: Vec<u8>,
    pub old_digest: [u8; 32],
    pub new_digest: [u8; 32],
    pub template: Flash,
    pub layout: Layout,
}

/// The two images and a freshly provisioned flash of the sweep's small geometry, built
/// once per test process.
pub fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| build(small(), OLD, NEW))
}

/// The same on a larger flash: 256 KiB of ACTIVE, images of about 150 and 200 KiB.
pub fn large_images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let old = Spec {
            payload_len: 150_000,
            ..OLD
        };
        let new = Spec {
            payload_len: 200_000,
            ..NEW
        };
        build(large(), old, new)
    })
}

fn build((mut template, layout): (Flash, Layout), old: Spec, new: Spec) -> Images {
    {
        let old = image(old);
        let new = image(new);
        provision(&mut template, &layout, &old);
        let digest = |img: &[u8]| {
            swell_firmware::ImageHeader::parse(img)
                .unwrap()
                .manifest_digest
        };
        Images {
            old_digest: digest(&old),
            new_digest: digest(&new),
            old,
            new,
            template,
            layout,
        }
    }
}

pub struct World {
    pub images: &'static Images,
    pub flash: Flash,
    pub layout: Layout,
    pub script: Script,
    pub boots: u32,
    pub floor_seen: u64,
    pub faults: Faults,
}

pub fn config() -> Config<'static> {
    Config {
        anchor: anchor_static(),
        hardware: hardware(),
        max_attempts: MAX_ATTEMPTS,
    }
}

impl World {
    pub fn new(script: Script) -> Self {
        Self::on(images(), script)
    }

    /// A world on the larger geometry.
    pub fn large(script: Script) -> Self {
        Self::on(large_images(), script)
    }

    fn on(i: &'static Images, script: Script) -> Self {
        Self {
            images: i,
            flash: i.template.clone(),
            layout: i.layout,
            script,
            boots: 0,
            floor_seen: 0,
            faults: Faults::default(),
        }
    }

    pub fn updater(&mut self) -> Updater<'static, &mut Flash> {
        Updater::new(&mut self.flash, self.layout, config())
    }

    pub fn boot(&mut self) -> Result<Booted, swell_firmware::BootError> {
        Bootloader::new(&mut self.flash, self.layout, anchor_static(), hardware()).boot(|| {})
    }

    /// Checks what the bootloader chose: one of the two images, byte for byte what was
    /// built (so verified independently of the bootloader's own check), and a committed
    /// counter that never goes down, nor up without a commit.
    fn check_booted(&mut self, b: &Booted) {
        let i = self.images;
        let img = if b.header.manifest_digest == i.new_digest {
            &i.new
        } else {
            assert_eq!(
                b.header.manifest_digest, i.old_digest,
                "an unknown image booted"
            );
            &i.old
        };
        assert!(
            region(&self.flash, self.layout.active(), img.len()) == img.as_slice(),
            "ACTIVE does not hold the image the bootloader verified"
        );
        assert!(
            b.committed_counter >= self.floor_seen,
            "the committed counter went down"
        );
        self.floor_seen = b.committed_counter;
        if self.script == Script::Revert {
            assert!(
                b.committed_counter <= OLD.counter,
                "a reverted update raised the counter"
            );
        }
    }

    /// Runs the scenario from the flash's current state until its end or a power cut.
    pub fn run(&mut self) -> End {
        let i = self.images;
        for _ in 0..40 {
            let booted = match self.boot() {
                Ok(b) => b,
                Err(_) if !self.flash.is_powered() => return End::Cut,
                Err(e) => panic!("boot failed with the power on: {e}"),
            };
            self.boots += 1;
            self.check_booted(&booted);
            if booted.header.manifest_digest == i.new_digest {
                if !booted.trial {
                    assert_eq!(self.script, Script::Update, "a reverting update committed");
                    return End::Done;
                }
                if self.script == Script::Update
                    && let Err(e) = self.updater().mark_booted()
                {
                    assert!(!self.flash.is_powered(), "mark_booted failed: {e}");
                    return End::Cut;
                }
                // Reset: into the committed image, or into the next trial boot.
                continue;
            }
            let phase = self.updater().status().unwrap().phase;
            match (self.script, phase) {
                (Script::Revert, Phase::Reverted) => return End::Done,
                (_, Phase::Reverted | Phase::Refused) => panic!("the update ended {phase}"),
                _ => {}
            }
            match self.send(&i.new) {
                Ok(()) => continue,
                Err(_) if !self.flash.is_powered() => return End::Cut,
                Err(e) => panic!("the transfer failed with the power on: {e:?}"),
            }
        }
        panic!("the scenario did not end within 40 boots");
    }

    /// The gateway sends `image` over the loopback link to the real device session.
    pub fn send(&mut self, image: &[u8]) -> Result<(), SendError<super::link::LinkError>> {
        let faults = self.faults.clone();
        let mut device = Device::new(self.updater());
        let mut sender = Sender::new(Loopback::new(&mut device, faults));
        sender.send_image(image)
    }

    /// Boots once more and checks the scenario's end state.
    pub fn check_final(&mut self) {
        let i = self.images;
        let b = self.boot().expect("the final boot");
        assert!(!b.trial);
        match self.script {
            Script::Update => {
                assert_eq!(b.header.manifest_digest, i.new_digest);
                assert_eq!(b.phase, Phase::Committed);
                assert_eq!(b.committed_counter, NEW.counter);
                assert_eq!(
                    &region(&self.flash, self.layout.active(), i.new.len()),
                    &i.new
                );
            }
            Script::Revert => {
                assert_eq!(b.header.manifest_digest, i.old_digest);
                assert_eq!(b.phase, Phase::Reverted);
                assert_eq!(b.committed_counter, OLD.counter);
                assert_eq!(
                    &region(&self.flash, self.layout.active(), i.old.len()),
                    &i.old
                );
            }
        }
        self.check_booted(&b);
    }
}
