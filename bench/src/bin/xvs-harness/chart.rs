//! The results chart: one panel per metric, one bar per switch (the same colour for a switch
//! in every panel), the median written above each bar. SVG through plotters, no font files.

use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::Report;

struct Panel {
    title: &'static str,
    key: &'static str,
    scale: f64,
    decimals: usize,
}

const PANELS: [Panel; 6] = [
    Panel {
        title: "64 B UDP delivered (kpps)",
        key: "pps",
        scale: 1e-3,
        decimals: 0,
    },
    Panel {
        title: "TCP, 1 stream (Gbit/s)",
        key: "tcp1_gbps",
        scale: 1.0,
        decimals: 1,
    },
    Panel {
        title: "TCP, 4 streams (Gbit/s)",
        key: "tcp4_gbps",
        scale: 1.0,
        decimals: 1,
    },
    Panel {
        title: "ping RTT p50 (µs, lower is better)",
        key: "rtt_p50_ms",
        scale: 1e3,
        decimals: 0,
    },
    Panel {
        title: "ping RTT p99 (µs, lower is better)",
        key: "rtt_p99_ms",
        scale: 1e3,
        decimals: 0,
    },
    Panel {
        title: "CPU during TCP 1 stream (% of a core, machine)",
        key: "cpu_tcp1_machine_pct",
        scale: 1.0,
        decimals: 0,
    },
];

fn colour(id: &str) -> RGBColor {
    match id {
        "lbr" => RGBColor(31, 119, 180),
        "lbr-txoff" => RGBColor(158, 202, 225),
        "ovs-afxdp" => RGBColor(44, 160, 44),
        "ovs-afpacket-tso" => RGBColor(148, 103, 189),
        "xvs" | "xvs-w1" => RGBColor(214, 39, 40),
        _ => RGBColor(255, 127, 14),
    }
}

pub fn draw(rep: &Report, path: &Path) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Debug| format!("cannot draw {}: {e:?}", path.display());
    let n = rep.rows.len();
    if n == 0 {
        return Err("no rows to draw".into());
    }
    let root = SVGBackend::new(path, (1500, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, body) = root.split_vertically(50);
    let title = format!(
        "xvs vs peers: two namespaces, one veth each; medians of {} run(s), {}",
        rep.plan.runs, rep.timestamp
    );
    top.draw(&Text::new(
        title,
        (20, 15),
        ("sans-serif", 22).into_font().color(&BLACK),
    ))
    .map_err(|e| err(&e))?;
    let names: Vec<String> = rep.rows.iter().map(|r| r.id.clone()).collect();
    let last = i32::try_from(n - 1).unwrap_or(0);
    for (area, panel) in body.split_evenly((2, 3)).iter().zip(PANELS.iter()) {
        let values: Vec<Option<f64>> = rep
            .rows
            .iter()
            .map(|r| r.get(panel.key).map(|v| v * panel.scale))
            .collect();
        let top_v = values.iter().flatten().fold(0.0f64, |a, &b| a.max(b));
        let y_max = if top_v > 0.0 { top_v * 1.18 } else { 1.0 };
        let mut chart = ChartBuilder::on(area)
            .caption(panel.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(55)
            .build_cartesian_2d((0..last).into_segmented(), 0.0..y_max)
            .map_err(|e| err(&e))?;
        let fmt = |v: &SegmentValue<i32>| match v {
            SegmentValue::Exact(i) | SegmentValue::CenterOf(i) => usize::try_from(*i)
                .ok()
                .and_then(|i| names.get(i).cloned())
                .unwrap_or_default(),
            SegmentValue::Last => String::new(),
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&fmt)
            .x_label_style(("sans-serif", 13))
            .y_label_style(("sans-serif", 12))
            .draw()
            .map_err(|e| err(&e))?;
        let label = ("sans-serif", 14)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        for (i, (row, v)) in rep.rows.iter().zip(&values).enumerate() {
            let x = i32::try_from(i).unwrap_or(0);
            match v {
                Some(v) => {
                    let mut bar = Rectangle::new(
                        [
                            (SegmentValue::Exact(x), 0.0),
                            (SegmentValue::Exact(x + 1), *v),
                        ],
                        colour(&row.id).filled(),
                    );
                    bar.set_margin(0, 0, 10, 10);
                    chart
                        .draw_series(std::iter::once(bar))
                        .map_err(|e| err(&e))?;
                    chart
                        .draw_series(std::iter::once(Text::new(
                            format!("{v:.prec$}", prec = panel.decimals),
                            (SegmentValue::CenterOf(x), *v),
                            label.clone(),
                        )))
                        .map_err(|e| err(&e))?;
                }
                None => {
                    let why = if row.available { "n/a" } else { "unavailable" };
                    chart
                        .draw_series(std::iter::once(Text::new(
                            why.to_owned(),
                            (SegmentValue::CenterOf(x), 0.0),
                            label.clone(),
                        )))
                        .map_err(|e| err(&e))?;
                }
            }
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
