//! Sandboxes and their endpoints, over rtnetlink: the veth pair behind `xvsctl network
//! connect`, configured inside the sandbox (a network namespace), and its removal.
//!
//! Every call blocks and is made from control threads. Each runs on a short-lived thread of
//! its own with a current-thread tokio runtime and netlink sockets opened where they are
//! needed: a socket belongs to the namespace its thread was in when it was opened, so the
//! thread opens one in xvsd's namespace, then enters the sandbox (`setns`) and opens another
//! there. The thread ends with the operation, so no thread of xvsd is ever left inside a
//! sandbox. Nothing here runs `ip` or `ethtool`.

use std::fs::{self, File};
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use futures::TryStreamExt;
use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use xvs_switch::classify::Mac;
use xvs_switch::port::tap::{TapOptions, open_tap};

use crate::validate::{self, NameError};

/// Where `ip netns` keeps named namespaces, in the order looked at (usually one directory
/// through a symlink).
const NETNS_DIRS: [&str; 2] = ["/var/run/netns", "/run/netns"];

/// Where `ip netns exec NAME` finds files to bind over `/etc`.
const NETNS_ETC: &str = "/etc/netns";

/// Smallest MTU an IPv4 interface may have.
pub const MIN_MTU: u32 = 68;

/// Largest MTU a veth peer may have while its switch side runs native XDP.
pub const MAX_MTU: u32 = 3506;

/// Errors of namespace and endpoint operations; each message names what failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A named namespace that `ip netns` does not know.
    #[error("network namespace {0} does not exist")]
    NoSuchNamespace(String),
    /// A namespace file path that does not exist.
    #[error("namespace {} does not exist", .0.display())]
    NoSuchNamespacePath(PathBuf),
    /// A sandbox argument that is neither a name nor an absolute path.
    #[error(
        "invalid sandbox {0:?}: give a network namespace name or an absolute path to a \
         namespace file"
    )]
    BadSandbox(String),
    /// A file that cannot be entered as a network namespace.
    #[error("{} is not a network namespace", .0.display())]
    NotANamespace(PathBuf),
    /// The namespace file exists but could not be opened or entered.
    #[error("cannot enter namespace {}: {reason}", path.display())]
    EnterNamespace {
        /// The namespace file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An interface name the kernel would refuse.
    #[error(transparent)]
    Name(#[from] NameError),
    /// An MTU outside what a veth served by native XDP can carry.
    #[error(
        "MTU {0} is out of range {MIN_MTU}..={MAX_MTU} (native XDP on the switch side caps a \
         veth peer at {MAX_MTU})"
    )]
    BadMtu(u32),
    /// A MAC address an interface cannot have.
    #[error("invalid MAC address {0}: it must be unicast and not all zeros")]
    BadMac(Mac),
    /// A prefix length over 32.
    #[error("invalid prefix length /{0}: at most 32")]
    BadPrefix(u8),
    /// The sandbox already has an interface of the name asked for.
    #[error("interface {ifname} already exists in {sandbox}")]
    IfnameTaken {
        /// The name asked for inside the sandbox.
        ifname: String,
        /// The sandbox.
        sandbox: String,
    },
    /// A netlink request the kernel refused.
    #[error("{what}: {reason}")]
    Netlink {
        /// The step, naming its objects ("cannot create veth xv1a2b").
        what: String,
        /// The kernel's reason ("File exists").
        reason: String,
    },
    /// A system call outside netlink failed.
    #[error("{what}: {source}")]
    Io {
        /// The step, naming its objects.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Creating or opening a TAP endpoint's device failed (the TAP backend says which step).
    #[error("{source} (in {sandbox})")]
    Tap {
        /// The sandbox the TAP is in.
        sandbox: String,
        /// What the TAP backend reported.
        #[source]
        source: xvs_switch::port::PortError,
    },
    /// The worker thread of an operation could not start or did not finish.
    #[error("netlink worker thread failed: {0}")]
    Worker(String),
}

