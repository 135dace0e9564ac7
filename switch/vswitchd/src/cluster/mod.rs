//! Many hosts as one network (`xvsd --cluster etcd://...`): overlay networks, their addresses
//! and endpoints kept in a real etcd, every host programming itself from what it watches.
//!
//! - [`records`]: the key layout and records; [`directory`]: the directory as read and what
//!   it means for the local switch (pure, unit-tested);
//! - [`session`]: the etcd side on the control runtime (tokio): lease, registration,
//!   reconciliation, watch, resynchronisation after etcd comes back;
//! - here: the daemon's options, the sync state shown by `cluster show`, and [`Handle`], the
//!   control thread's blocking way to ask for what needs the cluster (claim an address,
//!   define a network). The control thread never waits on etcd without a deadline, and the
//!   cluster task never waits on the control thread's lock (it hands directory snapshots to
//!   an applier task instead), so neither can stall the other.

pub mod directory;
pub mod records;
pub mod session;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use directory::{Directory, Owned};
use records::{BackendRecord, EndpointRecord, NetworkRecord, ServiceRecord};

/// How long the control thread waits for etcd to answer one change.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/xvs/";

/// `--cluster`, `--host-id`, `--cluster-prefix`, `--lease-ttl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    /// etcd endpoints as `http://HOST:PORT`.
    pub endpoints: Vec<String>,
    /// This host's id.
    pub host_id: String,
    /// The key prefix (starts and ends with `/`).
    pub prefix: String,
    /// The lease TTL in seconds.
    pub lease_ttl: u32,
    /// This host's token ([`token`]).
    pub token: String,
}

/// Parses `--cluster etcd://HOST:PORT[,HOST:PORT...]` into etcd client endpoints.
pub fn parse_cluster(s: &str) -> Result<Vec<String>, String> {
    let list = s
        .strip_prefix("etcd://")
        .ok_or_else(|| format!("{s:?} is not an etcd address: etcd://HOST:PORT[,HOST:PORT...]"))?;
    let mut out = Vec::new();
    for hp in list.split(',') {
        let hp = hp.strip_prefix("etcd://").unwrap_or(hp);
        let (host, port) = hp
            .rsplit_once(':')
            .ok_or_else(|| format!("{hp:?} in {s:?} is not HOST:PORT"))?;
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
        if !host_ok {
            return Err(format!("{host:?} in {s:?} is not a host name or address"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(format!("{port:?} in {s:?} is not a port (1-65535)")),
        }
        out.push(format!("http://{host}:{port}"));
    }
    Ok(out)
}

/// Parses `--cluster-prefix`: an absolute key prefix ending in `/`.
pub fn parse_prefix(s: &str) -> Result<String, String> {
    if s.len() >= 2 && s.starts_with('/') && s.ends_with('/') && !s.contains("//") {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a key prefix: /NAME/ (starts and ends with '/')"
        ))
    }
}

/// This host's token (see [`records::HostRecord::token`]), made once and kept in `state_dir`.
pub fn token(state_dir: &Path) -> std::io::Result<String> {
    let path = state_dir.join("cluster-token");
    match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().len() == 32 => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    let t: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&path, format!("{t}\n"))?;
    Ok(t)
}

/// Why a change that needs the cluster was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// etcd cannot be reached (or this host is resynchronising).
    #[error("the cluster is unavailable ({0}); changes to overlay networks need it")]
    Unavailable(String),
    /// etcd did not answer in time.
    #[error(
        "the cluster is unavailable (etcd did not answer within {0:?}); changes to overlay networks need it"
    )]
    Timeout(Duration),
    /// Another host holds the address.
    #[error("address {ip} on network {network} is in use on host {host}")]
    AddressTaken {
        /// The network.
        network: String,
        /// The address.
        ip: Ipv4Addr,
        /// Who holds it.
        host: String,
    },
    /// The cluster already has a network of that name.
    #[error("network {name} already exists in the cluster (created by host {host})")]
    NetworkTaken {
        /// The network.
        name: String,
        /// Its creator.
        host: String,
    },
    /// The cluster already uses the VNI.
    #[error("VNI {vni} is already used in the cluster by network {other}")]
    VniTaken {
        /// The VNI.
        vni: u32,
        /// The network holding it.
        other: String,
    },
    /// The cluster already has a service of that name.
    #[error("service {name} already exists in the cluster (created by host {host})")]
    ServiceTaken {
        /// The service.
        name: String,
        /// Its creator.
        host: String,
    },
    /// Other hosts still have endpoints on the network.
    #[error("network {network} has endpoints on other hosts: {list}")]
    RemoteEndpoints {
        /// The network.
        network: String,
        /// `host (ip)`, ...
        list: String,
    },
    /// etcd refused or failed a request.
    #[error("etcd: {0}")]
    Etcd(String),
}

