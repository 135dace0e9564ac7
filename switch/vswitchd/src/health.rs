//! Health checks of services' backends (`service create --health tcp[:PORT] [--interval S]`):
//! every interval the network's gateway opens a TCP connection to each configured backend
//! (ldirectord's / HAProxy's `check` "connect" test), from the gateway's own address. A
//! backend whose check fails (refused, or no answer within the interval, at most 2 s) is
//! marked down: the scheduler gives it no new connection and `tasks.SVC` leaves it out; it
//! keeps its established ones. The first check that succeeds brings it back.
//!
//! Only backends this host holds are checked: a backend on another host of the cluster sits
//! behind a VTEP, where this gateway's probe cannot go (a network's gateway is answered on
//! every host and never crosses the tunnel); its own host checks it.
//!
//! Used by the control thread only (probes run on the gateways' thread, answers come back
//! on channels read here).

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, SocketAddrV4};

use crossbeam_channel::Receiver;
use xvs_lb::Health;
use xvs_switch::gateway::GatewayHandle;

use crate::service::{ServiceConf, Services};

/// The longest a check waits for its connection.
const MAX_PROBE_MS: u64 = 2000;

/// One backend's checks.
#[derive(Debug)]
struct Check {
    /// When the next probe goes out.
    next_ms: u64,
    /// The probe under way.
    pending: Option<Receiver<bool>>,
}

/// Every checked backend's state.
#[derive(Debug, Default)]
pub struct HealthChecks {
    checks: HashMap<(String, SocketAddr), Check>,
}

impl HealthChecks {
    /// Reads the answers in, sends the probes that are due, and forgets backends no longer
    /// configured; returns the services whose backends' health changed (to push again).
    pub fn tick(
        &mut self,
        gateway: &GatewayHandle,
        services: &mut Services,
        confs: &BTreeMap<String, ServiceConf>,
        local: &std::collections::HashSet<(String, std::net::Ipv4Addr)>,
        now_ms: u64,
    ) -> Vec<String> {
        let mut changed = Vec::new();
        self.checks.retain(|(name, addr), _| {
            confs
                .get(name)
                .is_some_and(|c| c.health.is_some() && c.backends.iter().any(|b| b.addr == *addr))
        });
        for (name, conf) in confs {
            let Some(h) = conf.health else { continue };
            let interval_ms = u64::from(h.interval_s) * 1000;
            for b in &conf.backends {
                let SocketAddr::V4(addr) = b.addr else {
                    continue;
                };
                if !local.contains(&(conf.network.clone(), *addr.ip())) {
                    continue;
                }
                let check = self.checks.entry((name.clone(), b.addr)).or_insert(Check {
                    next_ms: now_ms,
                    pending: None,
                });
                if let Some(answer) = &check.pending
                    && let Ok(up) = answer.try_recv()
                {
                    check.pending = None;
                    let health = if up { Health::Up } else { Health::Down };
                    if services.set_health(name, b.addr, health) {
                        tracing::info!("service {name}: backend {} is {}", b.addr, health.name());
                        if !changed.contains(name) {
                            changed.push(name.clone());
                        }
                    }
                }
                if check.pending.is_none() && now_ms >= check.next_ms {
                    let target = SocketAddrV4::new(*addr.ip(), h.port.unwrap_or(addr.port()));
                    let timeout = interval_ms.min(MAX_PROBE_MS);
                    check.pending = Some(gateway.probe(&conf.network, target, timeout));
                    check.next_ms = now_ms + interval_ms;
                }
            }
        }
        changed
    }
}
