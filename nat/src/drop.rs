//! Why connection tracking and NAT refuse a frame: the `conntrack` stage's drop reasons, as
//! `xvsctl stats` lists them. Declared once here; a stage registers the set when it is built.
//!
//! Plain values: usable from any thread.

xvs_stage::drop_reasons! {
    /// Why conntrack/NAT dropped a frame.
    pub enum NatDrop in "conntrack" {
        TableFull => "table_full", "connection table full: the new connection was not tracked";
        ZoneLimit => "zone_limit", "the inside endpoint reached its connection limit";
        Invalid => "invalid", "packet out of state for its connection, or a non-SYN opening a TCP flow";
        PortsExhausted => "ports_exhausted", "no free masquerade port found within the probe budget";
        Filtered => "filtered", "inbound to a mapping from a remote it has not sent to (address and port dependent filtering)";
        NoMapping => "no_mapping", "inbound packet matches no connection, mapping or published port";
        Clash => "clash", "the new connection's reply tuple is already tracked";
        UnrelatedIcmp => "unrelated_icmp", "ICMP error quoting no tracked connection";
        UnsupportedIcmp => "unsupported_icmp", "ICMP type neither echo nor an error (cannot be translated)";
        UnsupportedProtocol => "unsupported_protocol", "IP protocol conntrack does not translate (only TCP, UDP, ICMP)";
        Fragment => "fragment", "IPv4 fragment (not reassembled, cannot be translated)";
        Malformed => "malformed", "headers too short to translate";
    }
}

impl std::fmt::Display for NatDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let info = &Self::set().reasons[*self as usize];
        write!(f, "{}: {}", info.name, info.description)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_named_under_conntrack() {
        NatDrop::set().register();
        let r = NatDrop::PortsExhausted.reason();
        assert_eq!((r.stage(), r.name()), ("conntrack", "ports_exhausted"));
        assert!(NatDrop::TableFull.to_string().starts_with("table_full: "));
    }
}
