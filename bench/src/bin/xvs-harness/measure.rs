//! The measurements, run against whatever switch joins the topology's p1 and p2:
//! 64 B UDP packets per second delivered (trafgen in ns1, rx_packets of v2 over a window),
//! TCP throughput (iperf3, 1 and 4 streams), ping RTT percentiles, and the CPU each phase used.
//! Each returns named figures; a failed phase is an error for that phase only.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::sys::{self, CpuUse, Fail, Machine, Output, Proc, Res};
use crate::topo::{IP2, Topo, V1, V2};

/// Durations and counts of one run of every phase.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Plan {
    pub runs: usize,
    /// trafgen runs this long before the counting window opens.
    pub pps_warmup_s: f64,
    pub window_s: f64,
    pub tcp_s: u32,
    pub ping_count: u32,
    pub ping_interval_s: f64,
    pub idle_s: f64,
    /// Pause between phases, for queues to drain and daemons to go idle.
    pub settle_s: f64,
}

impl Plan {
    pub fn new(quick: bool, runs: Option<usize>, window: Option<f64>) -> Plan {
        let window_s = window.unwrap_or(if quick { 2.0 } else { 5.0 }).max(1.0);
        Plan {
            runs: runs.unwrap_or(if quick { 1 } else { 3 }).max(1),
            pps_warmup_s: if quick { 1.0 } else { 2.0 },
            window_s,
            tcp_s: window_s.round().max(2.0) as u32,
            ping_count: if quick { 50 } else { 200 },
            ping_interval_s: 0.005,
            idle_s: if quick { 2.0 } else { 5.0 },
            settle_s: if quick { 0.5 } else { 1.0 },
        }
    }
}

pub type Figures = BTreeMap<String, f64>;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn put_cpu(f: &mut Figures, phase: &str, c: &CpuUse) {
    f.insert(format!("cpu_{phase}_machine_pct"), c.machine);
    f.insert(format!("cpu_{phase}_softirq_pct"), c.softirq);
    if let Some(d) = c.daemon {
        f.insert(format!("cpu_{phase}_daemon_pct"), d);
    }
}

/// Counters and the time they were read (midpoint of the netlink round trip).
fn stats_at(ns: &str, dev: &str) -> Res<(sys::IfStats, Instant)> {
    let t0 = Instant::now();
    let s = sys::if_stats(ns, dev)?;
    let t1 = Instant::now();
    Ok((s, t0 + (t1 - t0) / 2))
}

/// Drops the 64 B flood at v2's ingress (an nftables netdev chain in ns2), after the device
/// has counted it in rx_packets and before the IP stack: without it, every flood packet makes
/// ns2's stack answer ICMP port unreachable, work that a userspace switch pays for on its own
/// forwarding core (its transmit runs the receiver's stack) and the kernel bridge on the
/// sender's, which measured the receiver, not the switch. Removed again on drop.
struct FloodSink<'a> {
    ns: &'a str,
}

const SINK_TABLE: &str = "xvs_harness_sink";

impl<'a> FloodSink<'a> {
    fn add(ns: &'a str, dev: &str) -> Res<FloodSink<'a>> {
        let chain =
            format!("{{ type filter hook ingress device {dev} priority 0; policy accept; }}");
        sys::run_ok(
            &sys::in_ns(ns, &["nft", "add", "table", "netdev", SINK_TABLE]),
            T,
        )?;
        let sink = FloodSink { ns };
        sys::run_ok(
            &sys::in_ns(
                ns,
                &["nft", "add", "chain", "netdev", SINK_TABLE, "in", &chain],
            ),
            T,
        )?;
        sys::run_ok(
            &sys::in_ns(
                ns,
                &[
                    "nft", "add", "rule", "netdev", SINK_TABLE, "in", "udp", "dport", "9", "drop",
                ],
            ),
            T,
        )?;
        Ok(sink)
    }
}

impl Drop for FloodSink<'_> {
    fn drop(&mut self) {
        let _ = sys::run(
            &sys::in_ns(self.ns, &["nft", "delete", "table", "netdev", SINK_TABLE]),
            T,
        );
    }
}

const T: Duration = Duration::from_secs(10);

