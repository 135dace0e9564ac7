//! The virtio-net header of TAP ports opened with `IFF_VNET_HDR` ([`Offload`]): what is still
//! to be done to a frame's checksums and segments, and why that could fail ([`OffloadError`]).
//! Checksum completion is in [`checksum`](crate::checksum), segmentation in
//! [`segment`](crate::segment). Plain values: callable from any thread.

/// Length of the virtio-net header the TAP ports use (struct virtio_net_hdr, no num_buffers).
pub const VNET_HDR_LEN: usize = 10;

/// The virtio-net header: what a TAP with IFF_VNET_HDR says about a frame's offloads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offload {
    /// [`Offload::F_NEEDS_CSUM`], [`Offload::F_DATA_VALID`].
    pub flags: u8,
    /// One of the `GSO_*` types, optionally or-ed with [`Offload::GSO_ECN`].
    pub gso_type: u8,
    /// Length of the headers before the payload (a hint; the segmenter parses the headers).
    pub hdr_len: u16,
    /// Payload bytes per segment when the frame is a GSO super-frame.
    pub gso_size: u16,
    /// Where the partial checksum's coverage starts (from the start of the Ethernet header).
    pub csum_start: u16,
    /// Where the checksum field is, from `csum_start`.
    pub csum_offset: u16,
}

impl Offload {
    /// Nothing pending: checksums complete, not GSO.
    pub const NONE: Offload = Offload {
        flags: 0,
        gso_type: 0,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` holds only the
    /// pseudo-header sum and must be completed.
    pub const F_NEEDS_CSUM: u8 = 1;
    /// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksums were verified.
    pub const F_DATA_VALID: u8 = 2;
    /// `VIRTIO_NET_HDR_GSO_NONE`: not a super-frame.
    pub const GSO_NONE: u8 = 0;
    /// `VIRTIO_NET_HDR_GSO_TCPV4`: TCP over IPv4 super-frame.
    pub const GSO_TCPV4: u8 = 1;
    /// `VIRTIO_NET_HDR_GSO_UDP`: UDP fragmentation offload (not supported here).
    pub const GSO_UDP: u8 = 3;
    /// `VIRTIO_NET_HDR_GSO_TCPV6`: TCP over IPv6 super-frame.
    pub const GSO_TCPV6: u8 = 4;
    /// `VIRTIO_NET_HDR_GSO_UDP_L4`: UDP segmentation offload (not supported here).
    pub const GSO_UDP_L4: u8 = 5;
    /// `VIRTIO_NET_HDR_GSO_ECN`: the super-frame has CWR set (or-ed into `gso_type`).
    pub const GSO_ECN: u8 = 0x80;

    /// Decodes a virtio-net header (little-endian fields).
    pub fn parse(hdr: &[u8; VNET_HDR_LEN]) -> Offload {
        let [flags, gso_type, h0, h1, s0, s1, c0, c1, o0, o1] = *hdr;
        Offload {
            flags,
            gso_type,
            hdr_len: u16::from_le_bytes([h0, h1]),
            gso_size: u16::from_le_bytes([s0, s1]),
            csum_start: u16::from_le_bytes([c0, c1]),
            csum_offset: u16::from_le_bytes([o0, o1]),
        }
    }

    /// Encodes the header (little-endian fields).
    pub fn emit(&self, out: &mut [u8; VNET_HDR_LEN]) {
        let [h0, h1] = self.hdr_len.to_le_bytes();
        let [s0, s1] = self.gso_size.to_le_bytes();
        let [c0, c1] = self.csum_start.to_le_bytes();
        let [o0, o1] = self.csum_offset.to_le_bytes();
        *out = [self.flags, self.gso_type, h0, h1, s0, s1, c0, c1, o0, o1];
    }

    /// Whether a partial checksum must be completed.
    pub fn needs_csum(&self) -> bool {
        self.flags & Self::F_NEEDS_CSUM != 0
    }

    /// Whether the frame is a GSO super-frame (`gso_type` without the ECN bit is not NONE).
    pub fn is_gso(&self) -> bool {
        self.gso_type & !Self::GSO_ECN != Self::GSO_NONE
    }

    /// Nothing pending: the frame can go anywhere as is.
    pub fn is_none(&self) -> bool {
        !self.needs_csum() && !self.is_gso()
    }

    /// Moves the header's offsets by `delta` bytes, for a header pushed (positive) or pulled
    /// (negative) in front of the frame's data.
    #[inline]
    pub fn shift(&mut self, delta: i32) {
        let moved = |v: u16| (i32::from(v) + delta).clamp(0, i32::from(u16::MAX)) as u16;
        if self.needs_csum() {
            self.csum_start = moved(self.csum_start);
        }
        if self.hdr_len != 0 {
            self.hdr_len = moved(self.hdr_len);
        }
    }

    /// The header Linux gives an untagged IPv4 TCP super-frame with 20-byte IP and TCP
    /// headers: checksum partial from the TCP header, `gso_size` payload bytes per segment.
    pub const fn tcpv4_gso(gso_size: u16) -> Offload {
        Offload {
            flags: Offload::F_NEEDS_CSUM,
            gso_type: Offload::GSO_TCPV4,
            hdr_len: 54,
            gso_size,
            csum_start: 34,
            csum_offset: 16,
        }
    }
}

/// Why an offload could not be carried out (each becomes a counted drop).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// checksum start or field outside the frame
    #[error("checksum start or field outside the frame")]
    BadChecksumRange,
    /// frame is not a GSO super-frame
    #[error("frame is not a GSO super-frame")]
    NotGso,
    /// GSO type not supported (only TCPv4 and TCPv6 are segmented)
    #[error("GSO type {0:#x} not supported (only TCPv4 and TCPv6 are segmented)")]
    UnsupportedGso(u8),
    /// GSO type does not match the frame's IP version
    #[error("GSO type does not match the frame's IP version")]
    GsoMismatch,
    /// super-frame headers not supported (VLAN tag, not IP, IPv4 fragment or IPv6 extension header)
    #[error(
        "super-frame headers not supported (VLAN tag, not IP, IPv4 fragment or IPv6 extension header)"
    )]
    UnsupportedHeaders,
    /// GSO super-frame does not carry TCP
    #[error("GSO super-frame does not carry TCP")]
    NotTcp,
    /// frame shorter than its headers, or a header length below the minimum
    #[error("frame shorter than its headers, or a header length below the minimum")]
    TruncatedHeaders,
    /// IP length field inconsistent with the frame or its headers
    #[error("IP length field inconsistent with the frame or its headers")]
    BadIpLength,
    /// gso_size is zero or makes segments longer than an IP length can say
    #[error("gso_size is zero or makes segments longer than an IP length can say")]
    BadGsoSize,
    /// segment does not fit the output buffer
    #[error("segment does not fit the output buffer")]
    SegmentTooLarge,
}