/// A sandbox: a network namespace given by `ip netns` name or by the path of its file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Sandbox {
    /// `/var/run/netns/NAME` (or `/run/netns/NAME`).
    Named(String),
    /// Any namespace file, such as `/proc/PID/ns/net` or a bind mount of one.
    Path(PathBuf),
}

impl Sandbox {
    /// The namespace file.
    pub fn path(&self) -> PathBuf {
        match self {
            Sandbox::Named(name) => named_path(name).unwrap_or_else(|| {
                // Gone since it was resolved: name the conventional place in errors.
                Path::new(NETNS_DIRS[0]).join(name)
            }),
            Sandbox::Path(path) => path.clone(),
        }
    }

    /// Opens the namespace file, to enter it or to move a device into it.
    fn open(&self) -> Result<File, NetError> {
        let path = self.path();
        File::open(&path).map_err(|e| match (e.kind(), self) {
            (io::ErrorKind::NotFound, Sandbox::Named(name)) => {
                NetError::NoSuchNamespace(name.clone())
            }
            (io::ErrorKind::NotFound, Sandbox::Path(_)) => NetError::NoSuchNamespacePath(path),
            _ => NetError::EnterNamespace {
                path,
                reason: e.to_string(),
            },
        })
    }
}

impl std::fmt::Display for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sandbox::Named(name) => write!(f, "network namespace {name}"),
            Sandbox::Path(path) => write!(f, "namespace {}", path.display()),
        }
    }
}

/// The file of named namespace `name`, if it exists.
fn named_path(name: &str) -> Option<PathBuf> {
    NETNS_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.exists())
}

/// Reads a SANDBOX argument: a namespace name (no `/`) or an absolute path to a namespace
/// file. The namespace must exist.
pub fn resolve_sandbox(arg: &str) -> Result<Sandbox, NetError> {
    if arg.contains('/') {
        let path = Path::new(arg);
        if !path.is_absolute() || arg.contains('\0') {
            return Err(NetError::BadSandbox(arg.to_string()));
        }
        if !path.exists() {
            return Err(NetError::NoSuchNamespacePath(path.to_path_buf()));
        }
        return Ok(Sandbox::Path(path.to_path_buf()));
    }
    if validate::namespace_name(arg).is_err() {
        return Err(NetError::BadSandbox(arg.to_string()));
    }
    match named_path(arg) {
        Some(_) => Ok(Sandbox::Named(arg.to_string())),
        None => Err(NetError::NoSuchNamespace(arg.to_string())),
    }
}

/// One endpoint: a veth pair from xvsd's namespace into a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// The switch side, in xvsd's namespace (at most 15 characters).
    pub host_ifname: String,
    /// Where the other side goes.
    pub sandbox: Sandbox,
    /// The other side's name inside the sandbox, such as `eth0`.
    pub ifname: String,
    /// The sandbox side's MAC address.
    pub mac: Mac,
    /// The sandbox side's address.
    pub addr: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// The default route's next hop, if the sandbox gets one from this endpoint.
    pub gateway: Option<Ipv4Addr>,
    /// MTU of both sides.
    pub mtu: u32,
}

impl EndpointSpec {
    /// Refuses what the kernel would refuse, before anything is made.
    fn validate(&self) -> Result<(), NetError> {
        validate::ifname(&self.host_ifname)?;
        validate::ifname(&self.ifname)?;
        if !(MIN_MTU..=MAX_MTU).contains(&self.mtu) {
            return Err(NetError::BadMtu(self.mtu));
        }
        if self.mac.is_multicast() || self.mac == Mac::default() {
            return Err(NetError::BadMac(self.mac));
        }
        if self.prefix > 32 {
            return Err(NetError::BadPrefix(self.prefix));
        }
        Ok(())
    }
}

