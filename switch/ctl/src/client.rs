//! The client side of the control protocol: one request line out, one reply line back, over
//! xvsd's Unix socket. Blocking and synchronous: xvsctl and the tests need nothing more.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::protocol::{Reply, Request};

/// How long a client waits for xvsd's reply (a `network connect` does netlink work).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request got no usable reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error(
        "cannot connect to xvsd at {path}: {source} (is xvsd running? set --socket or XVS_SOCKET)"
    )]
    Connect {
        /// Socket path tried.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Writing the request or reading the reply failed.
    #[error("talking to xvsd at {path}: {source}")]
    Io {
        /// Socket path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// xvsd closed the connection without replying.
    #[error("xvsd at {0} closed the connection without a reply")]
    NoReply(PathBuf),
    /// The reply line is not a valid reply.
    #[error("xvsd sent an unreadable reply: {0}")]
    BadReply(serde_json::Error),
    /// xvsd refused the request; the message names what was wrong.
    #[error("{0}")]
    Refused(String),
}

/// A connection to xvsd.
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to the socket at `path`.
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        let path = path.as_ref().to_path_buf();
        let stream = UnixStream::connect(&path).map_err(|source| ClientError::Connect {
            path: path.clone(),
            source,
        })?;
        let io = |source| ClientError::Io {
            path: path.clone(),
            source,
        };
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        Ok(Client {
            reader: BufReader::new(stream),
            writer,
            path,
        })
    }

    /// Sends `request` and returns the raw reply (which may be a refusal).
    pub fn call(&mut self, request: &Request) -> Result<Reply, ClientError> {
        let mut line = serde_json::to_string(request).map_err(ClientError::BadReply)?;
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|source| ClientError::Io {
                path: self.path.clone(),
                source,
            })?;
        let mut reply = String::new();
        let n = self
            .reader
            .read_line(&mut reply)
            .map_err(|source| ClientError::Io {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Err(ClientError::NoReply(self.path.clone()));
        }
        serde_json::from_str(&reply).map_err(ClientError::BadReply)
    }

    /// Sends `request`; a refusal becomes [`ClientError::Refused`], a success yields its
    /// result (`null` when there is none).
    pub fn request(&mut self, request: &Request) -> Result<serde_json::Value, ClientError> {
        let reply = self.call(request)?;
        if reply.ok {
            Ok(reply.result.unwrap_or(serde_json::Value::Null))
        } else {
            Err(ClientError::Refused(
                reply.error.unwrap_or_else(|| "request refused".to_string()),
            ))
        }
    }
}
