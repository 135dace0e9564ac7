//! The control thread's side of the cluster (`xvsd --cluster`): what an overlay network's
//! requests ask of etcd before they change anything here (an address claimed, a network and
//! its VNI defined), and how a new snapshot of the directory is applied (networks other
//! hosts defined or removed, remote endpoints as static VTEP entries, peers and DNS names).
//!
//! Runs on the control thread, behind the daemon's lock; only [`apply_directories`] runs on
//! the control runtime, and it takes the lock only on a blocking thread.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use xvs_ctl::protocol::{ClusterHostView, ClusterView, RemoteEndpointView};

use super::Switch;
use crate::cluster::directory::{Directory, Owned};
use crate::cluster::records::{EndpointRecord, NetworkRecord, ServiceRecord};
use crate::cluster::{Cluster, ClusterError};
use crate::config::{NetworkConf, State};
use crate::error::Error;
use crate::network::{self, ConnectArgs, CreateArgs, FIRST_VNI, NetworkError, OVERLAY_DRIVER};
use crate::service::{self, BackendConf, ServiceConf};

/// Addresses tried when another host takes the chosen one at the same moment.
const CLAIM_ATTEMPTS: usize = 8;

/// Applies every directory snapshot the cluster task hands over, newest first (a snapshot
/// that is overtaken before it is applied is skipped: each is complete).
pub async fn apply_directories(
    mut rx: tokio::sync::watch::Receiver<Arc<Directory>>,
    shared: crate::server::Shared,
) {
    loop {
        let dir = rx.borrow_and_update().clone();
        let sw = shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Ok(mut s) = sw.lock() {
                s.cluster_update(dir);
            }
        })
        .await;
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// The remote endpoints of `network` as (address → names), to tell DNS what changed.
fn remote_names(dir: &Directory, me: &str, network: &str) -> BTreeMap<Ipv4Addr, Vec<String>> {
    dir.remotes(me, network)
        .into_iter()
        .map(|r| (r.ip, r.names))
        .collect()
}

impl Switch {
    /// The cluster, if this host is in one and `network` is an overlay (shared through it).
    pub(super) fn shared_overlay(&self, network: &str) -> Option<&Cluster> {
        let c = self.cluster.as_ref()?;
        self.state
            .networks
            .get(network)
            .filter(|n| n.is_overlay())
            .map(|_| c)
    }

