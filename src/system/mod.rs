//! What the programs take from the operating system: the wall clock,
//! the local time zone, logging to stderr and termination signals.

pub mod clock;
pub mod localtime;
pub mod logging;
pub mod signal;
pub mod terminal;
