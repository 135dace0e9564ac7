//! The CLI's forms of a service's settings, parsed and printed: a service port
//! (`PROTO/PORT[:TARGET]`, e.g. `tcp/80:8080`), a backend (`IP[:PORT]`, e.g. `10.0.0.2:8080`
//! or `[fd00::2]:8080`) and a scheduler name (`rr`, `wrr`, `lc`, `maglev`).
//!
//! Plain values, usable from any thread. `Display` prints the one form `FromStr` parses, and
//! serde goes through the same pair, so the state file holds what a user would type.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use xvs_stage::wire::ipproto;

/// Why a service setting given as text does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The scheduler name is not one xvs knows.
    #[error("unknown scheduler '{0}': use rr, wrr, lc or maglev")]
    UnknownScheduler(String),
    /// The protocol of a service port is neither TCP nor UDP.
    #[error("unknown protocol '{proto}' in port '{spec}': use tcp or udp")]
    UnknownProtocol {
        /// The whole port as given.
        spec: String,
        /// The protocol part.
        proto: String,
    },
    /// A service port is not `PROTO/PORT[:TARGET]`.
    #[error("port '{0}' is not PROTO/PORT[:TARGET] (e.g. tcp/80 or tcp/80:8080)")]
    BadPort(String),
    /// A port number is not in 1-65535.
    #[error("'{value}' in '{spec}' is not a port number: use 1-65535")]
    BadPortNumber {
        /// The whole setting as given.
        spec: String,
        /// The number part.
        value: String,
    },
    /// A backend is not `IP[:PORT]`.
    #[error("backend '{0}' is not IP[:PORT] (e.g. 10.0.0.2, 10.0.0.2:8080 or [fd00::2]:8080)")]
    BadBackend(String),
}

/// The transport protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// The IP protocol number (as in [`FlowKey::nw_proto`](xvs_stage::classify::FlowKey)).
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => ipproto::TCP,
            Proto::Udp => ipproto::UDP,
        }
    }

    /// The protocol of an IP protocol number, if a service can have it.
    #[inline]
    pub fn from_number(n: u8) -> Option<Proto> {
        match n {
            ipproto::TCP => Some(Proto::Tcp),
            ipproto::UDP => Some(Proto::Udp),
            _ => None,
        }
    }

    /// `tcp` or `udp`.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A service's port: `PROTO/PORT[:TARGET]`. Clients connect to `PORT` on the virtual IP;
/// backends are reached on `TARGET` (the same port when not given) unless a backend names its
/// own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct ServicePort {
    /// TCP or UDP.
    pub proto: Proto,
    /// The port clients connect to.
    pub port: u16,
    /// The port backends listen on.
    pub target: u16,
}

fn port_number(spec: &str, value: &str) -> Result<u16, ParseError> {
    match value.parse::<u16>() {
        Ok(p) if p != 0 && value.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(ParseError::BadPortNumber {
            spec: spec.to_owned(),
            value: value.to_owned(),
        }),
    }
}

impl FromStr for ServicePort {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<ServicePort, ParseError> {
        let (proto, ports) = s
            .split_once('/')
            .ok_or_else(|| ParseError::BadPort(s.to_owned()))?;
        let proto = match proto.to_ascii_lowercase().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "" => return Err(ParseError::BadPort(s.to_owned())),
            _ => {
                return Err(ParseError::UnknownProtocol {
                    spec: s.to_owned(),
                    proto: proto.to_owned(),
                });
            }
        };
        let (port, target) = match ports.split_once(':') {
            Some((p, t)) => (port_number(s, p)?, port_number(s, t)?),
            None => {
                let p = port_number(s, ports)?;
                (p, p)
            }
        };
        Ok(ServicePort {
            proto,
            port,
            target,
        })
    }
}

impl fmt::Display for ServicePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.proto, self.port)?;
        if self.target != self.port {
            write!(f, ":{}", self.target)?;
        }
        Ok(())
    }
}

impl From<ServicePort> for String {
    fn from(p: ServicePort) -> String {
        p.to_string()
    }
}

impl TryFrom<String> for ServicePort {
    type Error = ParseError;
    fn try_from(s: String) -> Result<ServicePort, ParseError> {
        s.parse()
    }
}

