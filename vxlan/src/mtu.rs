//! Size: the overlay MTU (the uplink's minus the 50 bytes encapsulation adds) and what to do
//! with an inner frame above it: an IPv4 packet with DF gets ICMP fragmentation-needed
//! (answered by `xvs_stage::icmp_error`), anything else is dropped (`mtu_exceeded`); xvs
//! does not fragment.
//!
//! Pure byte logic: callable from any thread.

use xvs_stage::wire::{ETH_HEADER_LEN, ethertype};

use crate::drop::VxlanDrop;
use crate::header::{OUTER_ETH_LEN, OUTER_LEN};

/// What encapsulation adds to an inner IP packet in the underlay's MTU: outer IPv4, UDP,
/// VXLAN and the inner Ethernet header (the outer Ethernet header is not in the MTU).
pub const OVERHEAD: u16 = (OUTER_LEN - OUTER_ETH_LEN + ETH_HEADER_LEN) as u16;

/// The MTU of an overlay network over an uplink of `uplink_mtu` (1500 gives 1450).
#[inline]
pub fn overlay_mtu(uplink_mtu: u16) -> u16 {
    uplink_mtu.saturating_sub(OVERHEAD)
}

/// An inner frame too large for the overlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    /// IPv4 with DF: answer with ICMP "fragmentation needed and DF set" giving `mtu`
    /// (`IcmpError::FragmentationNeeded`), then drop.
    FragmentationNeeded {
        /// The overlay MTU, for the ICMP error's next-hop MTU field.
        mtu: u16,
    },
    /// Anything else: drop.
    Drop,
}

impl Oversize {
    /// The drop reason counted for the frame either way.
    pub fn reason(self) -> VxlanDrop {
        VxlanDrop::MtuExceeded
    }
}

/// Whether `inner` (an untagged Ethernet frame; a GSO super-frame is checked segment by
/// segment, after segmentation) fits an overlay of `mtu`, and what to do if not.
#[inline]
pub fn check_size(inner: &[u8], mtu: u16) -> Result<(), Oversize> {
    if inner.len() <= ETH_HEADER_LEN + usize::from(mtu) {
        return Ok(());
    }
    let ipv4 = inner.get(12..14) == Some(&ethertype::IPV4.to_be_bytes()[..]);
    let df = inner.get(ETH_HEADER_LEN + 6).is_some_and(|f| f & 0x40 != 0);
    Err(if ipv4 && df {
        Oversize::FragmentationNeeded { mtu }
    } else {
        Oversize::Drop
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(len: usize, df: bool) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[20] = if df { 0x40 } else { 0 };
        f
    }

    #[test]
    fn sizes() {
        assert_eq!(overlay_mtu(1500), 1450);
        assert_eq!(overlay_mtu(9000), 8950);
        assert_eq!(overlay_mtu(40), 0);
        assert_eq!(check_size(&ipv4(1464, true), 1450), Ok(()));
        assert_eq!(
            check_size(&ipv4(1465, true), 1450),
            Err(Oversize::FragmentationNeeded { mtu: 1450 })
        );
        assert_eq!(check_size(&ipv4(1465, false), 1450), Err(Oversize::Drop));
        let mut v6 = ipv4(1465, true);
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(check_size(&v6, 1450), Err(Oversize::Drop));
        assert_eq!(Oversize::Drop.reason(), VxlanDrop::MtuExceeded);
    }
}
