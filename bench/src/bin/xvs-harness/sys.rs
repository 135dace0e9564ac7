//! Processes, time and /proc for the harness. Every external command runs under a deadline,
//! every background process is stopped when its guard drops, and SIGINT/SIGTERM become
//! `Fail::Interrupted`, which unwinds through the guards so that cleanup still happens.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, SigSet, Signal};
use nix::unistd::Pid;

/// Set by the signal thread; every wait in the harness polls it.
static STOP: AtomicBool = AtomicBool::new(false);

/// Why a step did not produce its result.
#[derive(Debug)]
pub enum Fail {
    /// SIGINT/SIGTERM/SIGHUP: stop measuring, clean up, exit.
    Interrupted,
    /// The step failed; the message says what and why.
    Failed(String),
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fail::Interrupted => f.write_str("interrupted"),
            Fail::Failed(m) => f.write_str(m),
        }
    }
}

impl From<String> for Fail {
    fn from(m: String) -> Self {
        Fail::Failed(m)
    }
}

impl From<&str> for Fail {
    fn from(m: &str) -> Self {
        Fail::Failed(m.to_owned())
    }
}

pub type Res<T> = Result<T, Fail>;

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and so in every thread spawned after) and
/// turns them into the STOP flag from a dedicated thread. Children get an empty signal mask
/// from std's spawn, so Ctrl-C still reaches trafgen and iperf3 directly.
pub fn install_signal_thread() -> Res<()> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGHUP);
    set.thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;
    std::thread::spawn(move || {
        loop {
            if let Ok(sig) = set.wait()
                && !STOP.swap(true, Ordering::SeqCst)
            {
                eprintln!("harness: {sig} received: stopping and cleaning up");
            }
        }
    });
    Ok(())
}

pub fn check_stop() -> Res<()> {
    if STOP.load(Ordering::SeqCst) {
        Err(Fail::Interrupted)
    } else {
        Ok(())
    }
}

