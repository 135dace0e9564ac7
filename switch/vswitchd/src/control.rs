//! Request handling: applies control requests to the datapath and the configuration store.
//!
//! Every request is validated before anything changes; a mutation is applied to the datapath,
//! then saved; if saving fails it is rolled back, so the running switch and the state file
//! never disagree. Bridges and ports are handled here; a network request's work is done by
//! `network.rs` (which knows nothing of requests or the store) and recorded here. [`Switch`]
//! lives behind the daemon's lock and runs on blocking control threads (never on a worker,
//! never on the async reactor).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use xvs_ctl::protocol::{
    BridgeView, ConnView, ConntrackView, DropView, FdbEntryView, FdbView, NeighbourView,
    NetworkView, PoolView, PortCountersView, PortStatsView, PortTypeArg, PortView, PublishedView,
    Reply, Request, ShowView, StatsView, TraceStepView, TraceView, UplinkView, WorkerView,
    XdpModeArg,
};
use xvs_nat::NatStage;
use xvs_switch::counters::PortCounterSnapshot;
use xvs_switch::datapath::{Datapath, DatapathError};
use xvs_switch::fdb::FdbConfig;
use xvs_switch::port::{PortSpec, PortType, XdpMode};

use crate::config::{
    BridgeConf, EndpointPortType, NetworkConf, PortConf, State, Store, StoreError,
};
use crate::error::Error;
use crate::flow;
use crate::health::HealthChecks;
use crate::network::{self, ConnectArgs, CreateArgs, Networks};
use crate::uplink::{self, UplinkError};
use crate::validate::{self, Object};
use crate::vtep::{self, VtepError};
use crate::{publish, routing, service};

mod clustered;
pub use clustered::apply_directories;

/// The daemon's switch: configuration, store, datapath and the networks' runtime.
pub struct Switch {
    state: State,
    store: Store,
    dp: Datapath,
    /// Ports in the configuration that are not running, and why.
    port_errors: HashMap<String, String>,
    /// Gateways and DNS names of the networks.
    networks: Networks,
    /// The uplink while it runs.
    uplink: Option<uplink::Uplink>,
    /// Connection tracking limits.
    conntrack: uplink::ConntrackLimits,
    /// The services as the load balancer keeps them.
    services: service::Services,
    /// Health checks of their backends.
    health: HealthChecks,
    /// The cluster this host shares its overlays through, if it is in one.
    cluster: Option<crate::cluster::Cluster>,
}

/// Daemon options the switch needs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Where names unknown to a network are forwarded.
    pub dns_upstream: Option<SocketAddr>,
    /// Connection tracking limits.
    pub conntrack: uplink::ConntrackLimits,
    /// The cluster (`--cluster`), if this host is in one.
    pub cluster: Option<crate::cluster::Handle>,
}

fn fdb_config(
    base: FdbConfig,
    ageing: Option<u32>,
    capacity: Option<u32>,
    limit: Option<u32>,
) -> Result<FdbConfig, Error> {
    let mut c = base;
    if let Some(a) = ageing {
        if !(1..=1_000_000).contains(&a) {
            return Err(Error::Ageing(a));
        }
        c.ageing_secs = a;
    }
    if let Some(n) = capacity {
        if !(1..=1 << 24).contains(&n) {
            return Err(Error::MacCapacity(n));
        }
        c.capacity = n;
    }
    if let Some(n) = limit {
        if !(1..=1 << 24).contains(&n) {
            return Err(Error::PortMacLimit(n));
        }
        c.port_limit = n;
    }
    Ok(c)
}

fn spec_of(p: &PortConf) -> PortSpec {
    PortSpec {
        iface: p.iface.clone(),
        port_type: match p.port_type {
            PortTypeArg::Afxdp => PortType::Afxdp,
            PortTypeArg::Tap => PortType::Tap,
        },
        xdp_mode: match p.xdp_mode {
            None => XdpMode::Auto,
            Some(XdpModeArg::Native) => XdpMode::Native,
            Some(XdpModeArg::Generic) => XdpMode::Generic,
        },
        shared: None,
    }
}

fn counters_view(c: PortCounterSnapshot) -> PortCountersView {
    PortCountersView {
        rx_packets: c.rx_packets,
        rx_bytes: c.rx_bytes,
        rx_drops: c.rx_drops,
        tx_packets: c.tx_packets,
        tx_bytes: c.tx_bytes,
        tx_drops: c.tx_drops,
    }
}

impl Switch {
    /// A switch over `dp`, restoring what `store` holds. Ports that cannot be opened stay in
    /// the configuration with their error shown by `show` and are retried by [`Switch::retry`].
    pub fn restore(store: Store, mut dp: Datapath, options: Options) -> Result<Switch, Error> {
        let saved = store.load().map_err(Error::Load)?;
        let mut networks = Networks::start(options.dns_upstream)?;
        let mut port_errors = HashMap::new();
        for (name, br) in &saved.bridges {
            if let Err(e) = dp.add_bridge(name, br.fdb) {
                tracing::error!("cannot restore bridge {name}: {e}");
                continue;
            }
            for p in &br.ports {
                match dp.add_port(name, spec_of(p), p.vlan.unwrap_or(0)) {
                    Ok(info) => tracing::info!(
                        "restored port {} on {name} ({} {})",
                        p.iface,
                        info.port_type,
                        info.mode
                    ),
                    Err(e) => {
                        tracing::warn!("port {} on {name} not attached: {e}", p.iface);
                        port_errors.insert(p.iface.clone(), e.to_string());
                    }
                }
            }
        }
        // The uplink first: networks are placed on its worker.
        let mut running = None;
        if let Some(u) = &saved.uplink {
            match uplink::start(&mut dp, networks.gateway_mut(), u, options.conntrack) {
                Ok(r) => {
                    tracing::info!("restored the uplink on {} ({})", u.iface, u.ip);
                    running = Some(r);
                }
                Err(e) => {
                    tracing::warn!("uplink on {} not attached: {e}", u.iface);
                    port_errors.insert(u.iface.clone(), e.to_string());
                }
            }
        }
        let (restored, dropped) = networks.restore(&mut dp, &mut port_errors, &saved.networks);
        let mut services = service::Services::new(dp.worker_count() as u16);
        let kept_services = services.restore(&saved.services, &restored);
        let sw = Switch {
            state: State {
                bridges: saved.bridges,
                networks: restored,
                uplink: saved.uplink,
                vtep: saved.vtep,
                services: kept_services,
                ..State::default()
            },
            store,
            dp,
            port_errors,
            networks,
            uplink: running,
            conntrack: options.conntrack,
            services,
            health: HealthChecks::default(),
            cluster: options.cluster.map(|handle| crate::cluster::Cluster {
                handle,
                dir: Default::default(),
            }),
        };
        sw.refresh_routes();
        for (name, conf) in &sw.state.services {
            sw.push_service(name, conf);
        }
        if dropped && let Err(e) = sw.store.save(&sw.state) {
            tracing::error!("cannot save state after restore: {e}");
        }
        Ok(sw)
    }