/// Creates the endpoint and returns the switch side's ifindex.
///
/// One netlink request makes the pair with its sandbox side already in the sandbox, named,
/// addressed (MAC) and sized (MTU), so nothing of it ever shows in xvsd's namespace under a
/// temporary name; then, inside the sandbox, tx checksum offload is turned off on it (frames
/// it sends leave through AF_XDP, which needs full checksums), its address is added, it and
/// `lo` come up and the default route goes via `gateway`. A sandbox that already has a
/// default route keeps it (a sandbox on several networks routes through the first). Any
/// failure after the pair exists deletes it again.
pub fn create_endpoint(spec: &EndpointSpec) -> Result<u32, NetError> {
    spec.validate()?;
    let ns = spec.sandbox.open()?;
    on_worker_thread(move || async move {
        let host = connect("xvsd's namespace")?;
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(spec.ifname.clone())
            .address(spec.mac.0.to_vec())
            .mtu(spec.mtu)
            .setns_by_fd(ns.as_raw_fd())
            .build();
        let pair = LinkVeth::new(&spec.host_ifname, &spec.ifname)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .mtu(spec.mtu)
            .up()
            .build();
        if let Err(e) = host.link().add(pair).execute().await {
            // EEXIST is either side's name; only the host side can be checked from here.
            let host_taken = matches!(link_index(&host, &spec.host_ifname).await, Ok(Some(_)));
            return Err(if errno(&e) == Some(Errno::EEXIST) && !host_taken {
                NetError::IfnameTaken {
                    ifname: spec.ifname.clone(),
                    sandbox: spec.sandbox.to_string(),
                }
            } else {
                netlink_error(format!("cannot create veth {}", spec.host_ifname), &e)
            });
        }
        let index = created_index(&host, &spec.host_ifname).await?;
        match configure_sandbox_side(spec, &ns).await {
            Ok(()) => Ok(index),
            Err(err) => {
                if let Err(e) = host.link().del(index).execute().await {
                    tracing::warn!(
                        "cannot remove veth {} after a failed connect: {}",
                        spec.host_ifname,
                        describe(&e)
                    );
                }
                Err(err)
            }
        }
    })
}

/// A veth pair made whole in xvsd's namespace, for a container runtime to move one end of
/// into its container (Docker's remote driver: Join names that end, Docker moves, renames and
/// addresses it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostVethSpec {
    /// The switch side (at most 15 characters).
    pub host_ifname: String,
    /// The container side, until the runtime moves and renames it.
    pub peer_ifname: String,
    /// The container side's MAC address.
    pub mac: Mac,
    /// MTU of both sides.
    pub mtu: u32,
}

/// Creates a [`HostVethSpec`] pair and returns the switch side's ifindex: the switch side
/// up, the container side with its MAC and MTU and tx checksum offload off (its frames
/// leave through AF_XDP, which needs full checksums; the setting moves with the device).
/// Any failure after the pair exists deletes it again.
pub fn create_host_veth(spec: &HostVethSpec) -> Result<u32, NetError> {
    validate::ifname(&spec.host_ifname)?;
    validate::ifname(&spec.peer_ifname)?;
    if !(MIN_MTU..=MAX_MTU).contains(&spec.mtu) {
        return Err(NetError::BadMtu(spec.mtu));
    }
    if spec.mac.is_multicast() || spec.mac == Mac::default() {
        return Err(NetError::BadMac(spec.mac));
    }
    on_worker_thread(move || async move {
        let host = connect("xvsd's namespace")?;
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(spec.peer_ifname.clone())
            .address(spec.mac.0.to_vec())
            .mtu(spec.mtu)
            .build();
        let pair = LinkVeth::new(&spec.host_ifname, &spec.peer_ifname)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .mtu(spec.mtu)
            .up()
            .build();
        host.link().add(pair).execute().await.map_err(|e| {
            netlink_error(
                format!(
                    "cannot create veth {}/{}",
                    spec.host_ifname, spec.peer_ifname
                ),
                &e,
            )
        })?;
        let index = created_index(&host, &spec.host_ifname).await?;
        let peer = &spec.peer_ifname;
        if let Err(source) = xvs_switch::port::netdev::set_tx_checksum(peer, false) {
            if let Err(e) = host.link().del(index).execute().await {
                tracing::warn!("cannot remove veth {peer}: {}", describe(&e));
            }
            return Err(NetError::Io {
                what: format!("cannot turn tx checksum offload off on {peer}"),
                source,
            });
        }
        Ok(index)
    })
}

