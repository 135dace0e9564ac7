//! A worker's steady state allocates nothing: picking a backend for a new connection with
//! each scheduler, counting it opened and closed, and judging established connections
//! (a counting global allocator, as `switch/core`'s no_alloc test).
#![allow(clippy::unwrap_used, missing_docs)]

use xvs_stage::alloc_count::{CountingAllocator, allocations};

use xvs_lb::{Balancer, SchedulerKind, Service, ServiceSpec};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

#[test]
fn picking_and_counting_allocate_nothing() {
    for kind in SchedulerKind::ALL {
        let mut spec = ServiceSpec::new("10.0.9.100".parse().unwrap(), "tcp/80".parse().unwrap());
        spec.scheduler = kind;
        let mut s = Service::new(spec, 1).unwrap();
        for i in 0..50u32 {
            s.add_backend(format!("10.0.0.{}", i + 2).parse().unwrap(), 1 + i % 4)
                .unwrap();
        }
        let mut b = Balancer::new(s.snapshot(), 0);
        let before = allocations();
        for h in 0..10_000u64 {
            let p = b.pick(h.wrapping_mul(0x9e37_79b9_7f4a_7c15)).unwrap();
            assert!(b.opened(p.backend));
            let _ = b.disposition(p.backend);
            if h % 2 == 0 {
                b.closed(p.backend);
            }
        }
        assert_eq!(allocations() - before, 0, "{kind} allocated");
    }
}
