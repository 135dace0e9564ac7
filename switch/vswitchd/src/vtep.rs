//! The local VTEP and the overlay networks' tunnels: `vtep set/show`, `vtep peer add/del/ls`,
//! `vtep fdb add/del`, checked here against the configuration, and what the datapath's VXLAN
//! stages are told (every overlay network's tunnel, peers and static entries; the uplink's
//! decapsulation table by VNI), remade from the configuration after every change.
//!
//! The VTEP's address is the uplink's own: VXLAN to it reaches xvs through the uplink's
//! steering program like any frame for xvs's MAC. Without an uplink (or with another address
//! on it) overlay networks run as local bridges until it returns.
//!
//! Used by the control thread only.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use xvs_ctl::protocol::{VtepFdbView, VtepNetworkView, VtepPeerView, VtepView};
use xvs_switch::classify::Mac;
use xvs_switch::datapath::Datapath;
use xvs_vxlan::{
    DEFAULT_PEER_LIMIT, DecapConfig, DecapStage, LocalVtep, OverlayConfig, OverlayNet,
    OverlayStage, StaticRemote, Tunnel, VXLAN_PORT, Vni,
};

use crate::config::{NetworkConf, RemoteConf, VtepConf};
use crate::network::{bridge_of, mac_for};
use crate::uplink::{UPLINK_BRIDGE, Uplink, UplinkConf};

/// Static remote stations one overlay network may have (the remote FDB keeps the rest of
/// its per-VNI share for learning).
pub const MAX_REMOTES: usize = 4096;

/// Why a VTEP request was refused.
#[derive(Debug, thiserror::Error)]
pub enum VtepError {
    /// `vtep set` before `uplink set`.
    #[error("no uplink is set: the VTEP lives on the uplink (uplink set IFACE --ip CIDR first)")]
    NoUplink,
    /// `vtep set --local` with another address than the uplink's.
    #[error("--local {local} is not the uplink's address {uplink}: the VTEP lives on the uplink")]
    NotUplinkAddress {
        /// The address asked for.
        local: Ipv4Addr,
        /// The uplink's.
        uplink: Ipv4Addr,
    },
    /// An address argument that is not IPv4.
    #[error("invalid {what} {value:?}: not an IPv4 address")]
    BadAddress {
        /// Which argument.
        what: &'static str,
        /// As given.
        value: String,
    },
    /// A remote VTEP that cannot be one.
    #[error("{0} cannot be a remote VTEP: it must be a unicast address other than the local VTEP")]
    NotUnicast(Ipv4Addr),
    /// `--port 0`.
    #[error("invalid VTEP port 0")]
    BadPort,
    /// A verb on a network that is not an overlay.
    #[error("network {0} is not an overlay network (network create --driver overlay)")]
    NotOverlay(String),
    /// `peer add` twice.
    #[error("{remote} is already a peer of network {network}")]
    PeerExists {
        /// The network.
        network: String,
        /// The peer.
        remote: Ipv4Addr,
    },
    /// `peer del` of a peer not there.
    #[error("{remote} is not a peer of network {network}")]
    NoSuchPeer {
        /// The network.
        network: String,
        /// The peer.
        remote: Ipv4Addr,
    },
    /// Too many peers.
    #[error("network {0} has {DEFAULT_PEER_LIMIT} peers already (the limit)")]
    TooManyPeers(String),
    /// A MAC that does not parse or is not a station's.
    #[error("invalid MAC {0:?}: expected a unicast address like 02:42:0a:00:00:02")]
    BadMac(String),
    /// `fdb del` of an entry not there.
    #[error("network {network} has no static entry for {mac}")]
    NoSuchRemote {
        /// The network.
        network: String,
        /// The MAC.
        mac: String,
    },
    /// Too many static entries.
    #[error("network {0} has {MAX_REMOTES} static entries already (the limit)")]
    TooManyRemotes(String),
    /// `fdb add --ip` outside the network's subnet.
    #[error("{ip} is not in network {network}'s subnet")]
    IpOutside {
        /// The network.
        network: String,
        /// The address.
        ip: Ipv4Addr,
    },
    /// `fdb add --ip` of an address another static entry has.
    #[error("{ip} already belongs to the static entry for {mac}")]
    IpTaken {
        /// The address.
        ip: Ipv4Addr,
        /// The entry that has it.
        mac: String,
    },
    /// `vtep show` before `vtep set`.
    #[error("no VTEP is set (vtep set --local IP)")]
    NotSet,
}