/// The index of veth `name`, just created in xvsd's namespace.
async fn created_index(host: &Handle, name: &str) -> Result<u32, NetError> {
    match link_index(host, name).await {
        Ok(Some(index)) => Ok(index),
        Ok(None) => Err(NetError::Netlink {
            what: format!("veth {name} vanished after creation"),
            reason: Errno::ENODEV.desc().to_string(),
        }),
        Err(e) => Err(netlink_error(format!("cannot find {name}"), &e)),
    }
}

/// Enters the sandbox (for good: the calling thread is the operation's own) and configures
/// the sandbox side of `spec`: a veth end, which leaves through AF_XDP and so must carry full
/// checksums.
async fn configure_sandbox_side(spec: &EndpointSpec, ns: &File) -> Result<(), NetError> {
    enter(&spec.sandbox, ns)?;
    let inside = connect(&spec.sandbox.to_string())?;
    let index = sandbox_link_index(&inside, spec).await?;
    configure_inside(spec, &inside, index, Checksums::Full).await
}

/// What the sandbox's interface may leave to the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checksums {
    /// Every frame leaves with full checksums (tx checksum offload off): a veth on AF_XDP.
    Full,
    /// Offloads stay on: a TAP with virtio-net headers hands partial checksums and TSO
    /// super-frames to the switch, which finishes them only for ports that need it.
    Offloaded,
}

/// The index of the endpoint's interface inside the sandbox (the calling thread is in it).
async fn sandbox_link_index(inside: &Handle, spec: &EndpointSpec) -> Result<u32, NetError> {
    let sandbox = &spec.sandbox;
    let ifname = &spec.ifname;
    match link_index(inside, ifname).await {
        Ok(Some(index)) => Ok(index),
        Ok(None) => Err(NetError::Netlink {
            what: format!("cannot find {ifname} in {sandbox}"),
            reason: Errno::ENODEV.desc().to_string(),
        }),
        Err(e) => Err(netlink_error(
            format!("cannot find {ifname} in {sandbox}"),
            &e,
        )),
    }
}

/// Configures the endpoint's interface `index` from inside the sandbox: checksum offload,
/// address, `lo` and the interface up, the default route via the gateway (a sandbox that
/// already has one keeps it: a sandbox on several networks routes through the first).
async fn configure_inside(
    spec: &EndpointSpec,
    inside: &Handle,
    index: u32,
    checksums: Checksums,
) -> Result<(), NetError> {
    let sandbox = &spec.sandbox;
    let ifname = &spec.ifname;
    if checksums == Checksums::Full {
        xvs_switch::port::netdev::set_tx_checksum(ifname, false).map_err(|source| {
            NetError::Io {
                what: format!("cannot turn tx checksum offload off on {ifname} in {sandbox}"),
                source,
            }
        })?;
    }
    inside
        .address()
        .add(index, IpAddr::V4(spec.addr), spec.prefix)
        .execute()
        .await
        .map_err(|e| {
            let what = format!(
                "cannot add address {}/{} to {ifname} in {sandbox}",
                spec.addr, spec.prefix
            );
            netlink_error(what, &e)
        })?;
    if let Some(lo) = link_index(inside, "lo").await.ok().flatten() {
        set_up(inside, lo)
            .await
            .map_err(|e| netlink_error(format!("cannot bring lo up in {sandbox}"), &e))?;
    }
    set_up(inside, index)
        .await
        .map_err(|e| netlink_error(format!("cannot bring {ifname} up in {sandbox}"), &e))?;
    if let Some(gateway) = spec.gateway {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .output_interface(index)
            .gateway(gateway)
            .build();
        match inside.route().add(route).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(Errno::EEXIST) => {
                tracing::info!(
                    "{sandbox} already has a default route; {ifname} does not replace it"
                );
            }
            Err(e) => {
                let what =
                    format!("cannot add default route via {gateway} on {ifname} in {sandbox}");
                return Err(netlink_error(what, &e));
            }
        }
    }
    Ok(())
}

