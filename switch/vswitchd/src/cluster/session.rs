//! The etcd side of the cluster, on the control runtime (tokio): one session at a time.
//!
//! A session connects, keeps (or grants) this host's lease, registers the host, reads the
//! directory, reconciles it with what this host owns ([`directory::plan`]), reads it again,
//! and watches from that revision, applying each event in order and handing every new
//! snapshot to the applier (which alone takes the control thread's lock). Between watch
//! events it keeps the lease alive and runs the control thread's commands (each an etcd
//! transaction, so two hosts never hold one address or one VNI). When etcd goes away the
//! session ends; the host keeps forwarding with what it knows, refuses changes, and opens a
//! new session (a full read, then a watch from its revision) when etcd answers again.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions,
    LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
    WatchStream,
};
use tokio::sync::{mpsc, watch};

use super::directory::{self, Change, Directory, Owned};
use super::records::{HostRecord, Key};
use super::{ClusterError, Command, Handle, Reply, SyncState};

/// How long connecting (and each request) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest pause between attempts to reach etcd again.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why a session could not open or ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// etcd failed or refused a request.
    #[error("etcd at {endpoints}: {source}")]
    Etcd {
        /// The endpoints.
        endpoints: String,
        /// Why.
        source: etcd_client::Error,
    },
    /// etcd did not answer in time.
    #[error("etcd at {0} did not answer within {REQUEST_TIMEOUT:?}")]
    Timeout(String),
    /// Another live xvsd holds this host id.
    #[error(
        "host id {host} is already registered in the cluster by another xvsd (vtep {vtep}); give each host its own --host-id"
    )]
    HostIdTaken {
        /// The id.
        host: String,
        /// The other one's VTEP.
        vtep: String,
    },
    /// The lease expired (etcd was away longer than its TTL).
    #[error("the lease expired")]
    LeaseLost,
    /// The watch ended (etcd went away, or compacted past it).
    #[error("the watch ended: {0}")]
    WatchEnded(String),
}

/// What every session shares.
pub struct Ctx {
    handle: Handle,
    dir_tx: watch::Sender<Arc<Directory>>,
}

impl Ctx {
    /// A context for `handle`'s sessions, and the receiving end of directory snapshots.
    pub fn new(handle: Handle) -> (Ctx, watch::Receiver<Arc<Directory>>) {
        let (dir_tx, rx) = watch::channel(Arc::new(Directory::default()));
        (Ctx { handle, dir_tx }, rx)
    }

    fn endpoints(&self) -> String {
        self.handle.opts.endpoints.join(",")
    }

    fn prefix(&self) -> &str {
        &self.handle.opts.prefix
    }

    fn me(&self) -> &str {
        self.handle.me()
    }

    fn set_state(&self, state: SyncState, f: impl FnOnce(&mut super::Status)) {
        if let Ok(mut s) = self.handle.status_cell().lock() {
            s.set(state);
            f(&mut s);
        }
    }

    fn owned(&self) -> Owned {
        self.handle
            .owned_cell()
            .lock()
            .map(|o| o.clone())
            .unwrap_or_default()
    }
}

/// An open session.
pub struct Session {
    client: Client,
    lease: i64,
    keeper: LeaseKeeper,
    keepalive: LeaseKeepAliveStream,
    watch: WatchStream,
    dir: Directory,
    host: HostRecord,
}

/// Runs `f` against etcd with the request deadline.
async fn timed<T>(
    ctx: &Ctx,
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, SessionError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(SessionError::Etcd {
            endpoints: ctx.endpoints(),
            source,
        }),
        Err(_) => Err(SessionError::Timeout(ctx.endpoints())),
    }
}