/// A backend as a user names it: `IP[:PORT]`; without a port it listens on the service's
/// target port. IPv6 with a port is bracketed (`[fd00::2]:8080`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct BackendAddr {
    /// The backend's address.
    pub ip: IpAddr,
    /// Its port, when not the service's target port.
    pub port: Option<u16>,
}

impl BackendAddr {
    /// The backend's socket address for a service whose target port is `target`.
    pub fn resolve(self, target: u16) -> SocketAddr {
        SocketAddr::new(self.ip, self.port.unwrap_or(target))
    }
}

impl From<SocketAddr> for BackendAddr {
    fn from(a: SocketAddr) -> BackendAddr {
        BackendAddr {
            ip: a.ip(),
            port: Some(a.port()),
        }
    }
}

impl FromStr for BackendAddr {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<BackendAddr, ParseError> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(BackendAddr { ip, port: None });
        }
        if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'))
            && let Ok(ip) = inner.parse::<std::net::Ipv6Addr>()
        {
            return Ok(BackendAddr {
                ip: IpAddr::V6(ip),
                port: None,
            });
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| ParseError::BadBackend(s.to_owned()))?;
        let ip = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().map(IpAddr::V6),
            None => host.parse::<std::net::Ipv4Addr>().map(IpAddr::V4),
        }
        .map_err(|_| ParseError::BadBackend(s.to_owned()))?;
        Ok(BackendAddr {
            ip,
            port: Some(port_number(s, port)?),
        })
    }
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => SocketAddr::new(self.ip, p).fmt(f),
            None => self.ip.fmt(f),
        }
    }
}

impl From<BackendAddr> for String {
    fn from(b: BackendAddr) -> String {
        b.to_string()
    }
}

impl TryFrom<String> for BackendAddr {
    type Error = ParseError;
    fn try_from(s: String) -> Result<BackendAddr, ParseError> {
        s.parse()
    }
}

/// How a service spreads new connections over its backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum SchedulerKind {
    /// Round robin: each live backend in turn (swarm's and IPVS's `rr`).
    #[default]
    Rr,
    /// Smooth weighted round robin (nginx's): turns in proportion to weights, interleaved.
    Wrr,
    /// Weighted least connections (IPVS's `wlc`): fewest active connections per unit of weight.
    Lc,
    /// Maglev consistent hashing on the 5-tuple: every host picks the same backend for a flow,
    /// and a change of backends moves few flows.
    Maglev,
}

impl SchedulerKind {
    /// Every scheduler, in the order the CLI lists them.
    pub const ALL: [SchedulerKind; 4] = [
        SchedulerKind::Rr,
        SchedulerKind::Wrr,
        SchedulerKind::Lc,
        SchedulerKind::Maglev,
    ];

    /// The CLI's name.
    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::Rr => "rr",
            SchedulerKind::Wrr => "wrr",
            SchedulerKind::Lc => "lc",
            SchedulerKind::Maglev => "maglev",
        }
    }
}

impl FromStr for SchedulerKind {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<SchedulerKind, ParseError> {
        SchedulerKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParseError::UnknownScheduler(s.to_owned()))
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<SchedulerKind> for String {
    fn from(k: SchedulerKind) -> String {
        k.name().to_owned()
    }
}

impl TryFrom<String> for SchedulerKind {
    type Error = ParseError;
    fn try_from(s: String) -> Result<SchedulerKind, ParseError> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn service_ports_parse_and_print_in_one_form() {
        let p: ServicePort = "tcp/80:8080".parse().unwrap();
        assert_eq!(
            p,
            ServicePort {
                proto: Proto::Tcp,
                port: 80,
                target: 8080
            }
        );
        assert_eq!(p.to_string(), "tcp/80:8080");
        let p: ServicePort = "UDP/53".parse().unwrap();
        assert_eq!((p.proto, p.port, p.target), (Proto::Udp, 53, 53));
        assert_eq!(p.to_string(), "udp/53");
        assert_eq!(
            "tcp/80:80".parse::<ServicePort>().unwrap().to_string(),
            "tcp/80"
        );
    }

