//! The control protocol: one JSON object per line over a Unix socket (mode 0600).
//!
//! A client writes one [`Request`] per line and reads one [`Reply`] per line. Every request
//! gets a reply; an error reply names what was wrong and leaves the daemon's state untouched.
//! Requests larger than [`MAX_REQUEST_BYTES`] are refused, and a client that sends nothing
//! for [`IDLE_TIMEOUT_SECS`] is disconnected.

use serde::{Deserialize, Serialize};

/// Default control socket path.
pub const DEFAULT_SOCKET: &str = "/run/xvs/xvsd.sock";
/// Environment variable overriding the socket path for both xvsd and xvsctl.
pub const SOCKET_ENV: &str = "XVS_SOCKET";
/// Largest request line accepted.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Seconds a connection may stay silent before the daemon closes it.
pub const IDLE_TIMEOUT_SECS: u64 = 10;

/// The socket path: `$XVS_SOCKET`, else the default.
pub fn socket_path() -> String {
    std::env::var(SOCKET_ENV).unwrap_or_else(|_| DEFAULT_SOCKET.to_string())
}

/// Port backend as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortTypeArg {
    /// AF_XDP socket on an existing interface.
    Afxdp,
    /// TAP device created (or opened) by xvsd.
    Tap,
}

/// XDP attach mode as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeArg {
    /// Native (driver) mode only.
    Native,
    /// Generic (SKB) mode only.
    Generic,
}