/// Creates a TAP endpoint: the TAP is made inside the sandbox as its interface (`ifname`),
/// persistent, with virtio-net headers and offloads on, and configured like a veth endpoint
/// (MAC, MTU, address, default route) but with its checksum offloads left on. Returns the TAP's
/// open descriptor, for the switch's port, and its index inside the sandbox. Any failure after
/// the TAP exists deletes it again.
pub fn create_tap_endpoint(spec: &EndpointSpec) -> Result<(OwnedFd, u32), NetError> {
    spec.validate()?;
    let ns = spec.sandbox.open()?;
    on_worker_thread(move || async move {
        enter(&spec.sandbox, &ns)?;
        let inside = connect(&spec.sandbox.to_string())?;
        if matches!(link_index(&inside, &spec.ifname).await, Ok(Some(_))) {
            return Err(NetError::IfnameTaken {
                ifname: spec.ifname.clone(),
                sandbox: spec.sandbox.to_string(),
            });
        }
        let (fd, _) = open_tap(&spec.ifname, TapOptions { persist: true }).map_err(|source| {
            NetError::Tap {
                sandbox: spec.sandbox.to_string(),
                source,
            }
        })?;
        let configured = async {
            let index = sandbox_link_index(&inside, spec).await?;
            let set = LinkUnspec::new_with_index(index)
                .address(spec.mac.0.to_vec())
                .mtu(spec.mtu)
                .build();
            inside.link().set(set).execute().await.map_err(|e| {
                let what = format!(
                    "cannot set MAC {} and MTU {} on {} in {}",
                    spec.mac, spec.mtu, spec.ifname, spec.sandbox
                );
                netlink_error(what, &e)
            })?;
            configure_inside(spec, &inside, index, Checksums::Offloaded).await?;
            Ok(index)
        }
        .await;
        match configured {
            Ok(index) => Ok((fd, index)),
            Err(err) => {
                drop(fd);
                delete_link_inside(&inside, &spec.ifname, &spec.sandbox).await;
                Err(err)
            }
        }
    })
}

/// Opens the persistent TAP `ifname` of a TAP endpoint in `sandbox` again (xvsd restarted):
/// its descriptor and index there, or `None` if the sandbox has no such interface.
pub fn open_tap_endpoint(
    sandbox: &Sandbox,
    ifname: &str,
) -> Result<Option<(OwnedFd, u32)>, NetError> {
    validate::ifname(ifname)?;
    let ns = sandbox.open()?;
    on_worker_thread(move || async move {
        enter(sandbox, &ns)?;
        let inside = connect(&sandbox.to_string())?;
        let Some(index) = link_index(&inside, ifname)
            .await
            .map_err(|e| netlink_error(format!("cannot look for {ifname} in {sandbox}"), &e))?
        else {
            return Ok(None);
        };
        let (fd, _) =
            open_tap(ifname, TapOptions { persist: true }).map_err(|source| NetError::Tap {
                sandbox: sandbox.to_string(),
                source,
            })?;
        Ok(Some((fd, index)))
    })
}

