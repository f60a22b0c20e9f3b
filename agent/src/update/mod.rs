//! The update: a sans-I/O state machine (`machine`) and, later, the driver that performs its
//! actions.

pub mod machine;

pub use machine::{
    Action, BootId, BootInfo, Ctx, Disallowed, Event, Job, Settings, Source, State, step,
};
