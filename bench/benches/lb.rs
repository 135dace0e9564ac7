//! Criterion benches of the load balancer's core (xvs-lb), per new connection in bursts of
//! 32: picking a backend (the 5-tuple hashed from the classified key) and counting the
//! connection opened and closed, for each scheduler at 100 and 1000 backends; and building a
//! Maglev table (M = 65537) for 100 and 1000 backends, which the control plane does on every
//! change of a Maglev service.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use xvs_lb::hash::ip16;
use xvs_lb::maglev::{self, DEFAULT_TABLE_SIZE, MaglevBackend};
use xvs_lb::{Balancer, SchedulerKind, Service, ServiceSpec};
use xvs_switch::classify::FlowKey;
use xvs_switch::port::BURST;
use xvs_switch::wire::{ethertype, ipproto};

fn service(kind: SchedulerKind, backends: u32) -> Service {
    let mut spec = ServiceSpec::new("10.9.0.100".parse().unwrap(), "tcp/80".parse().unwrap());
    spec.scheduler = kind;
    let mut s = Service::new(spec, 1).unwrap();
    for i in 0..backends {
        let ip = std::net::Ipv4Addr::from(0x0a01_0000 + i);
        s.add_backend(
            xvs_lb::BackendAddr {
                ip: ip.into(),
                port: None,
            },
            1 + i % 4,
        )
        .unwrap();
    }
    s
}

fn burst_of_new_connections() -> [FlowKey; BURST] {
    std::array::from_fn(|i| FlowKey {
        dl_type: ethertype::IPV4,
        nw_proto: ipproto::TCP,
        nw_src: ip16(std::net::Ipv4Addr::new(10, 9, 1, i as u8).into()),
        nw_dst: ip16("10.9.0.100".parse().unwrap()),
        tp_src: 40_000 + i as u16,
        tp_dst: 80,
        ..FlowKey::default()
    })
}

fn bench_pick(c: &mut Criterion) {
    let keys = burst_of_new_connections();
    for backends in [100u32, 1000] {
        let mut g = c.benchmark_group(format!("lb_new_connection_{backends}_backends"));
        g.throughput(Throughput::Elements(BURST as u64));
        for kind in SchedulerKind::ALL {
            let s = service(kind, backends);
            let mut b = Balancer::new(s.snapshot(), 0);
            let mut picked = [None; BURST];
            g.bench_function(BenchmarkId::from_parameter(kind), |bench| {
                bench.iter(|| {
                    for (key, slot) in keys.iter().zip(picked.iter_mut()) {
                        let p = b.pick_flow(black_box(key)).unwrap();
                        b.opened(p.backend);
                        *slot = Some(p.backend);
                    }
                    // Conntrack would close them later; here, to keep lc's counts steady.
                    for r in picked.iter().flatten() {
                        b.closed(*r);
                    }
                })
            });
        }
        g.finish();
    }
}

fn bench_maglev_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev_build_65537");
    g.sample_size(20);
    for n in [100u32, 1000] {
        let input: Vec<MaglevBackend> = (0..n)
            .map(|i| MaglevBackend {
                slot: i as u16,
                addr: std::net::SocketAddr::new(
                    std::net::Ipv4Addr::from(0x0a01_0000 + i).into(),
                    80,
                ),
                weight: 1,
            })
            .collect();
        g.bench_function(BenchmarkId::from_parameter(n), |bench| {
            bench.iter(|| maglev::build(black_box(&input), DEFAULT_TABLE_SIZE, 1))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_pick, bench_maglev_build);
criterion_main!(benches);
