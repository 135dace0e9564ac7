//! Published ports of `xvsctl network connect NET SANDBOX --publish SPEC`: the spec's grammar,
//! its checks, and the choice of host ports.
//!
//! A spec is what `docker run -p` takes, `[HOSTIP:][HOSTPORT:]PORT[/tcp|udp]`, where HOSTPORT
//! and PORT may be ranges `A-B` (at most [`MAX_RANGE`] ports). [`parse`] turns one into a
//! [`PublishRequest`]; [`allocate`] turns a call's requests into [`PortBinding`]s, given the
//! bindings the host already has: explicit host ports are checked for clashes, missing ones
//! are taken from [`AUTO_PORTS`] (Docker's `-P` range). As in Docker, a host range with a
//! single container port (`8000-8010:80`) binds the first free port of that range.
//!
//! Host IP `0.0.0.0` (or none) means every address; it is stored as `None`. IPv6 host
//! addresses are refused for now.
//!
//! Pure data and functions, persisted by the store; used by the control thread only. Nothing
//! here touches the datapath or the NAT tables.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use xvs_switch::wire::ipproto;

/// The host ports automatic bindings are taken from, as Docker's `-P` does.
pub const AUTO_PORTS: (u16, u16) = (49153, 65535);
/// The most ports one range (and so one spec) may cover.
pub const MAX_RANGE: u32 = 1024;
/// The grammar, as error messages quote it.
const GRAMMAR: &str = "[HOSTIP:][HOSTPORT:]PORT[/tcp|udp]";

/// The transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// `tcp` or `udp`.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    /// The IP protocol number (`ipproto::TCP` or `ipproto::UDP`), as the NAT rules take it.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => ipproto::TCP,
            Proto::Udp => ipproto::UDP,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One published port: host `host_ip:host_port` goes to the endpoint's `container_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortBinding {
    /// The protocol.
    pub proto: Proto,
    /// The host address it is published on (`None`: every address, `0.0.0.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
    /// The host port.
    pub host_port: u16,
    /// The endpoint's port.
    pub container_port: u16,
}

impl PortBinding {
    /// Whether `self` and `other` cannot both exist: same protocol and host port, and host
    /// addresses that overlap (`None` overlaps every address). The rule [`allocate`] keeps.
    pub fn clashes_with(&self, other: &PortBinding) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && ips_overlap(any_to_none(self.host_ip), any_to_none(other.host_ip))
    }
}

impl fmt::Display for PortBinding {
    /// `0.0.0.0:8080->80/tcp`, as `docker port` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}->{}/{}",
            self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            self.host_port,
            self.container_port,
            self.proto
        )
    }
}

impl FromStr for PortBinding {
    type Err = PublishError;

    /// The form [`Display`](fmt::Display) prints, `HOSTIP:HOSTPORT->PORT/PROTO` (the host IP
    /// and the protocol may be left out: every address, tcp).
    fn from_str(text: &str) -> Result<PortBinding, PublishError> {
        let invalid = |problem| PublishError::Binding {
            text: text.to_string(),
            problem,
        };
        let (host, container) = text
            .split_once("->")
            .filter(|(_, c)| !c.contains("->"))
            .ok_or_else(|| invalid(SpecError::NotABinding))?;
        let req = parse_request(&format!("{host}:{container}")).map_err(invalid)?;
        match req.host_ports {
            Some((h, h_end)) if h == h_end && req.container_ports.0 == req.container_ports.1 => {
                Ok(PortBinding {
                    proto: req.proto,
                    host_ip: req.host_ip,
                    host_port: h,
                    container_port: req.container_ports.0,
                })
            }
            _ => Err(invalid(SpecError::NotABinding)),
        }
    }
}

/// One `--publish` spec, parsed and checked: what is asked for, before host ports are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PublishRequest {
    /// The protocol.
    pub proto: Proto,
    /// The host address (`None`: every address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
    /// The host ports, first and last (`None`: chosen from [`AUTO_PORTS`]). Either as many as
    /// the container ports, paired in order, or a range for a single container port, which
    /// gets the range's first free port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ports: Option<(u16, u16)>,
    /// The endpoint's ports, first and last.
    pub container_ports: (u16, u16),
}

