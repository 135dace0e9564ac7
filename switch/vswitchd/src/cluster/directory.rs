//! The cluster's directory as this host last read it from etcd (a full read, then every watch
//! event applied in order), and what it means for the local switch: an overlay's remote
//! endpoints become static VTEP entries with their addresses (so ARP for them is answered
//! here and known unicast never floods), the hosts holding endpoints become the overlay's
//! peers, and their addresses are taken in the local pool.
//!
//! Also what this host owns ([`Owned`]) and how a (re)synchronisation reconciles it with the
//! directory ([`plan`]). Pure: no I/O, time is not needed; kept by the cluster task and handed
//! to the control thread as a snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use xvs_switch::classify::Mac;

use super::records::{
    BackendRecord, EndpointRecord, HostRecord, Key, NetworkRecord, ServiceRecord,
};
use crate::config::{NetworkConf, RemoteConf, State};

/// A record and the lease it lives under (0: none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased<T> {
    /// The record.
    pub rec: T,
    /// Its lease.
    pub lease: i64,
}

/// One key's change, as a watch reports it (or a full read lists it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The key holds `value` under `lease`; `revision` is the key's last modification.
    Put {
        /// The full key.
        key: Vec<u8>,
        /// Its value.
        value: Vec<u8>,
        /// Its lease (0: none).
        lease: i64,
        /// Its modification revision.
        revision: i64,
    },
    /// The key was deleted (or its lease expired).
    Delete {
        /// The full key.
        key: Vec<u8>,
    },
}

/// The directory: every host, overlay network and endpoint of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directory {
    /// The etcd revision it reflects.
    pub revision: i64,
    /// Hosts by id.
    pub hosts: BTreeMap<String, Leased<HostRecord>>,
    /// Overlay networks by name, with the revision of their definition.
    pub networks: BTreeMap<String, (NetworkRecord, i64)>,
    /// VNIs and the network holding each.
    pub vnis: BTreeMap<u32, String>,
    /// Endpoints by (network, address).
    pub endpoints: BTreeMap<(String, Ipv4Addr), Leased<EndpointRecord>>,
    /// Services by name, with the revision of their definition.
    pub services: BTreeMap<String, (ServiceRecord, i64)>,
    /// Services' VIPs by (network, address).
    pub vips: BTreeMap<(String, Ipv4Addr), String>,
    /// Backends by (service, address).
    pub backends: BTreeMap<(String, SocketAddr), BackendRecord>,
    /// Keys under the prefix that are not of the layout or whose value is malformed.
    pub bad_records: u64,
}

/// A remote endpoint as the local switch programs it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Remote {
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its MAC.
    pub mac: Mac,
    /// Its host.
    pub host: String,
    /// Its host's VTEP (none while the host has not set one).
    pub vtep: Option<Ipv4Addr>,
    /// Its DNS name and aliases.
    pub names: Vec<String>,
}

impl Directory {
    /// Applies one change; returns whether it was a key of the layout with a readable value.
    pub fn apply(&mut self, prefix: &str, change: &Change) -> bool {
        let (raw, put) = match change {
            Change::Put {
                key,
                value,
                lease,
                revision,
            } => (key, Some((value, *lease, *revision))),
            Change::Delete { key } => (key, None),
        };
        let Some(key) = Key::parse(prefix, raw) else {
            self.bad_records += 1;
            return false;
        };
        let Some((value, lease, revision)) = put else {
            match key {
                Key::Host(h) => {
                    self.hosts.remove(&h);
                }
                Key::Network(n) => {
                    self.networks.remove(&n);
                }
                Key::Vni(v) => {
                    self.vnis.remove(&v);
                }
                Key::Endpoint { network, ip } => {
                    self.endpoints.remove(&(network, ip));
                }
                Key::Service(n) => {
                    self.services.remove(&n);
                }
                Key::Vip { network, ip } => {
                    self.vips.remove(&(network, ip));
                }
                Key::Backend { service, addr } => {
                    self.backends.remove(&(service, addr));
                }
            }
            return true;
        };
        let ok = match key {
            Key::Host(h) => serde_json::from_slice(value)
                .map(|rec| self.hosts.insert(h, Leased { rec, lease }))
                .is_ok(),
            Key::Network(n) => serde_json::from_slice(value)
                .map(|rec| self.networks.insert(n, (rec, revision)))
                .is_ok(),
            Key::Vni(v) => serde_json::from_slice(value)
                .map(|name| self.vnis.insert(v, name))
                .is_ok(),
            Key::Endpoint { network, ip } => serde_json::from_slice::<EndpointRecord>(value)
                .ok()
                .filter(|rec| rec.mac.parse::<Mac>().is_ok())
                .map(|rec| self.endpoints.insert((network, ip), Leased { rec, lease }))
                .is_some(),
            Key::Service(n) => serde_json::from_slice(value)
                .map(|rec| self.services.insert(n, (rec, revision)))
                .is_ok(),
            Key::Vip { network, ip } => serde_json::from_slice(value)
                .map(|svc| self.vips.insert((network, ip), svc))
                .is_ok(),
            Key::Backend { service, addr } => serde_json::from_slice(value)
                .map(|rec| self.backends.insert((service, addr), rec))
                .is_ok(),
        };
        if !ok {
            self.bad_records += 1;
        }
        ok
    }