/// Where this host stands with the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    /// Connecting, registering, reading the directory.
    Syncing,
    /// Watching: the directory is current.
    Synced,
    /// etcd is unreachable; forwarding goes on with what is known.
    Disconnected,
}

impl SyncState {
    /// As `cluster show` prints it.
    pub fn name(self) -> &'static str {
        match self {
            SyncState::Syncing => "syncing",
            SyncState::Synced => "synced",
            SyncState::Disconnected => "disconnected",
        }
    }
}

/// The session's state, shared with the control thread (a short lock, never held across
/// an await).
#[derive(Debug, Clone)]
pub struct Status {
    /// Sync state.
    pub state: SyncState,
    /// When it last changed.
    pub since: Instant,
    /// Why the last session ended.
    pub error: Option<String>,
    /// The lease this host's entries live under.
    pub lease_id: i64,
    /// The last revision applied.
    pub revision: i64,
    /// Sessions opened.
    pub sessions: u64,
    /// Watch events applied.
    pub events: u64,
    /// What the last reconciliation found claimed by others.
    pub conflicts: Vec<String>,
}

impl Status {
    fn new() -> Status {
        Status {
            state: SyncState::Syncing,
            since: Instant::now(),
            error: None,
            lease_id: 0,
            revision: 0,
            sessions: 0,
            events: 0,
            conflicts: Vec::new(),
        }
    }

    /// Moves to `state` (keeping `since` if it is already there).
    pub fn set(&mut self, state: SyncState) {
        if self.state != state {
            self.state = state;
            self.since = Instant::now();
        }
    }
}

/// A reply channel for one command.
pub(crate) type Reply<T> = std::sync::mpsc::SyncSender<Result<T, ClusterError>>;

/// What the control thread asks of the cluster task.
#[derive(Debug)]
pub enum Command {
    /// Define overlay `name` (and its VNI); the reply is the revision it was written at.
    ClaimNetwork {
        /// The network.
        name: String,
        /// Its definition.
        rec: NetworkRecord,
        /// Reply.
        reply: Reply<i64>,
    },
    /// Remove overlay `name` and its VNI.
    ReleaseNetwork {
        /// The network.
        name: String,
        /// Its VNI.
        vni: u32,
        /// Reply.
        reply: Reply<()>,
    },
    /// Hold address `ip` on `network` for a local endpoint.
    ClaimEndpoint {
        /// The network.
        network: String,
        /// The address.
        ip: Ipv4Addr,
        /// The endpoint.
        rec: EndpointRecord,
        /// Reply.
        reply: Reply<()>,
    },
    /// Let go of address `ip` on `network`.
    ReleaseEndpoint {
        /// The network.
        network: String,
        /// The address.
        ip: Ipv4Addr,
        /// Reply.
        reply: Reply<()>,
    },
    /// Define service `name` and hold its VIP; the reply is the revision written at.
    ClaimService {
        /// The service.
        name: String,
        /// Its definition.
        rec: ServiceRecord,
        /// Reply.
        reply: Reply<i64>,
    },
    /// Remove service `name`, its VIP and its backends.
    ReleaseService {
        /// The service.
        name: String,
        /// Its network.
        network: String,
        /// Its VIP.
        vip: Ipv4Addr,
        /// Reply.
        reply: Reply<()>,
    },
    /// Add (or reweigh) a backend of service `service`.
    PutBackend {
        /// The service.
        service: String,
        /// The backend.
        addr: SocketAddr,
        /// Its record.
        rec: BackendRecord,
        /// Reply.
        reply: Reply<()>,
    },
    /// Remove a backend of service `service`.
    DeleteBackend {
        /// The service.
        service: String,
        /// The backend.
        addr: SocketAddr,
        /// Reply.
        reply: Reply<()>,
    },
    /// What this host owns changed (its VTEP may have): re-register if needed.
    OwnedChanged,
}

impl Command {
    /// Answers the command with `e` without doing it.
    fn refuse(self, e: ClusterError) {
        match self {
            Command::ClaimNetwork { reply, .. } | Command::ClaimService { reply, .. } => {
                let _ = reply.try_send(Err(e));
            }
            Command::ReleaseNetwork { reply, .. }
            | Command::ClaimEndpoint { reply, .. }
            | Command::ReleaseEndpoint { reply, .. }
            | Command::ReleaseService { reply, .. }
            | Command::PutBackend { reply, .. }
            | Command::DeleteBackend { reply, .. } => {
                let _ = reply.try_send(Err(e));
            }
            Command::OwnedChanged => {}
        }
    }
}

/// The control thread's side of the cluster.
#[derive(Debug, Clone)]
pub struct Handle {
    /// The options xvsd started with.
    pub opts: ClusterOptions,
    tx: mpsc::UnboundedSender<Command>,
    status: Arc<Mutex<Status>>,
    owned: Arc<Mutex<Owned>>,
}

