//! The wire: newline-delimited JSON frames, requests, replies and error
//! codes, exactly as `docs/PROTOCOL.md` specifies them. Every message is
//! one JSON object on one line. A request is `{"id": N, "op": "...",
//! ...fields}`; its reply echoes `id` and carries either `"ok": true` with
//! the op's fields under `result`, or `"ok": false` with
//! `error: {code, message}`. Pure data apart from [`frame`], which reads
//! bounded lines from an async stream.

pub mod channel;
pub mod errors;
pub mod frame;
pub mod messages;
pub mod reply;
pub mod request;

pub use channel::{ChannelAck, ChannelClosed, ChannelOpened, CommitmentJson};
pub use errors::{ErrorCode, WireError};
pub use messages::*;
pub use reply::{to_result_json, Reply, ResultJson};
pub use request::*;
