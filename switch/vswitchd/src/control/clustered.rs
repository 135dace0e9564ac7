//! The control thread's side of the cluster (`xvsd --cluster`): what an overlay network's
//! requests ask of etcd before they change anything here (an address claimed, a network and
//! its VNI defined), and how a new snapshot of the directory is applied (networks other
//! hosts defined or removed, remote endpoints as static VTEP entries, peers and DNS names).
//!
//! Runs on the control thread, behind the daemon's lock; only [`apply_directories`] runs on
//! the control runtime, and it takes the lock only on a blocking thread.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use xvs_ctl::protocol::{ClusterHostView, ClusterView, RemoteEndpointView};

use super::Switch;
use crate::cluster::directory::{Directory, Owned};
use crate::cluster::records::{EndpointRecord, NetworkRecord};
use crate::cluster::{Cluster, ClusterError};
use crate::config::{NetworkConf, State};
use crate::error::Error;
use crate::network::{self, ConnectArgs, CreateArgs, FIRST_VNI, NetworkError, OVERLAY_DRIVER};

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
