//! The 8-byte VXLAN header (RFC 7348 §5), its parse/emit pair, the [`Vni`] newtype, and the
//! sizes every other module builds on ([`VXLAN_PORT`], [`OUTER_LEN`]).
//!
//! Plain values and pure byte logic: callable from any thread.

use std::fmt;

use crate::drop::VxlanDrop;

/// The IANA-assigned VXLAN UDP port (what Linux's `vxlan` device uses with `dstport 4789`).
pub const VXLAN_PORT: u16 = 4789;
/// Length of the VXLAN header.
pub const VXLAN_HEADER_LEN: usize = 8;
/// Length of the outer Ethernet header.
pub const OUTER_ETH_LEN: usize = 14;
/// Length of the outer IPv4 header (no options: what encapsulation writes).
pub const OUTER_IPV4_LEN: usize = 20;
/// Length of the outer UDP header.
pub const UDP_HEADER_LEN: usize = 8;
/// Outer headers written in front of an inner frame: Ethernet, IPv4, UDP, VXLAN (14+20+8+8).
pub const OUTER_LEN: usize = OUTER_ETH_LEN + OUTER_IPV4_LEN + UDP_HEADER_LEN + VXLAN_HEADER_LEN;
/// The I flag: the VNI is valid. The only flag a VXLAN header may carry.
pub const FLAG_I: u8 = 0x08;

/// A VXLAN Network Identifier: 24 bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Vni(u32);

/// A number that is not a VNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("VNI {0} out of range: a VNI is 24 bits (0 to 16777215)")]
pub struct VniOutOfRange(pub u32);

impl Vni {
    /// The largest VNI, 2^24 - 1.
    pub const MAX: Vni = Vni(0x00ff_ffff);

    /// `v` as a VNI, if it fits in 24 bits.
    #[inline]
    pub const fn new(v: u32) -> Option<Vni> {
        if v <= Self::MAX.0 { Some(Vni(v)) } else { None }
    }

    /// The number.
    #[inline]
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The low 24 bits of `v` (for bytes already known to hold 24 bits).
    #[inline]
    const fn from_bits(v: u32) -> Vni {
        Vni(v & Self::MAX.0)
    }
}

impl TryFrom<u32> for Vni {
    type Error = VniOutOfRange;
    fn try_from(v: u32) -> Result<Vni, VniOutOfRange> {
        Vni::new(v).ok_or(VniOutOfRange(v))
    }
}

impl From<Vni> for u32 {
    fn from(v: Vni) -> u32 {
        v.0
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vni {}", self.0)
    }
}

impl std::str::FromStr for Vni {
    type Err = String;
    fn from_str(s: &str) -> Result<Vni, String> {
        let v: u32 = s
            .parse()
            .map_err(|_| format!("invalid VNI {s:?}: not a number"))?;
        Vni::try_from(v).map_err(|e| e.to_string())
    }
}

/// As a number in state files and replies.
impl serde::Serialize for Vni {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Vni {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Vni, D::Error> {
        let v = u32::deserialize(d)?;
        Vni::try_from(v).map_err(serde::de::Error::custom)
    }
}

/// A VXLAN header: flags (I only), 24 reserved bits, the VNI, 8 reserved bits.
///
/// ```text
///  |R|R|R|R|I|R|R|R|            Reserved                           |
///  |                VXLAN Network Identifier (VNI) |   Reserved    |
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanHeader {
    /// The header's network.
    pub vni: Vni,
}

impl VxlanHeader {
    /// Parses the first [`VXLAN_HEADER_LEN`] bytes of `b`.
    ///
    /// RFC 7348 says receivers ignore reserved bits; Linux's `vxlan_rcv` does not (without
    /// GBP/GPE/RCO extensions configured it drops a header with any bit but I set in the
    /// first word, or the last byte non-zero), and neither does this, so xvs and a kernel
    /// peer accept exactly the same packets: [`VxlanDrop::BadFlags`]. Shorter than 8 bytes:
    /// [`VxlanDrop::Truncated`].
    #[inline(always)]
    pub fn parse(b: &[u8]) -> Result<VxlanHeader, VxlanDrop> {
        let Some(&[flags, r0, r1, r2, v0, v1, v2, r3]) = b.get(..VXLAN_HEADER_LEN) else {
            return Err(VxlanDrop::Truncated);
        };
        if flags != FLAG_I || (r0 | r1 | r2 | r3) != 0 {
            return Err(VxlanDrop::BadFlags);
        }
        Ok(VxlanHeader {
            vni: Vni::from_bits(u32::from_be_bytes([0, v0, v1, v2])),
        })
    }

    /// Writes the header: the I flag, the VNI, every reserved bit zero.
    #[inline]
    pub fn emit(&self, out: &mut [u8; VXLAN_HEADER_LEN]) {
        let [_, v0, v1, v2] = self.vni.0.to_be_bytes();
        *out = [FLAG_I, 0, 0, 0, v0, v1, v2, 0];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vni_is_24_bits() {
        assert_eq!(Vni::new(0x00ff_ffff), Some(Vni::MAX));
        assert_eq!(Vni::new(0x0100_0000), None);
        assert_eq!(Vni::try_from(1 << 24), Err(VniOutOfRange(1 << 24)));
        assert_eq!("4096".parse::<Vni>().map(Vni::get), Ok(4096));
        assert!("16777216".parse::<Vni>().is_err());
        assert!("x".parse::<Vni>().is_err());
        assert_eq!(Vni::MAX.to_string(), "16777215");
        assert_eq!(OUTER_LEN, 50);
    }

    #[test]
    fn kernel_header_for_vni_4096() {
        // What Linux sends for VNI 4096 (0x001000).
        let wire = [0x08, 0, 0, 0, 0x00, 0x10, 0x00, 0x00];
        let h = VxlanHeader::parse(&wire);
        assert_eq!(h, Ok(VxlanHeader { vni: Vni(4096) }));
        let mut out = [0xaa; 8];
        VxlanHeader { vni: Vni(4096) }.emit(&mut out);
        assert_eq!(out, wire);
    }

    #[test]
    fn flags_and_reserved_bits_as_the_kernel_checks_them() {
        let good = [0x08, 0, 0, 0, 0, 0, 1, 0];
        assert!(VxlanHeader::parse(&good).is_ok());
        // No I bit; I plus another flag (G of GBP, P of GPE, ...); reserved bytes.
        for (at, v) in [
            (0, 0x00),
            (0, 0x88),
            (0, 0x0c),
            (0, 0x09),
            (1, 1),
            (2, 0x80),
            (3, 4),
            (7, 1),
        ] {
            let mut h = good;
            h[at] = v;
            assert_eq!(VxlanHeader::parse(&h), Err(VxlanDrop::BadFlags), "{h:02x?}");
        }
        for n in 0..8 {
            assert_eq!(VxlanHeader::parse(&good[..n]), Err(VxlanDrop::Truncated));
        }
    }

    proptest! {
        #[test]
        fn emit_then_parse(v in 0u32..=0x00ff_ffff) {
            let vni = Vni::new(v).unwrap_or_default();
            let mut b = [0; 8];
            VxlanHeader { vni }.emit(&mut b);
            prop_assert_eq!(VxlanHeader::parse(&b), Ok(VxlanHeader { vni }));
        }

        #[test]
        fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..12)) {
            let _ = VxlanHeader::parse(&b);
        }
    }
}