    /// The configuration as the datapath runs it: each overlay with the cluster's remote
    /// endpoints and peers merged in.
    pub(super) fn effective_state(&self) -> Cow<'_, State> {
        let Some(c) = &self.cluster else {
            return Cow::Borrowed(&self.state);
        };
        let mut s = self.state.clone();
        for (name, conf) in s.networks.iter_mut() {
            *conf = c.dir.merged(c.handle.me(), name, conf);
        }
        Cow::Owned(s)
    }

    /// Tells the cluster task what this host now owns.
    pub(super) fn publish_owned(&self) {
        if let Some(c) = &self.cluster {
            c.handle
                .publish_owned(Owned::of(&self.state, c.handle.me()));
        }
    }

    /// Applies a new snapshot of the directory.
    pub fn cluster_update(&mut self, dir: Arc<Directory>) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let me = c.handle.me().to_string();
        let old = std::mem::replace(&mut c.dir, dir.clone());
        let mut save = false;
        for (name, (rec, rev)) in &dir.networks {
            let known = old.networks.contains_key(name);
            match self.state.networks.get_mut(name) {
                Some(conf) => {
                    let same = NetworkRecord::of(conf, &me).is_some_and(|m| m.same_network(rec));
                    if same && conf.cluster_revision != Some(*rev) {
                        conf.cluster_revision = Some(*rev);
                        save = true;
                    } else if !same && !known {
                        tracing::warn!(
                            "cluster: network {name} of host {} ({} vni {}) clashes with this host's own network {name}; not shared here",
                            rec.created_by,
                            rec.subnet,
                            rec.vni
                        );
                    }
                }
                None => {
                    let args = CreateArgs {
                        driver: Some(OVERLAY_DRIVER.into()),
                        subnet: Some(rec.subnet.to_string()),
                        gateway: Some(rec.gateway.to_string()),
                        internal: rec.internal,
                        icc: Some(rec.icc),
                        mtu: Some(rec.mtu),
                        vni: Some(rec.vni),
                        uplink_mtu: None,
                        docker_id: None,
                    };
                    match self
                        .networks
                        .create(&mut self.dp, &self.state.networks, name, args)
                    {
                        Ok(mut conf) => {
                            conf.cluster_revision = Some(*rev);
                            tracing::info!(
                                "cluster: network {name} ({} vni {}) of host {} created here",
                                rec.subnet,
                                rec.vni,
                                rec.created_by
                            );
                            self.state.networks.insert(name.clone(), conf);
                            save = true;
                        }
                        Err(e) if !known => tracing::warn!(
                            "cluster: network {name} of host {} not created here: {e}",
                            rec.created_by
                        ),
                        Err(_) => {}
                    }
                }
            }
        }
        // Removed by another host: the directory has passed the revision this host saw it
        // at and no longer holds it. Kept while this host still uses it.
        let gone: Vec<String> = self
            .state
            .networks
            .iter()
            .filter(|(n, conf)| {
                conf.is_overlay()
                    && conf.cluster_revision.is_some_and(|r| r <= dir.revision)
                    && !dir.networks.contains_key(*n)
                    && conf.endpoints.is_empty()
                    && !self.state.services.values().any(|s| &s.network == *n)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for n in gone {
            tracing::info!("cluster: network {n} was removed from the cluster; removing it here");
            self.networks.stop(&mut self.dp, &n);
            self.state.networks.remove(&n);
            save = true;
        }
        save |= self.cluster_update_services(&dir);
        // The remote endpoints' names.
        if let Ok(mut t) = self.networks.names().write() {
            let overlays: Vec<&String> = self
                .state
                .networks
                .iter()
                .filter(|(_, c)| c.is_overlay())
                .map(|(n, _)| n)
                .collect();
            for n in overlays {
                let before = remote_names(&old, &me, n);
                let after = remote_names(&dir, &me, n);
                for (ip, names) in &before {
                    if after.get(ip) != Some(names) {
                        t.remove_addr(n, *ip);
                    }
                }
                for (ip, names) in &after {
                    if before.get(ip) != Some(names) {
                        for name in names {
                            t.add(n, name, *ip);
                        }
                        if let Some(first) = names.first() {
                            t.add_reverse(n, *ip, first);
                        }
                    }
                }
            }
        }
        if save && let Err(e) = self.store.save(&self.state) {
            tracing::error!("cluster: cannot save the networks the cluster changed: {e}");
        }
        self.refresh_routes();
    }

    /// Makes this host's services match the directory's: services other hosts defined are
    /// made here, backends follow their keys (counted while an endpoint holds their address),
    /// services removed elsewhere go. Returns whether the configuration changed.
    fn cluster_update_services(&mut self, dir: &Directory) -> bool {
        let mut save = false;
        let now = self.dp.now_ms();
        for (name, (rec, rev)) in &dir.services {
            let network = rec.conf.network.clone();
            let Some(net) = self.state.networks.get(&network).filter(|n| n.is_overlay()) else {
                continue;
            };
            let local: Vec<Ipv4Addr> = net.endpoints.iter().map(|e| e.ip).collect();
            let want = dir.live_backends(name, &network, &local);
            let Some(current) = self.state.services.get(name).cloned() else {
                let mut conf = ServiceConf {
                    cluster_revision: Some(*rev),
                    vip_allocated: true,
                    backends: want
                        .iter()
                        .map(|(addr, weight)| BackendConf {
                            addr: *addr,
                            weight: *weight,
                        })
                        .collect(),
                    ..rec.conf.clone()
                };
                let vip = conf.vip();
                let taken = self
                    .state
                    .networks
                    .get_mut(&network)
                    .map(|n| n.pool.allocate(Some(vip)));
                if let Some(Err(e)) = taken {
                    tracing::warn!(
                        "cluster: service {name} of host {} not made here: its VIP {vip}: {e}",
                        rec.created_by
                    );
                    conf.vip_allocated = false;
                    continue;
                }
                tracing::info!(
                    "cluster: service {name} ({vip}) of host {} made here with {} backends",
                    rec.created_by,
                    conf.backends.len()
                );
                self.services.rebuild(name, &conf);
                self.push_service(name, &conf);
                self.state.services.insert(name.clone(), conf);
                save = true;
                continue;
            };
            if current.spec != rec.conf.spec {
                continue;
            }
            let mut conf = current.clone();
            if conf.cluster_revision != Some(*rev) {
                conf.cluster_revision = Some(*rev);
                save = true;
            }
            let have: BTreeMap<SocketAddr, u32> =
                conf.backends.iter().map(|b| (b.addr, b.weight)).collect();
            if have != want {
                let eff = self
                    .effective_state()
                    .networks
                    .get(&network)
                    .cloned()
                    .unwrap_or_else(|| net.clone());
                for addr in have.keys().filter(|a| !want.contains_key(a)) {
                    let alive = match addr.ip() {
                        std::net::IpAddr::V4(ip) => {
                            local.contains(&ip) || dir.holder(&network, ip).is_some()
                        }
                        std::net::IpAddr::V6(_) => false,
                    };
                    // Taken out by a user: its connections drain. Its endpoint gone: reset.
                    match self
                        .services
                        .remove_backend(name, &conf, &addr.to_string(), alive, now)
                    {
                        Ok(next) => conf = next,
                        Err(e) => tracing::warn!("cluster: service {name}: {addr}: {e}"),
                    }
                }
                for (addr, weight) in &want {
                    let r = match have.get(addr) {
                        None => self.services.add_backend(
                            name,
                            &conf,
                            &eff,
                            &addr.to_string(),
                            Some(*weight),
                        ),
                        Some(w) if w != weight => {
                            self.services
                                .set_weight(name, &conf, &addr.to_string(), *weight)
                        }
                        Some(_) => continue,
                    };
                    match r {
                        Ok(next) => conf = next,
                        Err(e) => tracing::warn!("cluster: service {name}: {addr}: {e}"),
                    }
                }
                self.push_service(name, &conf);
                save = true;
            }
            self.state.services.insert(name.clone(), conf);
        }
        let gone: Vec<String> = self
            .state
            .services
            .iter()
            .filter(|(n, c)| {
                c.cluster_revision.is_some_and(|r| r <= dir.revision)
                    && !dir.services.contains_key(*n)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            tracing::info!(
                "cluster: service {name} was removed from the cluster; removing it here"
            );
            if let Some(conf) = self.state.services.remove(&name) {
                if conf.vip_allocated
                    && let Some(n) = self.state.networks.get_mut(&conf.network)
                {
                    n.pool.release(conf.vip());
                }
                if let Ok(mut names) = self.networks.names().write() {
                    service::Services::unpush(&self.dp, &mut names, &name, &conf);
                }
                self.services.remove(&name);
                save = true;
            }
        }
        save
    }

    /// Before a `service create` on an overlay in a cluster: the cluster must be reachable
    /// and the name free in it; a VIP no host holds is chosen (returns true) unless given,
    /// and a given one must be free cluster-wide.
    pub(super) fn cluster_before_service(
        &self,
        name: &str,
        args: &mut service::CreateArgs,
    ) -> Result<bool, Error> {
        let Some(c) = self.shared_overlay(&args.network) else {
            return Ok(false);
        };
        if self.state.services.contains_key(name) {
            return Ok(false);
        }
        c.handle.require_synced()?;
        let me = c.handle.me();
        if let Some((rec, _)) = c.dir.services.get(name) {
            return Err(ClusterError::ServiceTaken {
                name: name.to_string(),
                host: rec.created_by.clone(),
            }
            .into());
        }
        let Some(net) = self.state.networks.get(&args.network) else {
            return Ok(false);
        };
        match &args.vip {
            Some(v) => {
                if let Ok(ip) = v.parse::<Ipv4Addr>() {
                    let holder = c
                        .dir
                        .holder(&args.network, ip)
                        .filter(|h| *h != me)
                        .map(|h| format!("host {h}"))
                        .or_else(|| {
                            c.dir
                                .vip_holder(&args.network, ip)
                                .map(|s| format!("service {s}"))
                        });
                    if let Some(host) = holder {
                        return Err(ClusterError::AddressTaken {
                            network: args.network.clone(),
                            ip,
                            host,
                        }
                        .into());
                    }
                }
                Ok(false)
            }
            None => {
                let mut pool = net.pool.clone();
                pool.used.extend(c.dir.taken(me, &args.network));
                let ip = pool.allocate(None).map_err(service::ServiceFault::Vip)?;
                args.vip = Some(ip.to_string());
                Ok(true)
            }
        }
    }

    /// After a service is made here on a shared overlay: defines it in the cluster.
    pub(super) fn cluster_define_service(
        &self,
        name: &str,
        conf: &ServiceConf,
    ) -> Result<Option<i64>, Error> {
        let Some(c) = self.shared_overlay(&conf.network) else {
            return Ok(None);
        };
        let rec = ServiceRecord::of(conf, c.handle.me());
        Ok(Some(c.handle.claim_service(name, rec)?))
    }

    /// Before a `service rm` of a shared service: removes it from the cluster.
    pub(super) fn cluster_release_service(
        &self,
        name: &str,
        conf: &ServiceConf,
    ) -> Result<(), Error> {
        let (Some(c), Some(_)) = (self.shared_overlay(&conf.network), conf.cluster_revision) else {
            return Ok(());
        };
        c.handle.release_service(name, &conf.network, conf.vip())?;
        Ok(())
    }

    /// A shared service's backends changed from `old` to `next` here: tells the cluster. If
    /// it cannot, the running service is made again from `old` and the change refused.
    pub(super) fn cluster_backends(
        &mut self,
        name: &str,
        old: &ServiceConf,
        next: &ServiceConf,
    ) -> Result<(), Error> {
        let (Some(c), Some(_)) = (self.shared_overlay(&old.network), old.cluster_revision) else {
            return Ok(());
        };
        let before: BTreeMap<SocketAddr, u32> =
            old.backends.iter().map(|b| (b.addr, b.weight)).collect();
        let after: BTreeMap<SocketAddr, u32> =
            next.backends.iter().map(|b| (b.addr, b.weight)).collect();
        let mut result = Ok(());
        for addr in before.keys().filter(|a| !after.contains_key(a)) {
            result = result.and_then(|_| c.handle.delete_backend(name, *addr));
        }
        for (addr, w) in &after {
            if before.get(addr) != Some(w) {
                result = result.and_then(|_| c.handle.put_backend(name, *addr, *w));
            }
        }
        if let Err(e) = result {
            self.services.rebuild(name, old);
            self.push_service(name, old);
            return Err(e.into());
        }
        Ok(())
    }

    /// `cluster show`.
    pub(super) fn cluster_view(&self) -> Result<ClusterView, Error> {
        let c = self.cluster.as_ref().ok_or(Error::NotClustered)?;
        let st = c.handle.status();
        let me = c.handle.me();
        let opts = &c.handle.opts;
        Ok(ClusterView {
            host_id: me.to_string(),
            etcd: opts.endpoints.clone(),
            prefix: opts.prefix.clone(),
            state: st.state.name().to_string(),
            since_s: st.since.elapsed().as_secs(),
            error: st.error.clone(),
            lease_id: st.lease_id,
            lease_ttl_s: u64::from(opts.lease_ttl),
            revision: c.dir.revision.max(st.revision),
            sessions: st.sessions,
            events: st.events,
            bad_records: c.dir.bad_records,
            hosts: c
                .dir
                .hosts
                .iter()
                .map(|(id, h)| ClusterHostView {
                    host_id: id.clone(),
                    vtep: h.rec.vtep.map(|v| v.to_string()),
                    lease_id: h.lease,
                    endpoints: c.dir.endpoints_of_host(id),
                    local: id == me,
                })
                .collect(),
            networks: c.dir.networks.keys().cloned().collect(),
            conflicts: st.conflicts.clone(),
        })
    }

    /// `network inspect`'s endpoints of `network` on other hosts.
    pub(super) fn remote_endpoint_views(&self, network: &str) -> Vec<RemoteEndpointView> {
        let Some(c) = self.shared_overlay(network) else {
            return Vec::new();
        };
        c.dir
            .remotes(c.handle.me(), network)
            .into_iter()
            .map(|r| RemoteEndpointView {
                host: r.host,
                vtep: r.vtep.map(|v| v.to_string()),
                ip: r.ip.to_string(),
                mac: r.mac.to_string(),
                name: r.names.first().cloned(),
                aliases: r.names.iter().skip(1).cloned().collect(),
            })
            .collect()
    }

    /// Before an overlay `network create` in a cluster: the cluster must be reachable, the
    /// name and VNI free in it; a VNI is chosen that no host uses.
    pub(super) fn cluster_before_create(
        &self,
        name: &str,
        args: &mut CreateArgs,
    ) -> Result<(), Error> {
        let Some(c) = &self.cluster else {
            return Ok(());
        };
        if args.driver.as_deref() != Some(OVERLAY_DRIVER) || self.state.networks.contains_key(name)
        {
            return Ok(());
        }
        c.handle.require_synced()?;
        if let Some((rec, _)) = c.dir.networks.get(name) {
            return Err(ClusterError::NetworkTaken {
                name: name.to_string(),
                host: rec.created_by.clone(),
            }
            .into());
        }
        let used = |v: u32| {
            c.dir.vnis.contains_key(&v)
                || self
                    .state
                    .networks
                    .values()
                    .any(|n| n.is_overlay() && n.vni == Some(v))
        };
        match args.vni {
            Some(v) => {
                if let Some(other) = c.dir.vnis.get(&v) {
                    return Err(ClusterError::VniTaken {
                        vni: v,
                        other: other.clone(),
                    }
                    .into());
                }
            }
            None => {
                args.vni = (FIRST_VNI..=xvs_vxlan::Vni::MAX.get()).find(|&v| !used(v));
            }
        }
        Ok(())
    }

    /// After an overlay is created here: defines it in the cluster; returns the revision.
    pub(super) fn cluster_define(
        &self,
        name: &str,
        conf: &NetworkConf,
    ) -> Result<Option<i64>, Error> {
        let Some(c) = &self.cluster else {
            return Ok(None);
        };
        let Some(rec) = NetworkRecord::of(conf, c.handle.me()) else {
            return Ok(None);
        };
        Ok(Some(c.handle.claim_network(name, rec)?))
    }

    /// Before an overlay's `network rm`: no other host may still have endpoints on it; then
    /// it is removed from the cluster.
    pub(super) fn cluster_undefine(&self, name: &str, conf: &NetworkConf) -> Result<(), Error> {
        let Some(c) = self.shared_overlay(name) else {
            return Ok(());
        };
        if !conf.endpoints.is_empty() {
            // The local check refuses it, naming the endpoints.
            return Ok(());
        }
        let remotes = c.dir.remotes(c.handle.me(), name);
        if !remotes.is_empty() {
            let list: Vec<String> = remotes
                .iter()
                .map(|r| format!("{} ({})", r.host, r.ip))
                .collect();
            return Err(ClusterError::RemoteEndpoints {
                network: name.to_string(),
                list: list.join(", "),
            }
            .into());
        }
        if !c.dir.networks.contains_key(name) && conf.cluster_revision.is_none() {
            return Ok(());
        }
        c.handle.release_network(name, conf.vni.unwrap_or(0))?;
        Ok(())
    }

    /// Before a `network connect` to an overlay in a cluster: claims an address no host
    /// holds (the one asked for, or the next free one) and sets it in `args`. Returns it,
    /// for [`Switch::cluster_release`] if the connect then fails.
    pub(super) fn cluster_claim(
        &self,
        network: &str,
        conf: &NetworkConf,
        sandbox: &str,
        args: &mut ConnectArgs,
    ) -> Result<Option<Ipv4Addr>, Error> {
        let Some(c) = self.shared_overlay(network) else {
            return Ok(None);
        };
        if conf.endpoints.iter().any(|e| e.sandbox == sandbox) {
            // The local check refuses it.
            return Ok(None);
        }
        c.handle.require_synced()?;
        let me = c.handle.me();
        let want: Option<Ipv4Addr> = match &args.ip {
            Some(s) => Some(s.parse().map_err(|_| NetworkError::BadAddress(s.clone()))?),
            None => None,
        };
        if let Some(ip) = want
            && let Some(host) = c.dir.holder(network, ip).filter(|h| *h != me)
        {
            return Err(ClusterError::AddressTaken {
                network: network.to_string(),
                ip,
                host: host.to_string(),
            }
            .into());
        }
        let mut pool = conf.pool.clone();
        pool.used.extend(c.dir.taken(me, network));
        for _ in 0..CLAIM_ATTEMPTS {
            let ip = pool.allocate(want).map_err(NetworkError::from)?;
            let rec = EndpointRecord {
                host: me.to_string(),
                mac: network::mac_for(ip).to_string(),
                name: args.name.clone(),
                aliases: args.aliases.clone(),
                sandbox: sandbox.to_string(),
            };
            match c.handle.claim_endpoint(network, ip, rec) {
                Ok(()) => {
                    args.ip = Some(ip.to_string());
                    return Ok(Some(ip));
                }
                // Taken a moment ago by another host: the next one (the pool keeps it used).
                Err(ClusterError::AddressTaken { .. }) if want.is_none() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ClusterError::Etcd(format!(
            "no free address on {network} after {CLAIM_ATTEMPTS} attempts: other hosts took each"
        ))
        .into())
    }

    /// Lets go of a claimed address (a failed connect, a disconnect). If etcd cannot be
    /// reached now, the next resynchronisation removes it.
    pub(super) fn cluster_release(&self, network: &str, ip: Ipv4Addr) {
        let Some(c) = &self.cluster else {
            return;
        };
        if let Err(e) = c.handle.release_endpoint(network, ip) {
            tracing::warn!(
                "cluster: address {ip} on {network} not released now ({e}); the next sync removes it"
            );
        }
    }
}
