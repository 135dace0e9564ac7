//! The control socket: a Unix socket (mode 0600) speaking line-delimited JSON.
//!
//! Each connection is a tokio task reading one request per line. Lines longer than
//! `MAX_REQUEST_BYTES` and malformed JSON get an error reply; a connection silent for
//! `IDLE_TIMEOUT_SECS` is closed. Requests run on blocking threads under the switch's lock,
//! so a slow request never stalls the reactor and never runs on a datapath worker.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use xvs_ctl::protocol::{IDLE_TIMEOUT_SECS, MAX_REQUEST_BYTES, Reply, Request};

use crate::control::Switch;

/// The switch shared by connections.
pub type Shared = Arc<Mutex<Switch>>;

/// Binds the control socket at `path`, refusing if another xvsd is answering there.
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        // Only a stale socket is ours to remove: never a device, a file or a link.
        if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
            return Err(format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!(
                "another xvsd is already listening on {}",
                path.display()
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot set mode 0600 on {}: {e}", path.display()))?;
    Ok(listener)
}

/// Accepts connections until the task is dropped.
pub async fn serve(listener: UnixListener, switch: Shared) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let sw = switch.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, sw).await {
                        tracing::debug!("control connection ended: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn reply(stream: &mut tokio::net::unix::OwnedWriteHalf, r: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).unwrap_or_else(|_| br#"{"ok":false}"#.to_vec());
    line.push(b'\n');
    stream.write_all(&line).await
}

async fn connection(stream: UnixStream, switch: Shared) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        let limit = (MAX_REQUEST_BYTES + 1) as u64;
        let read = tokio::time::timeout(
            Duration::from_secs(IDLE_TIMEOUT_SECS),
            (&mut reader).take(limit).read_until(b'\n', &mut line),
        )
        .await;
        let n = match read {
            Err(_) => {
                let msg = format!("idle for {IDLE_TIMEOUT_SECS} s without a request: closing");
                let _ = reply(&mut write, &Reply::failure(msg)).await;
                return Ok(());
            }
            Ok(r) => r?,
        };
        if n == 0 {
            return Ok(());
        }
        // A line without its newline is either over the limit or the last one before EOF.
        if line.last() != Some(&b'\n') && line.len() > MAX_REQUEST_BYTES {
            let msg = format!("request too large: limit is {MAX_REQUEST_BYTES} bytes per line");
            reply(&mut write, &Reply::failure(msg)).await?;
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let r = match serde_json::from_str::<Request>(text) {
            Err(e) => Reply::failure(format!("invalid request: {e}")),
            Ok(req) => {
                let sw = switch.clone();
                tokio::task::spawn_blocking(move || match sw.lock() {
                    Ok(mut s) => s.handle(req),
                    Err(_) => Reply::failure("internal error: switch state lock poisoned"),
                })
                .await
                .unwrap_or_else(|e| Reply::failure(format!("internal error: {e}")))
            }
        };
        reply(&mut write, &r).await?;
    }
}

/// Removes the socket file on drop.
#[derive(Debug)]
pub struct SocketGuard(pub PathBuf);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Serves Prometheus metrics over HTTP on `addr` (any request gets the metrics).
pub async fn serve_metrics(addr: String, switch: Shared) {
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot serve metrics on {addr}: {e}");
            return;
        }
    };
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let sw = switch.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
            let body = tokio::task::spawn_blocking(move || {
                sw.lock().map(|s| s.metrics()).unwrap_or_default()
            })
            .await
            .unwrap_or_default();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}
