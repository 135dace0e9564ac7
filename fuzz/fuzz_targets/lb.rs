//! Load-balancing services (xvs-lb `Service`, `ServiceTable`, `Balancer`) under random
//! operations: add, remove (with and without drain), set weights and health, reap, change the
//! scheduler and the Maglev table size, publish snapshots to a worker's balancer, schedule new
//! connections and close them, on a virtual clock.
//!
//! Checked: no panic; a refused change changes nothing (weights stay in 1..=MAX_WEIGHT); a
//! chosen backend is one the balancer's snapshot had active, up and with weight > 0 (and the
//! snapshot's own entry for it says so), `preview` chooses as `pick` does, and the balancer
//! finds no backend only when the snapshot had none live.
#![no_main]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use xvs_lb::service::MAX_WEIGHT;
use xvs_lb::{
    BackendAddr, BackendRef, BackendState, Balancer, Health, Proto, SchedulerKind, Service,
    ServiceError, ServicePort, ServiceSpec,
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// Small primes for Maglev tables (builds stay cheap).
const SIZES: [u32; 4] = [7, 13, 251, 1021];

#[derive(Debug, Arbitrary)]
enum Op {
    Add { who: u8, weight: u16 },
    Remove { who: u8, drain: bool },
    SetWeight { who: u8, weight: u16 },
    SetHealth { who: u8, down: bool },
    Reap,
    Scheduler(u8),
    MaglevSize(u8),
    Publish,
    Pick { hash: u64, open: bool },
    Close(u8),
    Advance(u32),
}

fn scheduler(i: u8) -> SchedulerKind {
    SchedulerKind::ALL[usize::from(i) % SchedulerKind::ALL.len()]
}

/// A backend: mostly 10.0.1.N (some with their own port), sometimes the VIP itself or an
/// IPv6 address (both refused).
fn backend(who: u8) -> BackendAddr {
    let ip = match who {
        250 => IpAddr::V4(VIP),
        251.. => "fd00::2".parse().unwrap_or(IpAddr::V4(VIP)),
        _ => IpAddr::V4(Ipv4Addr::new(10, 0, 1, who % 12)),
    };
    let port = (who & 0x40 != 0).then_some(9000);
    BackendAddr { ip, port }
}

/// The backends of `svc` that may take new connections, as the control plane sees them.
fn live(svc: &Service) -> HashSet<SocketAddr> {
    svc.backends()
        .filter(|b| b.state == BackendState::Active && b.health == Health::Up && b.weight > 0)
        .map(|b| b.addr)
        .collect()
}

fn run(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let sched = scheduler(u8::arbitrary(u)?);
    let seed = u64::arbitrary(u)?;
    let mut spec = ServiceSpec::new(
        IpAddr::V4(VIP),
        ServicePort {
            proto: Proto::Tcp,
            port: 80,
            target: 8080,
        },
    );
    spec.scheduler = sched;
    spec.maglev_size = Some(SIZES[2]);
    spec.hash_seed = Some(seed);
    let mut svc = Service::new(spec, 1).expect("a valid spec");
    let mut bal = Balancer::new(svc.snapshot(), 0);
    let mut published = live(&svc);
    let mut open: Vec<BackendRef> = Vec::new();
    let mut now = 0u64;
    let mut steps = 0;
    while !u.is_empty() && steps < 512 {
        steps += 1;
        let before: Vec<_> = svc.backends().collect();
        let refused = match Op::arbitrary(u)? {
            Op::Add { who, weight } => {
                let r = svc.add_backend(backend(who), u32::from(weight));
                if !(1..=MAX_WEIGHT).contains(&u32::from(weight)) {
                    assert!(matches!(r, Err(ServiceError::WeightOutOfRange(_))), "{r:?}");
                }
                r.is_err()
            }
            Op::Remove { who, drain } => svc.remove_backend(backend(who), drain, now).is_err(),
            Op::SetWeight { who, weight } => {
                let r = svc.set_weight(backend(who), u32::from(weight));
                if !(1..=MAX_WEIGHT).contains(&u32::from(weight)) {
                    assert!(r.is_err());
                }
                r.is_err()
            }
            Op::SetHealth { who, down } => {
                let h = if down { Health::Down } else { Health::Up };
                svc.set_health(backend(who), h).is_err()
            }
            Op::Reap => {
                svc.reap(now);
                false
            }
            Op::Scheduler(i) => {
                svc.set_scheduler(scheduler(i));
                false
            }
            Op::MaglevSize(i) => {
                let r = svc.set_maglev_size(SIZES[usize::from(i) % SIZES.len()]);
                assert!(r.is_ok(), "{r:?}");
                false
            }
            Op::Publish => {
                drop(bal.swap(svc.snapshot()));
                published = live(&svc);
                false
            }
            Op::Pick { hash, open: keep } => {
                let preview = bal.preview(hash);
                match bal.pick(hash) {
                    Ok(p) => {
                        assert_eq!(preview, Ok(p), "preview chooses as pick does");
                        assert!(
                            published.contains(&p.addr),
                            "picked {} ({}), not live when published: {published:?}",
                            p.addr,
                            p.why
                        );
                        let b = bal
                            .table()
                            .backend(p.backend)
                            .expect("picked backend in the snapshot");
                        assert!(b.is_live() && b.weight > 0 && b.addr == p.addr, "{b:?}");
                        if keep {
                            assert!(bal.opened(p.backend));
                            open.push(p.backend);
                        }
                    }
                    Err(e) => {
                        assert!(preview.is_err());
                        assert!(published.is_empty(), "{e}, but live: {published:?}");
                    }
                }
                false
            }
            Op::Close(i) => {
                if !open.is_empty() {
                    let b = open.swap_remove(usize::from(i) % open.len());
                    let _ = bal.closed(b);
                }
                false
            }
            Op::Advance(ms) => {
                now += u64::from(ms);
                false
            }
        };
        if refused {
            let after: Vec<_> = svc.backends().collect();
            assert_eq!(before, after, "a refused change changes nothing");
        }
        for b in svc.backends() {
            assert!((1..=MAX_WEIGHT).contains(&b.weight), "{b:?}");
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