/// A request to xvsd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// `add-br BR`
    AddBr {
        /// Bridge name.
        bridge: String,
        /// MAC ageing time in seconds (default 300).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ageing_secs: Option<u32>,
        /// Bridge MAC table capacity (default 65536).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mac_capacity: Option<u32>,
        /// Per-port learned MAC limit (default 1024).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port_mac_limit: Option<u32>,
    },
    /// `set-br BR` — change a bridge's ageing time or limits.
    SetBr {
        /// Bridge name.
        bridge: String,
        /// MAC ageing time in seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ageing_secs: Option<u32>,
        /// Bridge MAC table capacity.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mac_capacity: Option<u32>,
        /// Per-port learned MAC limit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port_mac_limit: Option<u32>,
    },
    /// `del-br BR`
    DelBr {
        /// Bridge name.
        bridge: String,
    },
    /// `add-port BR IFACE [--type] [--xdp-mode] [--vlan]`
    AddPort {
        /// Bridge name.
        bridge: String,
        /// Interface name.
        iface: String,
        /// Backend (default afxdp).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port_type: Option<PortTypeArg>,
        /// XDP mode (default: native, falling back to generic).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        xdp_mode: Option<XdpModeArg>,
        /// Access VLAN (1..=4094); none = the untagged domain.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vlan: Option<u16>,
    },
    /// `del-port BR IFACE`
    DelPort {
        /// Bridge name.
        bridge: String,
        /// Interface name.
        iface: String,
    },
    /// `show`
    Show,
    /// `fdb/show BR`
    FdbShow {
        /// Bridge name.
        bridge: String,
    },
    /// `fdb/flush BR`
    FdbFlush {
        /// Bridge name.
        bridge: String,
    },
    /// `stats`
    Stats,
    /// `trace BR FLOW`
    Trace {
        /// Bridge name.
        bridge: String,
        /// Flow in ofproto/trace syntax.
        flow: String,
    },
    /// `network create NET ...`
    NetworkCreate {
        /// Network name.
        network: String,
        /// `bridge` (default) or `overlay`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        driver: Option<String>,
        /// Subnet in CIDR form; default a free /24 from 10.200.0.0/16.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subnet: Option<String>,
        /// Gateway address; default the subnet's first host.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gateway: Option<String>,
        /// No traffic outside the network.
        #[serde(default)]
        internal: bool,
        /// Inter-container communication (default true).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        icc: Option<bool>,
        /// Endpoint MTU (default 1500).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mtu: Option<u32>,
        /// VXLAN network identifier (overlay networks).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vni: Option<u32>,
        /// The Docker network ID, when Docker asks for the network through the plugin.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        docker_id: Option<String>,
    },
    /// `network ls`
    NetworkLs,
    /// `network inspect NET`
    NetworkInspect {
        /// Network name.
        network: String,
    },
    /// `network rm NET`
    NetworkRm {
        /// Network name.
        network: String,
    },
    /// `network connect NET SANDBOX ...`
    NetworkConnect {
        /// Network name.
        network: String,
        /// Named network namespace, or a path to a namespace file.
        sandbox: String,
        /// Static address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip: Option<String>,
        /// DNS name of the endpoint.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// More DNS names.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        aliases: Vec<String>,
        /// Interface name inside the sandbox (default eth0, or the next free ethN).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ifname: Option<String>,
        /// Published ports, `[HOSTIP:]HOSTPORT:PORT[/tcp|udp]`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        publish: Vec<String>,
        /// `veth` (AF_XDP), `tap`, or `host-veth` (a veth left in xvsd's namespace for a
        /// container runtime to move: Docker's remote driver).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port_type: Option<String>,
        /// The container runtime's ID of the container (CNI_CONTAINERID), kept with the
        /// endpoint so the runtime finds it again once the namespace is gone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        container_id: Option<String>,
        /// Let the endpoint send as other MACs and addresses (a router, a VPN gateway):
        /// port security off for it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        allow_spoofing: bool,
    },
    /// `network disconnect NET SANDBOX`
    NetworkDisconnect {
        /// Network name.
        network: String,
        /// Sandbox as given to connect.
        sandbox: String,
    },
    /// `uplink set IFACE --ip CIDR [--gateway IP]`
    UplinkSet {
        /// The interface shared with the host.
        iface: String,
        /// xvs's address on it, `A.B.C.D/N`.
        ip: String,
        /// The next hop beyond the subnet.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gateway: Option<String>,
    },
    /// `uplink show`
    UplinkShow,
    /// `uplink del`
    UplinkDel,
    /// `conntrack/show`
    ConntrackShow,
    /// `conntrack/flush`
    ConntrackFlush,
    /// `conntrack/set-timeout STATE SECONDS`
    ConntrackSetTimeout {
        /// The state's timeout name (`tcp_established`, `udp`, `icmp`, ...).
        state: String,
        /// Seconds.
        seconds: u32,
    },
    /// `vtep set --local IP [--port N]`
    VtepSet {
        /// The local VTEP address (the uplink's).
        local: String,
        /// The VTEPs' UDP port (4789 when not given).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
    },
    /// `vtep show`
    VtepShow,
    /// `cluster show`
    ClusterShow,
    /// `vtep peer add NET REMOTE_IP`
    VtepPeerAdd {
        /// The overlay network.
        network: String,
        /// The remote VTEP.
        remote: String,
    },
    /// `vtep peer del NET REMOTE_IP`
    VtepPeerDel {
        /// The overlay network.
        network: String,
        /// The remote VTEP.
        remote: String,
    },
    /// `vtep peer ls`
    VtepPeerLs,
    /// `vtep fdb add NET MAC REMOTE_IP [--ip IP]`
    VtepFdbAdd {
        /// The overlay network.
        network: String,
        /// The remote station's MAC.
        mac: String,
        /// The VTEP it lives behind.
        remote: String,
        /// Its IPv4 address (ARP for it is then answered locally).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip: Option<String>,
    },
    /// `vtep fdb del NET MAC`
    VtepFdbDel {
        /// The overlay network.
        network: String,
        /// The remote station's MAC.
        mac: String,
    },
    /// `service create SVC --network NET --port PROTO/PORT[:TARGET] ...`
    ServiceCreate {
        /// The service's name (its DNS name on the network).
        service: String,
        /// The network its virtual IP and backends are on.
        network: String,
        /// The virtual IP (from the network's IPAM when not given).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vip: Option<String>,
        /// `PROTO/PORT[:TARGET]`.
        port: String,
        /// rr, wrr, lc or maglev.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scheduler: Option<String>,
        /// Idle timeout of its connections, in seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<u64>,
        /// A host port on the uplink's address that reaches the service (the routing mesh).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        publish: Option<u16>,
        /// `tcp[:PORT]`: the backends' health check.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        health: Option<String>,
        /// Seconds between two health checks of a backend.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interval: Option<u32>,
    },
    /// `service add-backend SVC IP[:PORT] [--weight W]`
    ServiceAddBackend {
        /// The service.
        service: String,
        /// `IP[:PORT]`.
        backend: String,
        /// Its weight (1 when not given).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        weight: Option<u32>,
    },
    /// `service rm-backend SVC IP[:PORT] [--drain]`
    ServiceRmBackend {
        /// The service.
        service: String,
        /// `IP[:PORT]`.
        backend: String,
        /// Keep its connections, send new ones elsewhere.
        #[serde(default)]
        drain: bool,
    },
    /// `service set-weight SVC IP[:PORT] W`
    ServiceSetWeight {
        /// The service.
        service: String,
        /// `IP[:PORT]`.
        backend: String,
        /// The new weight.
        weight: u32,
    },
    /// `service ls`
    ServiceLs,
    /// `service inspect SVC`
    ServiceInspect {
        /// The service.
        service: String,
    },
    /// `service rm SVC`
    ServiceRm {
        /// The service.
        service: String,
    },
    /// Liveness check; replies with the daemon's version.
    Ping,
}