/// Every key under the prefix, as changes, and the revision read at.
async fn read_all(ctx: &Ctx, client: &mut Client) -> Result<Directory, SessionError> {
    let resp = timed(
        ctx,
        client.get(ctx.prefix(), Some(GetOptions::new().with_prefix())),
    )
    .await?;
    let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
    let changes: Vec<Change> = resp
        .kvs()
        .iter()
        .map(|kv| Change::Put {
            key: kv.key().to_vec(),
            value: kv.value().to_vec(),
            lease: kv.lease(),
            revision: kv.mod_revision(),
        })
        .collect();
    Ok(Directory::read(ctx.prefix(), revision, &changes))
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// Registers this host under `lease`: refused if another xvsd (another token) holds the id.
async fn register(
    ctx: &Ctx,
    client: &mut Client,
    lease: i64,
    host: &HostRecord,
) -> Result<(), SessionError> {
    let key = Key::Host(ctx.me().to_string()).render(ctx.prefix());
    let put = TxnOp::put(
        key.clone(),
        json(host),
        Some(PutOptions::new().with_lease(lease)),
    );
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([put.clone()])
        .or_else([TxnOp::get(key.clone(), None)]);
    let resp = timed(ctx, client.txn(txn)).await?;
    if resp.succeeded() {
        return Ok(());
    }
    let theirs = resp.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g
            .kvs()
            .first()
            .and_then(|kv| serde_json::from_slice::<HostRecord>(kv.value()).ok()),
        _ => None,
    });
    match theirs {
        Some(t) if t.token != host.token => Err(SessionError::HostIdTaken {
            host: ctx.me().to_string(),
            vtep: t
                .vtep
                .map(|v| v.to_string())
                .unwrap_or_else(|| "none".into()),
        }),
        // Our own registration from before a restart (or an unreadable one): take it over.
        _ => {
            timed(
                ctx,
                client.put(key, json(host), Some(PutOptions::new().with_lease(lease))),
            )
            .await?;
            Ok(())
        }
    }
}

