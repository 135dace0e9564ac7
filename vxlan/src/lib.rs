//! xvs-vxlan: VXLAN overlays (RFC 7348) for the xvs datapath, sans-IO: no sockets, no clocks
//! (time is an argument, in ms), no allocation per packet. Frames stay where they are: decap
//! says where the inner frame starts, encap writes the outer headers into the 50 bytes of
//! headroom in front of it. Interoperates with Linux's `vxlan` device (port 4789, outer UDP
//! checksum 0 over IPv4, the same header checks).
//!
//! - [`header`]: the VXLAN header, [`Vni`], [`VXLAN_PORT`], [`OUTER_LEN`];
//! - [`decap`](mod@decap): outer header checks and the inner frame's place;
//! - [`encap`]: per-peer templates of the outer headers, stamped per packet;
//! - [`flow_hash`](mod@flow_hash): the outer UDP source port from the inner flow;
//! - [`remote_fdb`]: inner MAC → remote VTEP, learnt and static, bounded and aged;
//! - [`peers`]: head-end replication lists and the flood-or-unicast choice;
//! - [`mss`]: MSS clamping of SYNs crossing the tunnel; [`mtu`]: the overlay MTU and what to
//!   do with frames above it;
//! - [`stage`]: the datapath's decap stage (uplink chain) and overlay stage (learning, encap,
//!   head-end replication; an overlay network's chain);
//! - [`drop`](mod@drop): the `vxlan` stage's drop reasons.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use xvs_stage::wire::Mac;
//! use xvs_vxlan::{decap, LocalVtep, PeerConfig, PeerTemplate, Vni, OUTER_LEN};
//!
//! let (here, there) = (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2));
//! let vni = Vni::new(4096).unwrap();
//! let peer = PeerTemplate::new(PeerConfig::new(Mac([2, 0, 0, 0, 0, 1]), Mac([2, 0, 0, 0, 0, 2]), here, there, vni));
//! // 50 bytes of headroom, then the inner frame (here a dummy 60-byte one).
//! let mut frame = [0u8; OUTER_LEN + 60];
//! frame[OUTER_LEN + 12..OUTER_LEN + 14].copy_from_slice(&[0x08, 0x06]);
//! peer.encap(&mut frame).unwrap();
//! // At the other end:
//! let d = decap(&frame, &LocalVtep::new(there)).unwrap();
//! assert_eq!((d.vni, d.remote_ip, d.outer_len, d.inner_len), (vni, here, OUTER_LEN, 60));
//! ```
#![forbid(unsafe_code)]

pub mod decap;
pub mod drop;
pub mod encap;
pub mod flow_hash;
pub mod header;
pub mod mss;
pub mod mtu;
pub mod peers;
pub mod remote_fdb;
pub mod stage;

pub use decap::{Decapped, LocalVtep, decap};
pub use drop::VxlanDrop;
pub use encap::{DEFAULT_TTL, MAX_INNER_LEN, PeerConfig, PeerTemplate};
pub use flow_hash::{SOURCE_PORT_MAX, SOURCE_PORT_MIN, flow_hash, source_port};
pub use header::{OUTER_LEN, VXLAN_HEADER_LEN, VXLAN_PORT, Vni, VniOutOfRange, VxlanHeader};
pub use mss::{clamp_mss, clamp_mss_to_mtu, overlay_mss, overlay_mss_v6};
pub use mtu::{Oversize, check_size, overlay_mtu};
pub use peers::{DEFAULT_PEER_LIMIT, Destination, PeerError, Peers};
pub use remote_fdb::{Learn, RemoteEntry, RemoteFdb, RemoteFdbConfig, StaticError};
pub use stage::{
    DecapConfig, DecapStage, OverlayConfig, OverlayNet, OverlayStage, PeerCounters, StaticRemote,
    TUNNEL_PORT, Tunnel,
};
