//! xvs-harness: measures xvs side by side with the switches a user would otherwise pick (the
//! Linux bridge, Open vSwitch's userspace datapath with AF_XDP or AF_PACKET+TSO ports), one
//! after another in the same run, on the same two-namespace topology: 64 B UDP pps, TCP with
//! 1 and 4 streams, ping RTT percentiles and CPU. Prints a table with xvs/peer ratios, writes
//! JSON and an SVG chart to bench/results/. Needs root; run it through bench/harness/run.sh.
//!
//! All traffic stays between the run's own namespaces; every generator is bounded in count and
//! time; everything created is removed by guards (and by run.sh's trap if this process dies).
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)]

mod chart;
mod measure;
mod report;
mod switches;
mod sys;
mod topo;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

use measure::{Figures, Plan};
use report::{Report, RowResult};
use switches::{Env, RowSpec, Switch};
use sys::{Fail, Machine, Res};
use topo::Topo;

/// Side-by-side throughput harness: xvs vs the Linux bridge and OVS userspace.
#[derive(Parser, Debug)]
#[command(name = "xvs-harness")]
struct Args {
    /// One run with short windows (CI smoke test).
    #[arg(long)]
    quick: bool,
    /// Runs per row (medians are reported); default 3, or 1 with --quick.
    #[arg(long)]
    runs: Option<usize>,
    /// Seconds of each pps and TCP measurement window; default 5, or 2 with --quick.
    #[arg(long)]
    window: Option<f64>,
    /// Rows to measure, comma-separated: xvs, lbr, lbr-txoff, ovs-afxdp, ovs-afpacket-tso
    /// (with several --workers values the xvs rows are xvs-wN; `xvs` selects them all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// xvsd worker threads, e.g. `1` or `1,2` for one xvs row each; default: xvsd's own.
    #[arg(long, value_delimiter = ',')]
    workers: Vec<u32>,
    /// Also write the chart to bench/harness/chart-latest.svg (the one the README shows).
    #[arg(long)]
    publish: bool,
    /// Prefix of every namespace and device this run creates (run.sh passes its own so that
    /// its trap can find them).
    #[arg(long)]
    prefix: Option<String>,
    /// Scratch directory for daemons' sockets, state, logs (removed at the end).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Workspace root (results go to ROOT/bench/results, binaries from ROOT/target/release).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Directory holding xvsd and xvsctl; default ROOT/target/release.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Also measure every xvs row with the xvsd and xvsctl in this directory (an older
    /// build), right after the row itself: rows ID-base.
    #[arg(long)]
    baseline_bin_dir: Option<PathBuf>,
}