impl PublishRequest {
    /// The checks [`parse`] makes, for a request built or loaded otherwise.
    fn check(&self) -> Result<(), SpecError> {
        check_range(self.container_ports, Side::Container)?;
        if let Some(host) = self.host_ports {
            check_range(host, Side::Host)?;
            let (h, c) = (range_len(host), range_len(self.container_ports));
            if h != c && c != 1 {
                return Err(SpecError::RangeLengths {
                    host,
                    container: self.container_ports,
                });
            }
        }
        Ok(())
    }
}

impl fmt::Display for PublishRequest {
    /// The spec in its full form, which [`parse`] reads back: `127.0.0.1:8080:80/tcp`,
    /// `8000-8010:80-90/udp`, `127.0.0.1::80/tcp`, `80/tcp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.host_ip, self.host_ports) {
            (Some(ip), Some(h)) => write!(f, "{ip}:{}:", Ports(h))?,
            (Some(ip), None) => write!(f, "{ip}::")?,
            (None, Some(h)) => write!(f, "{}:", Ports(h))?,
            (None, None) => {}
        }
        write!(f, "{}/{}", Ports(self.container_ports), self.proto)
    }
}

/// Which port of a spec a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The host's.
    Host,
    /// The endpoint's.
    Container,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Host => "host port",
            Side::Container => "container port",
        })
    }
}

/// What is wrong with a spec's text; [`PublishError`] adds the spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Nothing given.
    #[error("empty spec; expected {GRAMMAR}")]
    Empty,
    /// More parts than `HOSTIP:HOSTPORT:PORT`.
    #[error("too many colons ({0}); expected {GRAMMAR}")]
    TooManyColons(usize),
    /// A protocol other than tcp or udp.
    #[error("unknown protocol {0:?}: use tcp or udp")]
    Protocol(String),
    /// A port that is not a number 1-65535 (port 0 included).
    #[error("{side} {value:?} is not a number 1-65535")]
    Port {
        /// Host or container.
        side: Side,
        /// The text given.
        value: String,
    },
    /// `IP:PORT`, where the part before the colon is the host port.
    #[error(
        "host port {0:?} is an address, not a number 1-65535 \
         (for an automatic host port on {0}, write {0}::PORT)"
    )]
    HostPortIsAddress(String),
    /// A range whose first port is above its last.
    #[error("{side} range {start}-{end} is reversed ({start} > {end})")]
    Reversed {
        /// Host or container.
        side: Side,
        /// First port given.
        start: u16,
        /// Last port given.
        end: u16,
    },
    /// A range of more than [`MAX_RANGE`] ports.
    #[error(
        "{side} range {start}-{end} has {} ports; at most {MAX_RANGE} per --publish",
        range_len((*.start, *.end))
    )]
    RangeTooLarge {
        /// Host or container.
        side: Side,
        /// First port.
        start: u16,
        /// Last port.
        end: u16,
    },
    /// Host and container ranges of different lengths (other than a host range for a single
    /// container port).
    #[error(
        "host ports {} ({} ports) and container ports {} ({} ports) differ in number; \
         use ranges of the same length",
        Ports(*.host), range_len(*.host), Ports(*.container), range_len(*.container)
    )]
    RangeLengths {
        /// The host ports.
        host: (u16, u16),
        /// The container ports.
        container: (u16, u16),
    },
    /// A host IP that is not an IPv4 address.
    #[error("host IP {0:?} is not an IPv4 address")]
    HostIp(String),
    /// An IPv6 host IP.
    #[error("host IP {0} is IPv6: IPv6 host addresses are not supported yet")]
    Ipv6(String),
    /// Text given as a binding that is not `HOSTIP:HOSTPORT->PORT/PROTO`.
    #[error("expected HOSTIP:HOSTPORT->PORT/PROTO (e.g. 0.0.0.0:8080->80/tcp)")]
    NotABinding,
}