impl Handle {
    /// A handle and the receiving end of its commands, for the session.
    pub fn new(opts: ClusterOptions) -> (Handle, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Handle {
                opts,
                tx,
                status: Arc::new(Mutex::new(Status::new())),
                owned: Arc::new(Mutex::new(Owned::default())),
            },
            rx,
        )
    }

    /// This host's id.
    pub fn me(&self) -> &str {
        &self.opts.host_id
    }

    /// The session's state.
    pub fn status(&self) -> Status {
        self.status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub(crate) fn status_cell(&self) -> &Arc<Mutex<Status>> {
        &self.status
    }

    pub(crate) fn owned_cell(&self) -> &Arc<Mutex<Owned>> {
        &self.owned
    }

    /// Records what this host owns (after every change of the configuration).
    pub fn publish_owned(&self, owned: Owned) {
        let changed = match self.owned.lock() {
            Ok(mut o) if *o != owned => {
                *o = owned;
                true
            }
            _ => false,
        };
        if changed {
            let _ = self.tx.send(Command::OwnedChanged);
        }
    }

    /// Refuses at once when the session is not watching.
    pub fn require_synced(&self) -> Result<(), ClusterError> {
        let s = self.status();
        match s.state {
            SyncState::Synced => Ok(()),
            SyncState::Syncing => Err(ClusterError::Unavailable(format!(
                "resynchronising with etcd at {}",
                self.opts.endpoints.join(",")
            ))),
            SyncState::Disconnected => Err(ClusterError::Unavailable(format!(
                "etcd at {} unreachable for {}s: {}",
                self.opts.endpoints.join(","),
                s.since.elapsed().as_secs(),
                s.error.as_deref().unwrap_or("no answer")
            ))),
        }
    }

    fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ClusterError> {
        self.require_synced()?;
        let (reply, rx) = std::sync::mpsc::sync_channel(1);
        self.tx
            .send(make(reply))
            .map_err(|_| ClusterError::Unavailable("the cluster task has stopped".into()))?;
        match rx.recv_timeout(CALL_TIMEOUT) {
            Ok(r) => r,
            Err(_) => Err(ClusterError::Timeout(CALL_TIMEOUT)),
        }
    }

    /// Defines overlay `name`; returns the revision it was written at.
    pub fn claim_network(&self, name: &str, rec: NetworkRecord) -> Result<i64, ClusterError> {
        self.call(|reply| Command::ClaimNetwork {
            name: name.to_string(),
            rec,
            reply,
        })
    }

    /// Removes overlay `name` from the cluster.
    pub fn release_network(&self, name: &str, vni: u32) -> Result<(), ClusterError> {
        self.call(|reply| Command::ReleaseNetwork {
            name: name.to_string(),
            vni,
            reply,
        })
    }

    /// Holds `ip` on `network` for a local endpoint.
    pub fn claim_endpoint(
        &self,
        network: &str,
        ip: Ipv4Addr,
        rec: EndpointRecord,
    ) -> Result<(), ClusterError> {
        self.call(|reply| Command::ClaimEndpoint {
            network: network.to_string(),
            ip,
            rec,
            reply,
        })
    }

    /// Defines service `name` (and holds its VIP); returns the revision.
    pub fn claim_service(&self, name: &str, rec: ServiceRecord) -> Result<i64, ClusterError> {
        self.call(|reply| Command::ClaimService {
            name: name.to_string(),
            rec,
            reply,
        })
    }

    /// Removes service `name`, its VIP and backends from the cluster.
    pub fn release_service(
        &self,
        name: &str,
        network: &str,
        vip: Ipv4Addr,
    ) -> Result<(), ClusterError> {
        self.call(|reply| Command::ReleaseService {
            name: name.to_string(),
            network: network.to_string(),
            vip,
            reply,
        })
    }

    /// Adds or reweighs a backend of `service`.
    pub fn put_backend(
        &self,
        service: &str,
        addr: SocketAddr,
        weight: u32,
    ) -> Result<(), ClusterError> {
        let rec = BackendRecord {
            weight,
            added_by: self.me().to_string(),
        };
        self.call(|reply| Command::PutBackend {
            service: service.to_string(),
            addr,
            rec,
            reply,
        })
    }

    /// Removes a backend of `service`.
    pub fn delete_backend(&self, service: &str, addr: SocketAddr) -> Result<(), ClusterError> {
        self.call(|reply| Command::DeleteBackend {
            service: service.to_string(),
            addr,
            reply,
        })
    }

    /// Lets go of `ip` on `network`.
    pub fn release_endpoint(&self, network: &str, ip: Ipv4Addr) -> Result<(), ClusterError> {
        self.call(|reply| Command::ReleaseEndpoint {
            network: network.to_string(),
            ip,
            reply,
        })
    }
}

/// The control thread's copy of the directory and the handle to change it.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The handle.
    pub handle: Handle,
    /// The directory as last applied.
    pub dir: Arc<Directory>,
}

#[cfg(test)]
#[path = "../tests/cluster_options.rs"]
mod tests;
