//! The metrics listener: plain HTTP/1.1 (hyper) serving the Prometheus
//! text format at `/metrics` and 404 elsewhere.
//!
//! It is bounded like every listener: at most
//! [`METRICS_CONNECTIONS_MAX`] connections (more are closed at once), a
//! request head of at most [`METRICS_REQUEST_HEAD_BYTES_MAX`] bytes (431
//! beyond), one request per connection, and the whole connection within
//! [`METRICS_CONNECTION_TIMEOUT_MS`]. It listens on a loopback address
//! unless the operator explicitly allows another: the metrics carry no
//! names or memos, but they say how busy the server is, and they are not
//! behind TLS.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn};

use crate::core::limits::{
    METRICS_CONNECTIONS_MAX, METRICS_CONNECTION_TIMEOUT_MS, METRICS_REQUEST_HEAD_BYTES_MAX,
};
use crate::metrics::TEXT_CONTENT_TYPE;

/// The one path that serves metrics.
pub const METRICS_PATH: &str = "/metrics";

/// Why the metrics listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address is not a loopback address and none was allowed.
    #[error("--metrics-listen {0} is not a loopback address; the metrics listener is plain HTTP, so it listens on 127.0.0.1 or ::1 unless --metrics-allow-non-loopback is given")]
    NotLoopback(SocketAddr),
    /// Binding failed (in use, not an address of this host, ...).
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A rendering of the metrics in the Prometheus text format.
pub type RenderFuture<'a> =
    Pin<Box<dyn Future<Output = Result<String, std::fmt::Error>> + Send + 'a>>;

/// What the listener serves: something that renders the metrics on demand
/// (refreshing any gauge it reads at scrape time first).
pub trait Exposition: Send + Sync + 'static {
    /// Every metric, in the Prometheus text format.
    fn render(&self) -> RenderFuture<'_>;
}

/// Binds the metrics listener on `addr`, which must be a loopback address
/// unless `allow_non_loopback`.
pub async fn bind(addr: SocketAddr, allow_non_loopback: bool) -> Result<TcpListener, MetricsError> {
    check_address(addr, allow_non_loopback)?;
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// The address rule alone: loopback, or explicitly allowed (then warned
/// about in the log).
pub fn check_address(addr: SocketAddr, allow_non_loopback: bool) -> Result<(), MetricsError> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if !allow_non_loopback {
        return Err(MetricsError::NotLoopback(addr));
    }
    warn!(%addr, "the metrics listener is reachable beyond this host (plain HTTP, no authentication)");
    Ok(())
}

/// Serves `exposition` on `listener` until `shutdown` turns true (or its
/// sender goes away).
pub async fn serve(
    listener: TcpListener,
    exposition: Arc<dyn Exposition>,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, path = METRICS_PATH, "serving metrics");
    }
    let slots = Arc::new(Semaphore::new(METRICS_CONNECTIONS_MAX));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                warn!("metrics accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "metrics connection limit reached; closing the new connection");
            continue;
        };
        let exposition = exposition.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| respond(exposition.clone(), request));
            let connection = http1::Builder::new()
                .keep_alive(false)
                .max_buf_size(METRICS_REQUEST_HEAD_BYTES_MAX)
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_millis(METRICS_CONNECTION_TIMEOUT_MS))
                .serve_connection(TokioIo::new(tcp), service);
            let limit = Duration::from_millis(METRICS_CONNECTION_TIMEOUT_MS);
            match tokio::time::timeout(limit, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, "metrics connection failed: {e}"),
                Err(_) => debug!(%peer, "metrics connection timed out"),
            }
            drop(permit);
        });
    }
}

/// One request: `GET` (or `HEAD`) `/metrics`, 404 elsewhere, 405 for other
/// methods.
async fn respond(
    exposition: Arc<dyn Exposition>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() != METRICS_PATH {
        return Ok(plain(
            StatusCode::NOT_FOUND,
            "not found; metrics are at /metrics\n",
        ));
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    let text = match exposition.render().await {
        Ok(text) => text,
        Err(_) => {
            warn!("encoding the metrics failed");
            return Ok(plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding failed\n",
            ));
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_CONTENT_TYPE));
    Ok(response)
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_unless_allowed() {
        let loopback: SocketAddr = "127.0.0.1:9464".parse().expect("addr");
        let loopback6: SocketAddr = "[::1]:9464".parse().expect("addr");
        let any: SocketAddr = "0.0.0.0:9464".parse().expect("addr");
        assert!(check_address(loopback, false).is_ok());
        assert!(check_address(loopback6, false).is_ok());
        assert!(matches!(
            check_address(any, false),
            Err(MetricsError::NotLoopback(_))
        ));
        assert!(check_address(any, true).is_ok());
    }
}