    /// Runs the services' health checks that are due (often: a check is one message to the
    /// gateways' thread), and pushes services whose backends changed health.
    pub fn check_health(&mut self) {
        if self.state.services.values().all(|c| c.health.is_none()) {
            return;
        }
        let local = self
            .state
            .networks
            .iter()
            .flat_map(|(n, c)| c.endpoints.iter().map(move |e| (n.clone(), e.ip)))
            .collect();
        let changed = self.health.tick(
            self.networks.gateway(),
            &mut self.services,
            &self.state.services,
            &local,
            self.dp.now_ms(),
        );
        for name in changed {
            if let Some(conf) = self.state.services.get(&name) {
                self.push_service(&name, conf);
            }
        }
    }

    /// Retries configured ports that are not running (their interface may have appeared),
    /// and lets go of drained backends.
    pub fn retry(&mut self) {
        for name in self.services.reap(self.dp.now_ms()) {
            if let Some(conf) = self.state.services.get(&name) {
                self.push_service(&name, conf);
            }
        }
        if self.port_errors.is_empty() {
            return;
        }
        let pending: Vec<(String, PortConf)> = self
            .state
            .bridges
            .iter()
            .flat_map(|(b, c)| c.ports.iter().map(move |p| (b.clone(), p.clone())))
            .filter(|(_, p)| self.port_errors.contains_key(&p.iface))
            .collect();
        for (bridge, p) in pending {
            if let Ok(info) = self.dp.add_port(&bridge, spec_of(&p), p.vlan.unwrap_or(0)) {
                tracing::info!("port {} on {bridge} attached ({})", p.iface, info.mode);
                self.port_errors.remove(&p.iface);
            }
        }
    }

    /// Stops the gateways and the datapath (ports detached, endpoint veths kept).
    pub fn shutdown(&mut self) {
        self.networks.shutdown();
        self.dp.shutdown();
    }

    /// Pushes the routing snapshot (networks, endpoints, published ports, uplink) to the
    /// datapath after a change.
    fn refresh_routes(&self) {
        routing::refresh(&self.dp, &self.effective_state(), self.uplink.as_ref());
        self.publish_owned();
    }

    /// Saves the state; if that fails, runs `rollback` to undo the change just made.
    fn save_or_rollback(&mut self, rollback: impl FnOnce(&mut Self)) -> Result<(), StoreError> {
        if let Err(e) = self.store.save(&self.state) {
            rollback(self);
            return Err(e);
        }
        Ok(())
    }