fn parse_ip(what: &'static str, s: &str) -> Result<Ipv4Addr, VtepError> {
    s.parse().map_err(|_| VtepError::BadAddress {
        what,
        value: s.to_string(),
    })
}

/// Checks `vtep set`'s arguments against the uplink.
pub fn configure(
    local: &str,
    port: Option<u16>,
    uplink: Option<&UplinkConf>,
) -> Result<VtepConf, VtepError> {
    let local = parse_ip("--local", local)?;
    let uplink = uplink.ok_or(VtepError::NoUplink)?;
    if local != uplink.ip {
        return Err(VtepError::NotUplinkAddress {
            local,
            uplink: uplink.ip,
        });
    }
    let port = port.unwrap_or(VXLAN_PORT);
    if port == 0 {
        return Err(VtepError::BadPort);
    }
    Ok(VtepConf { local, port })
}

/// The overlay network `name` of `all`, for a peer or fdb verb.
pub fn overlay<'a>(
    all: &'a BTreeMap<String, NetworkConf>,
    name: &str,
) -> Result<&'a NetworkConf, crate::error::Error> {
    let conf = crate::network::lookup(all, name)?;
    if !conf.is_overlay() {
        return Err(VtepError::NotOverlay(name.to_string()).into());
    }
    Ok(conf)
}

/// A remote VTEP argument: unicast, not the local VTEP.
fn remote_vtep(s: &str, vtep: Option<&VtepConf>) -> Result<Ipv4Addr, VtepError> {
    let ip = parse_ip("remote VTEP", s)?;
    let octets = ip.octets();
    if ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_broadcast()
        || octets[0] == 0
        || vtep.is_some_and(|v| v.local == ip)
    {
        return Err(VtepError::NotUnicast(ip));
    }
    Ok(ip)
}

/// Network `network` (configured as `conf`) with peer `remote` added.
pub fn peer_add(
    network: &str,
    conf: &NetworkConf,
    remote: &str,
    vtep: Option<&VtepConf>,
) -> Result<NetworkConf, VtepError> {
    let remote = remote_vtep(remote, vtep)?;
    if conf.peers.contains(&remote) {
        return Err(VtepError::PeerExists {
            network: network.to_string(),
            remote,
        });
    }
    if conf.peers.len() >= DEFAULT_PEER_LIMIT {
        return Err(VtepError::TooManyPeers(network.to_string()));
    }
    let mut next = conf.clone();
    next.peers.push(remote);
    Ok(next)
}

/// Network `network` (configured as `conf`) with peer `remote` removed.
pub fn peer_del(network: &str, conf: &NetworkConf, remote: &str) -> Result<NetworkConf, VtepError> {
    let remote = parse_ip("remote VTEP", remote)?;
    if !conf.peers.contains(&remote) {
        return Err(VtepError::NoSuchPeer {
            network: network.to_string(),
            remote,
        });
    }
    let mut next = conf.clone();
    next.peers.retain(|p| *p != remote);
    Ok(next)
}

fn parse_mac(s: &str) -> Result<Mac, VtepError> {
    let mac: Mac = s.parse().map_err(|_| VtepError::BadMac(s.to_string()))?;
    if mac.0[0] & 1 != 0 || mac.0 == [0; 6] {
        return Err(VtepError::BadMac(s.to_string()));
    }
    Ok(mac)
}