/// Why `--publish` was refused; the message is what `xvsctl` prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// A spec that does not parse or whose ports are out of range.
    #[error("invalid --publish {spec:?}: {problem}")]
    Invalid {
        /// The spec as given (or, from [`allocate`], as a request prints).
        spec: String,
        /// What is wrong with it.
        problem: SpecError,
    },
    /// A binding's text that does not parse ([`PortBinding`]'s `FromStr`).
    #[error("invalid port binding {text:?}: {problem}")]
    Binding {
        /// The text given.
        text: String,
        /// What is wrong with it.
        problem: SpecError,
    },
    /// An explicit host port that a binding already on the host holds.
    #[error(
        "cannot publish {spec:?}: host port {}/{} is already in use by {holder} ({held})",
        .held.host_port, .held.proto
    )]
    InUse {
        /// The request, as it prints.
        spec: String,
        /// The binding holding the port.
        held: PortBinding,
        /// What holds it, e.g. `endpoint web on network front`.
        holder: String,
    },
    /// An explicit host port that another request of the same call asks for too.
    #[error(
        "cannot publish {spec:?}: host port {}/{} is also asked for by {other:?}",
        .held.host_port, .held.proto
    )]
    Clash {
        /// The request, as it prints.
        spec: String,
        /// The binding the other request was given.
        held: PortBinding,
        /// The other request, as it prints.
        other: String,
    },
    /// No free host port left for an automatic port or a host range.
    #[error(
        "cannot publish {spec:?}: no free {proto} host port left in {}{} for container port {container_port}",
        Ports(*.range), on(*.host_ip)
    )]
    Exhausted {
        /// The request, as it prints.
        spec: String,
        /// The protocol.
        proto: Proto,
        /// The host address asked for.
        host_ip: Option<Ipv4Addr>,
        /// The host ports searched.
        range: (u16, u16),
        /// The container port left without one.
        container_port: u16,
    },
}

/// Parses one `--publish` spec, `[HOSTIP:][HOSTPORT:]PORT[/tcp|udp]`; see the module doc.
pub fn parse(spec: &str) -> Result<PublishRequest, PublishError> {
    parse_request(spec).map_err(|problem| PublishError::Invalid {
        spec: spec.to_string(),
        problem,
    })
}

/// Turns the requests of one call into bindings, given the bindings already in use on the host
/// (all networks, all endpoints), each with a description of its holder (e.g. `endpoint web
/// on network front`).
///
/// Explicit host ports that clash with one in use (same protocol and port, overlapping host
/// addresses: `None` overlaps every address) or with another request of the call are refused;
/// they are placed before any port is chosen, so an automatic port never takes one a later
/// request names. A host range for a single container port takes the range's lowest free
/// port; automatic ports take the lowest free ones of [`AUTO_PORTS`] for their protocol and
/// address. All or nothing: on error no binding is returned. Bindings come in request order.
///
/// Cost: O(in use + bindings made), plus at most one look-up per port of each request's
/// search range (bounded by the size of [`AUTO_PORTS`]); never a loop without end.
pub fn allocate(
    requests: &[PublishRequest],
    in_use: &[(PortBinding, String)],
) -> Result<Vec<PortBinding>, PublishError> {
    let specs: Vec<String> = requests.iter().map(PublishRequest::to_string).collect();
    for (req, spec) in requests.iter().zip(&specs) {
        req.check().map_err(|problem| PublishError::Invalid {
            spec: spec.clone(),
            problem,
        })?;
    }
    let mut taken = Taken::new(in_use);
    let mut made: Vec<Vec<PortBinding>> = vec![Vec::new(); requests.len()];
    // Pass 0: explicit, paired ports. Pass 1: ports to choose (host range, automatic).
    for pass in 0..2 {
        for (i, req) in requests.iter().enumerate() {
            let paired = req
                .host_ports
                .is_some_and(|h| range_len(h) == range_len(req.container_ports));
            if paired != (pass == 0) {
                continue;
            }
            let spec = &specs[i];
            let host_ip = any_to_none(req.host_ip);
            let (c_start, c_end) = req.container_ports;
            let range = req.host_ports.unwrap_or(AUTO_PORTS);
            // Where the search for the next chosen port starts: ports below are held.
            let mut from = range.0;
            for container_port in c_start..=c_end {
                let host_port = match req.host_ports {
                    Some((h_start, _)) if paired => h_start + (container_port - c_start),
                    _ => {
                        let found = taken
                            .first_free(req.proto, host_ip, (from, range.1))
                            .ok_or_else(|| PublishError::Exhausted {
                                spec: spec.clone(),
                                proto: req.proto,
                                host_ip,
                                range,
                                container_port,
                            })?;
                        // At 65535 this stays on a port now held, so the next search fails.
                        from = found.saturating_add(1);
                        found
                    }
                };
                let binding = PortBinding {
                    proto: req.proto,
                    host_ip,
                    host_port,
                    container_port,
                };
                if let Some(holder) = taken.holder(&binding) {
                    return Err(match holder {
                        Holder::InUse(j) => PublishError::InUse {
                            spec: spec.clone(),
                            held: in_use[j].0,
                            holder: in_use[j].1.clone(),
                        },
                        Holder::Request(k, held) => PublishError::Clash {
                            spec: spec.clone(),
                            held,
                            other: specs[k].clone(),
                        },
                    });
                }
                taken.insert(binding, Holder::Request(i, binding));
                made[i].push(binding);
            }
        }
    }
    Ok(made.into_iter().flatten().collect())
}