/// Sleeps `d`, waking every 50 ms to notice an interrupt.
pub fn sleep(d: Duration) -> Res<()> {
    let end = Instant::now() + d;
    loop {
        check_stop()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Where a process's stdout and stderr go.
pub enum Output {
    Null,
    /// Read into memory (up to 4 MiB each) by two reader threads.
    Capture,
    /// Appended to a log file.
    File(PathBuf),
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    name: String,
    child: Option<Child>,
    stdout: Option<mpsc::Receiver<String>>,
    stderr: Option<mpsc::Receiver<String>>,
    status: Option<ExitStatus>,
}

const CAPTURE_LIMIT: u64 = 4 << 20;

fn reader(mut r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut r).take(CAPTURE_LIMIT).read_to_end(&mut buf);
        // Drain the rest so the writer never blocks on a full pipe.
        let _ = std::io::copy(&mut r, &mut std::io::sink());
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

impl Proc {
    pub fn spawn<S: AsRef<str>>(argv: &[S], env: &[(&str, &str)], out: Output) -> Res<Proc> {
        let argv: Vec<&str> = argv.iter().map(AsRef::as_ref).collect();
        let (prog, args) = argv.split_first().ok_or("empty command")?;
        let mut cmd = Command::new(prog);
        cmd.args(args).stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        match &out {
            Output::Null => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
            Output::Capture => {
                cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            }
            Output::File(p) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| format!("cannot open {}: {e}", p.display()))?;
                let g = f
                    .try_clone()
                    .map_err(|e| format!("cannot open {}: {e}", p.display()))?;
                cmd.stdout(f).stderr(g);
            }
        }
        let mut child = cmd.spawn().map_err(|e| format!("cannot run {prog}: {e}"))?;
        let stdout = child.stdout.take().map(reader);
        let stderr = child.stderr.take().map(reader);
        Ok(Proc {
            name: argv.join(" "),
            child: Some(child),
            stdout,
            stderr,
            status: None,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status if the process has ended, without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Some(c) = self.child.as_mut()
            && let Ok(Some(st)) = c.try_wait()
        {
            self.status = Some(st);
        }
        self.status
    }

    /// Waits for the process to end by itself until `deadline`; `None` if it has not.
    pub fn wait_until(&mut self, deadline: Instant) -> Res<Option<ExitStatus>> {
        loop {
            if let Some(st) = self.exited() {
                return Ok(Some(st));
            }
            check_stop()?;
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL. Returns the exit status.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(st) = self.exited() {
            return Some(st);
        }
        let child = self.child.as_mut()?;
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if let Ok(Some(st)) = child.try_wait() {
                self.status = Some(st);
                return self.status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        self.status = child.wait().ok();
        self.status
    }

    /// Captured stdout and stderr (empty unless `Output::Capture`). Call after the process has
    /// ended; waits at most 2 s for a reader whose pipe a grandchild still holds.
    pub fn take_output(&mut self) -> (String, String) {
        let get = |r: Option<mpsc::Receiver<String>>| {
            r.and_then(|r| r.recv_timeout(Duration::from_secs(2)).ok())
                .unwrap_or_default()
        };
        (get(self.stdout.take()), get(self.stderr.take()))
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// The result of a finished (or timed-out) command.
pub struct Out {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Runs a command to completion, killing it after `timeout`.
pub fn run_env<S: AsRef<str>>(argv: &[S], env: &[(&str, &str)], timeout: Duration) -> Res<Out> {
    let mut p = Proc::spawn(argv, env, Output::Capture)?;
    let status = p.wait_until(Instant::now() + timeout)?;
    let status = match status {
        Some(st) => Some(st),
        None => {
            p.stop(Duration::from_millis(500));
            None
        }
    };
    let (stdout, stderr) = p.take_output();
    Ok(Out {
        status,
        stdout,
        stderr,
    })
}

pub fn run<S: AsRef<str>>(argv: &[S], timeout: Duration) -> Res<Out> {
    run_env(argv, &[], timeout)
}

/// Runs a command and fails unless it exits 0; returns its stdout.
pub fn run_ok_env<S: AsRef<str>>(
    argv: &[S],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Res<String> {
    let out = run_env(argv, env, timeout)?;
    if out.ok() {
        return Ok(out.stdout);
    }
    let cmd: Vec<&str> = argv.iter().map(AsRef::as_ref).collect();
    let why = match out.status {
        None => format!("timed out after {:.0} s", timeout.as_secs_f64()),
        Some(st) => {
            let msg = last_line(&out.stderr)
                .or_else(|| last_line(&out.stdout))
                .unwrap_or_default();
            format!("{st}: {msg}")
        }
    };
    Err(Fail::Failed(format!("`{}` {why}", cmd.join(" "))))
}

pub fn run_ok<S: AsRef<str>>(argv: &[S], timeout: Duration) -> Res<String> {
    run_ok_env(argv, &[], timeout)
}

pub fn last_line(s: &str) -> Option<String> {
    s.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}

/// The last `n` non-empty lines of a file, joined with " | " (for daemon logs in reasons).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// `argv` run inside network namespace `ns`.
pub fn in_ns(ns: &str, argv: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["ip", "netns", "exec", ns].map(String::from).to_vec();
    v.extend(argv.iter().map(|s| (*s).to_owned()));
    v
}

/// Whether `prog` is found on PATH.
pub fn have(prog: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            let p = d.join(prog);
            p.is_file()
        })
    })
}

/// Interface counters (stats64) read over netlink with `ip -j -s link`.
#[derive(Clone, Copy, Debug, Default)]
pub struct IfStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

pub fn if_stats(ns: &str, dev: &str) -> Res<IfStats> {
    let out = run_ok(
        &["ip", "-n", ns, "-j", "-s", "link", "show", "dev", dev],
        Duration::from_secs(5),
    )?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| format!("cannot parse `ip -j -s link` output: {e}"))?;
    let s = &v[0]["stats64"];
    let get = |dir: &str, k: &str| s[dir][k].as_u64().unwrap_or(0);
    Ok(IfStats {
        rx_packets: get("rx", "packets"),
        tx_packets: get("tx", "packets"),
        rx_dropped: get("rx", "dropped"),
        tx_dropped: get("tx", "dropped"),
    })
}

/// A point-in-time reading of machine-wide and (optionally) one process's CPU time.
#[derive(Clone, Copy, Debug)]
pub struct CpuSnap {
    at: Instant,
    total: u64,
    busy: u64,
    softirq: u64,
    proc_ticks: Option<u64>,
}

/// CPU used between two snapshots, in percent of one core (so up to 100 × cores).
#[derive(Clone, Copy, Debug)]
pub struct CpuUse {
    pub machine: f64,
    pub softirq: f64,
    pub daemon: Option<f64>,
}

/// Constants of the machine the harness needs for CPU accounting.
#[derive(Clone, Copy, Debug)]
pub struct Machine {
    pub ncpu: u32,
    pub clk_tck: f64,
}

impl Machine {
    pub fn read() -> Machine {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ncpu = stat
            .lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count();
        let clk_tck = run(&["getconf", "CLK_TCK"], Duration::from_secs(5))
            .ok()
            .and_then(|o| o.stdout.trim().parse::<f64>().ok())
            .filter(|v| *v > 0.0)
            .unwrap_or(100.0);
        Machine {
            ncpu: u32::try_from(ncpu.max(1)).unwrap_or(1),
            clk_tck,
        }
    }

    pub fn snap(&self, pid: Option<u32>) -> Res<CpuSnap> {
        let stat = std::fs::read_to_string("/proc/stat")
            .map_err(|e| format!("cannot read /proc/stat: {e}"))?;
        let line = stat
            .lines()
            .find(|l| l.starts_with("cpu "))
            .ok_or("no cpu line in /proc/stat")?;
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        if f.len() < 8 {
            return Err("short cpu line in /proc/stat".into());
        }
        let total: u64 = f.iter().sum();
        Ok(CpuSnap {
            at: Instant::now(),
            total,
            busy: total - f[3] - f[4],
            softirq: f[6],
            proc_ticks: pid.and_then(proc_ticks),
        })
    }

    pub fn between(&self, a: &CpuSnap, b: &CpuSnap) -> CpuUse {
        let cores = f64::from(self.ncpu);
        let dt = b.total.saturating_sub(a.total).max(1) as f64;
        let secs = (b.at - a.at).as_secs_f64().max(1e-3);
        CpuUse {
            machine: b.busy.saturating_sub(a.busy) as f64 / dt * cores * 100.0,
            softirq: b.softirq.saturating_sub(a.softirq) as f64 / dt * cores * 100.0,
            daemon: match (a.proc_ticks, b.proc_ticks) {
                (Some(x), Some(y)) => {
                    Some(y.saturating_sub(x) as f64 / self.clk_tck / secs * 100.0)
                }
                _ => None,
            },
        }
    }
}

/// utime + stime of a whole process (all its threads), in clock ticks.
fn proc_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// First line of `prog ARG`'s output, for recording versions.
pub fn version_of(argv: &[&str]) -> Option<String> {
    let out = run(argv, Duration::from_secs(5)).ok()?;
    let text = if out.stdout.trim().is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    text.lines().next().map(|l| l.trim().to_owned())
}

/// Whether this process runs with effective uid 0 (from /proc/self/status).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}
