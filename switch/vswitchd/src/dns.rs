//! The embedded DNS served at each network's gateway address (UDP and TCP port 53).
//!
//! Names registered for a network's endpoints (`--name`, `--alias`) and services (`SVC` to
//! the virtual IP, `tasks.SVC` to the live backends) resolve to their addresses within that
//! network only, also as `NAME.NETWORK` (as Docker's embedded DNS); an endpoint's or a
//! virtual IP's address resolves back (`PTR`, `dig -x`) to `NAME.NETWORK.`. A name with
//! several addresses answers them in a different order each time (round-robin DNS, as swarm's
//! `tasks.SVC`). Other names go to `--dns-upstream` when set (answers come back asynchronously
//! through the gateway's [`Replier`]), else NXDOMAIN. Messages are
//! parsed and built with hickory-proto. The [`Resolver`] runs on the gateway thread; the name
//! table is shared with the control thread behind a read-write lock.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use xvs_switch::gateway::{LocalService, Replier, ReplyTo};

/// TTL of local answers, as Docker's embedded DNS.
const TTL: u32 = 600;
/// How long an upstream query may take.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// Upstream queries in flight at most.
const MAX_PENDING: usize = 1024;

/// Names per network: lower-case name (no trailing dot) → addresses; and address → the
/// name it resolves back to.
#[derive(Debug, Default)]
pub struct NameTable {
    networks: HashMap<String, HashMap<String, Vec<Ipv4Addr>>>,
    reverse: HashMap<String, HashMap<Ipv4Addr, String>>,
}

fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl NameTable {
    /// Registers `name` → `addr` in `network`.
    pub fn add(&mut self, network: &str, name: &str, addr: Ipv4Addr) {
        let v = self
            .networks
            .entry(network.to_string())
            .or_default()
            .entry(normalise(name))
            .or_default();
        if !v.contains(&addr) {
            v.push(addr);
        }
    }

    /// Makes `addr` resolve back to `name` in `network` (the first name given for an address
    /// keeps it).
    pub fn add_reverse(&mut self, network: &str, addr: Ipv4Addr, name: &str) {
        self.reverse
            .entry(network.to_string())
            .or_default()
            .entry(addr)
            .or_insert_with(|| normalise(name));
    }

    /// Removes `name` (whatever it points at) from `network`.
    pub fn remove_name(&mut self, network: &str, name: &str) {
        let name = normalise(name);
        if let Some(names) = self.networks.get_mut(network) {
            names.remove(&name);
        }
        if let Some(rev) = self.reverse.get_mut(network) {
            rev.retain(|_, n| *n != name);
        }
    }

    /// Replaces what `name` points at in `network` (none: the name goes).
    pub fn set(&mut self, network: &str, name: &str, addrs: &[Ipv4Addr]) {
        let names = self.networks.entry(network.to_string()).or_default();
        if addrs.is_empty() {
            names.remove(&normalise(name));
        } else {
            names.insert(normalise(name), addrs.to_vec());
        }
    }

    /// Removes every name pointing at `addr` in `network`.
    pub fn remove_addr(&mut self, network: &str, addr: Ipv4Addr) {
        if let Some(names) = self.networks.get_mut(network) {
            for v in names.values_mut() {
                v.retain(|a| *a != addr);
            }
            names.retain(|_, v| !v.is_empty());
        }
        if let Some(rev) = self.reverse.get_mut(network) {
            rev.remove(&addr);
        }
    }

    /// Forgets a network.
    pub fn remove_network(&mut self, network: &str) {
        self.networks.remove(network);
        self.reverse.remove(network);
    }

    /// The addresses of `name` in `network`: the name itself, or `NAME.NETWORK`.
    pub fn lookup(&self, network: &str, name: &str) -> Option<&[Ipv4Addr]> {
        let names = self.networks.get(network)?;
        let name = normalise(name);
        if let Some(v) = names.get(&name) {
            return Some(v);
        }
        let base = name.strip_suffix(&format!(".{}", network.to_ascii_lowercase()))?;
        names.get(base).map(Vec::as_slice)
    }

    /// The name `addr` resolves back to in `network`, as `NAME.NETWORK`.
    pub fn reverse(&self, network: &str, addr: Ipv4Addr) -> Option<String> {
        let name = self.reverse.get(network)?.get(&addr)?;
        Some(format!("{name}.{}", network.to_ascii_lowercase()))
    }
}

/// The address a `d.c.b.a.in-addr.arpa` name stands for.
fn arpa_addr(name: &str) -> Option<Ipv4Addr> {
    let rest = normalise(name);
    let octets = rest.strip_suffix(".in-addr.arpa")?;
    let parts: Vec<u8> = octets
        .split('.')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    match parts[..] {
        [d, c, b, a] => Some(Ipv4Addr::new(a, b, c, d)),
        _ => None,
    }
}

struct Pending {
    network: String,
    reply_to: ReplyTo,
    client_id: u16,
    since: Instant,
}

struct Upstream {
    socket: UdpSocket,
    server: SocketAddr,
    pending: Mutex<HashMap<u16, Pending>>,
    next_id: Mutex<u16>,
}

/// The DNS service of every gateway.
pub struct Resolver {
    names: Arc<RwLock<NameTable>>,
    upstream: Option<Arc<Upstream>>,
    /// Local answers given (turns the order of a name's addresses).
    answered: usize,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("upstream", &self.upstream.as_ref().map(|u| u.server))
            .finish()
    }
}

