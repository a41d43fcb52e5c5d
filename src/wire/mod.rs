//! The wire: newline-delimited JSON frames, requests, replies and error
//! codes, exactly as `docs/PROTOCOL.md` specifies them.

pub mod frame;
mod protocol;

pub use protocol::*;
