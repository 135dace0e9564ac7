//! The two-namespace topology every row is measured on: `ns1` (v1, 198.18.0.1) and `ns2`
//! (v2, 198.18.0.2), each veth's other end (p1, p2) left in the root namespace for the switch
//! under test. Names carry the run's prefix and the row's index, so parallel runs and
//! consecutive rows never collide; dropping the guard removes everything.

use std::time::Duration;

use crate::sys::{self, Res};

pub const IP1: &str = "198.18.0.1";
pub const IP2: &str = "198.18.0.2";
pub const MAC1: &str = "02:00:00:00:01:01";
pub const MAC2: &str = "02:00:00:00:02:02";
/// The namespace-side interface names (inside ns1 and ns2).
pub const V1: &str = "v1";
pub const V2: &str = "v2";

const T: Duration = Duration::from_secs(10);

pub struct Topo {
    pub ns1: String,
    pub ns2: String,
    /// Root-namespace ends, the switch's ports.
    pub p1: String,
    pub p2: String,
}

impl Topo {
    /// Creates the namespaces and veths. `hosts_tx_off` turns tx checksum offload (and with it
    /// TSO) off on v1 and v2, which every userspace switch without virtio-net headers needs.
    /// Without `veths` only the namespaces are made: the switch gives them their interfaces
    /// (xvs's TAP endpoints), named v1 and v2 with the same MACs and addresses.
    pub fn up(prefix: &str, row: usize, hosts_tx_off: bool, veths: bool) -> Res<Topo> {
        let t = Topo {
            ns1: format!("{prefix}{row}-ns1"),
            ns2: format!("{prefix}{row}-ns2"),
            p1: format!("{prefix}{row}p1"),
            p2: format!("{prefix}{row}p2"),
        };
        // From here on, Drop removes whatever was made, if anything below fails.
        for (ns, p, v, mac, ip) in [
            (&t.ns1, &t.p1, V1, MAC1, IP1),
            (&t.ns2, &t.p2, V2, MAC2, IP2),
        ] {
            sys::run_ok(&["ip", "netns", "add", ns], T)?;
            if !veths {
                sys::run_ok(&["ip", "-n", ns, "link", "set", "lo", "up"], T)?;
                continue;
            }
            sys::run_ok(
                &[
                    "ip", "link", "add", p, "type", "veth", "peer", "name", v, "netns", ns,
                ],
                T,
            )?;
            sys::run_ok(&["ip", "-n", ns, "link", "set", v, "address", mac], T)?;
            sys::run_ok(
                &["ip", "-n", ns, "addr", "add", &format!("{ip}/24"), "dev", v],
                T,
            )?;
            sys::run_ok(&["ip", "-n", ns, "link", "set", "lo", "up"], T)?;
            sys::run_ok(&["ip", "-n", ns, "link", "set", v, "up"], T)?;
            sys::run_ok(&["ip", "link", "set", p, "up"], T)?;
            if hosts_tx_off {
                sys::run_ok(&sys::in_ns(ns, &["ethtool", "-K", v, "tx", "off"]), T)?;
            }
        }
        Ok(t)
    }

    /// Pings ns2 from ns1 until it answers (the switch may take a moment to attach its ports),
    /// which also fills the ARP caches and the switch's MAC table.
    pub fn wait_connected(&self, within: Duration) -> Res<()> {
        let end = std::time::Instant::now() + within;
        loop {
            let out = sys::run(
                &sys::in_ns(&self.ns1, &["ping", "-n", "-c", "1", "-W", "1", IP2]),
                Duration::from_secs(5),
            )?;
            if out.ok() {
                // And the other way, so that both MACs are learned.
                let back = sys::run(
                    &sys::in_ns(&self.ns2, &["ping", "-n", "-c", "1", "-W", "1", IP1]),
                    Duration::from_secs(5),
                )?;
                if back.ok() {
                    return Ok(());
                }
            }
            if std::time::Instant::now() >= end {
                return Err(format!(
                    "no connectivity through the switch: ping {IP1} -> {IP2} got no answer in {} s",
                    within.as_secs()
                )
                .into());
            }
            sys::sleep(Duration::from_millis(300))?;
        }
    }
}

/// SIGKILLs every process in namespace `ns` (one the harness made).
pub fn kill_all_in(ns: &str) {
    if let Ok(out) = sys::run(&["ip", "netns", "pids", ns], T) {
        for pid in out.stdout.split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        // Kill anything still running in our namespaces (bounded generators end by themselves,
        // but not before their timeout), then delete the veths explicitly: deleting a
        // namespace frees its devices asynchronously.
        for ns in [&self.ns1, &self.ns2] {
            kill_all_in(ns);
        }
        for p in [&self.p1, &self.p2] {
            let _ = sys::run(&["ip", "link", "del", p], T);
        }
        for ns in [&self.ns1, &self.ns2] {
            let _ = sys::run(&["ip", "netns", "del", ns], T);
        }
    }
}

/// trafgen's packet: 64 B on the wire (60 B frame + FCS), IPv4/UDP from v1 to v2, port 9.
pub fn trafgen_config() -> String {
    let m = |s: &str| {
        s.split(':')
            .map(|b| format!("0x{b}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let ip = |s: &str| s.replace('.', ",");
    format!(
        "{{\n  {dst},\n  {src},\n  0x08,0x00,\n  \
         0x45,0x00, const16(46), const16(0), 0x40,0x00, 64, 17, csumip(14,33),\n  \
         {sip}, {dip},\n  \
         const16(9), const16(9), const16(26), const16(0),\n  \
         fill(0x41, 18)\n}}\n",
        dst = m(MAC2),
        src = m(MAC1),
        sip = ip(IP1),
        dip = ip(IP2),
    )
}