    /// A directory from a full read at `revision`.
    pub fn read(prefix: &str, revision: i64, changes: &[Change]) -> Directory {
        let mut d = Directory {
            revision,
            ..Directory::default()
        };
        for c in changes {
            d.apply(prefix, c);
        }
        d
    }

    /// The VTEP of host `host`, if it is registered and has one.
    pub fn vtep_of(&self, host: &str) -> Option<Ipv4Addr> {
        self.hosts.get(host).and_then(|h| h.rec.vtep)
    }

    /// The endpoints of `network` on hosts other than `me`.
    pub fn remotes(&self, me: &str, network: &str) -> Vec<Remote> {
        self.endpoints
            .range((network.to_string(), Ipv4Addr::UNSPECIFIED)..)
            .take_while(|((n, _), _)| n == network)
            .filter(|(_, e)| e.rec.host != me)
            .filter_map(|((_, ip), e)| {
                Some(Remote {
                    ip: *ip,
                    mac: e.rec.mac.parse().ok()?,
                    host: e.rec.host.clone(),
                    vtep: self.vtep_of(&e.rec.host),
                    names: e.rec.name.iter().chain(&e.rec.aliases).cloned().collect(),
                })
            })
            .collect()
    }

    /// The host holding address `ip` on `network`, if any does.
    pub fn holder(&self, network: &str, ip: Ipv4Addr) -> Option<&str> {
        self.endpoints
            .get(&(network.to_string(), ip))
            .map(|e| e.rec.host.as_str())
    }

    /// Overlay `conf` (network `name`) as the local switch runs it: its remote endpoints as
    /// static entries with their addresses, their hosts' VTEPs as peers. What the user
    /// configured (`vtep peer`, `vtep fdb`) stays and wins.
    pub fn merged(&self, me: &str, name: &str, conf: &NetworkConf) -> NetworkConf {
        let mut next = conf.clone();
        if !conf.is_overlay() || !self.networks.contains_key(name) {
            return next;
        }
        let mut peers: BTreeSet<Ipv4Addr> = conf.peers.iter().copied().collect();
        for r in self.remotes(me, name) {
            let Some(vtep) = r.vtep else { continue };
            if !next.remotes.iter().any(|s| s.mac == r.mac.0) {
                next.remotes.push(RemoteConf {
                    mac: r.mac.0,
                    remote: vtep,
                    ip: Some(r.ip),
                });
            }
            peers.insert(vtep);
        }
        if let Some(local) = self.vtep_of(me) {
            peers.remove(&local);
        }
        next.peers = peers.into_iter().collect();
        next
    }

    /// Every address of `network` held on the cluster's other hosts, and its services' VIPs.
    pub fn taken(&self, me: &str, network: &str) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = self
            .remotes(me, network)
            .into_iter()
            .map(|r| r.ip)
            .collect();
        v.extend(
            self.vips
                .keys()
                .filter(|(n, _)| n == network)
                .map(|(_, ip)| *ip),
        );
        v
    }

    /// The service holding `ip` on `network` as its VIP, if one does.
    pub fn vip_holder(&self, network: &str, ip: Ipv4Addr) -> Option<&str> {
        self.vips
            .get(&(network.to_string(), ip))
            .map(String::as_str)
    }

    /// Service `name`'s backends that count: those whose address an endpoint of the
    /// service's network holds (on a live host: a dead host's endpoints are gone).
    /// `local` are the addresses this host's own endpoints hold there.
    pub fn live_backends(
        &self,
        name: &str,
        network: &str,
        local: &[Ipv4Addr],
    ) -> BTreeMap<SocketAddr, u32> {
        self.backends
            .range((name.to_string(), SocketAddr::from(([0, 0, 0, 0], 0)))..)
            .take_while(|((s, _), _)| s == name)
            .filter(|((_, addr), _)| match addr.ip() {
                IpAddr::V4(ip) => {
                    local.contains(&ip) || self.endpoints.contains_key(&(network.to_string(), ip))
                }
                IpAddr::V6(_) => false,
            })
            .map(|((_, addr), b)| (*addr, b.weight))
            .collect()
    }

    /// How many endpoints host `host` holds.
    pub fn endpoints_of_host(&self, host: &str) -> u64 {
        self.endpoints
            .values()
            .filter(|e| e.rec.host == host)
            .count() as u64
    }
}

