//! The switches under test, each started on a topology's p1/p2 and torn down by its guard:
//! xvs (xvsd + xvsctl, AF_XDP ports), the Linux bridge, and Open vSwitch's userspace datapath
//! (ovsdb-server and ovs-vswitchd started by hand, with their run/log/db dirs in the run's work
//! directory) with AF_XDP or AF_PACKET(+TSO) ports.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::sys::{self, Output, Proc, Res};
use crate::topo::Topo;

/// Which switch a row measures.
#[derive(Clone, Debug)]
pub enum Kind {
    Xvs {
        workers: Option<u32>,
    },
    /// xvs with TAP endpoints (virtio-net headers, offloads on) as the namespaces' interfaces,
    /// made by `xvsctl network connect --port-type tap`.
    XvsTap,
    LinuxBridge,
    OvsAfxdp,
    OvsAfpacketTso,
}

/// One row of the results table.
#[derive(Clone, Debug)]
pub struct RowSpec {
    pub id: String,
    pub label: String,
    pub kind: Kind,
    /// tx checksum offload (and so TSO) off on the namespaces' veths.
    pub hosts_tx_off: bool,
    /// xvsd and xvsctl from this directory instead of the run's (a baseline build).
    pub bin_dir: Option<std::path::PathBuf>,
}

impl RowSpec {
    pub fn is_xvs(&self) -> bool {
        matches!(self.kind, Kind::Xvs { .. } | Kind::XvsTap)
    }

    pub fn is_xvs_tap(&self) -> bool {
        matches!(self.kind, Kind::XvsTap)
    }
}

/// After each xvs row, the same row with the binaries in `dir` (id `ID-base`), so a build is
/// measured beside its baseline in one run.
pub fn with_baseline(rows: Vec<RowSpec>, dir: &std::path::Path) -> Vec<RowSpec> {
    let mut out = Vec::new();
    for r in rows {
        let base = r.is_xvs().then(|| RowSpec {
            id: format!("{}-base", r.id),
            label: format!("{} [baseline: {}]", r.label, dir.display()),
            kind: r.kind.clone(),
            hosts_tx_off: r.hosts_tx_off,
            bin_dir: Some(dir.to_path_buf()),
        });
        out.push(r);
        out.extend(base);
    }
    out
}

/// Every row the harness knows, in table order; `workers` gives one xvs row per value.
pub fn all_rows(workers: &[u32]) -> Vec<RowSpec> {
    let mut rows = Vec::new();
    if workers.is_empty() {
        rows.push(RowSpec {
            id: "xvs".into(),
            label: "xvs, AF_XDP ports (xvsd's default workers)".into(),
            kind: Kind::Xvs { workers: None },
            hosts_tx_off: true,
            bin_dir: None,
        });
    }
    for (i, &w) in workers.iter().enumerate() {
        rows.push(RowSpec {
            id: if i == 0 && workers.len() == 1 {
                "xvs".into()
            } else {
                format!("xvs-w{w}")
            },
            label: format!(
                "xvs, AF_XDP ports, {w} worker{}",
                if w == 1 { "" } else { "s" }
            ),
            kind: Kind::Xvs { workers: Some(w) },
            hosts_tx_off: true,
            bin_dir: None,
        });
    }
    rows.push(RowSpec {
        id: "xvs-tap".into(),
        label: "xvs, TAP endpoints with virtio-net offloads (network connect --port-type tap)"
            .into(),
        kind: Kind::XvsTap,
        hosts_tx_off: false,
        bin_dir: None,
    });
    rows.push(RowSpec {
        id: "lbr".into(),
        label: "Linux bridge, hosts' offloads on".into(),
        kind: Kind::LinuxBridge,
        hosts_tx_off: false,
        bin_dir: None,
    });
    rows.push(RowSpec {
        id: "lbr-txoff".into(),
        label: "Linux bridge, hosts tx off".into(),
        kind: Kind::LinuxBridge,
        hosts_tx_off: true,
        bin_dir: None,
    });
    rows.push(RowSpec {
        id: "ovs-afxdp".into(),
        label: "OVS userspace, AF_XDP native ports, hosts tx off".into(),
        kind: Kind::OvsAfxdp,
        hosts_tx_off: true,
        bin_dir: None,
    });
    rows.push(RowSpec {
        id: "ovs-afpacket-tso".into(),
        label: "OVS userspace, AF_PACKET ports + userspace TSO, hosts' offloads on".into(),
        kind: Kind::OvsAfpacketTso,
        hosts_tx_off: false,
        bin_dir: None,
    });
    rows
}

/// Paths the switches are started from.
pub struct Env {
    pub bin_dir: PathBuf,
    pub work_dir: PathBuf,
    pub prefix: String,
}