/// A reply from xvsd: `{"ok":true,"result":...}` or `{"ok":false,"error":"..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the request succeeded.
    pub ok: bool,
    /// What went wrong, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The result, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

impl Reply {
    /// A success carrying `result`.
    pub fn success<T: Serialize>(result: &T) -> Reply {
        match serde_json::to_value(result) {
            Ok(v) => Reply {
                ok: true,
                error: None,
                result: Some(v),
            },
            Err(e) => Reply::failure(format!("cannot encode reply: {e}")),
        }
    }

    /// A success with nothing to say.
    pub fn done() -> Reply {
        Reply {
            ok: true,
            error: None,
            result: None,
        }
    }

    /// A failure.
    pub fn failure(error: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            error: Some(error.into()),
            result: None,
        }
    }
}

/// Traffic counters of a port.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortCountersView {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames received and dropped.
    pub rx_drops: u64,
    /// Frames transmitted.
    pub tx_packets: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Frames not transmitted.
    pub tx_drops: u64,
}

/// One port in `show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortView {
    /// Interface name.
    pub name: String,
    /// Port number on its bridge (as OVS's ofport).
    pub ofport: u32,
    /// Backend: afxdp, tap.
    pub port_type: String,
    /// Mode in use: native/generic for AF_XDP, tap.
    pub mode: String,
    /// Access VLAN, if any.
    pub vlan: Option<u16>,
    /// `up`, or why it is not (`missing: ...`, `error: ...`).
    pub state: String,
    /// Queues bound.
    pub queues: u32,
    /// Worker thread that polls the port.
    pub worker: u32,
    /// Counters.
    pub counters: PortCountersView,
}

/// One bridge in `show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeView {
    /// Bridge name.
    pub name: String,
    /// MAC ageing time in seconds.
    pub ageing_secs: u32,
    /// MAC table capacity.
    pub mac_capacity: u32,
    /// Per-port learned-MAC limit.
    pub port_mac_limit: u32,
    /// MACs currently learned.
    pub macs: u32,
    /// Worker that runs the bridge (a spread bridge's home: the one polling its ports that
    /// only one thread can drive).
    pub worker: u32,
    /// Every worker runs the bridge and its ports are spread over them (a network's).
    #[serde(default)]
    pub spread: bool,
    /// Ports, in ofport order.
    pub ports: Vec<PortView>,
}

/// Reply to `show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShowView {
    /// Worker threads.
    pub workers: u32,
    /// Bridges, by name.
    pub bridges: Vec<BridgeView>,
}

/// One learned MAC in `fdb/show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbEntryView {
    /// Port name.
    pub port: String,
    /// Port number.
    pub ofport: u32,
    /// VLAN (0 = untagged domain).
    pub vlan: u16,
    /// MAC, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Seconds since last seen.
    pub age: u64,
}