/// Removes the scratch directory at the end, whatever happened.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match real_main(args) {
        Ok(code) => code,
        Err(Fail::Interrupted) => {
            eprintln!("xvs-harness: interrupted; cleaned up");
            ExitCode::from(130)
        }
        Err(Fail::Failed(e)) => {
            eprintln!("xvs-harness: {e}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(args: Args) -> Res<ExitCode> {
    sys::install_signal_thread()?;
    if !sys::is_root() {
        return Err(
            "needs root (namespaces, veths, AF_XDP): sudo bash bench/harness/run.sh".into(),
        );
    }
    for prog in [
        "ip", "ethtool", "trafgen", "iperf3", "ping", "ss", "timeout",
    ] {
        if !sys::have(prog) {
            return Err(format!(
                "{prog} not found; install iproute2 ethtool netsniff-ng iperf3 iputils-ping coreutils"
            )
            .into());
        }
    }
    let root = args.root.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf()
    });
    let prefix = args.prefix.clone().unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!("xh{:04x}", (std::process::id() ^ nanos) & 0xffff)
    });
    if prefix.len() > 8 || !prefix.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err("--prefix: at most 8 letters or digits (device names are 15 bytes)".into());
    }
    let plan = Plan::new(args.quick, args.runs, args.window);

    let mut specs = switches::all_rows(&args.workers);
    if let Some(dir) = &args.baseline_bin_dir {
        specs = switches::with_baseline(specs, dir);
    }
    if !args.only.is_empty() {
        let known: Vec<String> = specs.iter().map(|s| s.id.clone()).collect();
        for o in &args.only {
            if !known.contains(o) && o != "xvs" {
                return Err(
                    format!("--only: unknown row {o:?}; rows are {}", known.join(", ")).into(),
                );
            }
        }
        specs.retain(|s| {
            args.only.contains(&s.id)
                || args
                    .only
                    .contains(&s.id.trim_end_matches("-base").to_string())
                || (s.is_xvs() && args.only.iter().any(|o| o == "xvs"))
        });
    }

    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("xvs-harness-{prefix}")));
    std::fs::create_dir_all(&work_dir)
        .map_err(|e| format!("cannot create {}: {e}", work_dir.display()))?;
    let work = WorkDir(work_dir.clone());
    let cfg = work_dir.join("udp64.cfg");
    std::fs::write(&cfg, topo::trafgen_config())
        .map_err(|e| format!("cannot write {}: {e}", cfg.display()))?;
    let env = Env {
        bin_dir: args
            .bin_dir
            .clone()
            .unwrap_or_else(|| root.join("target/release")),
        work_dir: work_dir.clone(),
        prefix: prefix.clone(),
    };
    let machine = Machine::read();

    let started = Instant::now();
    let timestamp = report::timestamp();
    eprintln!(
        "xvs-harness: {} row(s), {} run(s) each, prefix {prefix}, {} cores",
        specs.len(),
        plan.runs,
        machine.ncpu
    );
    let mut rows = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        eprintln!("== {} ({})", spec.id, spec.label);
        let t0 = Instant::now();
        let mut r = measure_row(spec, i, &env, &plan, &machine, &cfg)?;
        r.seconds = t0.elapsed().as_secs_f64();
        match &r.reason {
            Some(why) => eprintln!("   unavailable: {why}"),
            None => eprintln!("   done in {:.0} s", r.seconds),
        }
        rows.push(r);
    }

    let rep = Report {
        schema: 1,
        timestamp: timestamp.clone(),
        command: std::env::args().collect(),
        host: host_info(&root, &machine),
        plan,
        ratios: report::ratios(&rows),
        targets: report::targets(&rows),
        rows,
        seconds: started.elapsed().as_secs_f64(),
    };
    println!("\n{}", report::table(&rep));

    let out_dir = root.join("bench/results");
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let text = serde_json::to_string_pretty(&rep).map_err(|e| format!("JSON: {e}"))? + "\n";
    for name in [format!("harness-{timestamp}.json"), "latest.json".into()] {
        let p = out_dir.join(name);
        std::fs::write(&p, &text).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        println!("wrote {}", p.display());
    }
    let svg = out_dir.join("latest.svg");
    chart::draw(&rep, &svg)?;
    println!("wrote {}", svg.display());
    if args.publish {
        let p = root.join("bench/harness/chart-latest.svg");
        std::fs::copy(&svg, &p).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        println!("wrote {}", p.display());
    }
    drop(work);
    Ok(ExitCode::SUCCESS)
}

/// Records a failed phase; an interrupt stops the row.
fn phase(
    errors: &mut Vec<String>,
    run: usize,
    name: &str,
    into: &mut Figures,
    r: Res<Figures>,
) -> Res<()> {
    match r {
        Ok(f) => {
            into.extend(f);
            Ok(())
        }
        Err(Fail::Interrupted) => Err(Fail::Interrupted),
        Err(Fail::Failed(e)) => {
            eprintln!("   run {run}: {name} failed: {e}");
            errors.push(format!("run {run}: {name}: {e}"));
            Ok(())
        }
    }
}

