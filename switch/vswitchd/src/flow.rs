//! Parsing `xvsctl trace` flows (ofproto/trace syntax) into a frame to send through the
//! pipeline: `in_port=p1,dl_src=..,dl_dst=..[,udp|tcp|icmp|arp],nw_src=..,nw_dst=..,
//! tp_src=..,tp_dst=..`. Without a protocol keyword the frame is IPv4/UDP.

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;
use xvs_switch::classify::Mac;

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
pub fn parse(text: &str) -> Result<Flow, String> {
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
            "in_port" => in_port = Some(need(k, v)?.to_string()),
            "dl_src" => dl_src = need(k, v)?.parse()?,
            "dl_dst" => dl_dst = need(k, v)?.parse()?,
            "nw_src" => nw_src = parse_ip(k, need(k, v)?)?,
            "nw_dst" => nw_dst = parse_ip(k, need(k, v)?)?,
            "tp_src" => tp_src = parse_port(k, need(k, v)?)?,
            "tp_dst" => tp_dst = parse_port(k, need(k, v)?)?,
            "udp" | "ip" => proto = Proto::Udp,
            "tcp" => proto = Proto::Tcp,
            "icmp" => proto = Proto::Icmp,
            "arp" => proto = Proto::Arp,
            other => {
                return Err(format!(
                    "unknown flow field {other:?} (expected in_port, dl_src, dl_dst, udp, tcp, icmp, arp, nw_src, nw_dst, tp_src, tp_dst)"
                ));
            }
        }
    }
    let in_port = in_port.ok_or("flow needs in_port=PORT")?;
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
    written.map_err(|e| format!("cannot build the flow's frame: {e}"))?;
    Ok(Flow { in_port, frame })
}

fn need<'a>(k: &str, v: Option<&'a str>) -> Result<&'a str, String> {
    v.ok_or_else(|| format!("flow field {k} needs a value"))
}

fn parse_ip(k: &str, v: &str) -> Result<Ipv4Addr, String> {
    v.parse()
        .map_err(|_| format!("{k}={v}: not an IPv4 address"))
}

fn parse_port(k: &str, v: &str) -> Result<u16, String> {
    v.parse()
        .map_err(|_| format!("{k}={v}: not a port number (0-65535)"))
}

#[cfg(test)]
#[path = "tests/flow.rs"]
mod tests;