    #[test]
    fn bad_service_ports_say_what_is_wrong() {
        let err = |s: &str| s.parse::<ServicePort>().unwrap_err().to_string();
        assert_eq!(
            err("80"),
            "port '80' is not PROTO/PORT[:TARGET] (e.g. tcp/80 or tcp/80:8080)"
        );
        assert_eq!(
            err("sctp/80"),
            "unknown protocol 'sctp' in port 'sctp/80': use tcp or udp"
        );
        assert_eq!(
            err("tcp/0"),
            "'0' in 'tcp/0' is not a port number: use 1-65535"
        );
        assert_eq!(
            err("tcp/80:70000"),
            "'70000' in 'tcp/80:70000' is not a port number: use 1-65535"
        );
        for bad in ["/80", "tcp/", "tcp/+80", "tcp/80:", "tcp/:80", "tcp/8 0"] {
            assert!(bad.parse::<ServicePort>().is_err(), "{bad}");
        }
    }

    #[test]
    fn backends_parse_with_and_without_ports() {
        let b = |s: &str| s.parse::<BackendAddr>().unwrap();
        assert_eq!(b("10.0.0.2").port, None);
        assert_eq!(b("10.0.0.2:8080").port, Some(8080));
        assert_eq!(b("fd00::2").ip, "fd00::2".parse::<IpAddr>().unwrap());
        assert_eq!(b("[fd00::2]").port, None);
        assert_eq!(b("[fd00::2]:81").port, Some(81));
        assert_eq!(b("[fd00::2]:81").to_string(), "[fd00::2]:81");
        assert_eq!(b("[fd00::2]").to_string(), "fd00::2");
        assert_eq!(b("10.0.0.2").resolve(8080).to_string(), "10.0.0.2:8080");
        assert_eq!(b("10.0.0.2:81").resolve(8080).to_string(), "10.0.0.2:81");
        for bad in [
            "web",
            "10.0.0.2:",
            "10.0.0.2:0",
            "10.0.0:80",
            "fd00::2:80x",
            "",
        ] {
            assert!(bad.parse::<BackendAddr>().is_err(), "{bad}");
        }
        assert_eq!(
            "web:80".parse::<BackendAddr>().unwrap_err().to_string(),
            "backend 'web:80' is not IP[:PORT] (e.g. 10.0.0.2, 10.0.0.2:8080 or [fd00::2]:8080)"
        );
    }

    #[test]
    fn schedulers_parse_by_name() {
        for k in SchedulerKind::ALL {
            assert_eq!(k.name().parse::<SchedulerKind>().unwrap(), k);
        }
        assert_eq!("MAGLEV".parse::<SchedulerKind>(), Ok(SchedulerKind::Maglev));
        assert_eq!(
            "wlc".parse::<SchedulerKind>().unwrap_err().to_string(),
            "unknown scheduler 'wlc': use rr, wrr, lc or maglev"
        );
    }

    #[test]
    fn serde_stores_the_cli_form() {
        let p: ServicePort = "tcp/80:8080".parse().unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"tcp/80:8080\"");
        assert_eq!(
            serde_json::from_str::<SchedulerKind>("\"maglev\"").unwrap(),
            SchedulerKind::Maglev
        );
        assert!(serde_json::from_str::<BackendAddr>("\"nope\"").is_err());
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from),
        ]
    }

    proptest! {
        #[test]
        fn service_port_emit_then_parse_is_identity(
            tcp in any::<bool>(), port in 1u16.., target in 1u16..
        ) {
            let p = ServicePort { proto: if tcp { Proto::Tcp } else { Proto::Udp }, port, target };
            prop_assert_eq!(p.to_string().parse::<ServicePort>(), Ok(p));
        }

        #[test]
        fn backend_emit_then_parse_is_identity(ip in any_ip(), port in proptest::option::of(1u16..)) {
            let b = BackendAddr { ip, port };
            prop_assert_eq!(b.to_string().parse::<BackendAddr>(), Ok(b));
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,24}") {
            let _ = s.parse::<ServicePort>();
            let _ = s.parse::<BackendAddr>();
            let _ = s.parse::<SchedulerKind>();
        }
    }
}