/// Reply to `fdb/show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbView {
    /// Bridge name.
    pub bridge: String,
    /// Entries, by port then VLAN then MAC.
    pub entries: Vec<FdbEntryView>,
}

/// One port's line in `stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStatsView {
    /// Bridge name.
    pub bridge: String,
    /// Port name.
    pub port: String,
    /// Counters.
    #[serde(flatten)]
    pub counters: PortCountersView,
    /// Kernel-side counters (AF_XDP ring statistics), when the backend has them.
    pub backend: std::collections::BTreeMap<String, u64>,
}

/// One drop reason's counter in `stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropView {
    /// The stage that owns the reason (`classify`, `l2`, `output`, ...).
    #[serde(default)]
    pub stage: String,
    /// Counter name.
    pub reason: String,
    /// Frames (or learnings) dropped for this reason.
    pub count: u64,
    /// What the reason means.
    pub description: String,
}

/// Reply to `stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsView {
    /// Per-port counters.
    pub ports: Vec<PortStatsView>,
    /// Per-reason drop counters, stage by stage, every reason listed (zeros included).
    pub drops: Vec<DropView>,
    /// Per overlay network (VNI) and remote VTEP: frames encapsulated and decapsulated.
    #[serde(default)]
    pub tunnels: Vec<VtepPeerView>,
    /// Each worker's frame pool, accounted.
    #[serde(default)]
    pub pools: Vec<PoolView>,
    /// Where each worker's time went (as `ovs-appctl dpif-netdev/pmd-perf-show`).
    #[serde(default)]
    pub workers: Vec<WorkerView>,
}

/// One worker's time in `stats`, since it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerView {
    /// The worker.
    pub worker: u32,
    /// Ports it polls.
    pub ports: u32,
    /// Nanoseconds in passes that moved frames.
    pub busy_ns: u64,
    /// Nanoseconds polling without finding anything.
    pub idle_ns: u64,
    /// Nanoseconds asleep.
    pub sleep_ns: u64,
    /// Frames moved (received from ports and other workers, released by stages).
    pub frames: u64,
    /// Passes that moved frames.
    pub busy_passes: u64,
    /// Busy nanoseconds per frame moved (0 before the first).
    pub ns_per_frame: u64,
    /// Frames per busy pass (the mean burst).
    pub frames_per_pass: u64,
    /// Busy share of the worker's awake-or-asleep time, in percent.
    pub busy_pct: u32,
}

/// One worker's frame pool in `stats`: where its frames are between bursts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolView {
    /// The worker.
    pub worker: u32,
    /// Frames in the pool.
    pub capacity: u64,
    /// Frames free.
    pub free: u64,
    /// Frames its ports hold (AF_XDP fill rings and TX in flight).
    pub in_ports: u64,
    /// Frames its stages hold (waiting for a neighbour, flood copies not yet sent).
    pub in_stages: u64,
    /// capacity - free - in_ports - in_stages: 0 unless a frame leaked.
    pub unaccounted: i64,
}

/// One stage's decision in `trace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStepView {
    /// Stage name (`classify`, `l2`, ...).
    pub stage: String,
    /// What it decided and why.
    pub decision: String,
}

/// Reply to `trace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceView {
    /// The flow as understood.
    pub flow: String,
    /// Each stage's decision, in order.
    pub steps: Vec<TraceStepView>,
    /// Final action: `output:PORT`, `flood:P1,P2`, `drop:REASON`.
    pub action: String,
}

/// An endpoint in `network inspect` and the reply to `network connect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointView {
    /// Network.
    pub network: String,
    /// Sandbox as given.
    pub sandbox: String,
    /// Interface inside the sandbox.
    pub ifname: String,
    /// Switch-side interface (the port).
    pub port: String,
    /// MAC address.
    pub mac: String,
    /// Address with prefix, `10.200.0.2/24`.
    pub address: String,
    /// Gateway.
    pub gateway: String,
    /// DNS name.
    pub name: Option<String>,
    /// DNS aliases.
    pub aliases: Vec<String>,
    /// `veth` (AF_XDP port), `tap` or `host-veth`.
    pub port_type: String,
    /// Published ports, `HOSTIP:HOSTPORT->PORT/PROTO` as `docker port` prints them.
    #[serde(default)]
    pub publish: Vec<String>,
    /// The container runtime's ID of the container, when connected through CNI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Port security is off for it (`--allow-spoofing`).
    #[serde(default)]
    pub allow_spoofing: bool,
}