fn measure_row(
    spec: &RowSpec,
    idx: usize,
    env: &Env,
    plan: &Plan,
    m: &Machine,
    cfg: &Path,
) -> Res<RowResult> {
    let unavailable = |why: String| {
        Ok(RowResult::unavailable(
            &spec.id,
            &spec.label,
            spec.hosts_tx_off,
            why,
        ))
    };
    // Declared before the switch, so the switch is stopped first and the topology last.
    let topo = match Topo::up(&env.prefix, idx, spec.hosts_tx_off, !spec.is_xvs_tap()) {
        Ok(t) => t,
        Err(Fail::Failed(e)) => return unavailable(format!("topology: {e}")),
        Err(e) => return Err(e),
    };
    let mut sw = match Switch::start(spec, idx, &topo, env) {
        Ok(s) => s,
        Err(Fail::Failed(e)) => return unavailable(e),
        Err(e) => return Err(e),
    };
    match topo.wait_connected(Duration::from_secs(20)) {
        Ok(()) => {}
        Err(Fail::Failed(e)) => {
            let alive = sw.check_alive().err().map(|e| format!("; {e}"));
            return unavailable(format!("{e}{}", alive.unwrap_or_default()));
        }
        Err(e) => return Err(e),
    }
    let daemon = sw.daemon_pid();
    let settle = Duration::from_secs_f64(plan.settle_s);
    let mut runs = Vec::new();
    let mut errors = Vec::new();
    for run in 1..=plan.runs {
        let mut f = Figures::new();
        // TCP and ping first, the flood last, and the path checked before the next run: what
        // a flood leaves behind must not be measured as TCP or latency.
        if let Ok(waited) = measure::wait_path(&topo)
            && waited > Duration::from_secs(2)
        {
            eprintln!("   run {run}: the path took {waited:.1?} to carry traffic again");
        }
        for streams in [1, 4] {
            let r = measure::tcp(&topo, plan, m, daemon, streams);
            phase(&mut errors, run, &format!("tcp{streams}"), &mut f, r)?;
            sys::sleep(settle)?;
        }
        phase(&mut errors, run, "ping", &mut f, measure::ping(&topo, plan))?;
        phase(
            &mut errors,
            run,
            "pps",
            &mut f,
            measure::pps(&topo, plan, m, daemon, cfg),
        )?;
        sys::sleep(settle)?;
        if let Err(Fail::Failed(e)) = sw.check_alive() {
            errors.push(format!("run {run}: {e}"));
            runs.push(f);
            break;
        }
        eprintln!(
            "   run {run}: pps {:.0}  tcp1 {:.2}  tcp4 {:.2}  rtt p50 {:.3} ms",
            f.get("pps").copied().unwrap_or(f64::NAN),
            f.get("tcp1_gbps").copied().unwrap_or(f64::NAN),
            f.get("tcp4_gbps").copied().unwrap_or(f64::NAN),
            f.get("rtt_p50_ms").copied().unwrap_or(f64::NAN),
        );
        runs.push(f);
    }
    let mut once = Figures::new();
    if let Some(pid) = daemon {
        sys::sleep(settle)?;
        let mut e = Vec::new();
        phase(&mut e, 0, "idle", &mut once, measure::idle(plan, m, pid))?;
        errors.extend(e);
    }
    let median = measure::medians(&runs);
    Ok(RowResult {
        id: spec.id.clone(),
        label: spec.label.clone(),
        hosts_tx_off: spec.hosts_tx_off,
        available: true,
        reason: None,
        median,
        runs,
        errors,
        once,
        switch: sw.describe(),
        seconds: 0.0,
    })
}

fn host_info(root: &Path, m: &Machine) -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_owned()).ok();
    let cpu_model = read("/proc/cpuinfo").and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_owned())
    });
    let root_s = root.display().to_string();
    let git = |args: &[&str]| {
        let mut argv = vec!["git", "-C", &root_s];
        argv.extend_from_slice(args);
        sys::run(&argv, Duration::from_secs(5))
            .ok()
            .filter(sys::Out::ok)
            .map(|o| o.stdout.trim().to_owned())
    };
    json!({
        "kernel": read("/proc/sys/kernel/osrelease"),
        "cpu": cpu_model,
        "cores": m.ncpu,
        "git_commit": git(&["rev-parse", "--short", "HEAD"]),
        "git_dirty": git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty()),
        "trafgen": sys::version_of(&["trafgen", "-v"]),
        "iperf3": sys::version_of(&["iperf3", "--version"]),
        "ovs": sys::version_of(&["ovs-vswitchd", "--version"]),
    })
}