/// Who holds a host port while [`allocate`] runs.
#[derive(Debug, Clone, Copy)]
enum Holder {
    /// `in_use[.0]`.
    InUse(usize),
    /// Request `.0` of the call, with the binding it was given.
    Request(usize, PortBinding),
}

/// One holder of a protocol's host port, on its host address (`None`: every address).
type Hold = (Option<Ipv4Addr>, Holder);

/// The host ports held, by protocol and port.
struct Taken {
    by_port: HashMap<(Proto, u16), Vec<Hold>>,
}

impl Taken {
    fn new(in_use: &[(PortBinding, String)]) -> Taken {
        let mut taken = Taken {
            by_port: HashMap::with_capacity(in_use.len()),
        };
        for (j, (b, _)) in in_use.iter().enumerate() {
            taken.insert(*b, Holder::InUse(j));
        }
        taken
    }

    fn insert(&mut self, b: PortBinding, holder: Holder) {
        self.by_port
            .entry((b.proto, b.host_port))
            .or_default()
            .push((any_to_none(b.host_ip), holder));
    }

    /// Who holds a port `b` clashes with, if anyone.
    fn holder(&self, b: &PortBinding) -> Option<Holder> {
        let ip = any_to_none(b.host_ip);
        self.by_port
            .get(&(b.proto, b.host_port))?
            .iter()
            .find(|(held, _)| ips_overlap(*held, ip))
            .map(|(_, holder)| *holder)
    }

    /// The lowest port of `range.0..=range.1` free for `proto` on `host_ip` (none if the range
    /// is empty).
    fn first_free(
        &self,
        proto: Proto,
        host_ip: Option<Ipv4Addr>,
        range: (u16, u16),
    ) -> Option<u16> {
        (range.0..=range.1).find(|&host_port| {
            self.holder(&PortBinding {
                proto,
                host_ip,
                host_port,
                container_port: 0,
            })
            .is_none()
        })
    }
}

fn parse_request(spec: &str) -> Result<PublishRequest, SpecError> {
    if spec.is_empty() {
        return Err(SpecError::Empty);
    }
    let (addr_ports, proto) = match spec.split_once('/') {
        Some((rest, p)) => (rest, parse_proto(p)?),
        None => (spec, Proto::Tcp),
    };
    let (host_ip, host, container) = split_parts(addr_ports)?;
    // Left to right, so the first problem in the text is the one reported.
    let host_ports = match host {
        None | Some("") => None,
        Some(h) => Some(parse_ports(h, Side::Host)?),
    };
    let container_ports = parse_ports(container, Side::Container)?;
    let req = PublishRequest {
        proto,
        host_ip,
        host_ports,
        container_ports,
    };
    req.check()?;
    Ok(req)
}