/// Deletes the TAP endpoint `ifname` in `sandbox`. A sandbox or interface that is gone is not
/// an error (the TAP went with its namespace).
pub fn delete_tap_endpoint(sandbox: &Sandbox, ifname: &str) -> Result<(), NetError> {
    validate::ifname(ifname)?;
    let ns = match sandbox.open() {
        Ok(ns) => ns,
        Err(NetError::NoSuchNamespace(_) | NetError::NoSuchNamespacePath(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    on_worker_thread(move || async move {
        enter(sandbox, &ns)?;
        let inside = connect(&sandbox.to_string())?;
        delete_link_inside(&inside, ifname, sandbox).await;
        Ok(())
    })
}

/// Deletes interface `ifname` through `inside` (a handle in the sandbox), logging failures.
async fn delete_link_inside(inside: &Handle, ifname: &str, sandbox: &Sandbox) {
    if let Ok(Some(index)) = link_index(inside, ifname).await
        && let Err(e) = inside.link().del(index).execute().await
        && errno(&e) != Some(Errno::ENODEV)
    {
        tracing::warn!("cannot delete {ifname} in {sandbox}: {}", describe(&e));
    }
}

/// Deletes the endpoint whose switch side is `host_ifname` (its peer goes with it). An
/// endpoint that does not exist is not an error.
pub fn delete_endpoint(host_ifname: &str) -> Result<(), NetError> {
    validate::ifname(host_ifname)?;
    on_worker_thread(|| async move {
        let host = connect("xvsd's namespace")?;
        let what = || format!("cannot delete veth {host_ifname}");
        let Some(index) = link_index(&host, host_ifname)
            .await
            .map_err(|e| netlink_error(what(), &e))?
        else {
            return Ok(());
        };
        match host.link().del(index).execute().await {
            Err(e) if errno(&e) != Some(Errno::ENODEV) => Err(netlink_error(what(), &e)),
            _ => Ok(()),
        }
    })
}

/// Whether xvsd's namespace has an interface `name`.
pub fn link_exists(name: &str) -> bool {
    validate::ifname(name).is_ok() && nix::net::if_::if_nametoindex(name).is_ok()
}

/// The interfaces in xvsd's namespace whose names start with `prefix`, sorted.
pub fn links_with_prefix(prefix: &str) -> Result<Vec<String>, NetError> {
    on_worker_thread(|| async move {
        let host = connect("xvsd's namespace")?;
        let mut links = host.link().get().execute();
        let mut names = Vec::new();
        while let Some(link) = links
            .try_next()
            .await
            .map_err(|e| netlink_error("cannot list interfaces", &e))?
        {
            for attribute in link.attributes {
                if let LinkAttribute::IfName(name) = attribute
                    && name.starts_with(prefix)
                {
                    names.push(name);
                }
            }
        }
        names.sort();
        Ok(names)
    })
}

/// Whether the sandbox has an interface `ifname`.
pub fn sandbox_has_link(sandbox: &Sandbox, ifname: &str) -> Result<bool, NetError> {
    validate::ifname(ifname)?;
    let ns = sandbox.open()?;
    on_worker_thread(move || async move {
        enter(sandbox, &ns)?;
        let inside = connect(&sandbox.to_string())?;
        link_index(&inside, ifname)
            .await
            .map(|index| index.is_some())
            .map_err(|e| netlink_error(format!("cannot look for {ifname} in {sandbox}"), &e))
    })
}

/// Keeps temporary file names apart between threads of this process.
static RESOLV_SEQ: AtomicU64 = AtomicU64::new(0);

/// Points named namespace `ns_name` at `nameserver`: writes `/etc/netns/NAME/resolv.conf`,
/// which `ip netns exec NAME` binds over `/etc/resolv.conf`. Written to a temporary file and
/// renamed, so a reader never sees half of it.
pub fn write_resolv_conf(ns_name: &str, nameserver: Ipv4Addr) -> io::Result<()> {
    write_resolv_conf_in(Path::new(NETNS_ETC), ns_name, nameserver)
}

/// Removes what [`write_resolv_conf`] wrote, and the namespace's directory when that leaves
/// it empty. Nothing to remove is not an error.
pub fn remove_resolv_conf(ns_name: &str) -> io::Result<()> {
    remove_resolv_conf_in(Path::new(NETNS_ETC), ns_name)
}

fn resolv_dir(base: &Path, ns_name: &str) -> io::Result<PathBuf> {
    validate::namespace_name(ns_name)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    Ok(base.join(ns_name))
}

fn write_resolv_conf_in(base: &Path, ns_name: &str, nameserver: Ipv4Addr) -> io::Result<()> {
    let dir = resolv_dir(base, ns_name)?;
    fs::create_dir_all(&dir)?;
    let seq = RESOLV_SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".resolv.conf.xvsd-{}-{seq}", std::process::id()));
    let text = format!(
        "# written by xvsd for network namespace {ns_name}; removed on disconnect\n\
         nameserver {nameserver}\n"
    );
    let written = fs::write(&tmp, text).and_then(|()| fs::rename(&tmp, dir.join("resolv.conf")));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

fn remove_resolv_conf_in(base: &Path, ns_name: &str) -> io::Result<()> {
    let dir = resolv_dir(base, ns_name)?;
    match fs::remove_file(dir.join("resolv.conf")) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    // Only when empty: other tools may keep their own files there.
    let _ = fs::remove_dir(&dir);
    Ok(())
}

/// Runs one operation on a thread of its own, in a current-thread runtime, and waits for it.
/// The thread starts in the caller's namespace (xvsd's) and may leave it; it ends with the
/// operation.
fn on_worker_thread<T, F, Fut>(job: F) -> Result<T, NetError>
where
    T: Send,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<T, NetError>>,
{
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("xvs-netns".to_string())
            .spawn_scoped(scope, move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                    .map_err(|source| NetError::Io {
                        what: "cannot start a netlink runtime".to_string(),
                        source,
                    })?;
                runtime.block_on(job())
            })
            .map_err(|e| NetError::Worker(e.to_string()))?;
        worker
            .join()
            .unwrap_or_else(|_| Err(NetError::Worker("it panicked".to_string())))
    })
}