/// The uplink in `uplink show` (and `uplink set`'s reply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkView {
    /// The interface shared with the host.
    pub iface: String,
    /// xvs's address, `A.B.C.D/N`.
    pub ip: String,
    /// The next hop beyond the subnet.
    pub gateway: Option<String>,
    /// xvs's MAC on the interface.
    pub mac: String,
    /// The AF_XDP mode (`native shared`, `generic shared`), when attached.
    pub mode: Option<String>,
    /// `up`, `down` or `error: WHY`.
    pub state: String,
    /// Frames xvs took from the interface.
    pub rx_packets: u64,
    /// Frames xvs sent on it.
    pub tx_packets: u64,
    /// Its MTU.
    #[serde(default)]
    pub mtu: u16,
    /// Published ports reachable on it, as `docker port` prints them.
    #[serde(default)]
    pub published: Vec<PublishedView>,
    /// Neighbours resolved on it.
    #[serde(default)]
    pub neighbours: Vec<NeighbourView>,
    /// Connections tracked.
    #[serde(default)]
    pub connections: u64,
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedView {
    /// `0.0.0.0:8080->10.0.0.2:80/tcp`.
    pub mapping: String,
    /// The network.
    pub network: String,
    /// The endpoint's sandbox.
    pub sandbox: String,
}

/// A neighbour on the uplink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighbourView {
    /// Its address.
    pub ip: String,
    /// Its MAC.
    pub mac: String,
    /// Seconds since it was learned.
    pub age_s: u64,
}

/// One tracked connection in `conntrack/show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnView {
    /// `tcp`, `udp`, `icmp`.
    pub proto: String,
    /// The original direction: `SRC:SPORT->DST:DPORT`.
    pub orig: String,
    /// The reply direction.
    pub reply: String,
    /// The network of its inside end.
    pub network: Option<String>,
    /// Its state (`ESTABLISHED`, `SYN_SENT`, ...).
    pub state: String,
    /// `snat`, `dnat`, `both` or `none`.
    pub nat: String,
    /// Seconds since it was made.
    pub age_s: u64,
    /// Seconds until it expires.
    pub timeout_s: u64,
    /// The worker tracking it.
    pub worker: u16,
    /// As `ovs-appctl dpctl/dump-conntrack` prints it.
    pub line: String,
}

/// `conntrack/show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackView {
    /// The connections.
    pub connections: Vec<ConnView>,
}

/// A network in `network ls` / `network inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkView {
    /// Name.
    pub name: String,
    /// Driver.
    pub driver: String,
    /// Subnet.
    pub subnet: String,
    /// Gateway address.
    pub gateway: String,
    /// Internal network.
    pub internal: bool,
    /// Inter-container communication.
    pub icc: bool,
    /// MTU.
    pub mtu: u32,
    /// VNI (overlay).
    pub vni: Option<u32>,
    /// The Docker network ID, for a network Docker made through the plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_id: Option<String>,
    /// The switch bridge carrying it.
    pub bridge: String,
    /// Gateway counters: arp, icmp_echo, dns requests, frames.
    pub gateway_counters: std::collections::BTreeMap<String, u64>,
    /// Endpoints.
    pub endpoints: Vec<EndpointView>,
    /// An overlay's endpoints on other hosts of the cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_endpoints: Vec<RemoteEndpointView>,
}

