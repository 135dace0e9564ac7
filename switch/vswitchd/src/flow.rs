//! Parsing `xvsctl trace` flows (ofproto/trace syntax) into a frame to send through the
//! pipeline: `in_port=p1,dl_src=..,dl_dst=..[,udp|tcp|icmp|arp],nw_src=..,nw_dst=..,
//! tp_src=..,tp_dst=..`. Without a protocol keyword the frame is IPv4/UDP.

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;
use etherparse::err::packet::BuildWriteError;
use xvs_switch::classify::Mac;

/// A flow description `trace` cannot use; the message names the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// A field name the syntax does not have.
    #[error(
        "unknown flow field {0:?} (expected in_port, dl_src, dl_dst, udp, tcp, icmp, arp, nw_src, \
         nw_dst, tp_src, tp_dst)"
    )]
    UnknownField(String),
    /// No `in_port=`.
    #[error("flow needs in_port=PORT")]
    NoInPort,
    /// A field that takes a value, given without one.
    #[error("flow field {0} needs a value")]
    NoValue(&'static str),
    /// `dl_src`/`dl_dst` that is not a MAC address (the message is `Mac`'s parser's).
    #[error("{0}")]
    BadMac(String),
    /// `nw_src`/`nw_dst` that is not an IPv4 address.
    #[error("{field}={value}: not an IPv4 address")]
    BadIp {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// `tp_src`/`tp_dst` that is not a port number.
    #[error("{field}={value}: not a port number (0-65535)")]
    BadPort {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// The frame could not be built from the fields.
    #[error("cannot build the flow's frame: {0}")]
    Build(#[source] BuildWriteError),
}

/// A parsed flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// Ingress port name.
    pub in_port: String,
    /// The frame.
    pub frame: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Udp,
    Tcp,
    Icmp,
    Arp,
}

/// Parses a flow description.
pub fn parse(text: &str) -> Result<Flow, FlowError> {
    let mut in_port = None;
    let mut dl_src = Mac::default();
    let mut dl_dst = Mac::default();
    let mut proto = Proto::Udp;
    let mut nw_src = Ipv4Addr::UNSPECIFIED;
    let mut nw_dst = Ipv4Addr::UNSPECIFIED;
    let mut tp_src = 0u16;
    let mut tp_dst = 0u16;
    for field in text.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (field, None),
        };
        match k {
            "in_port" => in_port = Some(need("in_port", v)?.to_string()),
            "dl_src" => dl_src = parse_mac(need("dl_src", v)?)?,
            "dl_dst" => dl_dst = parse_mac(need("dl_dst", v)?)?,
            "nw_src" => nw_src = parse_ip("nw_src", need("nw_src", v)?)?,
            "nw_dst" => nw_dst = parse_ip("nw_dst", need("nw_dst", v)?)?,
            "tp_src" => tp_src = parse_port("tp_src", need("tp_src", v)?)?,
            "tp_dst" => tp_dst = parse_port("tp_dst", need("tp_dst", v)?)?,
            "udp" | "ip" => proto = Proto::Udp,
            "tcp" => proto = Proto::Tcp,
            "icmp" => proto = Proto::Icmp,
            "arp" => proto = Proto::Arp,
            other => return Err(FlowError::UnknownField(other.to_string())),
        }
    }
    let in_port = in_port.ok_or(FlowError::NoInPort)?;
    let eth = PacketBuilder::ethernet2(dl_src.0, dl_dst.0);
    let mut frame = Vec::with_capacity(64);
    let written = match proto {
        Proto::Arp => {
            frame.extend_from_slice(&dl_dst.0);
            frame.extend_from_slice(&dl_src.0);
            frame.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
            frame.extend_from_slice(&dl_src.0);
            frame.extend_from_slice(&nw_src.octets());
            frame.extend_from_slice(&[0; 6]);
            frame.extend_from_slice(&nw_dst.octets());
            Ok(())
        }
        Proto::Udp => eth
            .ipv4(nw_src.octets(), nw_dst.octets(), 64)
            .udp(tp_src, tp_dst)
            .write(&mut frame, &[]),
        Proto::Tcp => eth
            .ipv4(nw_src.octets(), nw_dst.octets(), 64)
            .tcp(tp_src, tp_dst, 0, 65535)
            .syn()
            .write(&mut frame, &[]),
        Proto::Icmp => eth
            .ipv4(nw_src.octets(), nw_dst.octets(), 64)
            .icmpv4_echo_request(0, 0)
            .write(&mut frame, &[]),
    };
    written.map_err(FlowError::Build)?;
    Ok(Flow { in_port, frame })
}

fn need<'a>(field: &'static str, v: Option<&'a str>) -> Result<&'a str, FlowError> {
    v.ok_or(FlowError::NoValue(field))
}

fn parse_mac(v: &str) -> Result<Mac, FlowError> {
    // Mac's parser says what is wrong in words; `to_string` keeps this right if it ever
    // returns a typed error instead.
    v.parse::<Mac>()
        .map_err(|e| FlowError::BadMac(e.to_string()))
}

fn parse_ip(field: &'static str, v: &str) -> Result<Ipv4Addr, FlowError> {
    v.parse().map_err(|_| FlowError::BadIp {
        field,
        value: v.to_string(),
    })
}

fn parse_port(field: &'static str, v: &str) -> Result<u16, FlowError> {
    v.parse().map_err(|_| FlowError::BadPort {
        field,
        value: v.to_string(),
    })
}

#[cfg(test)]
#[path = "tests/flow.rs"]
mod tests;
