//! The plugin socket: HTTP/1.1 over a Unix socket at `/run/docker/plugins/NAME.sock`, where
//! dockerd finds remote plugins by name. Each connection is a tokio task on the control
//! runtime (hyper); a request's body is read (at most [`MAX_BODY_BYTES`]) there, then the
//! call runs on a blocking thread under the daemon's lock, as an xvsctl request does, through
//! [`map::dispatch`] and `Switch::handle`.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::UnixListener;

use super::api::CONTENT_TYPE;
use super::map::{self, Answer};
use crate::server::{BindError, Shared, bind};

/// Where dockerd looks for plugin sockets.
pub const PLUGIN_DIR: &str = "/run/docker/plugins";
/// Largest request body read.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Longest a connection may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The socket of plugin `name`.
pub fn socket_of(name: &str) -> PathBuf {
    Path::new(PLUGIN_DIR).join(format!("{name}.sock"))
}

/// Binds the plugin socket (refused if another process answers there).
pub fn bind_plugin(name: &str) -> Result<UnixListener, BindError> {
    bind(&socket_of(name))
}

/// Accepts dockerd's connections until the task is dropped.
pub async fn serve(listener: UnixListener, switch: Shared) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("docker plugin: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let sw = switch.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, sw.clone()));
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("docker plugin connection ended: {e}");
            }
        });
    }
}

/// The IPAM driver's addresses in flight (taken under the switch's lock, as every call is).
fn leases() -> std::sync::MutexGuard<'static, map::Leases> {
    static LEASES: std::sync::OnceLock<std::sync::Mutex<map::Leases>> = std::sync::OnceLock::new();
    LEASES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Milliseconds on a monotonic clock (since the first call).
fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

fn respond(a: Answer) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(&a.body).unwrap_or_else(|_| br#"{"Err":"encoding"}"#.to_vec());
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_REQUEST);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(CONTENT_TYPE),
    );
    r
}

fn refused(status: u16, why: impl std::fmt::Display) -> Response<Full<Bytes>> {
    respond(Answer {
        status,
        body: json!({ "Err": why.to_string() }),
    })
}

async fn answer(
    req: hyper::Request<Incoming>,
    switch: Shared,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::POST {
        return Ok(refused(400, format!("{} is not POST", req.method())));
    }
    let path = req.uri().path().to_string();
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(refused(400, format!("cannot read {path}'s body: {e}"))),
    };
    tracing::debug!("docker plugin: {path} {}", String::from_utf8_lossy(&body));
    let call = path.clone();
    let answered = tokio::task::spawn_blocking(move || match switch.lock() {
        Ok(mut sw) => map::dispatch(&call, &body, &mut leases(), now_ms(), &mut |r| {
            sw.handle(r)
                .unwrap_or_else(|e| xvs_ctl::protocol::Reply::failure(e.to_string()))
        }),
        Err(_) => Answer {
            status: 500,
            body: json!({ "Err": "internal error: switch state lock poisoned" }),
        },
    })
    .await;
    let a = answered.unwrap_or_else(|e| Answer {
        status: 500,
        body: json!({ "Err": format!("internal error: {e}") }),
    });
    if a.body.get("Err").is_some() {
        tracing::warn!("docker plugin: {path} refused: {}", a.body["Err"]);
    } else {
        tracing::debug!("docker plugin: {path} -> {}", a.body);
    }
    Ok(respond(a))
}
