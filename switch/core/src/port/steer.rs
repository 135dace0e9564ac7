//! The steering XDP program of an interface xvs shares with the host (the uplink): built from
//! `bpf/steer.c` at compile time, loaded through libbpf (linked by xsk-rs's libxdp-sys), it
//! sends frames for xvs's MAC and ARP about xvs's IPv4 address to the AF_XDP socket of their
//! queue and passes everything else to the host. Owned by the uplink's AF_XDP port; dropping
//! it detaches the program, so the interface is left as it was found.
//!
//! Used on the worker thread that opens the port (loading makes syscalls: control path only).

use std::ffi::CString;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;
use std::os::raw::{c_char, c_int, c_void};

use super::PortError;
use crate::wire::Mac;

/// The compiled program (clang -target bpf, by build.rs).
static PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/steer.o"));

/// `XDP_FLAGS_SKB_MODE`.
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`.
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

mod libbpf {
    use std::os::raw::{c_char, c_int, c_void};

    #[repr(C)]
    pub struct BpfObject {
        _private: [u8; 0],
    }
    #[repr(C)]
    pub struct BpfProgram {
        _private: [u8; 0],
    }

    unsafe extern "C" {
        pub fn bpf_object__open_mem(
            buf: *const c_void,
            size: usize,
            opts: *const c_void,
        ) -> *mut BpfObject;
        pub fn bpf_object__load(obj: *mut BpfObject) -> c_int;
        pub fn bpf_object__close(obj: *mut BpfObject);
        pub fn bpf_object__find_program_by_name(
            obj: *const BpfObject,
            name: *const c_char,
        ) -> *mut BpfProgram;
        pub fn bpf_program__fd(prog: *const BpfProgram) -> c_int;
        pub fn bpf_object__find_map_fd_by_name(obj: *const BpfObject, name: *const c_char)
        -> c_int;
        pub fn bpf_map_update_elem(
            fd: c_int,
            key: *const c_void,
            value: *const c_void,
            flags: u64,
        ) -> c_int;
        pub fn bpf_xdp_attach(
            ifindex: c_int,
            prog_fd: c_int,
            flags: u32,
            opts: *const c_void,
        ) -> c_int;
        pub fn bpf_xdp_detach(ifindex: c_int, flags: u32, opts: *const c_void) -> c_int;
        pub fn bpf_xdp_query_id(ifindex: c_int, flags: c_int, prog_id: *mut u32) -> c_int;
        pub fn bpf_prog_get_fd_by_id(id: u32) -> c_int;
        pub fn bpf_prog_get_info_by_fd(fd: c_int, info: *mut c_void, len: *mut u32) -> c_int;
    }
}

/// The head of the kernel's `struct bpf_prog_info`, up to the program's name (the kernel
/// fills as much as the length given).
#[repr(C)]
#[derive(Default)]
struct ProgInfoHead {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
}

/// The XDP flags of a steering program of ours still attached to `ifindex` (a previous xvsd
/// that was killed), if there is one.
fn leftover(ifindex: u32) -> Option<u32> {
    for flags in [XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE] {
        let mut id: u32 = 0;
        // SAFETY: `id` is a valid, writable u32 for the call.
        let rc = unsafe { libbpf::bpf_xdp_query_id(ifindex as c_int, flags as c_int, &mut id) };
        if rc != 0 || id == 0 {
            continue;
        }
        // SAFETY: a lookup by id; the descriptor it returns is closed below.
        let fd = unsafe { libbpf::bpf_prog_get_fd_by_id(id) };
        if fd < 0 {
            continue;
        }
        let mut info = ProgInfoHead::default();
        let mut len = std::mem::size_of::<ProgInfoHead>() as u32;
        // SAFETY: `info` is `len` writable bytes laid out as the kernel's struct head.
        let rc = unsafe {
            libbpf::bpf_prog_get_info_by_fd(fd, (&raw mut info).cast::<c_void>(), &mut len)
        };
        // SAFETY: `fd` is ours (from bpf_prog_get_fd_by_id) and closed once.
        unsafe { libc::close(fd) };
        if rc == 0 && info.name.starts_with(b"xvs_steer") {
            return Some(flags);
        }
    }
    None
}

/// The value of the program's config map (its `struct steer_config`).
#[repr(C)]
struct SteerConfig {
    mac: [u8; 6],
    pad: [u8; 2],
    /// Network order.
    ip: u32,
}

/// The steering program, attached to one interface.
pub struct Steering {
    obj: *mut libbpf::BpfObject,
    ifindex: u32,
    flags: u32,
    xsks: c_int,
    /// `native` or `generic`.
    mode: &'static str,
}

// SAFETY: the object is only used by the thread that owns the port (load, map updates, close);
// moving it to that worker's thread moves the ownership with it.
unsafe impl Send for Steering {}

fn err(iface: &str, what: &'static str, reason: impl Into<String>) -> PortError {
    PortError::Open {
        iface: iface.to_string(),
        what,
        reason: reason.into(),
    }
}

fn errno_text(rc: c_int) -> String {
    std::io::Error::from_raw_os_error(rc.saturating_abs()).to_string()
}

impl Steering {
    /// Loads the program and attaches it to `ifindex` in the first XDP mode of `modes` that
    /// works (true: native, false: generic), steering `mac` and ARP about `ip`.
    pub fn attach(
        iface: &str,
        ifindex: u32,
        modes: &[bool],
        mac: Mac,
        ip: Ipv4Addr,
    ) -> Result<Steering, PortError> {
        // SAFETY: PROGRAM is a valid, 'static byte buffer; a null options pointer is allowed.
        let obj = unsafe {
            libbpf::bpf_object__open_mem(
                PROGRAM.as_ptr().cast::<c_void>(),
                PROGRAM.len(),
                std::ptr::null(),
            )
        };
        if obj.is_null() {
            return Err(err(
                iface,
                "open steering program",
                "libbpf refused the object",
            ));
        }
        let mut s = Steering {
            obj,
            ifindex,
            flags: 0,
            xsks: -1,
            mode: "none",
        };
        // SAFETY: `obj` is a live object from open_mem.
        let rc = unsafe { libbpf::bpf_object__load(s.obj) };
        if rc != 0 {
            return Err(err(
                iface,
                "load steering program",
                format!("{} (needs CAP_BPF and CAP_NET_ADMIN)", errno_text(rc)),
            ));
        }
        let prog_fd = s.program_fd(iface)?;
        let config = s.map_fd(iface, "config")?;
        s.xsks = s.map_fd(iface, "xsks")?;
        let value = SteerConfig {
            mac: mac.0,
            pad: [0; 2],
            ip: u32::from_ne_bytes(ip.octets()),
        };
        let key: u32 = 0;
        // SAFETY: key and value are valid for the call and have the map's key/value sizes
        // (u32, struct steer_config: 12 bytes, same layout).
        let rc = unsafe {
            libbpf::bpf_map_update_elem(
                config,
                (&raw const key).cast::<c_void>(),
                (&raw const value).cast::<c_void>(),
                0,
            )
        };
        if rc != 0 {
            return Err(err(iface, "configure steering program", errno_text(rc)));
        }
        if let Some(flags) = leftover(ifindex) {
            tracing::warn!(
                iface,
                "replacing a steering program left by a previous xvsd"
            );
            // SAFETY: a netlink request about `ifindex`; null options are allowed.
            unsafe { libbpf::bpf_xdp_detach(ifindex as c_int, flags, std::ptr::null()) };
        }
        let mut last = String::new();
        for &native in modes {
            let flags = if native {
                XDP_FLAGS_DRV_MODE
            } else {
                XDP_FLAGS_SKB_MODE
            };
            // SAFETY: prog_fd is the loaded program's descriptor; null options are allowed.
            let rc = unsafe {
                libbpf::bpf_xdp_attach(ifindex as c_int, prog_fd, flags, std::ptr::null())
            };
            if rc == 0 {
                s.flags = flags;
                s.mode = if native { "native" } else { "generic" };
                return Ok(s);
            }
            last = errno_text(rc);
        }
        Err(err(
            iface,
            "attach steering program",
            format!("{last} (another XDP program on the interface?)"),
        ))
    }

    fn program_fd(&self, iface: &str) -> Result<c_int, PortError> {
        let name = CString::new("xvs_steer").unwrap_or_default();
        // SAFETY: obj is loaded; name is a valid C string for the call.
        let prog = unsafe {
            libbpf::bpf_object__find_program_by_name(self.obj, name.as_ptr().cast::<c_char>())
        };
        if prog.is_null() {
            return Err(err(iface, "load steering program", "no program xvs_steer"));
        }
        // SAFETY: prog belongs to the loaded object.
        let fd = unsafe { libbpf::bpf_program__fd(prog) };
        if fd < 0 {
            return Err(err(iface, "load steering program", errno_text(fd)));
        }
        Ok(fd)
    }

    fn map_fd(&self, iface: &str, name: &str) -> Result<c_int, PortError> {
        let cname = CString::new(name).unwrap_or_default();
        // SAFETY: obj is loaded; cname is a valid C string for the call.
        let fd = unsafe {
            libbpf::bpf_object__find_map_fd_by_name(self.obj, cname.as_ptr().cast::<c_char>())
        };
        if fd < 0 {
            return Err(err(
                iface,
                "load steering program",
                format!("no map {name}"),
            ));
        }
        Ok(fd)
    }

    /// Steers queue `queue`'s frames to the AF_XDP socket `fd`.
    pub fn add_socket(&self, iface: &str, queue: u32, fd: RawFd) -> Result<(), PortError> {
        let value: u32 = fd as u32;
        // SAFETY: key and value are valid u32s for the call (the XSKMAP's key and value).
        let rc = unsafe {
            libbpf::bpf_map_update_elem(
                self.xsks,
                (&raw const queue).cast::<c_void>(),
                (&raw const value).cast::<c_void>(),
                0,
            )
        };
        if rc != 0 {
            return Err(err(iface, "steer queue to socket", errno_text(rc)));
        }
        Ok(())
    }

    /// `native` or `generic`.
    pub fn mode(&self) -> &'static str {
        self.mode
    }
}

impl Drop for Steering {
    fn drop(&mut self) {
        if self.flags != 0 {
            // SAFETY: a netlink request about `ifindex`; null options are allowed.
            let rc = unsafe {
                libbpf::bpf_xdp_detach(self.ifindex as c_int, self.flags, std::ptr::null())
            };
            if rc != 0 {
                tracing::warn!(
                    ifindex = self.ifindex,
                    "cannot detach the steering program: {}",
                    errno_text(rc)
                );
            }
        }
        // SAFETY: obj came from open_mem and is closed once, here.
        unsafe { libbpf::bpf_object__close(self.obj) };
    }
}
