//! What the datapath's routing stages know, made from the configuration: each network's route
//! stage (its gateway, the other networks' subnets, the way out), and, with an uplink, every
//! worker's router (the networks as zones: bridge, worker, gateway MAC, endpoints) and
//! conntrack stage (which worker owns each zone, the published ports). Remade and pushed after
//! every change of networks, endpoints or uplink: a snapshot, never edited in place.
//!
//! Used by the control thread only.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use hashbrown::HashMap;
use xvs_lb::{LbConfig, LbStage};
use xvs_nat::{DnatRule, NatStage, Published};
use xvs_switch::classify::Mac;
use xvs_switch::datapath::Datapath;
use xvs_switch::port_security::{Guard, PortSecurityStage};
use xvs_switch::route::{RouteConfig, RouteStage, UplinkRoute};
use xvs_switch::router::{RouterStage, Zone};
use xvs_switch::wire::PortId;

use crate::config::{NetworkConf, State};
use crate::network::{GATEWAY_PORT, bridge_of, mac_for};
use crate::publish::PortBinding;
use crate::service::ServiceConf;
use crate::uplink::{UPLINK_BRIDGE, Uplink};

/// The route stage's view of network `name`: its gateway and subnet, `--internal`, every
/// other network's subnet (isolated from it) and the uplink.
pub fn route_config(
    name: &str,
    conf: &NetworkConf,
    all: &BTreeMap<String, NetworkConf>,
    uplink: Option<&Uplink>,
) -> RouteConfig {
    RouteConfig {
        gateway: conf.pool.gateway,
        gateway_mac: mac_for(conf.pool.gateway),
        subnet: conf.pool.subnet.net(),
        internal: conf.internal,
        others: all
            .iter()
            .filter(|(n, _)| n.as_str() != name)
            .map(|(_, c)| c.pool.subnet.net())
            .collect(),
        uplink: uplink.map(|u| UplinkRoute {
            bridge: u.bridge,
            mtu: u.mtu,
        }),
    }
}

/// The zone (conntrack's name for a network) of a network's bridge.
pub fn zone_of(dp: &Datapath, network: &str) -> Option<u16> {
    dp.bridge_id(&bridge_of(network))
        .and_then(|id| u16::try_from(id).ok())
}

/// Conntrack's rule for endpoint `ip`'s published port `b` on `zone`.
pub fn rule_of(b: &PortBinding, ip: Ipv4Addr, zone: u16) -> DnatRule {
    DnatRule {
        proto: b.proto.number(),
        host_ip: b.host_ip,
        host_port: b.host_port,
        inside_ip: ip,
        inside_port: b.container_port,
        zone,
    }
}

/// Every published port (endpoints' and services'), as conntrack's rules.
pub fn published(
    dp: &Datapath,
    all: &BTreeMap<String, NetworkConf>,
    services: &BTreeMap<String, ServiceConf>,
) -> Published {
    let mut p = Published::new();
    for (name, s) in services {
        let (Some(b), Some(zone)) = (s.binding(), zone_of(dp, &s.network)) else {
            continue;
        };
        if let Err(e) = p.publish(rule_of(&b, s.vip(), zone)) {
            tracing::warn!("published port {b} of service {name} not applied: {e}");
        }
    }
    for (name, conf) in all {
        let Some(zone) = zone_of(dp, name) else {
            continue;
        };
        for ep in &conf.endpoints {
            for b in &ep.publish {
                if let Err(e) = p.publish(rule_of(b, ep.ip, zone)) {
                    tracing::warn!("published port {b} of network {name} not applied: {e}");
                }
            }
        }
    }
    p
}

/// Every address on network `conf` and its MAC: its endpoints, an overlay's static stations
/// with an address, and its services' VIPs (answered with the gateway's MAC).
fn stations(
    name: &str,
    conf: &NetworkConf,
    services: &BTreeMap<String, ServiceConf>,
) -> HashMap<Ipv4Addr, Mac> {
    let mut m: HashMap<Ipv4Addr, Mac> = conf
        .endpoints
        .iter()
        .map(|e| (e.ip, Mac(e.mac)))
        .chain(
            conf.remotes
                .iter()
                .filter_map(|r| r.ip.map(|ip| (ip, Mac(r.mac)))),
        )
        .collect();
    for s in services.values().filter(|s| s.network == name) {
        m.insert(s.vip(), mac_for(conf.pool.gateway));
    }
    m
}

