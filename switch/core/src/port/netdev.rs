//! Interface settings that rtnetlink does not carry: ethtool offloads, through the
//! `SIOCETHTOOL` ioctl on a throwaway datagram socket.
//!
//! Everything here acts in the calling thread's network namespace (the socket is made in it),
//! so a caller that configures a sandbox's interface calls from a thread that has entered the
//! sandbox. Control path only: each call opens and closes a socket.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `ETHTOOL_GTXCSUM`: get tx checksum offload.
const ETHTOOL_GTXCSUM: u32 = 0x16;
/// `ETHTOOL_STXCSUM`: set tx checksum offload.
const ETHTOOL_STXCSUM: u32 = 0x17;

/// `struct ethtool_value` from `<linux/ethtool.h>`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// Turns transmit checksum offload on or off on `ifname` (`ethtool -K IF tx on|off`).
///
/// Turning it off also turns off TSO and the other features that depend on it, which is what
/// a veth whose frames leave through AF_XDP needs: such frames must carry full checksums.
pub fn set_tx_checksum(ifname: &str, on: bool) -> io::Result<()> {
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: u32::from(on),
    };
    ethtool(ifname, &mut value)
}

/// Whether transmit checksum offload is on for `ifname` (`ethtool -k IF`, tx-checksumming).
pub fn tx_checksum(ifname: &str) -> io::Result<bool> {
    let mut value = EthtoolValue {
        cmd: ETHTOOL_GTXCSUM,
        data: 0,
    };
    ethtool(ifname, &mut value)?;
    Ok(value.data != 0)
}

/// Issues one `SIOCETHTOOL` request carrying `value` for `ifname`.
fn ethtool(ifname: &str, value: &mut EthtoolValue) -> io::Result<()> {
    let mut ifr = ifreq_for(ifname)?;
    ifr.ifr_ifru.ifru_data = std::ptr::from_mut(value).cast::<libc::c_char>();

    // SAFETY: plain socket(2) call; the returned descriptor is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2), is valid and owned by nobody else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };

    // SAFETY: SIOCETHTOOL reads an `ifreq` whose `ifru_data` points at a `struct
    // ethtool_value` (the layout of `EthtoolValue`); both live on this stack frame for the
    // whole call, and the kernel writes back at most the `ethtool_value` it was given.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An `ifreq` naming `ifname`, which must fit `IFNAMSIZ` with its terminating NUL.
fn ifreq_for(ifname: &str) -> io::Result<libc::ifreq> {
    let bytes = ifname.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {ifname:?}"),
        ));
    }
    // SAFETY: `ifreq` is plain old data (a name array and a union of integers and pointers),
    // for which all-zero bytes are a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in ifr.ifr_name.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    Ok(ifr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_be_interfaces_are_refused() {
        for bad in ["", "sixteen-chars-xx", "a\0b"] {
            let err = set_tx_checksum(bad, false).expect_err(bad);
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    #[test]
    fn a_missing_interface_is_enodev() {
        let err = tx_checksum("xvs-no-such-if").expect_err("no such interface");
        assert_eq!(err.raw_os_error(), Some(libc::ENODEV));
    }

    #[test]
    fn loopback_reports_its_tx_checksum() {
        // lo always has tx checksumming on ("on [fixed]"); reading it needs no privilege.
        assert!(tx_checksum("lo").expect("lo"));
    }
}