/// A running switch; dropping it stops it and removes what it made.
pub enum Switch {
    Xvs(Xvs),
    Bridge(LinuxBridge),
    Ovs(Ovs),
}

impl Switch {
    pub fn start(spec: &RowSpec, row: usize, topo: &Topo, env: &Env) -> Res<Switch> {
        match spec.kind {
            Kind::Xvs { workers } => {
                Xvs::start(row, topo, env, spec, workers, false).map(Switch::Xvs)
            }
            Kind::XvsTap => Xvs::start(row, topo, env, spec, None, true).map(Switch::Xvs),
            Kind::LinuxBridge => LinuxBridge::start(row, topo, env).map(Switch::Bridge),
            Kind::OvsAfxdp => Ovs::start(row, topo, env, false).map(Switch::Ovs),
            Kind::OvsAfpacketTso => Ovs::start(row, topo, env, true).map(Switch::Ovs),
        }
    }

    /// The userspace daemon doing the forwarding, if any (its CPU is measured separately).
    pub fn daemon_pid(&self) -> Option<u32> {
        match self {
            Switch::Xvs(x) => x.daemon.pid(),
            Switch::Bridge(_) => None,
            Switch::Ovs(o) => o.vswitchd.as_ref().and_then(Proc::pid),
        }
    }

    /// Fails if the daemon has died (so a crash is reported, not measured as zero).
    pub fn check_alive(&mut self) -> Res<()> {
        let (p, log) = match self {
            Switch::Xvs(x) => (&mut x.daemon, x.log.clone()),
            Switch::Bridge(_) => return Ok(()),
            Switch::Ovs(o) => match o.vswitchd.as_mut() {
                Some(p) => (p, o.dir.join("log/ovs-vswitchd.log")),
                None => return Ok(()),
            },
        };
        match p.exited() {
            None => Ok(()),
            Some(st) => Err(format!(
                "{} exited ({st}); log: {}",
                p.name(),
                sys::log_tail(&log, 5)
            )
            .into()),
        }
    }

    /// What the switch says about itself (versions, ports, modes, counters), for the JSON.
    pub fn describe(&self) -> Value {
        match self {
            Switch::Xvs(x) => x.describe(),
            Switch::Bridge(b) => json!({ "bridge": b.name }),
            Switch::Ovs(o) => o.describe(),
        }
    }
}

const T: Duration = Duration::from_secs(10);

pub struct LinuxBridge {
    name: String,
}

impl LinuxBridge {
    fn start(row: usize, topo: &Topo, env: &Env) -> Res<LinuxBridge> {
        let b = LinuxBridge {
            name: format!("{}{row}br", env.prefix),
        };
        sys::run_ok(&["ip", "link", "add", &b.name, "type", "bridge"], T)?;
        for p in [&topo.p1, &topo.p2] {
            sys::run_ok(&["ip", "link", "set", p, "master", &b.name], T)?;
        }
        sys::run_ok(&["ip", "link", "set", &b.name, "up"], T)?;
        Ok(b)
    }
}

impl Drop for LinuxBridge {
    fn drop(&mut self) {
        let _ = sys::run(&["ip", "link", "del", &self.name], T);
    }
}

pub struct Xvs {
    daemon: Proc,
    ctl: String,
    socket: String,
    bridge: String,
    log: PathBuf,
    pidfile: PathBuf,
}

impl Xvs {
    fn start(
        row: usize,
        topo: &Topo,
        env: &Env,
        spec: &RowSpec,
        workers: Option<u32>,
        tap_endpoints: bool,
    ) -> Res<Xvs> {
        let bin_dir = spec.bin_dir.as_ref().unwrap_or(&env.bin_dir);
        let xvsd = bin_dir.join("xvsd");
        let xvsctl = bin_dir.join("xvsctl");
        for b in [&xvsd, &xvsctl] {
            if !b.is_file() {
                return Err(format!(
                    "{} not built (cargo build --release -p xvs-vswitchd -p xvs-ctl)",
                    b.display()
                )
                .into());
            }
        }
        let dir = env.work_dir.join(format!("xvs-{row}"));
        let state = dir.join("state");
        std::fs::create_dir_all(&state)
            .map_err(|e| format!("cannot create {}: {e}", state.display()))?;
        let socket = dir.join("xvsd.sock").display().to_string();
        let log = dir.join("xvsd.log");
        let mut argv = vec![
            xvsd.display().to_string(),
            "--socket".into(),
            socket.clone(),
            "--state-dir".into(),
            state.display().to_string(),
        ];
        if let Some(w) = workers {
            argv.extend(["--workers".into(), w.to_string()]);
        }
        let daemon = Proc::spawn(&argv, &[], Output::File(log.clone()))?;
        let pidfile = dir.join("xvsd.pid");
        // For run.sh's trap, in case this process is killed before its guards run.
        if let Some(pid) = daemon.pid() {
            let _ = std::fs::write(&pidfile, format!("{pid}\n"));
        }
        let mut x = Xvs {
            daemon,
            ctl: xvsctl.display().to_string(),
            socket,
            bridge: format!("{}{row}x", env.prefix),
            log,
            pidfile,
        };
        let end = Instant::now() + Duration::from_secs(15);
        while !Path::new(&x.socket).exists() {
            if let Some(st) = x.daemon.exited() {
                return Err(
                    format!("xvsd exited at start ({st}): {}", sys::log_tail(&x.log, 5)).into(),
                );
            }
            if Instant::now() >= end {
                return Err(format!(
                    "xvsd did not create its socket within 15 s: {}",
                    sys::log_tail(&x.log, 5)
                )
                .into());
            }
            sys::sleep(Duration::from_millis(50))?;
        }
        if tap_endpoints {
            x.connect_tap_endpoints(topo)?;
            return Ok(x);
        }
        x.ctl(&["add-br", &x.bridge.clone()])?;
        for p in [&topo.p1, &topo.p2] {
            x.ctl(&["add-port", &x.bridge.clone(), p, "--type", "afxdp"])?;
        }
        Ok(x)
    }