/// This host's registration record as `owned` describes it.
fn host_record(ctx: &Ctx, owned: &Owned) -> HostRecord {
    HostRecord {
        token: ctx.handle.opts.token.clone(),
        vtep: owned.vtep.map(|v| v.0),
        vtep_port: owned.vtep.map(|v| v.1).unwrap_or(xvs_vxlan::VXLAN_PORT),
        version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// Writes `plan` (what this host owns and the directory lacks), each key guarded so that a
/// concurrent writer wins rather than being overwritten.
async fn execute(
    ctx: &Ctx,
    client: &mut Client,
    lease: i64,
    dir: &Directory,
    plan: &directory::Plan,
) -> Result<Vec<String>, SessionError> {
    let mut conflicts = plan.conflicts.clone();
    for (name, rec) in &plan.networks {
        let nkey = Key::Network(name.clone()).render(ctx.prefix());
        let vkey = Key::Vni(rec.vni).render(ctx.prefix());
        let txn = Txn::new()
            .when([
                Compare::create_revision(nkey.clone(), CompareOp::Equal, 0),
                Compare::create_revision(vkey.clone(), CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::put(nkey, json(rec), None),
                TxnOp::put(vkey, json(name), None),
            ]);
        if !timed(ctx, client.txn(txn)).await?.succeeded() {
            conflicts.push(format!(
                "network {name}: another host defined it (or VNI {}) meanwhile",
                rec.vni
            ));
        }
    }
    for ((network, ip), rec) in &plan.endpoints {
        let key = Key::Endpoint {
            network: network.clone(),
            ip: *ip,
        }
        .render(ctx.prefix());
        // Absent when read: only if still absent. Ours when read (the plan checked): rewritten
        // under the current lease.
        let guard: Vec<Compare> = if dir.endpoints.contains_key(&(network.clone(), *ip)) {
            Vec::new()
        } else {
            vec![Compare::create_revision(key.clone(), CompareOp::Equal, 0)]
        };
        let txn = Txn::new().when(guard).and_then([TxnOp::put(
            key,
            json(rec),
            Some(PutOptions::new().with_lease(lease)),
        )]);
        if !timed(ctx, client.txn(txn)).await?.succeeded() {
            conflicts.push(format!(
                "address {ip} on {network}: another host took it meanwhile"
            ));
        }
    }
    for (name, svc) in &plan.services {
        let mut ops = vec![
            TxnOp::put(
                Key::Service(name.clone()).render(ctx.prefix()),
                json(&svc.rec),
                None,
            ),
            TxnOp::put(
                Key::Vip {
                    network: svc.rec.conf.network.clone(),
                    ip: svc.rec.conf.vip(),
                }
                .render(ctx.prefix()),
                json(name),
                None,
            ),
        ];
        for (addr, weight) in &svc.backends {
            let rec = super::records::BackendRecord {
                weight: *weight,
                added_by: ctx.me().to_string(),
            };
            ops.push(TxnOp::put(
                Key::Backend {
                    service: name.clone(),
                    addr: *addr,
                }
                .render(ctx.prefix()),
                json(&rec),
                None,
            ));
        }
        let txn = Txn::new()
            .when([Compare::create_revision(
                Key::Service(name.clone()).render(ctx.prefix()),
                CompareOp::Equal,
                0,
            )])
            .and_then(ops);
        if !timed(ctx, client.txn(txn)).await?.succeeded() {
            conflicts.push(format!("service {name}: another host defined it meanwhile"));
        }
    }
    for key in &plan.stale {
        timed(ctx, client.delete(key.render(ctx.prefix()), None)).await?;
    }
    Ok(conflicts)
}

impl Session {
    /// Opens a session: connect, lease (`old` kept if it is still alive), register,
    /// reconcile, read, watch.
    pub async fn open(ctx: &Ctx, old: i64) -> Result<Session, SessionError> {
        ctx.set_state(SyncState::Syncing, |_| {});
        let opts = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        let mut client = timed(
            ctx,
            Client::connect(ctx.handle.opts.endpoints.clone(), Some(opts)),
        )
        .await?;
        timed(ctx, client.status()).await?;
        let ttl = i64::from(ctx.handle.opts.lease_ttl);
        let mut lease = 0;
        if old != 0 {
            let alive = timed(ctx, client.lease_time_to_live(old, None)).await?;
            if alive.ttl() > 0 {
                lease = old;
            }
        }
        if lease == 0 {
            lease = timed(ctx, client.lease_grant(ttl, None)).await?.id();
        }
        let (mut keeper, keepalive) = timed(ctx, client.lease_keep_alive(lease)).await?;
        timed(ctx, keeper.keep_alive()).await?;
        let owned = ctx.owned();
        let host = host_record(ctx, &owned);
        register(ctx, &mut client, lease, &host).await?;
        let first = read_all(ctx, &mut client).await?;
        let plan = directory::plan(&first, &owned, ctx.me());
        let conflicts = execute(ctx, &mut client, lease, &first, &plan).await?;
        for c in &conflicts {
            tracing::warn!("cluster: {c}");
        }
        let dir = read_all(ctx, &mut client).await?;
        let watch = timed(
            ctx,
            client.watch(
                ctx.prefix(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(dir.revision + 1),
                ),
            ),
        )
        .await?;
        ctx.dir_tx.send_replace(Arc::new(dir.clone()));
        ctx.set_state(SyncState::Synced, |s| {
            s.lease_id = lease;
            s.revision = dir.revision;
            s.sessions += 1;
            s.conflicts = conflicts;
        });
        tracing::info!(
            "cluster: host {} synced with etcd at {} (revision {}, {} hosts, {} endpoints)",
            ctx.me(),
            ctx.endpoints(),
            dir.revision,
            dir.hosts.len(),
            dir.endpoints.len()
        );
        Ok(Session {
            client,
            lease,
            keeper,
            keepalive,
            watch,
            dir,
            host,
        })
    }

    /// Watches, keeps the lease and runs commands until etcd goes away.
    async fn serve(
        &mut self,
        ctx: &Ctx,
        cmds: &mut mpsc::UnboundedReceiver<Command>,
    ) -> SessionError {
        let period = Duration::from_secs(u64::from(ctx.handle.opts.lease_ttl).div_ceil(3).max(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = timed(ctx, self.keeper.keep_alive()).await {
                        return e;
                    }
                }
                msg = self.keepalive.message() => match msg {
                    Ok(Some(r)) if r.ttl() > 0 => {}
                    Ok(Some(_)) => return SessionError::LeaseLost,
                    Ok(None) => return SessionError::WatchEnded("the lease stream closed".into()),
                    Err(source) => return SessionError::Etcd { endpoints: ctx.endpoints(), source },
                },
                msg = self.watch.message() => {
                    let resp = match msg {
                        Ok(Some(r)) => r,
                        Ok(None) => return SessionError::WatchEnded("the stream closed".into()),
                        Err(source) => return SessionError::Etcd { endpoints: ctx.endpoints(), source },
                    };
                    if resp.canceled() {
                        return SessionError::WatchEnded(format!(
                            "canceled ({}; compacted at {})",
                            resp.cancel_reason(),
                            resp.compact_revision()
                        ));
                    }
                    if resp.events().is_empty() {
                        continue;
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let change = match ev.event_type() {
                            EventType::Put => Change::Put {
                                key: kv.key().to_vec(),
                                value: kv.value().to_vec(),
                                lease: kv.lease(),
                                revision: kv.mod_revision(),
                            },
                            EventType::Delete => Change::Delete { key: kv.key().to_vec() },
                        };
                        self.dir.apply(ctx.prefix(), &change);
                    }
                    let n = resp.events().len() as u64;
                    if let Some(h) = resp.header() {
                        self.dir.revision = self.dir.revision.max(h.revision());
                    }
                    let rev = self.dir.revision;
                    ctx.set_state(SyncState::Synced, |s| {
                        s.revision = rev;
                        s.events += n;
                    });
                    ctx.dir_tx.send_replace(Arc::new(self.dir.clone()));
                }
                cmd = cmds.recv() => {
                    let Some(cmd) = cmd else {
                        return SessionError::WatchEnded("xvsd is stopping".into());
                    };
                    if let Err(e) = self.run(ctx, cmd).await {
                        return e;
                    }
                }
            }
        }
    }

    /// Runs one command; an error of etcd's own ends the session.
    async fn run(&mut self, ctx: &Ctx, cmd: Command) -> Result<(), SessionError> {
        let prefix = ctx.prefix().to_string();
        match cmd {
            Command::OwnedChanged => {
                let host = host_record(ctx, &ctx.owned());
                if host != self.host {
                    register(ctx, &mut self.client, self.lease, &host).await?;
                    self.host = host;
                }
            }
            Command::ClaimNetwork { name, rec, reply } => {
                let nkey = Key::Network(name.clone()).render(&prefix);
                let vkey = Key::Vni(rec.vni).render(&prefix);
                let txn = Txn::new()
                    .when([
                        Compare::create_revision(nkey.clone(), CompareOp::Equal, 0),
                        Compare::create_revision(vkey.clone(), CompareOp::Equal, 0),
                    ])
                    .and_then([
                        TxnOp::put(nkey.clone(), json(&rec), None),
                        TxnOp::put(vkey.clone(), json(&name), None),
                    ])
                    .or_else([TxnOp::get(nkey, None), TxnOp::get(vkey, None)]);
                let resp = match timed(ctx, self.client.txn(txn)).await {
                    Ok(r) => r,
                    Err(e) => {
                        refuse(&reply, &e);
                        return Err(e);
                    }
                };
                let result = if resp.succeeded() {
                    Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
                } else {
                    let gets: Vec<Option<Vec<u8>>> = resp
                        .op_responses()
                        .into_iter()
                        .map(|r| match r {
                            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
                            _ => None,
                        })
                        .collect();
                    match (
                        gets.first().cloned().flatten(),
                        gets.get(1).cloned().flatten(),
                    ) {
                        (Some(n), _) => Err(ClusterError::NetworkTaken {
                            name: name.clone(),
                            host: serde_json::from_slice::<super::records::NetworkRecord>(&n)
                                .map(|r| r.created_by)
                                .unwrap_or_else(|_| "?".into()),
                        }),
                        (None, Some(v)) => Err(ClusterError::VniTaken {
                            vni: rec.vni,
                            other: serde_json::from_slice::<String>(&v).unwrap_or_default(),
                        }),
                        (None, None) => Err(ClusterError::Etcd("the transaction failed".into())),
                    }
                };
                let _ = reply.try_send(result);
            }
            Command::ReleaseNetwork { name, vni, reply } => {
                let nkey = Key::Network(name.clone()).render(&prefix);
                let vkey = Key::Vni(vni).render(&prefix);
                let txn = Txn::new().and_then([
                    TxnOp::delete(nkey, None),
                    TxnOp::delete(vkey, None),
                    TxnOp::delete(
                        Key::endpoints_of(&prefix, &name),
                        Some(DeleteOptions::new().with_prefix()),
                    ),
                ]);
                let r = timed(ctx, self.client.txn(txn)).await;
                answer(&reply, r)?;
            }
            Command::ClaimEndpoint {
                network,
                ip,
                rec,
                reply,
            } => {
                let key = Key::Endpoint {
                    network: network.clone(),
                    ip,
                }
                .render(&prefix);
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key.clone(),
                        json(&rec),
                        Some(PutOptions::new().with_lease(self.lease)),
                    )])
                    .or_else([TxnOp::get(key, None)]);
                let resp = match timed(ctx, self.client.txn(txn)).await {
                    Ok(r) => r,
                    Err(e) => {
                        refuse(&reply, &e);
                        return Err(e);
                    }
                };
                let result = if resp.succeeded() {
                    Ok(())
                } else {
                    let host = resp
                        .op_responses()
                        .into_iter()
                        .find_map(|r| match r {
                            TxnOpResponse::Get(g) => g.kvs().first().and_then(|kv| {
                                serde_json::from_slice::<super::records::EndpointRecord>(kv.value())
                                    .ok()
                            }),
                            _ => None,
                        })
                        .map(|e| e.host)
                        .unwrap_or_else(|| "?".into());
                    Err(ClusterError::AddressTaken { network, ip, host })
                };
                let _ = reply.try_send(result);
            }
            Command::ClaimService { name, rec, reply } => {
                let skey = Key::Service(name.clone()).render(&prefix);
                let network = rec.conf.network.clone();
                let vip = rec.conf.vip();
                let vkey = Key::Vip {
                    network: network.clone(),
                    ip: vip,
                }
                .render(&prefix);
                let ekey = Key::Endpoint {
                    network: network.clone(),
                    ip: vip,
                }
                .render(&prefix);
                let txn = Txn::new()
                    .when([
                        Compare::create_revision(skey.clone(), CompareOp::Equal, 0),
                        Compare::create_revision(vkey.clone(), CompareOp::Equal, 0),
                        Compare::create_revision(ekey, CompareOp::Equal, 0),
                    ])
                    .and_then([
                        TxnOp::put(skey.clone(), json(&rec), None),
                        TxnOp::put(vkey, json(&name), None),
                    ])
                    .or_else([TxnOp::get(skey, None)]);
                let resp = match timed(ctx, self.client.txn(txn)).await {
                    Ok(r) => r,
                    Err(e) => {
                        refuse(&reply, &e);
                        return Err(e);
                    }
                };
                let result = if resp.succeeded() {
                    Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
                } else {
                    let theirs = resp.op_responses().into_iter().find_map(|r| match r {
                        TxnOpResponse::Get(g) => g.kvs().first().and_then(|kv| {
                            serde_json::from_slice::<super::records::ServiceRecord>(kv.value()).ok()
                        }),
                        _ => None,
                    });
                    match theirs {
                        Some(t) => Err(ClusterError::ServiceTaken {
                            name,
                            host: t.created_by,
                        }),
                        None => Err(ClusterError::AddressTaken {
                            network,
                            ip: vip,
                            host: "another (as an endpoint or a VIP)".into(),
                        }),
                    }
                };
                let _ = reply.try_send(result);
            }
            Command::ReleaseService {
                name,
                network,
                vip,
                reply,
            } => {
                let txn = Txn::new().and_then([
                    TxnOp::delete(Key::Service(name.clone()).render(&prefix), None),
                    TxnOp::delete(Key::Vip { network, ip: vip }.render(&prefix), None),
                    TxnOp::delete(
                        Key::backends_of(&prefix, &name),
                        Some(DeleteOptions::new().with_prefix()),
                    ),
                ]);
                let r = timed(ctx, self.client.txn(txn)).await;
                answer(&reply, r)?;
            }
            Command::PutBackend {
                service,
                addr,
                rec,
                reply,
            } => {
                let key = Key::Backend { service, addr }.render(&prefix);
                let r = timed(ctx, self.client.put(key, json(&rec), None)).await;
                answer(&reply, r)?;
            }
            Command::DeleteBackend {
                service,
                addr,
                reply,
            } => {
                let key = Key::Backend { service, addr }.render(&prefix);
                let r = timed(ctx, self.client.delete(key, None)).await;
                answer(&reply, r)?;
            }
            Command::ReleaseEndpoint { network, ip, reply } => {
                let key = Key::Endpoint { network, ip }.render(&prefix);
                // Only this host's own entry (its lease), never another's.
                let txn = Txn::new()
                    .when([Compare::lease(key.clone(), CompareOp::Equal, self.lease)])
                    .and_then([TxnOp::delete(key, None)]);
                let r = timed(ctx, self.client.txn(txn)).await;
                answer(&reply, r)?;
            }
        }
        Ok(())
    }
}

