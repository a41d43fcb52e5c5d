//! Why a bench run failed.

use micropay::net::link::CallError;
use micropay::wire::WireError;

/// Why a bench run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Setting up (certificates, files, processes) failed.
    #[error("{0}")]
    Setup(String),
    /// A call failed in a way that ends the run.
    #[error("{0}")]
    Call(#[from] CallError),
    /// The server refused something during set-up.
    #[error("{0}")]
    Refused(#[from] WireError),
}

/// Maps any displayable error to [`BenchError::Setup`], saying what failed.
pub fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> BenchError + '_ {
    move |e| BenchError::Setup(format!("{what}: {e}"))
}