/// Moves the calling thread into the sandbox's network namespace.
fn enter(sandbox: &Sandbox, ns: &File) -> Result<(), NetError> {
    setns(ns, CloneFlags::CLONE_NEWNET).map_err(|errno| match errno {
        Errno::EINVAL => NetError::NotANamespace(sandbox.path()),
        _ => NetError::EnterNamespace {
            path: sandbox.path(),
            reason: errno.desc().to_string(),
        },
    })
}

/// Opens an rtnetlink socket in the calling thread's current namespace. Must run inside the
/// operation's runtime, which drives the connection.
fn connect(place: &str) -> Result<Handle, NetError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(|source| NetError::Io {
        what: format!("cannot open a netlink socket in {place}"),
        source,
    })?;
    tokio::spawn(connection);
    Ok(handle)
}

/// The index of interface `name`, or `None` if there is none.
async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, rtnetlink::Error> {
    let mut links = handle.link().get().match_name(name).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|link| link.header.index)),
        Err(e) if errno(&e) == Some(Errno::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Brings interface `index` up.
async fn set_up(handle: &Handle, index: u32) -> Result<(), rtnetlink::Error> {
    let up = LinkUnspec::new_with_index(index).up().build();
    handle.link().set(up).execute().await
}

/// The errno of a refused netlink request.
fn errno(e: &rtnetlink::Error) -> Option<Errno> {
    match e {
        rtnetlink::Error::NetlinkError(message) => {
            message.code.map(|code| Errno::from_raw(code.get().abs()))
        }
        _ => None,
    }
}

/// The kernel's reason in words ("File exists"), or the library's description.
fn describe(e: &rtnetlink::Error) -> String {
    match errno(e) {
        Some(errno) => errno.desc().to_string(),
        None => e.to_string(),
    }
}

fn netlink_error(what: impl Into<String>, e: &rtnetlink::Error) -> NetError {
    NetError::Netlink {
        what: what.into(),
        reason: describe(e),
    }
}

#[cfg(test)]
#[path = "tests/netns.rs"]
mod tests;