fn parse_proto(p: &str) -> Result<Proto, SpecError> {
    if p.eq_ignore_ascii_case("tcp") {
        Ok(Proto::Tcp)
    } else if p.eq_ignore_ascii_case("udp") {
        Ok(Proto::Udp)
    } else {
        Err(SpecError::Protocol(p.to_string()))
    }
}

/// `[HOSTIP:][HOSTPORT:]PORT` into host IP, host port text (if given) and container port text.
fn split_parts(s: &str) -> Result<(Option<Ipv4Addr>, Option<&str>, &str), SpecError> {
    if let Some(bracketed) = s.strip_prefix('[') {
        // Docker's form for IPv6 host addresses, `[::1]:8080:80`.
        return Err(match bracketed.split_once(']') {
            Some((inner, _)) if inner.parse::<Ipv6Addr>().is_ok() => {
                SpecError::Ipv6(inner.to_string())
            }
            Some((inner, _)) => SpecError::HostIp(format!("[{inner}]")),
            None => SpecError::HostIp(s.to_string()),
        });
    }
    let parts: Vec<&str> = s.split(':').collect();
    match parts[..] {
        [port] => Ok((None, None, port)),
        [host_port, port] => {
            if host_port.parse::<Ipv4Addr>().is_ok() {
                return Err(SpecError::HostPortIsAddress(host_port.to_string()));
            }
            Ok((None, Some(host_port), port))
        }
        [ip, host_port, port] => Ok((parse_host_ip(ip)?, Some(host_port), port)),
        _ => {
            let host = parts[..parts.len() - 2].join(":");
            Err(if host.parse::<Ipv6Addr>().is_ok() {
                SpecError::Ipv6(host)
            } else {
                SpecError::TooManyColons(parts.len() - 1)
            })
        }
    }
}

/// A host IP; empty and `0.0.0.0` mean every address.
fn parse_host_ip(ip: &str) -> Result<Option<Ipv4Addr>, SpecError> {
    if ip.is_empty() {
        return Ok(None);
    }
    ip.parse::<Ipv4Addr>()
        .map(|a| Some(a).filter(|a| !a.is_unspecified()))
        .map_err(|_| SpecError::HostIp(ip.to_string()))
}

/// `PORT` or `A-B`.
fn parse_ports(text: &str, side: Side) -> Result<(u16, u16), SpecError> {
    let range = match text.split_once('-') {
        None => {
            let p = parse_port(text, side)?;
            (p, p)
        }
        Some((a, b)) => (parse_port(a, side)?, parse_port(b, side)?),
    };
    check_range(range, side)?;
    Ok(range)
}

fn parse_port(value: &str, side: Side) -> Result<u16, SpecError> {
    let bad = || SpecError::Port {
        side,
        value: value.to_string(),
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match value.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(bad()),
    }
}

fn check_range((start, end): (u16, u16), side: Side) -> Result<(), SpecError> {
    for p in [start, end] {
        if p == 0 {
            return Err(SpecError::Port {
                side,
                value: "0".into(),
            });
        }
    }
    if start > end {
        return Err(SpecError::Reversed { side, start, end });
    }
    if range_len((start, end)) > MAX_RANGE {
        return Err(SpecError::RangeTooLarge { side, start, end });
    }
    Ok(())
}

/// Ports in `start..=end` (0 for a reversed range).
fn range_len((start, end): (u16, u16)) -> u32 {
    (u32::from(end) + 1).saturating_sub(u32::from(start))
}

/// `0.0.0.0` is every address, as `None` is.
fn any_to_none(ip: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
    ip.filter(|a| !a.is_unspecified())
}

/// Whether two host addresses share one (`None`: every address).
fn ips_overlap(a: Option<Ipv4Addr>, b: Option<Ipv4Addr>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// ` on 127.0.0.1`, or nothing for every address.
fn on(ip: Option<Ipv4Addr>) -> String {
    ip.map(|ip| format!(" on {ip}")).unwrap_or_default()
}

/// A port range as a spec writes it: `80` or `80-90`.
struct Ports((u16, u16));

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (start, end) = self.0;
        if start == end {
            write!(f, "{start}")
        } else {
            write!(f, "{start}-{end}")
        }
    }
}

#[cfg(test)]
#[path = "tests/publish.rs"]
mod tests;
