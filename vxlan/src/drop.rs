//! Why the VXLAN stages refuse a frame (or count an event): the `vxlan` stage's drop reasons,
//! as `xvsctl stats` lists them. Declared once here; a stage registers the set when it is built.
//!
//! Plain values: usable from any thread.

xvs_stage::drop_reasons! {
    /// Why VXLAN decapsulation or encapsulation dropped a frame.
    pub enum VxlanDrop in "vxlan" {
        Truncated => "truncated", "frame shorter than its outer headers say, or an inner frame shorter than an Ethernet header";
        NotIpv4 => "not_ipv4", "outer ethertype is not IPv4 (the underlay is untagged IPv4)";
        BadIpHeader => "bad_ip_header", "outer IPv4 header with a bad version, an IHL below 5 or a total length below its header";
        BadChecksum => "bad_checksum", "outer IPv4 header checksum does not verify";
        Fragment => "fragment", "outer IPv4 fragment (VXLAN packets are not reassembled)";
        NotLocal => "not_local", "outer destination is not the local VTEP address";
        BadRemote => "bad_remote", "outer source is not a unicast address (cannot be a remote VTEP)";
        NotUdp => "not_udp", "outer IPv4 protocol is not UDP";
        WrongPort => "wrong_port", "outer UDP destination port is not the VTEP port";
        BadUdpLength => "bad_udp_length", "outer UDP length below its header or past the IPv4 payload";
        BadFlags => "bad_flags", "VXLAN flags without the I bit, or reserved bits set (dropped as Linux's vxlan_rcv does)";
        UnknownVni => "unknown_vni", "VNI of no overlay network on this host";
        UnknownPeer => "unknown_peer", "outer source is neither a peer of the network nor the VTEP of one of its static entries";
        GatewayFrame => "gateway_frame", "frame from the network's gateway MAC to or from the tunnel, not sent: every host answers for its own gateway, so its frames never cross (e.g. its stack answering a remote station's IPv6 neighbour solicitation)";
        StaticConflict => "static_conflict", "inner source MAC has a static entry at another VTEP (not moved, as Linux does)";
        NoPeer => "no_peer", "nothing to encapsulate to: the network has no peer and the destination no remote entry";
        MtuExceeded => "mtu_exceeded", "inner frame larger than the overlay MTU (fragmentation-needed is sent for IPv4 with DF)";
        ReplicaQueueFull => "replica_queue_full", "flood or segment copy not sent: the network's queue of encapsulated copies is full";
        NoBuffer => "no_buffer", "no frame (or no headroom) left for an encapsulated copy";
        Segmented => "segmented", "TCP super-frame cut into overlay-sized segments, each sent encapsulated (the super-frame itself is consumed)";
        Discarded => "discarded", "encapsulated copies or segments not sent: the network's tunnel went away first (never counted as made)", event;
        FdbFull => "fdb_full", "remote MAC not learnt: the remote FDB, its VNI's share or the remote VTEP's share is full", event;
    }
}

impl std::fmt::Display for VxlanDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let info = &Self::set().reasons[*self as usize];
        write!(f, "{}: {}", info.name, info.description)
    }
}

impl std::error::Error for VxlanDrop {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_named_under_vxlan() {
        VxlanDrop::set().register();
        let r = VxlanDrop::UnknownVni.reason();
        assert_eq!((r.stage(), r.name()), ("vxlan", "unknown_vni"));
        assert!(r.drops_frame());
        assert!(
            !VxlanDrop::FdbFull.reason().drops_frame(),
            "learning refused, frame delivered"
        );
        assert!(VxlanDrop::BadFlags.to_string().starts_with("bad_flags: "));
        let mut names: Vec<_> = VxlanDrop::ALL.iter().map(|d| d.reason().name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), VxlanDrop::ALL.len(), "names are unique");
    }
}