    /// Handles one request: its reply, or why it was refused (the server sends the error's
    /// text to the client).
    pub fn handle(&mut self, req: Request) -> Result<Reply, Error> {
        match req {
            Request::Ping => Ok(Reply::success(&serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "workers": self.dp.worker_count(),
            }))),
            Request::AddBr {
                bridge,
                ageing_secs,
                mac_capacity,
                port_mac_limit,
            } => {
                validate::name(Object::Bridge, &bridge)?;
                if bridge.starts_with(network::BRIDGE_PREFIX) {
                    return Err(Error::ReservedBridgeName(bridge));
                }
                let fdb = fdb_config(
                    FdbConfig::default(),
                    ageing_secs,
                    mac_capacity,
                    port_mac_limit,
                )?;
                self.dp.add_bridge(&bridge, fdb)?;
                self.state.bridges.insert(
                    bridge.clone(),
                    BridgeConf {
                        fdb,
                        ports: Vec::new(),
                    },
                );
                self.save_or_rollback(|s| {
                    s.state.bridges.remove(&bridge);
                    let _ = s.dp.del_bridge(&bridge);
                })
                .map_err(Error::NotSaved)?;
                Ok(Reply::done())
            }
            Request::SetBr {
                bridge,
                ageing_secs,
                mac_capacity,
                port_mac_limit,
            } => {
                let old = self
                    .state
                    .bridges
                    .get(&bridge)
                    .ok_or_else(|| DatapathError::NoSuchBridge(bridge.clone()))?
                    .fdb;
                let fdb = fdb_config(old, ageing_secs, mac_capacity, port_mac_limit)?;
                self.dp.set_bridge(&bridge, fdb)?;
                if let Some(b) = self.state.bridges.get_mut(&bridge) {
                    b.fdb = fdb;
                }
                self.save_or_rollback(|s| {
                    if let Some(b) = s.state.bridges.get_mut(&bridge) {
                        b.fdb = old;
                    }
                    let _ = s.dp.set_bridge(&bridge, old);
                })
                .map_err(Error::NotSaved)?;
                Ok(Reply::done())
            }
            Request::DelBr { bridge } => {
                let conf = self
                    .state
                    .bridges
                    .get(&bridge)
                    .cloned()
                    .ok_or_else(|| DatapathError::NoSuchBridge(bridge.clone()))?;
                self.dp.del_bridge(&bridge)?;
                self.state.bridges.remove(&bridge);
                for p in &conf.ports {
                    self.port_errors.remove(&p.iface);
                }
                if let Err(source) = self.store.save(&self.state) {
                    tracing::error!("bridge {bridge} deleted but state not saved: {source}");
                    return Err(Error::BridgeDeletedNotSaved { bridge, source });
                }
                Ok(Reply::done())
            }
            Request::AddPort {
                bridge,
                iface,
                port_type,
                xdp_mode,
                vlan,
            } => {
                validate::ifname(&iface)?;
                if !self.state.bridges.contains_key(&bridge) {
                    return Err(DatapathError::NoSuchBridge(bridge).into());
                }
                if let Some((other, _)) = self
                    .state
                    .bridges
                    .iter()
                    .find(|(_, b)| b.ports.iter().any(|p| p.iface == iface))
                {
                    return Err(DatapathError::PortExists {
                        bridge: other.clone(),
                        port: iface,
                    }
                    .into());
                }
                if let Some(v) = vlan
                    && !(1..=4094).contains(&v)
                {
                    return Err(Error::Vlan(v));
                }
                let port_type = port_type.unwrap_or(PortTypeArg::Afxdp);
                if port_type == PortTypeArg::Tap && xdp_mode.is_some() {
                    return Err(Error::XdpModeOnTap);
                }
                let conf = PortConf {
                    iface: iface.clone(),
                    port_type,
                    xdp_mode,
                    vlan,
                };
                self.dp
                    .add_port(&bridge, spec_of(&conf), vlan.unwrap_or(0))?;
                if let Some(b) = self.state.bridges.get_mut(&bridge) {
                    b.ports.push(conf);
                }
                self.save_or_rollback(|s| {
                    if let Some(b) = s.state.bridges.get_mut(&bridge) {
                        b.ports.retain(|p| p.iface != iface);
                    }
                    let _ = s.dp.del_port(&bridge, &iface);
                })
                .map_err(Error::NotSaved)?;
                Ok(Reply::done())
            }
            Request::DelPort { bridge, iface } => {
                let br = self
                    .state
                    .bridges
                    .get(&bridge)
                    .ok_or_else(|| DatapathError::NoSuchBridge(bridge.clone()))?;
                if !br.ports.iter().any(|p| p.iface == iface) {
                    return Err(DatapathError::NoSuchPort {
                        bridge,
                        port: iface,
                    }
                    .into());
                }
                if self.port_errors.remove(&iface).is_none() {
                    self.dp.del_port(&bridge, &iface)?;
                }
                if let Some(b) = self.state.bridges.get_mut(&bridge) {
                    b.ports.retain(|p| p.iface != iface);
                }
                if let Err(source) = self.store.save(&self.state) {
                    return Err(Error::PortDeletedNotSaved {
                        port: iface,
                        source,
                    });
                }
                Ok(Reply::done())
            }
            Request::Show => Ok(Reply::success(&self.show()?)),
            Request::FdbShow { bridge } => {
                let rows = self.dp.fdb(&bridge)?;
                Ok(Reply::success(&FdbView {
                    bridge,
                    entries: rows
                        .into_iter()
                        .map(|r| FdbEntryView {
                            port: r.port,
                            ofport: r.ofport,
                            vlan: r.vlan,
                            mac: r.mac.to_string(),
                            age: r.age_secs,
                        })
                        .collect(),
                }))
            }
            Request::FdbFlush { bridge } => {
                self.dp.fdb_flush(&bridge)?;
                Ok(Reply::done())
            }
            Request::Stats => Ok(Reply::success(&self.stats()?)),
            Request::NetworkCreate {
                network,
                driver,
                subnet,
                gateway,
                internal,
                icc,
                mtu,
                vni,
                docker_id,
            } => self.network_create(
                &network,
                CreateArgs {
                    driver,
                    subnet,
                    gateway,
                    internal,
                    icc,
                    mtu,
                    vni,
                    uplink_mtu: self.uplink.as_ref().map(|u| u.mtu),
                    docker_id,
                },
            ),
            Request::NetworkLs => Ok(self.network_ls()),
            Request::VtepSet { local, port } => self.vtep_set(&local, port),
            Request::ServiceCreate {
                service,
                network,
                vip,
                port,
                scheduler,
                timeout,
                publish,
                health,
                interval,
            } => self.service_create(
                &service,
                service::CreateArgs {
                    network,
                    vip,
                    port,
                    scheduler,
                    timeout,
                    publish,
                    health,
                    interval,
                },
            ),
            Request::ServiceAddBackend {
                service,
                backend,
                weight,
            } => {
                let conf = self.service_conf(&service)?;
                let net = network::lookup(&self.effective_state().networks, &conf.network)?.clone();
                let next = self
                    .services
                    .add_backend(&service, &conf, &net, &backend, weight)?;
                self.cluster_backends(&service, &conf, &next)?;
                self.replace_service(&service, conf, next)
            }
            Request::ServiceRmBackend {
                service,
                backend,
                drain,
            } => {
                let conf = self.service_conf(&service)?;
                let now = self.dp.now_ms();
                let next = self
                    .services
                    .remove_backend(&service, &conf, &backend, drain, now)?;
                self.cluster_backends(&service, &conf, &next)?;
                self.replace_service(&service, conf, next)
            }
            Request::ServiceSetWeight {
                service,
                backend,
                weight,
            } => {
                let conf = self.service_conf(&service)?;
                let next = self
                    .services
                    .set_weight(&service, &conf, &backend, weight)?;
                self.cluster_backends(&service, &conf, &next)?;
                self.replace_service(&service, conf, next)
            }
            Request::ServiceLs => Ok(Reply::success(
                &self
                    .state
                    .services
                    .iter()
                    .map(|(n, c)| self.services.view(n, c))
                    .collect::<Vec<_>>(),
            )),
            Request::ServiceInspect { service } => {
                let conf = self.service_conf(&service)?;
                Ok(Reply::success(&self.services.view(&service, &conf)))
            }
            Request::ServiceRm { service } => self.service_rm(&service),
            Request::VtepShow => {
                let v = self.state.vtep.as_ref().ok_or(VtepError::NotSet)?;
                Ok(Reply::success(&vtep::view(
                    &self.dp,
                    &self.effective_state().networks,
                    v,
                    self.uplink.as_ref(),
                )))
            }
            Request::VtepPeerLs => Ok(Reply::success(&vtep::peers(
                &self.dp,
                &self.effective_state().networks,
            ))),
            Request::ClusterShow => Ok(Reply::success(&self.cluster_view()?)),
            Request::VtepPeerAdd { network, remote } => {
                let conf = vtep::overlay(&self.state.networks, &network)?;
                let next = vtep::peer_add(&network, conf, &remote, self.state.vtep.as_ref())?;
                self.replace_network(&network, next)
            }
            Request::VtepPeerDel { network, remote } => {
                let conf = vtep::overlay(&self.state.networks, &network)?;
                let next = vtep::peer_del(&network, conf, &remote)?;
                self.replace_network(&network, next)
            }
            Request::VtepFdbAdd {
                network,
                mac,
                remote,
                ip,
            } => {
                let conf = vtep::overlay(&self.state.networks, &network)?;
                let next = vtep::fdb_add(
                    &network,
                    conf,
                    &mac,
                    &remote,
                    ip.as_deref(),
                    self.state.vtep.as_ref(),
                )?;
                self.replace_network(&network, next)
            }
            Request::VtepFdbDel { network, mac } => {
                let conf = vtep::overlay(&self.state.networks, &network)?;
                let next = vtep::fdb_del(&network, conf, &mac)?;
                self.replace_network(&network, next)
            }
            Request::UplinkSet { iface, ip, gateway } => {
                self.uplink_set(&iface, &ip, gateway.as_deref())
            }
            Request::UplinkShow => {
                let conf = self.state.uplink.as_ref().ok_or(UplinkError::NotSet)?;
                Ok(Reply::success(&self.uplink_view(conf)))
            }
            Request::ConntrackShow => Ok(Reply::success(&self.conntrack_show()?)),
            Request::ConntrackFlush => {
                self.require_uplink()?;
                self.dp
                    .with_stage_each::<NatStage, _>(uplink::UPLINK_BRIDGE, |n, _| {
                        n.conntrack_mut().flush()
                    })?;
                Ok(Reply::done())
            }
            Request::ConntrackSetTimeout { state, seconds } => {
                self.require_uplink()?;
                let results = self
                    .dp
                    .with_stage_each::<NatStage, _>(uplink::UPLINK_BRIDGE, move |n, _| {
                        n.conntrack_mut().set_timeout(&state, seconds)
                    })?;
                for r in results {
                    r.map_err(Error::Timeout)?;
                }
                Ok(Reply::done())
            }
            Request::UplinkDel => self.uplink_del(),
            Request::NetworkInspect { network } => {
                let conf = network::lookup(&self.state.networks, &network)?;
                let mut view = self.networks.view(&network, conf);
                view.remote_endpoints = self.remote_endpoint_views(&network);
                Ok(Reply::success(&view))
            }
            Request::NetworkRm { network } => self.network_rm(&network),
            Request::NetworkConnect {
                network,
                sandbox,
                ip,
                name,
                aliases,
                ifname,
                publish,
                port_type,
                container_id,
                allow_spoofing,
            } => self.network_connect(
                &network,
                &sandbox,
                ConnectArgs {
                    ip,
                    name,
                    aliases,
                    ifname,
                    publish,
                    bindings: Vec::new(),
                    port_type,
                    container_id,
                    allow_spoofing,
                },
            ),
            Request::NetworkDisconnect { network, sandbox } => {
                self.network_disconnect(&network, &sandbox)
            }
            Request::Trace { bridge, flow } => {
                let f = flow::parse(&flow)?;
                let report = self.dp.trace(&bridge, &f.in_port, f.frame)?;
                Ok(Reply::success(&TraceView {
                    flow,
                    steps: report
                        .steps
                        .into_iter()
                        .map(|(stage, decision)| TraceStepView { stage, decision })
                        .collect(),
                    action: report.action,
                }))
            }
        }
    }

    fn uplink_set(&mut self, iface: &str, ip: &str, gateway: Option<&str>) -> Result<Reply, Error> {
        if let Some(u) = &self.state.uplink {
            return Err(UplinkError::Exists(u.iface.clone()).into());
        }
        let conf = uplink::configure(iface, ip, gateway)?;
        let running = uplink::start(
            &mut self.dp,
            self.networks.gateway_mut(),
            &conf,
            self.conntrack,
        )?;
        self.state.uplink = Some(conf.clone());
        self.save_or_rollback(|s| {
            s.state.uplink = None;
            uplink::stop(&mut s.dp, s.networks.gateway_mut());
        })
        .map_err(Error::UplinkNotSaved)?;
        self.uplink = Some(running);
        self.refresh_routes();
        Ok(Reply::success(&self.uplink_view(&conf)))
    }

    /// The configuration of service `name`.
    fn service_conf(&self, name: &str) -> Result<service::ServiceConf, Error> {
        self.state
            .services
            .get(name)
            .cloned()
            .ok_or_else(|| service::ServiceFault::NoSuchService(name.to_string()).into())
    }

    /// Every published host port and what has it (endpoints and services).
    fn published_in_use(&self) -> Vec<(publish::PortBinding, String)> {
        let mut v: Vec<(publish::PortBinding, String)> = self
            .state
            .networks
            .iter()
            .flat_map(|(n, c)| {
                c.endpoints.iter().flat_map(move |e| {
                    e.publish
                        .iter()
                        .map(move |b| (*b, format!("endpoint {} on network {n}", e.sandbox)))
                })
            })
            .collect();
        for (name, s) in &self.state.services {
            if let Some(b) = s.binding() {
                v.push((b, format!("service {name}")));
            }
        }
        v
    }

    /// Pushes service `name` to the datapath and the DNS.
    /// An endpoint at `ip` left `network`: it is no backend of the network's services any
    /// more (as a swarm task that ends); its connections are reset.
    fn forget_backend(&mut self, network: &str, ip: std::net::Ipv4Addr) {
        let now = self.dp.now_ms();
        let hit: Vec<(String, service::ServiceConf)> = self
            .state
            .services
            .iter()
            .filter(|(_, c)| c.network == network && c.backends.iter().any(|b| b.addr.ip() == ip))
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect();
        for (name, mut conf) in hit {
            let gone: Vec<String> = conf
                .backends
                .iter()
                .filter(|b| b.addr.ip() == ip)
                .map(|b| b.addr.to_string())
                .collect();
            for addr in gone {
                if let Some(c) = &self.cluster
                    && conf.cluster_revision.is_some()
                    && let Ok(a) = addr.parse()
                    && let Err(e) = c.handle.delete_backend(&name, a)
                {
                    tracing::warn!("cluster: backend {addr} of {name} stays in the directory: {e}");
                }
                match self
                    .services
                    .remove_backend(&name, &conf, &addr, false, now)
                {
                    Ok(next) => {
                        tracing::info!("service {name}: backend {addr} left network {network}");
                        conf = next;
                    }
                    Err(e) => tracing::warn!("service {name}: cannot drop backend {addr}: {e}"),
                }
            }
            self.push_service(&name, &conf);
            self.state.services.insert(name, conf);
        }
    }

    fn push_service(&self, name: &str, conf: &service::ServiceConf) {
        if let Ok(mut names) = self.networks.names().write() {
            self.services.push(&self.dp, &mut names, name, conf);
        }
    }

    fn service_create(
        &mut self,
        name: &str,
        mut args: service::CreateArgs,
    ) -> Result<Reply, Error> {
        let chose_vip = self.cluster_before_service(name, &mut args)?;
        let in_use = self.published_in_use();
        let (mut conf, pool) = self.services.create(
            &self.state.services,
            &self.state.networks,
            &in_use,
            name,
            args,
        )?;
        conf.vip_allocated |= chose_vip;
        match self.cluster_define_service(name, &conf) {
            Ok(rev) => conf.cluster_revision = rev,
            Err(e) => {
                self.services.remove(name);
                return Err(e);
            }
        }
        let network = conf.network.clone();
        let old_pool = self
            .state
            .networks
            .get_mut(&network)
            .map(|n| std::mem::replace(&mut n.pool, pool));
        self.state.services.insert(name.to_string(), conf.clone());
        self.save_or_rollback(|s| {
            s.state.services.remove(name);
            s.services.remove(name);
            if let (Some(n), Some(p)) = (s.state.networks.get_mut(&network), old_pool) {
                n.pool = p;
            }
        })
        .map_err(Error::ServiceNotSaved)?;
        self.push_service(name, &conf);
        self.refresh_routes();
        Ok(Reply::success(&self.services.view(name, &conf)))
    }

    /// Records service `name`'s new configuration `next` (its backends changed) and pushes
    /// it; if it cannot be saved, the service is made again from `old`.
    fn replace_service(
        &mut self,
        name: &str,
        old: service::ServiceConf,
        next: service::ServiceConf,
    ) -> Result<Reply, Error> {
        self.state.services.insert(name.to_string(), next.clone());
        if let Err(e) = self.store.save(&self.state) {
            self.state.services.insert(name.to_string(), old.clone());
            self.services.rebuild(name, &old);
            self.push_service(name, &old);
            return Err(Error::ServiceNotSaved(e));
        }
        self.push_service(name, &next);
        Ok(Reply::done())
    }

    fn service_rm(&mut self, name: &str) -> Result<Reply, Error> {
        let conf = self.service_conf(name)?;
        self.cluster_release_service(name, &conf)?;
        self.state.services.remove(name);
        if conf.vip_allocated
            && let Some(n) = self.state.networks.get_mut(&conf.network)
        {
            n.pool.release(conf.vip());
        }
        if let Err(e) = self.store.save(&self.state) {
            self.state.services.insert(name.to_string(), conf.clone());
            if let Some(n) = self.state.networks.get_mut(&conf.network)
                && conf.vip_allocated
            {
                let _ = n.pool.allocate(Some(conf.vip()));
            }
            return Err(Error::ServiceNotSaved(e));
        }
        if let Ok(mut names) = self.networks.names().write() {
            service::Services::unpush(&self.dp, &mut names, name, &conf);
        }
        self.services.remove(name);
        self.refresh_routes();
        Ok(Reply::done())
    }

    fn vtep_set(&mut self, local: &str, port: Option<u16>) -> Result<Reply, Error> {
        let conf = vtep::configure(local, port, self.state.uplink.as_ref())?;
        let old = self.state.vtep.replace(conf);
        self.save_or_rollback(|s| s.state.vtep = old)
            .map_err(Error::VtepNotSaved)?;
        self.refresh_routes();
        Ok(Reply::success(&vtep::view(
            &self.dp,
            &self.effective_state().networks,
            &conf,
            self.uplink.as_ref(),
        )))
    }

    /// Records network `name`'s new configuration `next` (peers or static entries changed)
    /// and tells the datapath; the old one stays if it cannot be saved.
    fn replace_network(&mut self, name: &str, next: NetworkConf) -> Result<Reply, Error> {
        let Some(old) = self.state.networks.insert(name.to_string(), next) else {
            return Err(network::NetworkError::NoSuchNetwork(name.to_string()).into());
        };
        self.save_or_rollback(|s| {
            s.state.networks.insert(name.to_string(), old);
        })
        .map_err(Error::VtepNotSaved)?;
        self.refresh_routes();
        Ok(Reply::done())
    }

    fn uplink_del(&mut self) -> Result<Reply, Error> {
        let conf = self.state.uplink.take().ok_or(UplinkError::NotSet)?;
        if let Err(e) = self.store.save(&self.state) {
            self.state.uplink = Some(conf);
            return Err(Error::UplinkNotSaved(e));
        }
        uplink::stop(&mut self.dp, self.networks.gateway_mut());
        self.uplink = None;
        self.port_errors.remove(&conf.iface);
        self.refresh_routes();
        Ok(Reply::done())
    }

    fn network_create(&mut self, name: &str, mut args: CreateArgs) -> Result<Reply, Error> {
        self.cluster_before_create(name, &mut args)?;
        let mut conf = self
            .networks
            .create(&mut self.dp, &self.state.networks, name, args)?;
        match self.cluster_define(name, &conf) {
            Ok(rev) => conf.cluster_revision = rev,
            Err(e) => {
                self.networks.stop(&mut self.dp, name);
                return Err(e);
            }
        }
        let vni = conf.vni;
        self.state.networks.insert(name.to_string(), conf);
        self.save_or_rollback(|s| {
            if let Some(c) = s.shared_overlay(name)
                && let Err(e) = c.handle.release_network(name, vni.unwrap_or(0))
            {
                tracing::warn!("cluster: network {name} stays defined in the cluster: {e}");
            }
            s.state.networks.remove(name);
            s.networks.stop(&mut s.dp, name);
        })
        .map_err(Error::NetworkNotSaved)?;
        self.refresh_routes();
        let conf = network::lookup(&self.state.networks, name)?;
        Ok(Reply::success(&self.networks.view(name, conf)))
    }

    fn network_rm(&mut self, name: &str) -> Result<Reply, Error> {
        let conf = network::lookup(&self.state.networks, name)?;
        let services: Vec<String> = self
            .state
            .services
            .iter()
            .filter(|(_, s)| s.network == name)
            .map(|(n, _)| n.clone())
            .collect();
        if !services.is_empty() {
            return Err(Error::NetworkHasServices {
                network: name.to_string(),
                services,
            });
        }
        self.cluster_undefine(name, conf)?;
        self.networks.remove(&mut self.dp, name, conf)?;
        self.state.networks.remove(name);
        self.refresh_routes();
        self.store
            .save(&self.state)
            .map_err(|source| Error::NetworkRemovedNotSaved {
                network: name.to_string(),
                source,
            })?;
        Ok(Reply::done())
    }

    fn network_connect(
        &mut self,
        network: &str,
        sandbox: &str,
        mut args: ConnectArgs,
    ) -> Result<Reply, Error> {
        let conf = network::lookup(&self.state.networks, network)?.clone();
        args.bindings = self.publish_bindings(network, &conf, &args.publish)?;
        let claimed = self.cluster_claim(network, &conf, sandbox, &mut args)?;
        let (ep, pool) = match network::connect(&mut self.dp, network, &conf, sandbox, args) {
            Ok(v) => v,
            Err(e) => {
                if let Some(ip) = claimed {
                    self.cluster_release(network, ip);
                }
                return Err(e.into());
            }
        };
        if let Some(n) = self.state.networks.get_mut(network) {
            n.pool = pool;
            n.endpoints.push(ep.clone());
        }
        self.save_or_rollback(|s| {
            if let Some(n) = s.state.networks.get_mut(network) {
                n.pool.release(ep.ip);
                n.endpoints.retain(|x| x.host_ifname != ep.host_ifname);
            }
            network::remove_endpoint(&mut s.dp, &mut s.port_errors, network, &ep);
            if claimed.is_some() {
                s.cluster_release(network, ep.ip);
            }
        })
        .map_err(Error::EndpointNotSaved)?;
        self.networks.register_names(network, &ep);
        if ep.port_type != EndpointPortType::HostVeth {
            network::update_resolv_conf(&self.state.networks, sandbox);
        }
        self.refresh_routes();
        Ok(Reply::success(&network::endpoint_view(network, &conf, &ep)))
    }

    /// The host ports `specs` get on `network`, beside every port already published.
    fn publish_bindings(
        &self,
        network: &str,
        conf: &NetworkConf,
        specs: &[String],
    ) -> Result<Vec<publish::PortBinding>, Error> {
        if specs.is_empty() {
            return Ok(Vec::new());
        }
        if conf.internal {
            return Err(Error::PublishInternal(network.to_string()));
        }
        let requests = specs
            .iter()
            .map(|s| publish::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        let in_use = self.published_in_use();
        Ok(publish::allocate(&requests, &in_use)?)
    }

    /// Refuses a conntrack verb without an uplink.
    fn require_uplink(&self) -> Result<(), Error> {
        if self.uplink.is_none() {
            return Err(UplinkError::NotSet.into());
        }
        Ok(())
    }

    /// Every worker's connections, as `conntrack/show` lists them.
    fn conntrack_show(&self) -> Result<ConntrackView, Error> {
        self.require_uplink()?;
        let per_worker = self
            .dp
            .with_stage_each::<NatStage, _>(uplink::UPLINK_BRIDGE, |n, now| {
                n.conntrack().entries(now).collect::<Vec<_>>()
            })?;
        let zone_names: HashMap<u16, String> = self
            .state
            .networks
            .keys()
            .filter_map(|n| Some((routing::zone_of(&self.dp, n)?, n.clone())))
            .collect();
        let tuple =
            |t: &xvs_nat::show::TupleView| format!("{}:{}->{}:{}", t.src, t.sport, t.dst, t.dport);
        let mut connections = Vec::new();
        for (w, entries) in per_worker.into_iter().enumerate() {
            for e in entries {
                connections.push(ConnView {
                    proto: e.proto.to_string(),
                    orig: tuple(&e.orig),
                    reply: tuple(&e.reply),
                    network: e.zone.and_then(|z| zone_names.get(&z).cloned()),
                    state: e.state.name().to_string(),
                    nat: serde_json::to_value(e.nat)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default(),
                    age_s: e.age_s,
                    timeout_s: e.timeout_s,
                    worker: w as u16,
                    line: e.to_string(),
                });
            }
        }
        Ok(ConntrackView { connections })
    }

    /// `uplink show`: the port, its published ports, neighbours and connections.
    fn uplink_view(&self, conf: &uplink::UplinkConf) -> UplinkView {
        let mut v = uplink::view(&self.dp, conf);
        let now = self.dp.now_ms();
        if let Some(u) = &self.uplink {
            v.mtu = u.mtu;
            v.neighbours = u
                .neighbours
                .entries()
                .into_iter()
                .map(|(ip, n)| NeighbourView {
                    ip: ip.to_string(),
                    mac: n.mac.to_string(),
                    age_s: now.saturating_sub(n.learned_ms) / 1000,
                })
                .collect();
            v.connections = self
                .dp
                .with_stage_each::<NatStage, _>(uplink::UPLINK_BRIDGE, |n, _| {
                    u64::from(n.conntrack().len())
                })
                .map(|v| v.iter().sum())
                .unwrap_or(0);
        }
        for (n, c) in &self.state.networks {
            for e in &c.endpoints {
                for b in &e.publish {
                    v.published.push(PublishedView {
                        // As `docker port` prints it (the zone plays no part).
                        mapping: routing::rule_of(b, e.ip, 0).to_string(),
                        network: n.clone(),
                        sandbox: e.sandbox.clone(),
                    });
                }
            }
        }
        v
    }

    fn network_disconnect(&mut self, network: &str, sandbox: &str) -> Result<Reply, Error> {
        let conf = network::lookup(&self.state.networks, network)?;
        let ep = network::endpoint_of(conf, network, sandbox)?;
        if self.shared_overlay(network).is_some() {
            self.cluster_release(network, ep.ip);
        }
        self.networks
            .disconnect(&mut self.dp, &mut self.port_errors, network, &ep);
        if let Some(n) = self.state.networks.get_mut(network) {
            n.pool.release(ep.ip);
            n.endpoints.retain(|x| x.host_ifname != ep.host_ifname);
        }
        if ep.port_type != EndpointPortType::HostVeth {
            network::update_resolv_conf(&self.state.networks, sandbox);
        }
        self.refresh_routes();
        self.forget_backend(network, ep.ip);
        self.store
            .save(&self.state)
            .map_err(Error::DisconnectedNotSaved)?;
        Ok(Reply::done())
    }

    fn network_ls(&self) -> Reply {
        let views: Vec<NetworkView> = self
            .state
            .networks
            .iter()
            .map(|(name, conf)| self.networks.view(name, conf))
            .collect();
        Reply::success(&views)
    }

    fn show(&self) -> Result<ShowView, DatapathError> {
        let status = self.dp.status()?;
        let by_name: BTreeMap<&str, _> = status.iter().map(|b| (b.name.as_str(), b)).collect();
        let mut bridges = Vec::new();
        for (name, conf) in &self.state.bridges {
            let st = by_name.get(name.as_str());
            let mut ports = Vec::new();
            for (i, p) in conf.ports.iter().enumerate() {
                let running = st.and_then(|b| b.ports.iter().find(|x| x.name == p.iface));
                ports.push(match running {
                    Some(r) => PortView {
                        name: p.iface.clone(),
                        ofport: r.ofport,
                        port_type: r.info.port_type.to_string(),
                        mode: r.info.mode.clone(),
                        vlan: p.vlan,
                        state: r.info.state(),
                        queues: r.info.queues,
                        worker: r.worker,
                        counters: counters_view(r.counters),
                    },
                    None => PortView {
                        name: p.iface.clone(),
                        ofport: 0,
                        port_type: match p.port_type {
                            PortTypeArg::Afxdp => "afxdp".into(),
                            PortTypeArg::Tap => "tap".into(),
                        },
                        mode: "-".into(),
                        vlan: p.vlan,
                        state: format!(
                            "error: {}",
                            self.port_errors
                                .get(&p.iface)
                                .map(String::as_str)
                                .unwrap_or("not attached")
                        ),
                        queues: 0,
                        worker: st.map(|b| b.worker).unwrap_or(0),
                        counters: PortCountersView::default(),
                    },
                });
                let _ = i;
            }
            bridges.push(BridgeView {
                name: name.clone(),
                ageing_secs: conf.fdb.ageing_secs,
                mac_capacity: conf.fdb.capacity,
                port_mac_limit: conf.fdb.port_limit,
                macs: st.map(|b| b.macs as u32).unwrap_or(0),
                worker: st.map(|b| b.worker).unwrap_or(0),
                spread: st.is_some_and(|b| b.spread),
                ports,
            });
        }
        for net in self.state.networks.keys() {
            let name = network::bridge_of(net);
            if let Some(b) = by_name.get(name.as_str()) {
                bridges.push(BridgeView {
                    name: name.clone(),
                    ageing_secs: b.config.ageing_secs,
                    mac_capacity: b.config.capacity,
                    port_mac_limit: b.config.port_limit,
                    macs: b.macs as u32,
                    worker: b.worker,
                    spread: b.spread,
                    ports: b
                        .ports
                        .iter()
                        .map(|r| PortView {
                            name: r.name.clone(),
                            ofport: r.ofport,
                            port_type: r.info.port_type.to_string(),
                            mode: r.info.mode.clone(),
                            vlan: None,
                            state: r.info.state(),
                            queues: r.info.queues,
                            worker: r.worker,
                            counters: counters_view(r.counters),
                        })
                        .collect(),
                });
            }
        }
        Ok(ShowView {
            workers: self.dp.worker_count(),
            bridges,
        })
    }

    fn stats(&self) -> Result<StatsView, DatapathError> {
        let status = self.dp.status()?;
        let mut ports = Vec::new();
        for b in &status {
            for p in &b.ports {
                let mut backend = BTreeMap::new();
                match p.info.port_type {
                    PortType::Afxdp => {
                        backend.insert("rx_ring_full".to_string(), p.backend.rx_ring_full);
                        backend.insert("fill_ring_empty".to_string(), p.backend.fill_empty);
                        backend.insert("invalid_descs".to_string(), p.backend.invalid_descs);
                        backend.insert("kernel_rx_dropped".to_string(), p.backend.rx_dropped);
                    }
                    PortType::Tap => {
                        backend.insert("rx_oversized".to_string(), p.backend.rx_oversized);
                        backend.insert("rx_errors".to_string(), p.backend.rx_errors);
                        backend.insert("tx_coalesced".to_string(), p.backend.tx_coalesced);
                        backend.insert("tx_super_frames".to_string(), p.backend.tx_super_frames);
                    }
                    PortType::Mem | PortType::Internal => {}
                }
                ports.push(PortStatsView {
                    bridge: b.name.clone(),
                    port: p.name.clone(),
                    counters: counters_view(p.counters),
                    backend,
                });
            }
        }
        let drops = self
            .dp
            .drops()
            .into_iter()
            .map(|(r, count)| DropView {
                stage: r.stage().to_string(),
                reason: r.name().to_string(),
                count,
                description: r.describe().to_string(),
            })
            .collect();
        let pools = self
            .dp
            .pools()?
            .into_iter()
            .zip(0..)
            .map(|(p, worker)| PoolView {
                worker,
                capacity: p.capacity as u64,
                free: p.free as u64,
                in_ports: p.in_ports as u64,
                in_stages: p.in_stages as u64,
                unaccounted: p.unaccounted,
            })
            .collect();
        let mut polled = vec![0u32; self.dp.worker_count() as usize];
        for b in &status {
            for p in &b.ports {
                if let Some(n) = polled.get_mut(p.worker as usize) {
                    *n += 1;
                }
            }
        }
        let workers = self
            .dp
            .worker_perf()
            .into_iter()
            .zip(0..)
            .map(|(p, worker)| {
                let total = p.busy_ns + p.idle_ns + p.sleep_ns;
                WorkerView {
                    worker,
                    ports: polled.get(worker as usize).copied().unwrap_or(0),
                    busy_ns: p.busy_ns,
                    idle_ns: p.idle_ns,
                    sleep_ns: p.sleep_ns,
                    frames: p.frames,
                    busy_passes: p.busy_passes,
                    ns_per_frame: p.busy_ns.checked_div(p.frames).unwrap_or(0),
                    frames_per_pass: p.frames.checked_div(p.busy_passes).unwrap_or(0),
                    busy_pct: (p.busy_ns.saturating_mul(100))
                        .checked_div(total)
                        .unwrap_or(0) as u32,
                }
            })
            .collect();
        Ok(StatsView {
            ports,
            drops,
            tunnels: vtep::peers(&self.dp, &self.state.networks),
            pools,
            workers,
        })
    }

    /// Prometheus text exposition of the counters.
    pub fn metrics(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "# TYPE xvs_port_packets_total counter");
        if let Ok(st) = self.stats() {
            for p in &st.ports {
                let c = &p.counters;
                for (dir, pk, by, dr) in [
                    ("rx", c.rx_packets, c.rx_bytes, c.rx_drops),
                    ("tx", c.tx_packets, c.tx_bytes, c.tx_drops),
                ] {
                    let labels = format!(
                        "bridge=\"{}\",port=\"{}\",direction=\"{dir}\"",
                        p.bridge, p.port
                    );
                    let _ = writeln!(out, "xvs_port_packets_total{{{labels}}} {pk}");
                    let _ = writeln!(out, "xvs_port_bytes_total{{{labels}}} {by}");
                    let _ = writeln!(out, "xvs_port_drops_total{{{labels}}} {dr}");
                }
            }
            let _ = writeln!(out, "# TYPE xvs_drops_total counter");
            for d in &st.drops {
                let _ = writeln!(
                    out,
                    "xvs_drops_total{{stage=\"{}\",reason=\"{}\"}} {}",
                    d.stage, d.reason, d.count
                );
            }
            let _ = writeln!(out, "# TYPE xvs_worker_seconds_total counter");
            for w in &st.workers {
                for (state, ns) in [
                    ("busy", w.busy_ns),
                    ("idle", w.idle_ns),
                    ("sleep", w.sleep_ns),
                ] {
                    let _ = writeln!(
                        out,
                        "xvs_worker_seconds_total{{worker=\"{}\",state=\"{state}\"}} {:.6}",
                        w.worker,
                        ns as f64 / 1e9
                    );
                }
            }
            let _ = writeln!(out, "# TYPE xvs_worker_frames_total counter");
            for w in &st.workers {
                let _ = writeln!(
                    out,
                    "xvs_worker_frames_total{{worker=\"{}\"}} {}",
                    w.worker, w.frames
                );
            }
            let _ = writeln!(out, "# TYPE xvs_pool_frames gauge");
            for p in &st.pools {
                for (state, n) in [
                    ("free", p.free as i64),
                    ("in_ports", p.in_ports as i64),
                    ("in_stages", p.in_stages as i64),
                    ("unaccounted", p.unaccounted),
                ] {
                    let _ = writeln!(
                        out,
                        "xvs_pool_frames{{worker=\"{}\",state=\"{state}\"}} {n}",
                        p.worker
                    );
                }
            }
        }
        out
    }
}

#[cfg(test)]
#[path = "tests/control.rs"]
mod tests;
