//! Replies: the echoed request id and a result or an error.

use serde::{Deserialize, Serialize};

use crate::wire::errors::{ErrorCode, WireError};

/// A result as JSON text, serialized once and written as is.
pub type ResultJson = Box<serde_json::value::RawValue>;

/// Serializes an op's result.
pub fn to_result_json<T: Serialize>(value: &T) -> Result<ResultJson, WireError> {
    serde_json::value::to_raw_value(value)
        .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))
}

/// A reply as it travels: the echoed id and a result or an error.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// The request's id (`null` when the request had none or was unreadable).
    pub id: Option<u64>,
    /// Whether the request succeeded.
    pub ok: bool,
    /// The op's result, when `ok`, as JSON text (parsed on demand by
    /// [`Reply::into_result`]).
    #[serde(default)]
    pub result: Option<ResultJson>,
    /// The error, when not `ok`.
    #[serde(default)]
    pub error: Option<WireError>,
}

#[derive(Serialize)]
struct ReplyOk<'a, T> {
    id: Option<u64>,
    ok: bool,
    result: &'a T,
}

#[derive(Serialize)]
struct ReplyErr<'a> {
    id: Option<u64>,
    ok: bool,
    error: &'a WireError,
}

impl Reply {
    /// Encodes an outcome as a reply line (with its newline).
    pub fn encode<T: Serialize>(id: Option<u64>, outcome: &Result<T, WireError>) -> Vec<u8> {
        let encoded = match outcome {
            Ok(result) => serde_json::to_vec(&ReplyOk {
                id,
                ok: true,
                result,
            }),
            Err(error) => serde_json::to_vec(&ReplyErr {
                id,
                ok: false,
                error,
            }),
        };
        let mut line = match encoded {
            Ok(line) => line,
            Err(e) => {
                let error = WireError::new(ErrorCode::Internal, e.to_string());
                match serde_json::to_vec(&ReplyErr {
                    id,
                    ok: false,
                    error: &error,
                }) {
                    Ok(line) => line,
                    Err(_) => unreachable!("an error reply always serializes"),
                }
            }
        };
        line.push(b'\n');
        line
    }

    /// Decodes a reply line.
    pub fn decode(line: &[u8]) -> Result<Reply, WireError> {
        serde_json::from_slice(line)
            .map_err(|e| WireError::new(ErrorCode::BadRequest, format!("bad reply: {e}")))
    }

    /// The result as `T`, or the error.
    pub fn into_result<T: serde::de::DeserializeOwned>(self) -> Result<T, WireError> {
        if self.ok {
            let text = self.result.as_deref().map_or("null", |r| r.get());
            serde_json::from_str(text).map_err(|e| {
                WireError::new(ErrorCode::BadRequest, format!("unexpected reply: {e}"))
            })
        } else {
            Err(self.error.unwrap_or_else(|| {
                WireError::new(ErrorCode::BadRequest, "a failed reply without an error")
            }))
        }
    }
}
