//! What the programs take from the operating system: the wall clock,
//! logging to stderr and termination signals.

pub mod clock;
pub mod logging;
pub mod signal;
pub mod terminal;