/// Tells the control thread that its command's etcd request failed.
fn refuse<T>(reply: &Reply<T>, e: &SessionError) {
    let _ = reply.try_send(Err(ClusterError::Etcd(e.to_string())));
}

/// Answers a command whose only outcome is its etcd request's `r`; an etcd failure also ends
/// the session (returned).
fn answer<T>(reply: &Reply<()>, r: Result<T, SessionError>) -> Result<(), SessionError> {
    match r {
        Ok(_) => {
            let _ = reply.try_send(Ok(()));
            Ok(())
        }
        Err(e) => {
            refuse(reply, &e);
            Err(e)
        }
    }
}

/// Up to half of `d`, from the clock's low bits (no need for a random generator here).
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

/// Runs sessions for as long as xvsd does: `first` (opened at start), then a new one each
/// time etcd comes back. Commands that arrive between sessions are refused at once.
pub async fn run(ctx: Ctx, first: Session, mut cmds: mpsc::UnboundedReceiver<Command>) {
    let mut session = Some(first);
    let mut lease = 0;
    let mut backoff = Duration::from_millis(100);
    loop {
        if let Some(mut s) = session.take() {
            let why = s.serve(&ctx, &mut cmds).await;
            lease = s.lease;
            tracing::warn!(
                "cluster: session with etcd ended: {why}; forwarding goes on with what is known"
            );
            ctx.set_state(SyncState::Disconnected, |st| {
                st.error = Some(why.to_string())
            });
            backoff = Duration::from_millis(100);
        }
        let attempt = Session::open(&ctx, lease);
        tokio::pin!(attempt);
        let opened = loop {
            tokio::select! {
                r = &mut attempt => break r,
                cmd = cmds.recv() => match cmd {
                    Some(c) => c.refuse(ClusterError::Unavailable(format!("resynchronising with etcd at {}", ctx.endpoints()))),
                    None => return,
                },
            }
        };
        match opened {
            Ok(s) => session = Some(s),
            Err(e) => {
                ctx.set_state(SyncState::Disconnected, |st| st.error = Some(e.to_string()));
                // Jittered, so that hosts cut off together do not all come back at once.
                let pause = tokio::time::sleep(backoff + jitter(backoff));
                tokio::pin!(pause);
                loop {
                    tokio::select! {
                        _ = &mut pause => break,
                        cmd = cmds.recv() => match cmd {
                            Some(c) => c.refuse(ClusterError::Unavailable(e.to_string())),
                            None => return,
                        },
                    }
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