/// 64 B UDP: trafgen floods from v1 as fast as it can; delivered = v2's rx_packets rate, the
/// flood dropped at v2's ingress ([`FloodSink`]).
pub fn pps(topo: &Topo, plan: &Plan, m: &Machine, daemon: Option<u32>, cfg: &Path) -> Res<Figures> {
    let _sink = FloodSink::add(&topo.ns2, V2)?;
    let total = plan.pps_warmup_s + plan.window_s + 3.0;
    // A bound on the count as well as the time: 2 Mpps is far above what one core offers here.
    let count = ((total * 2_000_000.0) as u64).to_string();
    let limit = format!("{}", total.ceil() as u64 + 2);
    let cfg = cfg.display().to_string();
    // trafgen gives up when a send is refused (EAGAIN: the veth's peer ring full under a
    // switch's XDP program); that is the generator's limit, not the switch's, so it is started
    // again, a bounded number of times.
    let mut attempt = 0;
    let mut trafgen = loop {
        attempt += 1;
        let mut t = Proc::spawn(
            &sys::in_ns(
                &topo.ns1,
                &[
                    "timeout",
                    "-s",
                    "INT",
                    "-k",
                    "3",
                    &limit,
                    "trafgen",
                    "-c",
                    &cfg,
                    "-o",
                    V1,
                    "-P",
                    "1",
                    "-n",
                    &count,
                    "-q",
                    "--no-sock-mem",
                ],
            ),
            &[],
            Output::Capture,
        )?;
        sys::sleep(secs(plan.pps_warmup_s))?;
        let Some(st) = t.exited() else { break t };
        let (o, e) = t.take_output();
        let why = sys::last_line(&e)
            .or_else(|| sys::last_line(&o))
            .unwrap_or_default();
        crate::topo::kill_all_in(&topo.ns1);
        if attempt >= 3 {
            return Err(format!("trafgen exited early {attempt} times ({st}): {why}").into());
        }
        eprintln!("   trafgen exited early ({why}); starting it again");
    };
    let (rx0, t0) = stats_at(&topo.ns2, V2)?;
    let (tx0, _) = stats_at(&topo.ns1, V1)?;
    let c0 = m.snap(daemon)?;
    sys::sleep(secs(plan.window_s))?;
    let (rx1, t1) = stats_at(&topo.ns2, V2)?;
    let (tx1, _) = stats_at(&topo.ns1, V1)?;
    let c1 = m.snap(daemon)?;
    let early = trafgen.exited();
    trafgen.stop(Duration::from_secs(2));
    // trafgen forks its sender; a signal to the parent (through timeout) can leave the sender
    // flooding until its count runs out, into the next measurement. Nothing else runs in ns1.
    crate::topo::kill_all_in(&topo.ns1);
    if let Some(st) = early {
        return Err(format!("trafgen ended inside the window ({st})").into());
    }
    let dt = (t1 - t0).as_secs_f64();
    let mut f = Figures::new();
    f.insert(
        "pps".into(),
        rx1.rx_packets.saturating_sub(rx0.rx_packets) as f64 / dt,
    );
    f.insert(
        "pps_sent".into(),
        tx1.tx_packets.saturating_sub(tx0.tx_packets) as f64 / dt,
    );
    f.insert(
        "pps_sender_dropped".into(),
        tx1.tx_dropped.saturating_sub(tx0.tx_dropped) as f64 / dt,
    );
    f.insert(
        "pps_receiver_dropped".into(),
        rx1.rx_dropped.saturating_sub(rx0.rx_dropped) as f64 / dt,
    );
    put_cpu(&mut f, "pps", &m.between(&c0, &c1));
    Ok(f)
}

