//! The control socket: a Unix socket (mode 0600) speaking line-delimited JSON.
//!
//! Each connection is a tokio task reading one request per line. Lines longer than
//! `MAX_REQUEST_BYTES` and malformed JSON get an error reply; a connection silent for
//! `IDLE_TIMEOUT_SECS` is closed. Requests run on blocking threads under the switch's lock,
//! so a slow request never stalls the reactor and never runs on a datapath worker.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use xvs_ctl::protocol::{IDLE_TIMEOUT_SECS, MAX_REQUEST_BYTES, Reply, Request};

use crate::control::Switch;
use crate::error::Error;

/// The switch shared by connections.
pub type Shared = Arc<Mutex<Switch>>;

/// Why the control socket cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The socket's directory could not be made.
    #[error("cannot create {}: {source}", .dir.display())]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Something other than a socket is at the path.
    #[error("{} exists and is not a socket; refusing to replace it", .0.display())]
    NotASocket(PathBuf),
    /// A live xvsd answers on the socket.
    #[error("another xvsd is already listening on {}", .0.display())]
    InUse(PathBuf),
    /// A stale socket could not be removed.
    #[error("cannot remove stale socket {}: {source}", .path.display())]
    RemoveStale {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The socket could not be bound.
    #[error("cannot bind {}: {source}", .path.display())]
    Bind {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The socket's mode could not be set.
    #[error("cannot set mode 0600 on {}: {source}", .path.display())]
    Mode {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// A request line answered with an error before (or instead of) reaching the switch.
#[derive(Debug, thiserror::Error)]
enum LineError {
    /// The client sent nothing for the idle timeout.
    #[error("idle for {IDLE_TIMEOUT_SECS} s without a request: closing")]
    Idle,
    /// Too many control connections are open.
    #[error("xvsd is busy: {MAX_CONNECTIONS} control connections are open; try again")]
    Busy,
    /// A line longer than the limit.
    #[error("request too large: limit is {MAX_REQUEST_BYTES} bytes per line")]
    TooLarge,
    /// A line that is not a request.
    #[error("invalid request: {0}")]
    Invalid(#[source] serde_json::Error),
    /// A request panicked while holding the switch's lock earlier.
    #[error("internal error: switch state lock poisoned")]
    Poisoned,
    /// The request's blocking task failed.
    #[error("internal error: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// Binds the control socket at `path`, refusing if another xvsd is answering there.
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| BindError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    }
    let path_buf = || path.to_path_buf();
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        // Only a stale socket is ours to remove: never a device, a file or a link.
        if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
            return Err(BindError::NotASocket(path_buf()));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(BindError::InUse(path_buf()));
        }
        std::fs::remove_file(path).map_err(|source| BindError::RemoveStale {
            path: path_buf(),
            source,
        })?;
    }
    let listener = UnixListener::bind(path).map_err(|source| BindError::Bind {
        path: path_buf(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        BindError::Mode {
            path: path_buf(),
            source,
        }
    })?;
    Ok(listener)
}

/// The reply to a request: its result, or the error's text.
fn reply_of(handled: Result<Reply, Error>) -> Reply {
    handled.unwrap_or_else(|e| Reply::failure(e.to_string()))
}

fn failure(e: LineError) -> Reply {
    Reply::failure(e.to_string())
}

/// Control connections open at once at most: each holds at most one request line
/// (`MAX_REQUEST_BYTES`), so the control plane's memory stays bounded whatever clients do.
pub const MAX_CONNECTIONS: usize = 256;

/// Accepts connections until the task is dropped. A connection beyond
/// [`MAX_CONNECTIONS`] is answered with an error and closed.
pub async fn serve(listener: UnixListener, switch: Shared) {
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let Ok(permit) = open.clone().try_acquire_owned() else {
                    tokio::spawn(async move {
                        let (_, mut write) = stream.into_split();
                        let _ = reply(&mut write, &failure(LineError::Busy)).await;
                    });
                    continue;
                };
                let sw = switch.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, sw).await {
                        tracing::debug!("control connection ended: {e}");
                    }
                    drop(permit);
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
                let _ = reply(&mut write, &failure(LineError::Idle)).await;
                return Ok(());
            }
            Ok(r) => r?,
        };
        if n == 0 {
            return Ok(());
        }
        // A line without its newline is either over the limit or the last one before EOF.
        if line.last() != Some(&b'\n') && line.len() > MAX_REQUEST_BYTES {
            reply(&mut write, &failure(LineError::TooLarge)).await?;
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let r = match serde_json::from_str::<Request>(text) {
            Err(e) => failure(LineError::Invalid(e)),
            Ok(req) => {
                let sw = switch.clone();
                tokio::task::spawn_blocking(move || match sw.lock() {
                    Ok(mut s) => reply_of(s.handle(req)),
                    Err(_) => failure(LineError::Poisoned),
                })
                .await
                .unwrap_or_else(|e| failure(LineError::Task(e)))
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

#[cfg(test)]
#[path = "tests/server.rs"]
mod tests;