/// `cluster show`: this host's view of the cluster it shares through etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// This host's id (`--host-id`).
    pub host_id: String,
    /// The etcd endpoints (`--cluster`).
    pub etcd: Vec<String>,
    /// The key prefix.
    pub prefix: String,
    /// `synced` (watching), `syncing` (reading the directory), or `disconnected`.
    pub state: String,
    /// Seconds since the state last changed.
    pub since_s: u64,
    /// Why the last session with etcd ended, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// This host's lease and its TTL in seconds.
    pub lease_id: i64,
    /// The lease's TTL.
    pub lease_ttl_s: u64,
    /// The last etcd revision applied.
    pub revision: i64,
    /// Sessions with etcd so far (1 + resynchronisations).
    pub sessions: u64,
    /// Watch events applied.
    pub events: u64,
    /// Keys under the prefix that could not be read (unknown layout or malformed value).
    pub bad_records: u64,
    /// Every host registered.
    pub hosts: Vec<ClusterHostView>,
    /// The overlay networks shared through the cluster.
    pub networks: Vec<String>,
    /// What this host owns that another host claims (an address, a network definition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
}

/// A host of the cluster in `cluster show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterHostView {
    /// Its id.
    pub host_id: String,
    /// Its VTEP, once it has one.
    pub vtep: Option<String>,
    /// The lease its entries live under.
    pub lease_id: i64,
    /// Its endpoints on overlay networks.
    pub endpoints: u64,
    /// Whether it is this host.
    pub local: bool,
}

/// An endpoint of an overlay network living on another host (from the cluster's directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteEndpointView {
    /// The host it lives on.
    pub host: String,
    /// That host's VTEP.
    pub vtep: Option<String>,
    /// Its address.
    pub ip: String,
    /// Its MAC.
    pub mac: String,
    /// Its DNS name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its DNS aliases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// The local VTEP in `vtep show` (and `vtep set`'s reply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VtepView {
    /// The local VTEP address.
    pub local: String,
    /// The VTEPs' UDP port.
    pub port: u16,
    /// `up`, or why the datapath does not run it.
    pub state: String,
    /// Every overlay network.
    pub networks: Vec<VtepNetworkView>,
}

/// An overlay network as the VTEP carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VtepNetworkView {
    /// The network.
    pub network: String,
    /// Its VNI.
    pub vni: u32,
    /// Its MTU.
    pub mtu: u32,
    /// Its peers and their counters.
    pub peers: Vec<VtepPeerView>,
    /// Remote stations: static and learnt.
    pub fdb: Vec<VtepFdbView>,
}

/// A remote VTEP of an overlay network (`vtep peer ls`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VtepPeerView {
    /// The network.
    pub network: String,
    /// Its VNI.
    pub vni: u32,
    /// The remote VTEP.
    pub remote: String,
    /// Whether it is a configured peer (floods go to it) or only a VTEP that frames came
    /// from or went to.
    pub configured: bool,
    /// Frames encapsulated to it.
    pub tx_packets: u64,
    /// Frames decapsulated from it.
    pub rx_packets: u64,
}

/// A remote station: inner MAC behind a remote VTEP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VtepFdbView {
    /// The station's MAC.
    pub mac: String,
    /// Its VTEP.
    pub remote: String,
    /// Configured (`vtep fdb add`) rather than learnt.
    #[serde(rename = "static")]
    pub is_static: bool,
    /// Its address, when configured with one.
    pub ip: Option<String>,
    /// Seconds since it was learnt or last seen (0 for static entries).
    pub age_s: u64,
}

/// A service in `service ls` / `service inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    /// Its name.
    pub name: String,
    /// Its network.
    pub network: String,
    /// The virtual IP.
    pub vip: String,
    /// `PROTO/PORT[:TARGET]`.
    pub port: String,
    /// The scheduler.
    pub scheduler: String,
    /// Idle timeout of its connections, in seconds.
    pub timeout_s: u64,
    /// The host port on the uplink that reaches it.
    pub publish: Option<u16>,
    /// The health check (`tcp:PORT every Ns`), if any.
    pub health: Option<String>,
    /// Its backends.
    pub backends: Vec<BackendView>,
}

/// A backend of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendView {
    /// `IP:PORT`.
    pub addr: String,
    /// Its weight.
    pub weight: u32,
    /// `active`, `draining` or `removed`.
    pub state: String,
    /// `up` or `down`.
    pub health: String,
    /// Connections open now.
    pub active: u64,
    /// Connections ever opened.
    pub total: u64,
}

#[cfg(test)]
#[path = "tests/protocol.rs"]
mod tests;