/// Network `network` (configured as `conf`) with the static entry `mac` → `remote` added (or
/// replaced), with address `ip` if given.
pub fn fdb_add(
    network: &str,
    conf: &NetworkConf,
    mac: &str,
    remote: &str,
    ip: Option<&str>,
    vtep: Option<&VtepConf>,
) -> Result<NetworkConf, VtepError> {
    let mac = parse_mac(mac)?;
    let remote = remote_vtep(remote, vtep)?;
    let ip = ip.map(|s| parse_ip("--ip", s)).transpose()?;
    if let Some(ip) = ip {
        if !conf.pool.subnet.contains(ip) {
            return Err(VtepError::IpOutside {
                network: network.to_string(),
                ip,
            });
        }
        if let Some(other) = conf
            .remotes
            .iter()
            .find(|r| r.ip == Some(ip) && r.mac != mac.0)
        {
            return Err(VtepError::IpTaken {
                ip,
                mac: Mac(other.mac).to_string(),
            });
        }
    }
    let mut next = conf.clone();
    let entry = RemoteConf {
        mac: mac.0,
        remote,
        ip,
    };
    let full = next.remotes.len() >= MAX_REMOTES;
    match next.remotes.iter_mut().find(|r| r.mac == mac.0) {
        Some(r) => *r = entry,
        None if full => return Err(VtepError::TooManyRemotes(network.to_string())),
        None => next.remotes.push(entry),
    }
    Ok(next)
}

/// Network `network` (configured as `conf`) without the static entry for `mac`.
pub fn fdb_del(network: &str, conf: &NetworkConf, mac: &str) -> Result<NetworkConf, VtepError> {
    let parsed = parse_mac(mac)?;
    if !conf.remotes.iter().any(|r| r.mac == parsed.0) {
        return Err(VtepError::NoSuchRemote {
            network: network.to_string(),
            mac: parsed.to_string(),
        });
    }
    let mut next = conf.clone();
    next.remotes.retain(|r| r.mac != parsed.0);
    Ok(next)
}

/// The VNI of overlay `conf` (set at create).
fn vni_of(conf: &NetworkConf) -> Option<Vni> {
    conf.vni.and_then(Vni::new)
}

/// The VTEP as the datapath runs it: set, and its address still the running uplink's.
fn active<'a>(
    vtep: Option<&'a VtepConf>,
    uplink: Option<&Uplink>,
) -> Option<(&'a VtepConf, Uplink)> {
    let (v, u) = (vtep?, uplink?);
    (u.ip == v.local).then(|| (v, u.clone()))
}

/// Tells every overlay network's stage its tunnel (or none, without an active VTEP) and
/// every uplink worker's decap stage the overlay networks by VNI.
pub fn push(
    dp: &Datapath,
    all: &BTreeMap<String, NetworkConf>,
    uplink: Option<&Uplink>,
    vtep: Option<&VtepConf>,
) {
    let active = active(vtep, uplink);
    let mut by_vni = HashMap::new();
    for (name, conf) in all.iter().filter(|(_, c)| c.is_overlay()) {
        let bridge = bridge_of(name);
        let (Some(vni), Some(id), Some(worker)) = (
            vni_of(conf),
            dp.bridge_id(&bridge),
            dp.bridge_worker(&bridge),
        ) else {
            continue;
        };
        let mtu = u16::try_from(conf.mtu).unwrap_or(u16::MAX);
        let gateway_mac = mac_for(conf.pool.gateway);
        let config = active.as_ref().map(|(v, u)| OverlayConfig {
            tunnel: Tunnel {
                vni,
                bridge: id,
                uplink_bridge: u.bridge,
                local_mac: u.mac,
                local_ip: v.local,
                port: v.port,
                mtu,
                gateway_ip: conf.pool.gateway,
                gateway_mac,
            },
            peers: conf.peers.clone(),
            statics: conf
                .remotes
                .iter()
                .map(|r| StaticRemote {
                    mac: Mac(r.mac),
                    remote: r.remote,
                    ip: r.ip,
                })
                .collect(),
        });
        if let Err(e) =
            dp.with_stage_each::<OverlayStage, _>(&bridge, move |s, _| s.set_config(config.clone()))
        {
            tracing::warn!("cannot update the tunnel of network {name}: {e}");
        }
        let mut remotes: Vec<Ipv4Addr> = conf
            .peers
            .iter()
            .copied()
            .chain(conf.remotes.iter().map(|r| r.remote))
            .collect();
        remotes.sort_unstable();
        remotes.dedup();
        by_vni.insert(
            vni,
            OverlayNet {
                bridge: id,
                worker,
                mtu,
                gateway_mac,
                remotes: remotes.into(),
            },
        );
    }
    let Some((v, u)) = active else {
        if uplink.is_some() {
            let _ = dp.with_stage_each::<DecapStage, _>(UPLINK_BRIDGE, |d, _| d.set_config(None));
        }
        return;
    };
    let config = DecapConfig {
        vtep: LocalVtep {
            port: v.port,
            ..LocalVtep::new(v.local)
        },
        uplink_port: u.port,
        networks: Arc::new(by_vni),
    };
    if let Err(e) = dp.with_stage_each::<DecapStage, _>(UPLINK_BRIDGE, move |d, _| {
        d.set_config(Some(config.clone()))
    }) {
        tracing::warn!("cannot update the VTEP's decapsulation: {e}");
    }
}

