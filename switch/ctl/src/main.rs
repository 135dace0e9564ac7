//! xvsctl: the xvs control CLI. Bridges and ports in the style of `ovs-vsctl`/`ovs-appctl`,
//! networks in the style of `docker network`. Each verb is one request to xvsd; the reply is
//! printed for people, or as JSON with `--json`. Errors are one line on stderr and a non-zero
//! exit: 1 when xvsd refused or could not be reached, 2 for a malformed command line.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::de::DeserializeOwned;
use serde_json::Value;

use xvs_ctl::client::{Client, ClientError};
use xvs_ctl::protocol::{
    self, ClusterView, ConntrackView, EndpointView, FdbView, NetworkView, PortTypeArg, Request,
    ServiceView, ShowView, StatsView, TraceView, UplinkView, VtepPeerView, VtepView, XdpModeArg,
};

/// Control the xvs virtual switch daemon (xvsd).
#[derive(Parser, Debug)]
#[command(name = "xvsctl", version)]
struct Cli {
    /// xvsd's control socket [default: $XVS_SOCKET, else /run/xvs/xvsd.sock].
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<String>,
    /// Print the reply as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand, Debug)]
enum Verb {
    /// Create a bridge.
    #[command(name = "add-br")]
    AddBr {
        /// Bridge name.
        bridge: String,
        #[command(flatten)]
        opts: BridgeOpts,
    },
    /// Change a bridge's MAC ageing time or table limits.
    #[command(name = "set-br")]
    SetBr {
        /// Bridge name.
        bridge: String,
        #[command(flatten)]
        opts: BridgeOpts,
    },
    /// Delete a bridge and detach its ports.
    #[command(name = "del-br")]
    DelBr {
        /// Bridge name.
        bridge: String,
    },
    /// Attach an interface to a bridge.
    #[command(name = "add-port")]
    AddPort {
        /// Bridge name.
        bridge: String,
        /// Interface (an existing one for afxdp; created if missing for tap).
        iface: String,
        /// Port backend.
        #[arg(long = "type", value_enum, default_value = "afxdp")]
        port_type: PortTypeCli,
        /// XDP attach mode [default: native, falling back to generic].
        #[arg(long, value_enum)]
        xdp_mode: Option<XdpModeCli>,
        /// Access VLAN: untagged on the wire, its own learning and flooding domain.
        #[arg(long, value_name = "VID", value_parser = clap::value_parser!(u16).range(1..=4094))]
        vlan: Option<u16>,
    },
    /// Detach an interface from a bridge.
    #[command(name = "del-port")]
    DelPort {
        /// Bridge name.
        bridge: String,
        /// Interface name.
        iface: String,
    },
    /// Bridges, ports, backends, state and counters.
    Show,
    /// The MAC learning table of a bridge.
    #[command(name = "fdb/show")]
    FdbShow {
        /// Bridge name.
        bridge: String,
    },
    /// Forget every learned MAC of a bridge.
    #[command(name = "fdb/flush")]
    FdbFlush {
        /// Bridge name.
        bridge: String,
    },
    /// Per-port counters and per-reason drop counters.
    Stats {
        /// Also list drop reasons whose counter is zero.
        #[arg(long)]
        all: bool,
    },
    /// Show how a bridge would handle a flow (ofproto/trace syntax).
    Trace {
        /// Bridge name.
        bridge: String,
        /// in_port=P,dl_src=..,dl_dst=..[,udp|tcp|icmp],nw_src=..,nw_dst=..,tp_src=..,tp_dst=..
        flow: String,
    },
    /// Check that xvsd answers; prints its version.
    Ping,
    /// Docker-style networks.
    #[command(subcommand)]
    Network(NetworkVerb),
    /// xvs's own address on an interface shared with the host.
    #[command(subcommand)]
    Uplink(UplinkVerb),
    /// The local VXLAN tunnel endpoint of overlay networks, their peers and remote stations.
    #[command(subcommand)]
    Vtep(VtepVerb),
    /// Virtual IPs balanced over backends (IPVS / swarm services).
    #[command(subcommand)]
    Service(ServiceVerb),
    /// The hosts sharing overlay networks through etcd (`xvsd --cluster`).
    #[command(subcommand)]
    Cluster(ClusterVerb),
    /// Tracked connections (as ovs-appctl dpctl/dump-conntrack).
    #[command(name = "conntrack/show")]
    ConntrackShow,
    /// Forget every tracked connection.
    #[command(name = "conntrack/flush")]
    ConntrackFlush,
    /// Set a connection state's timeout.
    #[command(name = "conntrack/set-timeout")]
    ConntrackSetTimeout {
        /// tcp_syn_sent, tcp_established, tcp_fin_wait, tcp_time_wait, tcp_close, udp_first, udp, icmp, ...
        state: String,
        /// Seconds.
        seconds: u32,
    },
}

#[derive(Subcommand, Debug)]
enum UplinkVerb {
    /// Give xvs its own MAC and address on IFACE (the host keeps using it).
    Set {
        /// The interface.
        iface: String,
        /// xvs's address, A.B.C.D/N.
        #[arg(long, value_name = "CIDR")]
        ip: String,
        /// The next hop beyond the subnet.
        #[arg(long, value_name = "IP")]
        gateway: Option<String>,
    },
    /// Show the uplink.
    Show,
    /// Remove the uplink (the interface is left as it was found).
    Del,
}

#[derive(Subcommand, Debug)]
enum ClusterVerb {
    /// Show the hosts, leases, the last revision seen and the sync state.
    Show,
}

#[derive(Subcommand, Debug)]
enum VtepVerb {
    /// Set the local VTEP (on the uplink: its address).
    Set {
        /// The local VTEP address: the uplink's.
        #[arg(long, value_name = "IP")]
        local: String,
        /// The VTEPs' UDP port [default: 4789].
        #[arg(long, value_name = "PORT")]
        port: Option<u16>,
    },
    /// Show the VTEP, every overlay network's peers and remote stations.
    Show,
    /// Remote VTEPs of an overlay network (floods are copied to each).
    #[command(subcommand)]
    Peer(VtepPeerVerb),
    /// Static remote stations of an overlay network.
    #[command(subcommand)]
    Fdb(VtepFdbVerb),
}

#[derive(Subcommand, Debug)]
enum ServiceVerb {
    /// Create a service: a virtual IP and port on a network, balanced over backends.
    Create {
        /// The service's name (SVC and tasks.SVC resolve on the network).
        service: String,
        /// The network.
        #[arg(long, value_name = "NET")]
        network: String,
        /// The virtual IP [default: one from the network's IPAM].
        #[arg(long, value_name = "IP")]
        vip: Option<String>,
        /// PROTO/PORT[:TARGET], e.g. tcp/80:8080.
        #[arg(long, value_name = "PROTO/PORT[:TARGET]")]
        port: String,
        /// rr, wrr, lc or maglev [default: rr].
        #[arg(long)]
        scheduler: Option<String>,
        /// Idle timeout of its connections in seconds [default: 900 TCP, 300 UDP].
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
        /// A host port on the uplink's address that reaches the service.
        #[arg(long, value_name = "HOSTPORT")]
        publish: Option<u16>,
        /// Health check of the backends: tcp[:PORT].
        #[arg(long, value_name = "tcp[:PORT]")]
        health: Option<String>,
        /// Seconds between two checks of a backend [default: 5].
        #[arg(long, value_name = "S")]
        interval: Option<u32>,
    },
    /// Add a backend (an endpoint of the service's network).
    AddBackend {
        /// The service.
        service: String,
        /// IP[:PORT].
        backend: String,
        /// Its weight [default: 1].
        #[arg(long)]
        weight: Option<u32>,
    },
    /// Remove a backend: its connections are reset, or with --drain kept until they end.
    RmBackend {
        /// The service.
        service: String,
        /// IP[:PORT].
        backend: String,
        /// Keep its connections; send new ones elsewhere.
        #[arg(long)]
        drain: bool,
    },
    /// Change a backend's weight.
    SetWeight {
        /// The service.
        service: String,
        /// IP[:PORT].
        backend: String,
        /// The weight.
        weight: u32,
    },
    /// List the services.
    Ls,
    /// Show a service, its backends and their connections.
    Inspect {
        /// The service.
        service: String,
    },
    /// Remove a service (its connections are reset).
    Rm {
        /// The service.
        service: String,
    },
}

#[derive(Subcommand, Debug)]
enum VtepPeerVerb {
    /// Add a remote VTEP to an overlay network.
    Add {
        /// The overlay network.
        network: String,
        /// The remote VTEP's address.
        remote: String,
    },
    /// Remove a remote VTEP (and what was learnt behind it).
    Del {
        /// The overlay network.
        network: String,
        /// The remote VTEP's address.
        remote: String,
    },
    /// List every overlay network's VTEPs with their counters.
    Ls,
}

#[derive(Subcommand, Debug)]
enum VtepFdbVerb {
    /// Say that MAC lives behind REMOTE_IP (with --ip, ARP for IP is answered locally).
    Add {
        /// The overlay network.
        network: String,
        /// The station's MAC.
        mac: String,
        /// The VTEP it lives behind.
        remote: String,
        /// The station's address.
        #[arg(long, value_name = "IP")]
        ip: Option<String>,
    },
    /// Remove a static remote station.
    Del {
        /// The overlay network.
        network: String,
        /// The station's MAC.
        mac: String,
    },
}

#[derive(Args, Debug)]
struct BridgeOpts {
    /// MAC ageing time in seconds [default: 300].
    #[arg(long, value_name = "SECS")]
    ageing: Option<u32>,
    /// MAC table capacity of the bridge [default: 65536].
    #[arg(long, value_name = "N")]
    mac_capacity: Option<u32>,
    /// Learned MACs allowed per port [default: 1024].
    #[arg(long, value_name = "N")]
    port_mac_limit: Option<u32>,
}

#[derive(Subcommand, Debug)]
enum NetworkVerb {
    /// Create a network.
    Create {
        /// Network name.
        network: String,
        /// bridge or overlay.
        #[arg(long, value_parser = ["bridge", "overlay"])]
        driver: Option<String>,
        /// Subnet in CIDR form [default: a free /24 from 10.200.0.0/16].
        #[arg(long, value_name = "CIDR")]
        subnet: Option<String>,
        /// Gateway address [default: the subnet's first address].
        #[arg(long, value_name = "IP")]
        gateway: Option<String>,
        /// No traffic outside the network.
        #[arg(long)]
        internal: bool,
        /// Inter-container communication (--icc=false blocks it, the gateway excepted).
        #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
              require_equals = true, action = clap::ArgAction::Set)]
        icc: Option<bool>,
        /// MTU of the endpoints [default: 1500].
        #[arg(long, value_name = "N")]
        mtu: Option<u32>,
        /// VXLAN network identifier (overlay networks).
        #[arg(long, value_name = "N")]
        vni: Option<u32>,
    },
    /// List networks.
    Ls,
    /// Show a network and its endpoints (JSON).
    Inspect {
        /// Network name.
        network: String,
    },
    /// Remove a network without endpoints.
    Rm {
        /// Network name.
        network: String,
    },
    /// Join a sandbox (named netns or namespace file path) to a network.
    Connect {
        /// Network name.
        network: String,
        /// Named network namespace, or a path to a namespace file.
        sandbox: String,
        /// Static address.
        #[arg(long, value_name = "IP")]
        ip: Option<String>,
        /// DNS name of the endpoint.
        #[arg(long)]
        name: Option<String>,
        /// More DNS names (repeatable).
        #[arg(long = "alias", value_name = "ALIAS")]
        aliases: Vec<String>,
        /// Interface name inside the sandbox [default: eth0, or the next free ethN].
        #[arg(long, value_name = "IFNAME")]
        ifname: Option<String>,
        /// Published port, [HOSTIP:]HOSTPORT:PORT[/tcp|udp] (repeatable).
        #[arg(long, value_name = "SPEC")]
        publish: Vec<String>,
        /// Sandbox interface: veth (AF_XDP port) or tap.
        #[arg(long, value_parser = ["veth", "tap"])]
        port_type: Option<String>,
        /// Let the endpoint send as other MACs and addresses (port security off for it).
        #[arg(long)]
        allow_spoofing: bool,
    },
    /// Remove a sandbox from a network.
    Disconnect {
        /// Network name.
        network: String,
        /// Sandbox as given to connect.
        sandbox: String,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum PortTypeCli {
    Afxdp,
    Tap,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum XdpModeCli {
    Native,
    Generic,
}

/// What went wrong, as one line.
struct Failure(String);

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            let line = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid command line");
            eprintln!("xvsctl: {}", line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg)) => {
            eprintln!("xvsctl: {}", msg.lines().next().unwrap_or("failed"));
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let path = cli.socket.clone().unwrap_or_else(protocol::socket_path);
    let json = cli.json;
    let all_drops = matches!(cli.verb, Verb::Stats { all: true });
    let request = to_request(cli.verb);
    let mut client = Client::connect(&path)?;
    let result = client.request(&request)?;
    if json {
        println!("{}", pretty(&result));
        return Ok(());
    }
    print_human(&request, result, all_drops)
}

fn to_request(verb: Verb) -> Request {
    match verb {
        Verb::AddBr { bridge, opts } => Request::AddBr {
            bridge,
            ageing_secs: opts.ageing,
            mac_capacity: opts.mac_capacity,
            port_mac_limit: opts.port_mac_limit,
        },
        Verb::SetBr { bridge, opts } => Request::SetBr {
            bridge,
            ageing_secs: opts.ageing,
            mac_capacity: opts.mac_capacity,
            port_mac_limit: opts.port_mac_limit,
        },
        Verb::DelBr { bridge } => Request::DelBr { bridge },
        Verb::AddPort {
            bridge,
            iface,
            port_type,
            xdp_mode,
            vlan,
        } => Request::AddPort {
            bridge,
            iface,
            port_type: Some(match port_type {
                PortTypeCli::Afxdp => PortTypeArg::Afxdp,
                PortTypeCli::Tap => PortTypeArg::Tap,
            }),
            xdp_mode: xdp_mode.map(|m| match m {
                XdpModeCli::Native => XdpModeArg::Native,
                XdpModeCli::Generic => XdpModeArg::Generic,
            }),
            vlan,
        },
        Verb::DelPort { bridge, iface } => Request::DelPort { bridge, iface },
        Verb::Show => Request::Show,
        Verb::FdbShow { bridge } => Request::FdbShow { bridge },
        Verb::FdbFlush { bridge } => Request::FdbFlush { bridge },
        Verb::Stats { .. } => Request::Stats,
        Verb::Trace { bridge, flow } => Request::Trace { bridge, flow },
        Verb::Ping => Request::Ping,
        Verb::Uplink(u) => match u {
            UplinkVerb::Set { iface, ip, gateway } => Request::UplinkSet { iface, ip, gateway },
            UplinkVerb::Show => Request::UplinkShow,
            UplinkVerb::Del => Request::UplinkDel,
        },
        Verb::Cluster(ClusterVerb::Show) => Request::ClusterShow,
        Verb::Vtep(v) => match v {
            VtepVerb::Set { local, port } => Request::VtepSet { local, port },
            VtepVerb::Show => Request::VtepShow,
            VtepVerb::Peer(VtepPeerVerb::Add { network, remote }) => {
                Request::VtepPeerAdd { network, remote }
            }
            VtepVerb::Peer(VtepPeerVerb::Del { network, remote }) => {
                Request::VtepPeerDel { network, remote }
            }
            VtepVerb::Peer(VtepPeerVerb::Ls) => Request::VtepPeerLs,
            VtepVerb::Fdb(VtepFdbVerb::Add {
                network,
                mac,
                remote,
                ip,
            }) => Request::VtepFdbAdd {
                network,
                mac,
                remote,
                ip,
            },
            VtepVerb::Fdb(VtepFdbVerb::Del { network, mac }) => {
                Request::VtepFdbDel { network, mac }
            }
        },
        Verb::Service(v) => match v {
            ServiceVerb::Create {
                service,
                network,
                vip,
                port,
                scheduler,
                timeout,
                publish,
                health,
                interval,
            } => Request::ServiceCreate {
                service,
                network,
                vip,
                port,
                scheduler,
                timeout,
                publish,
                health,
                interval,
            },
            ServiceVerb::AddBackend {
                service,
                backend,
                weight,
            } => Request::ServiceAddBackend {
                service,
                backend,
                weight,
            },
            ServiceVerb::RmBackend {
                service,
                backend,
                drain,
            } => Request::ServiceRmBackend {
                service,
                backend,
                drain,
            },
            ServiceVerb::SetWeight {
                service,
                backend,
                weight,
            } => Request::ServiceSetWeight {
                service,
                backend,
                weight,
            },
            ServiceVerb::Ls => Request::ServiceLs,
            ServiceVerb::Inspect { service } => Request::ServiceInspect { service },
            ServiceVerb::Rm { service } => Request::ServiceRm { service },
        },
        Verb::ConntrackShow => Request::ConntrackShow,
        Verb::ConntrackFlush => Request::ConntrackFlush,
        Verb::ConntrackSetTimeout { state, seconds } => {
            Request::ConntrackSetTimeout { state, seconds }
        }
        Verb::Network(n) => match n {
            NetworkVerb::Create {
                network,
                driver,
                subnet,
                gateway,
                internal,
                icc,
                mtu,
                vni,
            } => Request::NetworkCreate {
                network,
                driver,
                subnet,
                gateway,
                internal,
                icc,
                mtu,
                vni,
                docker_id: None,
            },
            NetworkVerb::Ls => Request::NetworkLs,
            NetworkVerb::Inspect { network } => Request::NetworkInspect { network },
            NetworkVerb::Rm { network } => Request::NetworkRm { network },
            NetworkVerb::Connect {
                network,
                sandbox,
                ip,
                name,
                aliases,
                ifname,
                publish,
                port_type,
                allow_spoofing,
            } => Request::NetworkConnect {
                network,
                sandbox,
                ip,
                name,
                aliases,
                ifname,
                publish,
                port_type,
                container_id: None,
                allow_spoofing,
            },
            NetworkVerb::Disconnect { network, sandbox } => {
                Request::NetworkDisconnect { network, sandbox }
            }
        },
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

fn decode<T: DeserializeOwned>(v: Value) -> Result<T, Failure> {
    serde_json::from_value(v).map_err(|e| Failure(format!("xvsd sent an unexpected reply: {e}")))
}

/// Prints a reply for people. Verbs that only change state print nothing (as ovs-vsctl).
fn print_human(request: &Request, result: Value, all_drops: bool) -> Result<(), Failure> {
    match request {
        Request::Show => print_show(&decode::<ShowView>(result)?),
        Request::FdbShow { .. } => print_fdb(&decode::<FdbView>(result)?),
        Request::Stats => print_stats(&decode::<StatsView>(result)?, all_drops),
        Request::Trace { .. } => print_trace(&decode::<TraceView>(result)?),
        Request::Ping => {
            let version = result.get("version").and_then(Value::as_str).unwrap_or("?");
            let workers = result.get("workers").and_then(Value::as_u64).unwrap_or(0);
            println!("xvsd {version}: alive, {workers} workers");
        }
        Request::NetworkCreate { .. } => println!("{}", decode::<NetworkView>(result)?.name),
        Request::UplinkSet { .. } | Request::UplinkShow => {
            let u = decode::<UplinkView>(result)?;
            println!(
                "{}: {} mac {} gateway {} ({}, {}) rx {} tx {}",
                u.iface,
                u.ip,
                u.mac,
                u.gateway.as_deref().unwrap_or("none"),
                u.mode.as_deref().unwrap_or("not attached"),
                u.state,
                u.rx_packets,
                u.tx_packets
            );
            println!("    mtu {}, {} connections tracked", u.mtu, u.connections);
            for p in &u.published {
                println!(
                    "    published {} ({} on {})",
                    p.mapping, p.sandbox, p.network
                );
            }
            for n in &u.neighbours {
                println!("    neighbour {} at {} ({}s ago)", n.ip, n.mac, n.age_s);
            }
        }
        Request::VtepSet { .. } | Request::VtepShow => print_vtep(&decode::<VtepView>(result)?),
        Request::ClusterShow => print_cluster(&decode::<ClusterView>(result)?),
        Request::ServiceCreate { .. } => println!("{}", decode::<ServiceView>(result)?.name),
        Request::ServiceLs => print_services(&decode::<Vec<ServiceView>>(result)?),
        Request::ServiceInspect { .. } => print_service(&decode::<ServiceView>(result)?),
        Request::VtepPeerLs => {
            for p in decode::<Vec<VtepPeerView>>(result)? {
                println!("{}", peer_line(&p));
            }
        }
        Request::ConntrackShow => {
            for c in decode::<ConntrackView>(result)?.connections {
                println!("{}", c.line);
            }
        }
        Request::NetworkLs => print_networks(&decode::<Vec<NetworkView>>(result)?),
        // As `docker network inspect`: JSON is the human format too.
        Request::NetworkInspect { .. } => println!("{}", pretty(&result)),
        Request::NetworkConnect { .. } => {
            let ep = decode::<EndpointView>(result)?;
            println!(
                "{} joined {}: {} {} gateway {} (port {}, {})",
                ep.sandbox, ep.network, ep.ifname, ep.address, ep.gateway, ep.port, ep.port_type
            );
        }
        _ => {
            if !result.is_null() {
                println!("{}", pretty(&result));
            }
        }
    }
    Ok(())
}

fn print_services(v: &[ServiceView]) {
    println!(
        "{:<20} {:<16} {:<16} {:<16} {:<8} {:>8} {:>8}",
        "NAME", "NETWORK", "VIP", "PORT", "SCHED", "BACKENDS", "ACTIVE"
    );
    for s in v {
        println!(
            "{:<20} {:<16} {:<16} {:<16} {:<8} {:>8} {:>8}",
            s.name,
            s.network,
            s.vip,
            s.port,
            s.scheduler,
            s.backends.len(),
            s.backends.iter().map(|b| b.active).sum::<u64>()
        );
    }
}

/// One service as `ipvsadm -Ln` shows a virtual server: its line, then its backends.
fn print_service(s: &ServiceView) {
    let mut line = format!(
        "service {} on {}: {} {} {} timeout {}s",
        s.name, s.network, s.vip, s.port, s.scheduler, s.timeout_s
    );
    if let Some(p) = s.publish {
        line.push_str(&format!(", published on uplink port {p}"));
    }
    if let Some(h) = &s.health {
        line.push_str(&format!(", health {h}"));
    }
    println!("{line}");
    println!(
        "  {:<22} {:>6} {:<9} {:<6} {:>8} {:>8}",
        "BACKEND", "WEIGHT", "STATE", "HEALTH", "ACTIVE", "TOTAL"
    );
    for b in &s.backends {
        println!(
            "  {:<22} {:>6} {:<9} {:<6} {:>8} {:>8}",
            b.addr, b.weight, b.state, b.health, b.active, b.total
        );
    }
}

fn peer_line(p: &VtepPeerView) -> String {
    format!(
        "{} vni {} {} {}: tx {} rx {}",
        p.network,
        p.vni,
        if p.configured { "peer" } else { "vtep" },
        p.remote,
        p.tx_packets,
        p.rx_packets
    )
}

fn print_cluster(c: &ClusterView) {
    println!(
        "host {} in etcd {} (prefix {}): {} for {}s, revision {}, lease {:x} ttl {}s",
        c.host_id,
        c.etcd.join(","),
        c.prefix,
        c.state,
        c.since_s,
        c.revision,
        c.lease_id,
        c.lease_ttl_s
    );
    if let Some(e) = &c.error {
        println!("    last error: {e}");
    }
    println!(
        "    {} sessions, {} events, {} bad records",
        c.sessions, c.events, c.bad_records
    );
    for h in &c.hosts {
        println!(
            "    host {}{}: vtep {}, lease {:x}, {} endpoints",
            h.host_id,
            if h.local { " (this one)" } else { "" },
            h.vtep.as_deref().unwrap_or("none"),
            h.lease_id,
            h.endpoints
        );
    }
    for n in &c.networks {
        println!("    network {n}");
    }
    for x in &c.conflicts {
        println!("    conflict: {x}");
    }
}

fn print_vtep(v: &VtepView) {
    println!("vtep {}:{} ({})", v.local, v.port, v.state);
    for n in &v.networks {
        println!("    network {} vni {} mtu {}", n.network, n.vni, n.mtu);
        for p in &n.peers {
            println!("        {}", peer_line(p));
        }
        for e in &n.fdb {
            let ip =
                e.ip.as_deref()
                    .map(|i| format!(" ip {i}"))
                    .unwrap_or_default();
            if e.is_static {
                println!("        {} at {}{ip} (static)", e.mac, e.remote);
            } else {
                println!("        {} at {} (learnt, {}s)", e.mac, e.remote, e.age_s);
            }
        }
    }
}

fn print_show(v: &ShowView) {
    println!("xvsd: {} workers", v.workers);
    for b in &v.bridges {
        println!("    Bridge {}", b.name);
        let runs = if b.spread {
            format!("every worker (ports spread, home worker {})", b.worker)
        } else {
            format!("worker {}", b.worker)
        };
        println!(
            "        runs on {runs}, macs {}/{}, port_mac_limit {}, ageing {}s",
            b.macs, b.mac_capacity, b.port_mac_limit, b.ageing_secs
        );
        for p in &b.ports {
            let vlan = p.vlan.map(|v| format!(", tag {v}")).unwrap_or_default();
            println!(
                "        Port {} (ofport {}): type {}, mode {}, queues {}{}, worker {}, {}",
                p.name, p.ofport, p.port_type, p.mode, p.queues, vlan, p.worker, p.state
            );
            let c = &p.counters;
            println!(
                "            rx {} pkts {} bytes {} drops; tx {} pkts {} bytes {} drops",
                c.rx_packets, c.rx_bytes, c.rx_drops, c.tx_packets, c.tx_bytes, c.tx_drops
            );
        }
    }
}

fn print_fdb(v: &FdbView) {
    println!(" port  VLAN  MAC                Age");
    for e in &v.entries {
        println!("{:>5}  {:>4}  {}  {:>4}", e.ofport, e.vlan, e.mac, e.age);
    }
}

fn print_stats(v: &StatsView, all: bool) {
    println!(
        "{:<16} {:<16} {:>12} {:>14} {:>10} {:>12} {:>14} {:>10}",
        "BRIDGE", "PORT", "RX_PKTS", "RX_BYTES", "RX_DROPS", "TX_PKTS", "TX_BYTES", "TX_DROPS"
    );
    for p in &v.ports {
        let c = &p.counters;
        println!(
            "{:<16} {:<16} {:>12} {:>14} {:>10} {:>12} {:>14} {:>10}",
            p.bridge,
            p.port,
            c.rx_packets,
            c.rx_bytes,
            c.rx_drops,
            c.tx_packets,
            c.tx_bytes,
            c.tx_drops
        );
    }
    if !v.tunnels.is_empty() {
        println!();
        println!(
            "{:<16} {:>9} {:<16} {:>12} {:>12}",
            "NETWORK", "VNI", "VTEP", "TX_PKTS", "RX_PKTS"
        );
        for t in &v.tunnels {
            println!(
                "{:<16} {:>9} {:<16} {:>12} {:>12}",
                t.network, t.vni, t.remote, t.tx_packets, t.rx_packets
            );
        }
    }
    if !v.workers.is_empty() {
        println!();
        println!(
            "{:<8} {:>6} {:>8} {:>8} {:>8} {:>14} {:>12} {:>10}",
            "WORKER", "PORTS", "BUSY_%", "BUSY_S", "IDLE_S", "FRAMES", "NS/FRAME", "FR/PASS"
        );
        for w in &v.workers {
            println!(
                "{:<8} {:>6} {:>8} {:>8.2} {:>8.2} {:>14} {:>12} {:>10}",
                format!("worker{}", w.worker),
                w.ports,
                w.busy_pct,
                w.busy_ns as f64 / 1e9,
                w.idle_ns as f64 / 1e9,
                w.frames,
                w.ns_per_frame,
                w.frames_per_pass
            );
        }
    }
    if !v.pools.is_empty() {
        println!();
        println!(
            "{:<8} {:>10} {:>10} {:>10} {:>10} {:>12}",
            "POOL", "FRAMES", "FREE", "IN_PORTS", "IN_STAGES", "UNACCOUNTED"
        );
        for p in &v.pools {
            println!(
                "{:<8} {:>10} {:>10} {:>10} {:>10} {:>12}",
                format!("worker{}", p.worker),
                p.capacity,
                p.free,
                p.in_ports,
                p.in_stages,
                p.unaccounted
            );
        }
    }
    let shown: Vec<_> = v.drops.iter().filter(|d| all || d.count > 0).collect();
    println!();
    if shown.is_empty() {
        println!("drops: none");
        return;
    }
    println!("{:<28} {:>12}  MEANING", "DROP_REASON", "COUNT");
    let mut stage = None;
    for d in shown {
        if stage != Some(&d.stage) {
            println!("{}:", d.stage);
            stage = Some(&d.stage);
        }
        println!("  {:<26} {:>12}  {}", d.reason, d.count, d.description);
    }
}

fn print_trace(v: &TraceView) {
    println!("Flow: {}", v.flow);
    for s in &v.steps {
        println!("{:>10}: {}", s.stage, s.decision);
    }
    println!("Final action: {}", v.action);
}

/// A Docker ID as `docker network ls` prints it: its first 12 characters.
fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn print_networks(v: &[NetworkView]) {
    println!(
        "{:<20} {:<8} {:<18} {:<15} {:>9}  FLAGS",
        "NAME", "DRIVER", "SUBNET", "GATEWAY", "ENDPOINTS"
    );
    for n in v {
        let mut flags = Vec::new();
        if n.internal {
            flags.push("internal");
        }
        if !n.icc {
            flags.push("icc=false");
        }
        let docker = n
            .docker_id
            .as_ref()
            .map(|id| format!("docker={}", short_id(id)));
        flags.extend(docker.as_deref());
        println!(
            "{:<20} {:<8} {:<18} {:<15} {:>9}  {}",
            n.name,
            n.driver,
            n.subnet,
            n.gateway,
            n.endpoints.len(),
            flags.join(",")
        );
    }
}