    /// A network on the topology's subnet (gateway out of the way at .254) and the two
    /// namespaces connected to it through TAP endpoints named v1 and v2; their MACs are then
    /// set to the topology's, which trafgen's packet names.
    fn connect_tap_endpoints(&mut self, topo: &Topo) -> Res<()> {
        let net = self.bridge.clone();
        self.ctl(&[
            "network",
            "create",
            &net,
            "--subnet",
            "198.18.0.0/24",
            "--gateway",
            "198.18.0.254",
        ])?;
        for (ns, v, mac, ip) in [
            (
                &topo.ns1,
                crate::topo::V1,
                crate::topo::MAC1,
                crate::topo::IP1,
            ),
            (
                &topo.ns2,
                crate::topo::V2,
                crate::topo::MAC2,
                crate::topo::IP2,
            ),
        ] {
            self.ctl(&[
                "network",
                "connect",
                &net,
                ns,
                "--ip",
                ip,
                "--ifname",
                v,
                "--port-type",
                "tap",
            ])?;
            sys::run_ok(&["ip", "-n", ns, "link", "set", v, "address", mac], T)?;
        }
        self.bridge = format!("net.{net}");
        Ok(())
    }

    fn ctl(&self, args: &[&str]) -> Res<String> {
        let mut argv = vec![self.ctl.as_str()];
        argv.extend_from_slice(args);
        sys::run_ok_env(&argv, &[("XVS_SOCKET", &self.socket)], T)
    }

    fn describe(&self) -> Value {
        let get = |args: &[&str]| match self.ctl(args) {
            Ok(out) => serde_json::from_str(&out).unwrap_or(Value::String(out)),
            Err(e) => Value::String(format!("error: {e}")),
        };
        json!({
            "bridge": self.bridge,
            "show": get(&["show", "--json"]),
            "stats": get(&["stats", "--json"]),
        })
    }
}

impl Drop for Xvs {
    fn drop(&mut self) {
        // SIGTERM: xvsd detaches its ports and exits; its state dir goes with the work dir.
        self.daemon.stop(Duration::from_secs(5));
        let _ = std::fs::remove_file(&self.pidfile);
    }
}