impl Resolver {
    /// A resolver over `names`, forwarding unknown names to `upstream` if given. Upstream
    /// answers are delivered through the replier set in `replier` once the gateway runs.
    pub fn new(
        names: Arc<RwLock<NameTable>>,
        upstream: Option<SocketAddr>,
        replier: Arc<OnceLock<Replier>>,
    ) -> std::io::Result<Resolver> {
        let upstream = match upstream {
            None => None,
            Some(server) => {
                let socket = UdpSocket::bind(if server.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                })?;
                socket.set_read_timeout(Some(Duration::from_millis(500)))?;
                let up = Arc::new(Upstream {
                    socket,
                    server,
                    pending: Mutex::new(HashMap::new()),
                    next_id: Mutex::new(1),
                });
                let reader = up.clone();
                std::thread::Builder::new()
                    .name("xvs-dns-upstream".into())
                    .spawn(move || read_upstream(&reader, &replier))?;
                Some(up)
            }
        };
        Ok(Resolver {
            names,
            upstream,
            answered: 0,
        })
    }

    fn forward(&self, network: &str, reply_to: ReplyTo, query: &Message) -> Option<Vec<u8>> {
        let up = self.upstream.as_ref()?;
        let mut pending = up.pending.lock().ok()?;
        let now = Instant::now();
        pending.retain(|_, p| now.duration_since(p.since) < UPSTREAM_TIMEOUT);
        if pending.len() >= MAX_PENDING {
            return Some(error_reply(query, ResponseCode::ServFail));
        }
        let id = {
            let mut next = up.next_id.lock().ok()?;
            let mut id = *next;
            while pending.contains_key(&id) {
                id = id.wrapping_add(1);
            }
            *next = id.wrapping_add(1);
            id
        };
        let mut fwd = query.clone();
        fwd.metadata.id = id;
        let bytes = fwd.to_vec().ok()?;
        pending.insert(
            id,
            Pending {
                network: network.to_string(),
                reply_to,
                client_id: query.metadata.id,
                since: now,
            },
        );
        if up.socket.send_to(&bytes, up.server).is_err() {
            pending.remove(&id);
            return Some(error_reply(query, ResponseCode::ServFail));
        }
        None
    }
}

fn read_upstream(up: &Upstream, replier: &OnceLock<Replier>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let n = match up.socket.recv_from(&mut buf) {
            Ok((n, from)) if from == up.server => n,
            Ok(_) => continue,
            Err(_) => continue,
        };
        let Ok(mut msg) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let Some(p) = up
            .pending
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&msg.metadata.id))
        else {
            continue;
        };
        msg.metadata.id = p.client_id;
        if let (Ok(bytes), Some(r)) = (msg.to_vec(), replier.get()) {
            r.reply(&p.network, p.reply_to, bytes);
        }
    }
}

fn error_reply(query: &Message, code: ResponseCode) -> Vec<u8> {
    let mut m = Message::response(query.metadata.id, query.metadata.op_code);
    m.metadata.response_code = code;
    m.metadata.recursion_desired = query.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.queries = query.queries.clone();
    m.to_vec().unwrap_or_default()
}

impl LocalService for Resolver {
    fn request(
        &mut self,
        network: &str,
        _client: SocketAddr,
        reply_to: ReplyTo,
        msg: &[u8],
    ) -> Option<Vec<u8>> {
        let query = match Message::from_vec(msg) {
            Ok(q) => q,
            Err(_) => {
                // Answer FORMERR when at least the header is readable.
                if msg.len() < 12 {
                    return None;
                }
                let id = u16::from_be_bytes([msg[0], msg[1]]);
                let mut m = Message::response(id, OpCode::Query);
                m.metadata.response_code = ResponseCode::FormErr;
                return m.to_vec().ok();
            }
        };
        if query.metadata.message_type != MessageType::Query
            || query.metadata.op_code != OpCode::Query
        {
            return Some(error_reply(&query, ResponseCode::NotImp));
        }
        let Some(q) = query.queries.first() else {
            return Some(error_reply(&query, ResponseCode::FormErr));
        };
        let name = q.name().to_ascii();
        let answer = |m: &mut Message| {
            m.metadata.authoritative = true;
            m.metadata.recursion_desired = query.metadata.recursion_desired;
            m.metadata.recursion_available = true;
            m.queries = query.queries.clone();
        };
        if let Some(addr) = arpa_addr(&name) {
            let back = self
                .names
                .read()
                .ok()
                .and_then(|t| t.reverse(network, addr));
            if let Some(back) = back {
                let mut m = Message::response(query.metadata.id, OpCode::Query);
                answer(&mut m);
                if let (RecordType::PTR | RecordType::ANY, Ok(target)) =
                    (q.query_type(), Name::from_ascii(format!("{back}.")))
                {
                    m.add_answer(Record::from_rdata(
                        q.name().clone(),
                        TTL,
                        RData::PTR(PTR(target)),
                    ));
                }
                return m.to_vec().ok();
            }
        }
        let local: Option<Vec<Ipv4Addr>> = self
            .names
            .read()
            .ok()
            .and_then(|t| t.lookup(network, &name).map(<[Ipv4Addr]>::to_vec));
        match local {
            Some(mut addrs) => {
                let mut m = Message::response(query.metadata.id, OpCode::Query);
                answer(&mut m);
                // A different order each time (round-robin DNS).
                self.answered = self.answered.wrapping_add(1);
                let n = addrs.len();
                if n > 1 {
                    addrs.rotate_left(self.answered % n);
                }
                if q.query_type() == RecordType::A || q.query_type() == RecordType::ANY {
                    for a in addrs {
                        m.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::A(A(a))));
                    }
                }
                m.to_vec().ok()
            }
            None => match self.forward(network, reply_to, &query) {
                Some(r) => Some(r),
                None if self.upstream.is_some() => None,
                None => Some(error_reply(&query, ResponseCode::NXDomain)),
            },
        }
    }
}

#[cfg(test)]
#[path = "tests/dns.rs"]
mod tests;