/// What each endpoint port of network `conf` (on `bridge`) may send as: its own MAC and
/// address, unless it was connected with `--allow-spoofing`.
fn guards(dp: &Datapath, bridge: &str, conf: &NetworkConf) -> HashMap<PortId, Guard> {
    conf.endpoints
        .iter()
        .filter(|e| !e.allow_spoofing)
        .filter_map(|e| {
            let port = dp.port_id(bridge, &e.host_ifname)?;
            Some((
                port,
                Guard {
                    mac: Mac(e.mac),
                    ip: e.ip,
                },
            ))
        })
        .collect()
}

/// Pushes the snapshot to every network's route and lb stages (and an overlay's tunnel)
/// and, with an uplink, to every worker's router, conntrack and decap stages.
pub fn refresh(dp: &Datapath, state: &State, uplink: Option<&Uplink>) {
    let all = &state.networks;
    crate::vtep::push(dp, all, uplink, state.vtep.as_ref());
    for (name, conf) in all {
        let config = route_config(name, conf, all, uplink);
        let bridge = bridge_of(name);
        if let Err(e) =
            dp.with_stage_each::<RouteStage, _>(&bridge, move |r, _| r.set_config(config.clone()))
        {
            tracing::warn!("cannot update the routes of network {name}: {e}");
        }
        let spread = dp.is_spread(&bridge).then(|| xvs_lb::SpreadConfig {
            station_workers: Arc::new(
                conf.endpoints
                    .iter()
                    .filter_map(|ep| Some((ep.ip, dp.port_worker(&bridge, &ep.host_ifname)?)))
                    .collect(),
            ),
            home: dp.bridge_worker(&bridge).unwrap_or(0),
        });
        let lb = LbConfig {
            gateway_mac: mac_for(conf.pool.gateway),
            stations: Arc::new(stations(name, conf, &state.services)),
            spread,
            ..LbConfig::default()
        };
        if let Err(e) =
            dp.with_stage_each::<LbStage, _>(&bridge, move |l, _| l.set_config(lb.clone()))
        {
            tracing::warn!("cannot update the services of network {name}: {e}");
        }
        let guards = Arc::new(guards(dp, &bridge, conf));
        if let Err(e) = dp.with_stage_each::<PortSecurityStage, _>(&bridge, move |p, _| {
            p.set_guards(guards.clone())
        }) {
            tracing::warn!("cannot update the port security of network {name}: {e}");
        }
    }
    if uplink.is_none() {
        return;
    }
    let mut zones = HashMap::new();
    let mut workers = HashMap::new();
    let mut endpoint_workers = HashMap::new();
    for (name, conf) in all.iter().filter(|(_, c)| !c.internal) {
        let bridge = bridge_of(name);
        let (Some(zone), Some(id), Some(worker)) = (
            zone_of(dp, name),
            dp.bridge_id(&bridge),
            dp.bridge_worker(&bridge),
        ) else {
            continue;
        };
        workers.insert(zone, worker);
        let everywhere = dp.is_spread(&bridge);
        if everywhere {
            for ep in &conf.endpoints {
                if let Some(w) = dp.port_worker(&bridge, &ep.host_ifname) {
                    endpoint_workers.insert((zone, ep.ip), w);
                }
            }
        }
        zones.insert(
            zone,
            Zone {
                bridge: id,
                gateway_mac: mac_for(conf.pool.gateway),
                endpoints: stations(name, conf, &state.services).into_iter().collect(),
                worker,
                everywhere,
                local_port: dp.port_id(&bridge, GATEWAY_PORT).unwrap_or(0),
            },
        );
    }
    let zones = Arc::new(zones);
    let workers = Arc::new(workers);
    let endpoint_workers = Arc::new(endpoint_workers);
    let rules = published(dp, all, &state.services);
    let pushed = dp
        .with_stage_each::<RouterStage, _>(UPLINK_BRIDGE, move |r, _| {
            let mut c = r.config().clone();
            c.zones = zones.clone();
            r.set_config(c);
        })
        .and_then(|_| {
            dp.with_stage_each::<NatStage, _>(UPLINK_BRIDGE, move |n, _| {
                let mut c = n.config().clone();
                c.zone_workers = workers.clone();
                c.endpoint_workers = endpoint_workers.clone();
                n.set_config(c);
                n.conntrack_mut().set_published(rules.clone());
            })
        });
    if let Err(e) = pushed {
        tracing::warn!("cannot update the uplink's routes: {e}");
    }
}