/// What the overlay stage of network `name` shows: per-peer counters and remote entries.
fn tables(
    dp: &Datapath,
    name: &str,
) -> (
    Vec<(Ipv4Addr, xvs_vxlan::PeerCounters)>,
    Vec<xvs_vxlan::RemoteEntry>,
) {
    dp.with_stage::<OverlayStage, _>(&bridge_of(name), |s, now| {
        (s.peer_counters(), s.entries(now))
    })
    .ok()
    .flatten()
    .unwrap_or_default()
}

/// The VTEPs of overlay `name` (configured as `conf`): its peers, then any other VTEP frames
/// went to or came from.
fn peer_views(
    dp: &Datapath,
    name: &str,
    conf: &NetworkConf,
) -> (Vec<VtepPeerView>, Vec<VtepFdbView>) {
    let (counters, entries) = tables(dp, name);
    let vni = conf.vni.unwrap_or(0);
    let counter = |ip: Ipv4Addr| {
        counters
            .iter()
            .find(|(r, _)| *r == ip)
            .map(|(_, c)| *c)
            .unwrap_or_default()
    };
    let mut peers: Vec<VtepPeerView> = conf
        .peers
        .iter()
        .map(|&p| {
            let c = counter(p);
            VtepPeerView {
                network: name.to_string(),
                vni,
                remote: p.to_string(),
                configured: true,
                tx_packets: c.tx,
                rx_packets: c.rx,
            }
        })
        .collect();
    for (ip, c) in counters.iter().filter(|(ip, _)| !conf.peers.contains(ip)) {
        peers.push(VtepPeerView {
            network: name.to_string(),
            vni,
            remote: ip.to_string(),
            configured: false,
            tx_packets: c.tx,
            rx_packets: c.rx,
        });
    }
    let fdb = entries
        .into_iter()
        .map(|e| VtepFdbView {
            mac: e.mac.to_string(),
            remote: e.remote_ip.to_string(),
            is_static: e.is_static,
            ip: e.inner_ip.map(|i| i.to_string()),
            age_s: e.age_secs,
        })
        .collect();
    (peers, fdb)
}

/// `vtep peer ls`: every overlay network's VTEPs.
pub fn peers(dp: &Datapath, all: &BTreeMap<String, NetworkConf>) -> Vec<VtepPeerView> {
    all.iter()
        .filter(|(_, c)| c.is_overlay())
        .flat_map(|(n, c)| peer_views(dp, n, c).0)
        .collect()
}

/// `vtep show`.
pub fn view(
    dp: &Datapath,
    all: &BTreeMap<String, NetworkConf>,
    vtep: &VtepConf,
    uplink: Option<&Uplink>,
) -> VtepView {
    VtepView {
        local: vtep.local.to_string(),
        port: vtep.port,
        state: if active(Some(vtep), uplink).is_some() {
            "up".into()
        } else {
            "down: no uplink with this address".into()
        },
        networks: all
            .iter()
            .filter(|(_, c)| c.is_overlay())
            .map(|(n, c)| {
                let (peers, fdb) = peer_views(dp, n, c);
                VtepNetworkView {
                    network: n.clone(),
                    vni: c.vni.unwrap_or(0),
                    mtu: c.mtu,
                    peers,
                    fdb,
                }
            })
            .collect(),
    }
}

#[cfg(test)]
#[path = "tests/vtep.rs"]
mod tests;