/// iperf3 from ns1 to ns2 with `streams` parallel streams; CPU sampled inside the transfer.
pub fn tcp(
    topo: &Topo,
    plan: &Plan,
    m: &Machine,
    daemon: Option<u32>,
    streams: u32,
) -> Res<Figures> {
    let port = "5201";
    let limit = (plan.tcp_s + 20).to_string();
    // One server per test (-1): a client that failed half-way cannot wedge the next one.
    let mut server = Proc::spawn(
        &sys::in_ns(
            &topo.ns2,
            &[
                "timeout", "-k", "3", &limit, "iperf3", "-s", "-1", "-B", IP2, "-p", port,
            ],
        ),
        &[],
        Output::Capture,
    )?;
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let out = sys::run(
            &sys::in_ns(&topo.ns2, &["ss", "-Hltn", &format!("sport = :{port}")]),
            Duration::from_secs(5),
        )?;
        if !out.stdout.trim().is_empty() {
            break;
        }
        if server.exited().is_some() || Instant::now() >= end {
            let (_, e) = server.take_output();
            return Err(format!(
                "iperf3 server did not start: {}",
                sys::last_line(&e).unwrap_or_default()
            )
            .into());
        }
        sys::sleep(Duration::from_millis(50))?;
    }
    let t = plan.tcp_s.to_string();
    let p = streams.to_string();
    let mut client = Proc::spawn(
        &sys::in_ns(
            &topo.ns1,
            &[
                "timeout",
                "-k",
                "3",
                &limit,
                "iperf3",
                "-c",
                IP2,
                "-p",
                port,
                "-t",
                &t,
                "-P",
                &p,
                "-J",
                "--connect-timeout",
                "3000",
            ],
        ),
        &[],
        Output::Capture,
    )?;
    let lead = (f64::from(plan.tcp_s) / 5.0).min(1.0);
    sys::sleep(secs(lead))?;
    let c0 = m.snap(daemon)?;
    sys::sleep(secs(f64::from(plan.tcp_s) - 2.0 * lead))?;
    let c1 = m.snap(daemon)?;
    let done = client.wait_until(Instant::now() + secs(f64::from(plan.tcp_s) + 20.0))?;
    let (out, err) = client.take_output();
    server.stop(Duration::from_secs(2));
    if done.is_none() {
        client.stop(Duration::from_secs(1));
        return Err("iperf3 client did not finish in time".into());
    }
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|_| {
        Fail::Failed(format!(
            "iperf3 gave no JSON: {}",
            sys::last_line(&err).unwrap_or_default()
        ))
    })?;
    if let Some(e) = v["error"].as_str() {
        return Err(format!("iperf3: {e}").into());
    }
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or("iperf3 JSON has no end.sum_received.bits_per_second")?;
    let key = format!("tcp{streams}");
    let mut f = Figures::new();
    f.insert(format!("{key}_gbps"), bps / 1e9);
    if let Some(r) = v["end"]["sum_sent"]["retransmits"].as_f64() {
        f.insert(format!("{key}_retransmits"), r);
    }
    put_cpu(&mut f, &key, &m.between(&c0, &c1));
    Ok(f)
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// `ping -c N -i 0.005` from ns1 to ns2; p50/p99 from the per-packet times.
/// Waits (at most 30 s) until a ping from ns1 gets through: after a 64 B flood some switches
/// take seconds to carry traffic again, and a TCP test started then measures that, not TCP.
/// Returns how long it took.
pub fn wait_path(topo: &Topo) -> Res<Duration> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let out = sys::run(
            &sys::in_ns(&topo.ns1, &["ping", "-n", "-c", "1", "-W", "1", IP2]),
            secs(5.0),
        )?;
        if out.stdout.contains("time=") {
            return Ok(start.elapsed());
        }
    }
    Err("no path between the namespaces for 30 s".to_string().into())
}

pub fn ping(topo: &Topo, plan: &Plan) -> Res<Figures> {
    let c = plan.ping_count.to_string();
    let i = format!("{}", plan.ping_interval_s);
    let bound = secs(f64::from(plan.ping_count) * plan.ping_interval_s * 4.0 + 10.0);
    let out = sys::run(
        &sys::in_ns(
            &topo.ns1,
            &["ping", "-n", "-c", &c, "-i", &i, "-W", "1", IP2],
        ),
        bound,
    )?;
    let mut rtts: Vec<f64> = out
        .stdout
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    if rtts.is_empty() {
        return Err(format!(
            "ping got no replies: {}",
            sys::last_line(&out.stderr)
                .or_else(|| sys::last_line(&out.stdout))
                .unwrap_or_default()
        )
        .into());
    }
    rtts.sort_by(f64::total_cmp);
    let mut f = Figures::new();
    f.insert("rtt_p50_ms".into(), percentile(&rtts, 50.0).unwrap_or(0.0));
    f.insert("rtt_p99_ms".into(), percentile(&rtts, 99.0).unwrap_or(0.0));
    f.insert(
        "rtt_loss_pct".into(),
        100.0 * (1.0 - rtts.len() as f64 / f64::from(plan.ping_count)),
    );
    Ok(f)
}

/// CPU of the daemon (and the machine) with no traffic at all.
pub fn idle(plan: &Plan, m: &Machine, daemon: u32) -> Res<Figures> {
    let c0 = m.snap(Some(daemon))?;
    sys::sleep(secs(plan.idle_s))?;
    let c1 = m.snap(Some(daemon))?;
    let u = m.between(&c0, &c1);
    let mut f = Figures::new();
    if let Some(d) = u.daemon {
        f.insert("idle_daemon_pct".into(), d);
    }
    f.insert("idle_machine_pct".into(), u.machine);
    Ok(f)
}

/// The median of each figure over the runs that have it.
pub fn medians(runs: &[Figures]) -> Figures {
    let mut all: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for r in runs {
        for (k, v) in r {
            all.entry(k).or_default().push(*v);
        }
    }
    all.into_iter()
        .map(|(k, mut v)| {
            v.sort_by(f64::total_cmp);
            let n = v.len();
            let med = if n % 2 == 1 {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            };
            (k.to_owned(), med)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(100.0));
        assert_eq!(percentile(&v, 99.0), Some(198.0));
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn medians_skip_missing_runs() {
        let mut a = Figures::new();
        a.insert("pps".into(), 1.0);
        a.insert("rtt".into(), 5.0);
        let mut b = Figures::new();
        b.insert("pps".into(), 3.0);
        let mut c = Figures::new();
        c.insert("pps".into(), 2.0);
        let m = medians(&[a, b, c]);
        assert_eq!(m["pps"], 2.0);
        assert_eq!(m["rtt"], 5.0);
    }
}
