//! Results: one `RowResult` per switch, the printed table with xvs/peer ratios and the
//! issue's targets, and the JSON document written to bench/results/.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::measure::{Figures, Plan};

#[derive(Debug, Serialize)]
pub struct RowResult {
    pub id: String,
    pub label: String,
    pub hosts_tx_off: bool,
    pub available: bool,
    /// Why the row could not be measured at all (switch did not start, no connectivity…).
    pub reason: Option<String>,
    /// Median over runs of each figure; see `runs` for the individual values.
    pub median: Figures,
    pub runs: Vec<Figures>,
    /// Phases that failed in some run, with why.
    pub errors: Vec<String>,
    /// Figures measured once per row (idle CPU).
    pub once: Figures,
    /// What the switch reported about itself after the runs.
    pub switch: Value,
    pub seconds: f64,
}

impl RowResult {
    pub fn unavailable(id: &str, label: &str, hosts_tx_off: bool, reason: String) -> RowResult {
        RowResult {
            id: id.into(),
            label: label.into(),
            hosts_tx_off,
            available: false,
            reason: Some(reason),
            median: Figures::new(),
            runs: Vec::new(),
            errors: Vec::new(),
            once: Figures::new(),
            switch: Value::Null,
            seconds: 0.0,
        }
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.median.get(key).or_else(|| self.once.get(key)).copied()
    }
}

/// Metrics compared as xvs/peer ratios (for RTT, lower is better).
pub const RATIO_KEYS: [(&str, &str); 5] = [
    ("pps", "pps"),
    ("tcp1_gbps", "tcp1"),
    ("tcp4_gbps", "tcp4"),
    ("rtt_p50_ms", "rtt p50"),
    ("rtt_p99_ms", "rtt p99"),
];

#[derive(Debug, Serialize)]
pub struct Ratio {
    pub xvs: String,
    pub peer: String,
    pub ratios: BTreeMap<String, f64>,
}

pub fn ratios(rows: &[RowResult]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for x in rows
        .iter()
        .filter(|r| r.id.starts_with("xvs") && r.available)
    {
        for p in rows
            .iter()
            .filter(|r| !r.id.starts_with("xvs") && r.available)
        {
            let mut ratios = BTreeMap::new();
            for (k, _) in RATIO_KEYS {
                if let (Some(a), Some(b)) = (x.get(k), p.get(k))
                    && b > 0.0
                {
                    ratios.insert(k.to_owned(), a / b);
                }
            }
            out.push(Ratio {
                xvs: x.id.clone(),
                peer: p.id.clone(),
                ratios,
            });
        }
    }
    out
}

#[derive(Debug, Serialize)]
pub struct Target {
    pub what: String,
    /// None when a figure it needs is missing.
    pub met: Option<bool>,
    pub detail: String,
}

/// The targets of issue 4, judged on every xvs row (AF_XDP ports and TAP endpoints are the
/// user's choice per endpoint, so each is held to every target).
pub fn targets(rows: &[RowResult]) -> Vec<Target> {
    rows.iter()
        .filter(|r| r.id.starts_with("xvs") && r.available)
        .flat_map(|x| targets_of(x, rows))
        .collect()
}

fn targets_of(x: &RowResult, rows: &[RowResult]) -> Vec<Target> {
    let find = |id: &str| rows.iter().find(|r| r.id == id && r.available);
    let mut out = Vec::new();
    let mut cmp = |what: &str, key: &str, peer: &str, factor: f64, higher: bool, strict: bool| {
        let b = find(peer).and_then(|p| p.get(key));
        let a = x.get(key);
        let (met, detail) = match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => {
                let r = a / b;
                let met = match (higher, strict) {
                    (true, false) => r >= factor,
                    (true, true) => r > factor,
                    (false, _) => r <= factor,
                };
                (Some(met), format!("{} / {peer} = {r:.2}", x.id))
            }
            _ => (None, format!("{key} missing for {} or {peer}", x.id)),
        };
        out.push(Target {
            what: format!("{}: {what}", x.id),
            met,
            detail,
        });
    };
    cmp(
        "64 B pps >= 1.25x OVS AF_XDP",
        "pps",
        "ovs-afxdp",
        1.25,
        true,
        false,
    );
    cmp(
        "TCP 1 stream >= 1.0x Linux bridge (offloads on)",
        "tcp1_gbps",
        "lbr",
        1.0,
        true,
        false,
    );
    cmp(
        "TCP 4 streams >= 1.0x Linux bridge (offloads on)",
        "tcp4_gbps",
        "lbr",
        1.0,
        true,
        false,
    );
    cmp(
        "TCP 1 stream > OVS AF_PACKET+TSO",
        "tcp1_gbps",
        "ovs-afpacket-tso",
        1.0,
        true,
        true,
    );
    cmp(
        "TCP 4 streams > OVS AF_PACKET+TSO",
        "tcp4_gbps",
        "ovs-afpacket-tso",
        1.0,
        true,
        true,
    );
    cmp(
        "ping p50 <= OVS AF_XDP",
        "rtt_p50_ms",
        "ovs-afxdp",
        1.0,
        false,
        false,
    );
    let idle = x.get("idle_daemon_pct");
    out.push(Target {
        what: format!("{}: idle CPU <= 2% of a core", x.id),
        met: idle.map(|v| v <= 2.0),
        detail: idle.map_or("idle_daemon_pct missing".into(), |v| format!("{v:.2}%")),
    });
    out
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: u32,
    pub timestamp: String,
    pub command: Vec<String>,
    pub host: Value,
    pub plan: Plan,
    pub rows: Vec<RowResult>,
    pub ratios: Vec<Ratio>,
    pub targets: Vec<Target>,
    pub seconds: f64,
}

fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".into(), f)
}

/// "machine/daemon" CPU in % of one core, e.g. "198/100".
fn cpu(r: &RowResult, phase: &str) -> String {
    let m = r.get(&format!("cpu_{phase}_machine_pct"));
    let d = r.get(&format!("cpu_{phase}_daemon_pct"));
    match (m, d) {
        (Some(m), Some(d)) => format!("{m:.0}/{d:.0}"),
        (Some(m), None) => format!("{m:.0}/-"),
        _ => "-".into(),
    }
}

pub fn table(rep: &Report) -> String {
    let head = [
        "switch",
        "64B pps",
        "(sent)",
        "tcp1 Gb/s",
        "tcp4 Gb/s",
        "rtt p50 ms",
        "p99 ms",
        "cpu% pps",
        "cpu% tcp1",
        "cpu% tcp4",
        "idle%",
    ];
    let mut lines: Vec<Vec<String>> = vec![head.iter().map(|s| (*s).to_owned()).collect()];
    for r in &rep.rows {
        if !r.available {
            let mut l = vec![r.id.clone(), "unavailable".into()];
            l.resize(head.len(), String::new());
            lines.push(l);
            continue;
        }
        lines.push(vec![
            r.id.clone(),
            opt(r.get("pps"), si),
            opt(r.get("pps_sent"), si),
            opt(r.get("tcp1_gbps"), |v| format!("{v:.2}")),
            opt(r.get("tcp4_gbps"), |v| format!("{v:.2}")),
            opt(r.get("rtt_p50_ms"), |v| format!("{v:.3}")),
            opt(r.get("rtt_p99_ms"), |v| format!("{v:.3}")),
            cpu(r, "pps"),
            cpu(r, "tcp1"),
            cpu(r, "tcp4"),
            opt(r.get("idle_daemon_pct"), |v| format!("{v:.1}")),
        ]);
    }
    let widths: Vec<usize> = (0..head.len())
        .map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0))
        .collect();
    let mut s = String::new();
    for (i, l) in lines.iter().enumerate() {
        for (c, cell) in l.iter().enumerate() {
            if c == 0 {
                let _ = write!(s, "{cell:<w$}", w = widths[c]);
            } else {
                let _ = write!(s, "  {cell:>w$}", w = widths[c]);
            }
        }
        s.push('\n');
        if i == 0 {
            s.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
            s.push('\n');
        }
    }
    s.push_str(
        "cpu% = machine/daemon busy in % of one core (machine: /proc/stat, all cores; daemon: \
         xvsd or ovs-vswitchd utime+stime); idle% = the daemon with no traffic\n",
    );
    let _ = writeln!(
        s,
        "medians of {} run(s); pps window {:.0} s, TCP {} s, ping {} x {} s",
        rep.plan.runs,
        rep.plan.window_s,
        rep.plan.tcp_s,
        rep.plan.ping_count,
        rep.plan.ping_interval_s
    );
    for r in &rep.rows {
        let _ = writeln!(s, "  {:<17} {}", r.id, r.label);
        if let Some(why) = &r.reason {
            let _ = writeln!(s, "  {:<17}   unavailable: {why}", "");
        }
        for e in &r.errors {
            let _ = writeln!(s, "  {:<17}   error: {e}", "");
        }
    }
    if !rep.ratios.is_empty() {
        s.push_str("\nxvs / peer (rtt: lower is better)\n");
        for r in &rep.ratios {
            let _ = write!(s, "  {:<8} / {:<17}", r.xvs, r.peer);
            for (k, name) in RATIO_KEYS {
                match r.ratios.get(k) {
                    Some(v) => {
                        let _ = write!(s, "  {name} {v:.2}x");
                    }
                    None => {
                        let _ = write!(s, "  {name} -");
                    }
                }
            }
            s.push('\n');
        }
    }
    if !rep.targets.is_empty() {
        s.push_str("\ntargets (issue 4)\n");
        for t in &rep.targets {
            let mark = match t.met {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "n/a",
            };
            let _ = writeln!(s, "  {mark:<7}  {:<48} {}", t.what, t.detail);
        }
    }
    s
}

/// UTC time as `YYYYMMDDTHHMMSSZ` (for file names and the JSON).
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