/// What this host owns in the directory, made from its configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owned {
    /// Its VTEP and port.
    pub vtep: Option<(Ipv4Addr, u16)>,
    /// Its overlay networks: definition, and the revision it last saw them at.
    pub networks: BTreeMap<String, (NetworkRecord, Option<i64>)>,
    /// Its endpoints on overlay networks, by (network, address).
    pub endpoints: BTreeMap<(String, Ipv4Addr), EndpointRecord>,
    /// Its services on overlay networks: definition, backends, the revision last seen.
    pub services: BTreeMap<String, OwnedService>,
}

/// A service of this host's on an overlay, as [`Owned`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedService {
    /// Its definition.
    pub rec: ServiceRecord,
    /// Its backends and their weights.
    pub backends: Vec<(SocketAddr, u32)>,
    /// The revision it was last seen at in the directory.
    pub seen: Option<i64>,
}

impl Owned {
    /// What `state` makes host `me` own.
    pub fn of(state: &State, me: &str) -> Owned {
        let mut o = Owned {
            vtep: state.vtep.map(|v| (v.local, v.port)),
            ..Owned::default()
        };
        for (name, conf) in &state.networks {
            let Some(rec) = NetworkRecord::of(conf, me) else {
                continue;
            };
            o.networks
                .insert(name.clone(), (rec, conf.cluster_revision));
            for ep in &conf.endpoints {
                o.endpoints
                    .insert((name.clone(), ep.ip), endpoint_record(me, ep));
            }
        }
        for (name, s) in &state.services {
            if !o.networks.contains_key(&s.network) {
                continue;
            }
            o.services.insert(
                name.clone(),
                OwnedService {
                    rec: ServiceRecord::of(s, me),
                    backends: s.backends.iter().map(|b| (b.addr, b.weight)).collect(),
                    seen: s.cluster_revision,
                },
            );
        }
        o
    }
}

/// The directory's record of local endpoint `ep`.
pub fn endpoint_record(me: &str, ep: &crate::config::EndpointConf) -> EndpointRecord {
    EndpointRecord {
        host: me.to_string(),
        mac: Mac(ep.mac).to_string(),
        name: ep.name.clone(),
        aliases: ep.aliases.clone(),
        sandbox: ep.sandbox.clone(),
    }
}

/// What a (re)synchronisation writes so that the directory holds what this host owns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Networks to define (absent from the directory, and this host has never seen them
    /// there or still has endpoints on them).
    pub networks: Vec<(String, NetworkRecord)>,
    /// Endpoints to (re)write under this host's lease.
    pub endpoints: Vec<((String, Ipv4Addr), EndpointRecord)>,
    /// Keys of this host's that it no longer owns (an endpoint removed while etcd was away).
    pub stale: Vec<Key>,
    /// Services to define (never seen in the directory), with their backends.
    pub services: Vec<(String, OwnedService)>,
    /// What this host owns that the directory gives someone else.
    pub conflicts: Vec<String>,
}

/// Reconciles what host `me` owns with the directory `dir` as read.
pub fn plan(dir: &Directory, owned: &Owned, me: &str) -> Plan {
    let mut p = Plan::default();
    for (name, (rec, seen)) in &owned.networks {
        match dir.networks.get(name) {
            Some((theirs, _)) if !theirs.same_network(rec) => p.conflicts.push(format!(
                "network {name}: the cluster defines it as {} vni {} (by host {}), this host as {} vni {}",
                theirs.subnet, theirs.vni, theirs.created_by, rec.subnet, rec.vni
            )),
            Some(_) => {}
            None => {
                let has_endpoints = owned.endpoints.keys().any(|(n, _)| n == name);
                if seen.is_none() || has_endpoints {
                    p.networks.push((name.clone(), rec.clone()));
                }
            }
        }
    }
    for (key, rec) in &owned.endpoints {
        match dir.endpoints.get(key) {
            Some(e) if e.rec.host != me => p.conflicts.push(format!(
                "address {} on {}: held by host {}, and by {} here",
                key.1, key.0, e.rec.host, rec.sandbox
            )),
            _ => p.endpoints.push((key.clone(), rec.clone())),
        }
    }
    for (name, s) in &owned.services {
        match dir.services.get(name) {
            Some((theirs, _)) if theirs.conf.spec != s.rec.conf.spec => p.conflicts.push(format!(
                "service {name}: the cluster defines it differently (by host {})",
                theirs.created_by
            )),
            Some(_) => {}
            None if s.seen.is_none() => p.services.push((name.clone(), s.clone())),
            None => {}
        }
    }
    for ((network, ip), e) in &dir.endpoints {
        if e.rec.host == me && !owned.endpoints.contains_key(&(network.clone(), *ip)) {
            p.stale.push(Key::Endpoint {
                network: network.clone(),
                ip: *ip,
            });
        }
    }
    p
}

#[cfg(test)]
#[path = "../tests/cluster_directory.rs"]
mod tests;