pub struct Ovs {
    dir: PathBuf,
    bridge: String,
    env: Vec<(&'static str, String)>,
    dbserver: Option<Proc>,
    vswitchd: Option<Proc>,
}

impl Ovs {
    fn start(row: usize, topo: &Topo, env: &Env, afpacket_tso: bool) -> Res<Ovs> {
        for prog in [
            "ovsdb-tool",
            "ovsdb-server",
            "ovs-vswitchd",
            "ovs-vsctl",
            "ovs-appctl",
        ] {
            if !sys::have(prog) {
                return Err(format!("{prog} not found (Debian package openvswitch-switch)").into());
            }
        }
        let schema = "/usr/share/openvswitch/vswitch.ovsschema";
        if !Path::new(schema).is_file() {
            return Err(format!("{schema} not found").into());
        }
        let dir = env.work_dir.join(format!("ovs-{row}"));
        let mut o = Ovs {
            env: ["run", "log", "db"]
                .iter()
                .zip(["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR"])
                .map(|(sub, k)| (k, dir.join(sub).display().to_string()))
                .collect(),
            dir,
            bridge: format!("{}{row}ovs", env.prefix),
            dbserver: None,
            vswitchd: None,
        };
        for (_, d) in &o.env {
            std::fs::create_dir_all(d).map_err(|e| format!("cannot create {d}: {e}"))?;
        }
        let run = o.dir.join("run");
        let db = o.dir.join("db/conf.db").display().to_string();
        let sock = run.join("db.sock");
        o.sh(&["ovsdb-tool", "create", &db, schema])?;
        o.dbserver = Some(Proc::spawn(
            &[
                "ovsdb-server",
                &db,
                &format!("--remote=punix:{}", sock.display()),
                "--pidfile",
                "--log-file",
                "-vconsole:off",
            ],
            &o.envs(),
            Output::Null,
        )?);
        let end = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            if Instant::now() >= end {
                return Err(format!(
                    "ovsdb-server did not create {} within 10 s: {}",
                    sock.display(),
                    sys::log_tail(&o.dir.join("log/ovsdb-server.log"), 3)
                )
                .into());
            }
            sys::sleep(Duration::from_millis(50))?;
        }
        o.sh(&["ovs-vsctl", "--no-wait", "init"])?;
        if afpacket_tso {
            o.sh(&[
                "ovs-vsctl",
                "--no-wait",
                "set",
                "Open_vSwitch",
                ".",
                "other_config:userspace-tso-enable=true",
            ])?;
        }
        o.vswitchd = Some(Proc::spawn(
            &[
                "ovs-vswitchd",
                &format!("unix:{}", sock.display()),
                "--pidfile",
                "--log-file",
                "-vconsole:off",
            ],
            &o.envs(),
            Output::Null,
        )?);
        let br = o.bridge.clone();
        o.sh(&[
            "ovs-vsctl",
            "--timeout=20",
            "add-br",
            &br,
            "--",
            "set",
            "bridge",
            &br,
            "datapath_type=netdev",
        ])?;
        for p in [&topo.p1, &topo.p2] {
            if afpacket_tso {
                o.sh(&["ovs-vsctl", "--timeout=20", "add-port", &br, p])?;
            } else {
                o.sh(&[
                    "ovs-vsctl",
                    "--timeout=20",
                    "add-port",
                    &br,
                    p,
                    "--",
                    "set",
                    "interface",
                    p,
                    "type=afxdp",
                    "options:xdp-mode=native",
                ])?;
            }
        }
        // A port OVS could not open has ofport -1 and says why in `error`.
        for p in [&topo.p1, &topo.p2] {
            let ofport = o.sh(&["ovs-vsctl", "--timeout=10", "get", "interface", p, "ofport"])?;
            if ofport.trim().parse::<i64>().unwrap_or(-1) < 1 {
                let err = o
                    .sh(&["ovs-vsctl", "--timeout=10", "get", "interface", p, "error"])
                    .unwrap_or_default();
                return Err(format!("OVS could not open port {p}: {}", err.trim()).into());
            }
        }
        Ok(o)
    }

    fn envs(&self) -> Vec<(&str, &str)> {
        self.env.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    fn sh(&self, argv: &[&str]) -> Res<String> {
        sys::run_ok_env(argv, &self.envs(), Duration::from_secs(30))
    }

    fn describe(&self) -> Value {
        let get = |argv: &[&str]| match self.sh(argv) {
            Ok(s) => Value::String(s.trim().to_owned()),
            Err(e) => Value::String(format!("error: {e}")),
        };
        json!({
            "bridge": self.bridge,
            "version": sys::version_of(&["ovs-vswitchd", "--version"]),
            "interfaces": get(&["ovs-vsctl", "--timeout=10", "--columns=name,type,options,status",
                "list", "interface"]),
            "pmd_stats": get(&["ovs-appctl", "--timeout=10", "dpif-netdev/pmd-stats-show"]),
        })
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        let short = Duration::from_secs(10);
        let env = self.envs();
        if self.vswitchd.is_some() {
            let _ = sys::run_env(
                &[
                    "ovs-vsctl",
                    "--timeout=5",
                    "--if-exists",
                    "del-br",
                    &self.bridge,
                ],
                &env,
                short,
            );
            let _ = sys::run_env(
                &[
                    "ovs-appctl",
                    "--timeout=5",
                    "-t",
                    "ovs-vswitchd",
                    "exit",
                    "--cleanup",
                ],
                &env,
                short,
            );
        }
        if self.dbserver.is_some() {
            let _ = sys::run_env(
                &["ovs-appctl", "--timeout=5", "-t", "ovsdb-server", "exit"],
                &env,
                short,
            );
        }
        // Whatever did not exit by itself is stopped by the Proc guards (SIGTERM, SIGKILL).
        drop(env);
        if let Some(mut p) = self.vswitchd.take() {
            let _ = p.wait_until(Instant::now() + Duration::from_secs(5));
        }
        if let Some(mut p) = self.dbserver.take() {
            let _ = p.wait_until(Instant::now() + Duration::from_secs(5));
        }
    }
}
