//! The load balancer's sessions: one per connection through a virtual IP, holding the backend
//! the connection was given (its affinity), its minimal TCP state and its timers. A slab of at
//! most `capacity` sessions with a free list, and one hash index (hashbrown, the seeded hash
//! of `xvs_stage::hash`) holding each session twice: under its original tuple (client →
//! VIP:port) and its reply tuple (backend → client), so a packet finds its connection from
//! either direction with one probe. Everything is reserved when the table is first used, so
//! opening, finding and ending sessions never allocates. Expiry is lazy (a lookup finding an
//! expired session ends it) plus a bounded sweep per tick, never a scan on the fast path.
//!
//! Owned by one worker's [`LbStage`](crate::stage::LbStage); not shared.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use hashbrown::HashTable;
use xvs_stage::hash::hash2;
use xvs_stage::respond::tcp_flags;
use xvs_stage::wire::{Mac, ipproto};

use crate::backend::BackendRef;
use crate::spec::Proto;
use crate::table::ServiceKey;

/// Sessions a table holds unless configured otherwise.
pub const DEFAULT_CAPACITY: u32 = 65536;
/// Most sessions a table may hold (ids keep the index's reply bit free).
pub const MAX_CAPACITY: u32 = 1 << 24;
/// How long a connection whose SYN has had no answer is kept (at most), in ms: IPVS's
/// `SYN_RECV` timeout, so a stream of unanswered SYNs cannot hold the table for the idle
/// timeout (15 minutes for TCP).
pub const SYN_TIMEOUT_MS: u64 = 60_000;
/// How long a connection is kept after a RST or a FIN from both sides, in ms.
pub const CLOSING_TIMEOUT_MS: u64 = 10_000;

/// The index entry names the reply tuple.
const REPLY_BIT: u32 = 1 << 31;

/// A packet's addresses, ports (host order) and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tuple {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

impl Tuple {
    #[inline]
    fn hash(&self, seed: u64) -> u64 {
        hash2(
            seed,
            u64::from(self.src) << 32 | u64::from(self.dst),
            u64::from(self.sport) << 32 | u64::from(self.dport) << 16 | u64::from(self.proto),
        )
    }
}

impl fmt::Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = Proto::from_number(self.proto).map_or("ip", Proto::name);
        write!(
            f,
            "{proto} {}:{} -> {}:{}",
            Ipv4Addr::from(self.src),
            self.sport,
            Ipv4Addr::from(self.dst),
            self.dport
        )
    }
}

/// Which way a packet travels on its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    /// Client to virtual IP.
    Original,
    /// Backend to client.
    Reply,
}

/// Where a connection is, as the load balancer tracks it (minimally: no sequence numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// TCP: the client's SYN went to the backend, no answer yet.
    SynSent,
    /// TCP: the backend answered.
    Established,
    /// TCP: one side sent a FIN.
    FinWait,
    /// TCP: both sides sent a FIN, or either a RST: kept [`CLOSING_TIMEOUT_MS`] for the last
    /// segments, then gone.
    Closing,
    /// UDP: the backend has not answered yet.
    Unreplied,
    /// UDP: the backend answered.
    Replied,
}

impl SessionState {
    /// The name listings show.
    pub fn name(self) -> &'static str {
        match self {
            SessionState::SynSent => "syn_sent",
            SessionState::Established => "established",
            SessionState::FinWait => "fin_wait",
            SessionState::Closing => "closing",
            SessionState::Unreplied => "unreplied",
            SessionState::Replied => "replied",
        }
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// FIN seen from the client, from the backend.
const FIN_CLIENT: u8 = 1;
const FIN_BACKEND: u8 = 2;

/// One connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Session {
    pub client: u32,
    pub client_port: u16,
    pub vip: u32,
    pub vip_port: u16,
    pub backend: u32,
    pub backend_port: u16,
    pub proto: u8,
    pub state: SessionState,
    /// [`FIN_CLIENT`], [`FIN_BACKEND`].
    pub fins: u8,
    /// The backend's handle in its service (for the connection counts and its disposition).
    pub backend_ref: BackendRef,
    /// The backend's MAC, as the configuration of generation `station_gen` had it.
    pub station: Mac,
    pub station_gen: u32,
    pub created_ms: u64,
    pub last_ms: u64,
    pub expires_ms: u64,
    /// Where the two ends are, for the resets an idle timeout sends them (TCP).
    pub ends: Ends,
    /// The client was given itself as the backend: its packets also get the VIP as their
    /// source (a host drops packets from its own address), so replies come back to the VIP.
    pub hairpin: bool,
}

/// A TCP connection's two ends as its segments show them: what the resets that end it on an
/// idle timeout are made from (each end gets one in its own sequence space).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Ends {
    /// The sequence number the client sends next (SEG.SEQ + SEG.LEN of its last segment).
    pub client_next: u32,
    /// The same for the backend; meaningful once `backend_seen`.
    pub backend_next: u32,
    /// The client's MAC and the port its segments come in on.
    pub client_mac: Mac,
    pub client_in: u32,
    /// The port the backend's segments come in on.
    pub backend_in: u32,
    /// The backend has sent a segment.
    pub backend_seen: bool,
    /// The client is beyond the uplink (its segments came over from another bridge): it is
    /// not reset from here.
    pub client_remote: bool,
}

impl Session {
    /// Whether an idle timeout ending it should reset both ends: an open TCP connection
    /// whose backend has answered.
    #[inline]
    pub fn wants_reset(&self) -> bool {
        self.proto == ipproto::TCP
            && matches!(
                self.state,
                SessionState::Established | SessionState::FinWait
            )
            && self.ends.backend_seen
            && !self.hairpin
    }

    /// The client's packets: client → VIP:port.
    #[inline]
    pub fn original(&self) -> Tuple {
        Tuple {
            src: self.client,
            dst: self.vip,
            sport: self.client_port,
            dport: self.vip_port,
            proto: self.proto,
        }
    }

    /// The backend's packets: backend → client.
    #[inline]
    pub fn reply(&self) -> Tuple {
        Tuple {
            src: self.backend,
            dst: if self.hairpin { self.vip } else { self.client },
            sport: self.backend_port,
            dport: self.client_port,
            proto: self.proto,
        }
    }

    #[inline]
    fn tuple(&self, dir: Dir) -> Tuple {
        match dir {
            Dir::Original => self.original(),
            Dir::Reply => self.reply(),
        }
    }

    /// The service the connection belongs to.
    #[inline]
    pub fn service(&self) -> ServiceKey {
        ServiceKey {
            vip: IpAddr::V4(Ipv4Addr::from(self.vip)),
            proto: if self.proto == ipproto::TCP {
                Proto::Tcp
            } else {
                Proto::Udp
            },
            port: self.vip_port,
        }
    }

    /// The state a new connection starts in.
    pub fn opening(proto: u8) -> SessionState {
        if proto == ipproto::TCP {
            SessionState::SynSent
        } else {
            SessionState::Unreplied
        }
    }

    /// How long the connection lives without a packet in its state, for a service whose idle
    /// timeout is `idle_ms`.
    #[inline]
    pub fn timeout_ms(&self, idle_ms: u64) -> u64 {
        match self.state {
            SessionState::SynSent => idle_ms.min(SYN_TIMEOUT_MS),
            SessionState::Closing => idle_ms.min(CLOSING_TIMEOUT_MS),
            _ => idle_ms,
        }
    }

    /// Moves the state on for a packet travelling `dir` with TCP `flags` (0 for UDP).
    #[inline]
    pub fn track(&mut self, dir: Dir, flags: u8) {
        use SessionState::*;
        if self.proto != ipproto::TCP {
            if dir == Dir::Reply {
                self.state = Replied;
            }
            return;
        }
        if flags & tcp_flags::RST != 0 {
            self.state = Closing;
            return;
        }
        if flags & tcp_flags::FIN != 0 {
            self.fins |= match dir {
                Dir::Original => FIN_CLIENT,
                Dir::Reply => FIN_BACKEND,
            };
        }
        self.state = match (self.state, dir) {
            (Closing, _) => Closing,
            _ if self.fins == FIN_CLIENT | FIN_BACKEND => Closing,
            _ if self.fins != 0 => FinWait,
            (SynSent, Dir::Reply) => Established,
            (s, _) => s,
        };
    }
}

/// A connection as `service inspect` and `trace` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionView {
    /// TCP or UDP.
    pub proto: Proto,
    /// The client's address and port.
    pub client: SocketAddrV4,
    /// The service's virtual IP and port.
    pub vip: SocketAddrV4,
    /// The backend the connection goes to.
    pub backend: SocketAddrV4,
    /// Its state.
    pub state: SessionState,
    /// Seconds since it opened.
    pub age_s: u64,
    /// Seconds since its last packet.
    pub idle_s: u64,
    /// Seconds it may stay idle in its state before it is closed.
    pub timeout_s: u64,
}

impl fmt::Display for SessionView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {} -> {} {} age {}s idle {}s timeout {}s",
            self.proto,
            self.client,
            self.vip,
            self.backend,
            self.state,
            self.age_s,
            self.idle_s,
            self.timeout_s
        )
    }
}

/// The sessions and their index (see the module header).
#[derive(Debug)]
pub(crate) struct Sessions {
    slots: Vec<Option<Session>>,
    free: Vec<u32>,
    /// Session ids, with [`REPLY_BIT`] for the reply tuple.
    index: HashTable<u32>,
    seed: u64,
    capacity: u32,
    live: u32,
    cursor: u32,
    reserved: bool,
}

impl Sessions {
    /// A table for `capacity` sessions (at most [`MAX_CAPACITY`]), hashing with `seed`. Takes
    /// no memory until [`Sessions::reserve`].
    pub fn new(capacity: u32, seed: u64) -> Sessions {
        Sessions {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashTable::new(),
            seed,
            capacity: capacity.min(MAX_CAPACITY),
            live: 0,
            cursor: 0,
            reserved: false,
        }
    }

    /// Reserves everything the table will ever use (off the fast path, once). The index gets
    /// room for four entries a session, twice what it holds at most: hashbrown then clears its
    /// tombstones in place rather than growing (it grows only past half full).
    pub fn reserve(&mut self) {
        if self.reserved {
            return;
        }
        let cap = self.capacity as usize;
        self.slots
            .reserve_exact(cap.saturating_sub(self.slots.len()));
        self.free.reserve_exact(cap.saturating_sub(self.free.len()));
        let entries = cap * 4;
        let (slots, seed) = (&self.slots, self.seed);
        self.index
            .reserve(entries.saturating_sub(self.index.len()), |&e| {
                entry_hash(slots, seed, e)
            });
        self.reserved = true;
    }

    /// The most sessions it holds.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Sessions in the table (expired ones not yet swept included).
    #[inline]
    pub fn len(&self) -> usize {
        self.live as usize
    }

    /// True when there are none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// True when no more session fits.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.live >= self.capacity
    }

    /// The session `t` belongs to, and which way `t` travels on it.
    #[inline]
    pub fn lookup(&self, t: &Tuple) -> Option<(u32, Dir)> {
        if self.live == 0 {
            return None;
        }
        let slots = &self.slots;
        let &e = self.index.find(t.hash(self.seed), |&e| {
            let (id, dir) = split(e);
            matches!(slots.get(id as usize), Some(Some(s)) if s.tuple(dir) == *t)
        })?;
        Some(split(e))
    }

    /// Session `id`.
    #[inline]
    pub fn get(&self, id: u32) -> Option<&Session> {
        self.slots.get(id as usize)?.as_ref()
    }

    /// Session `id`, to change its state and timers (never its tuples).
    #[inline]
    pub fn get_mut(&mut self, id: u32) -> Option<&mut Session> {
        self.slots.get_mut(id as usize)?.as_mut()
    }

    /// Adds a session whose tuples no other session has (the caller looked both up); `None`
    /// when the table is full.
    pub fn insert(&mut self, s: Session) -> Option<u32> {
        if self.is_full() {
            return None;
        }
        self.reserve();
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        if let Some(slot) = self.slots.get_mut(id as usize) {
            *slot = Some(s);
        }
        let (slots, seed) = (&self.slots, self.seed);
        let rehash = |&e: &u32| entry_hash(slots, seed, e);
        self.index
            .insert_unique(s.original().hash(seed), id, rehash);
        self.index
            .insert_unique(s.reply().hash(seed), id | REPLY_BIT, rehash);
        self.live += 1;
        Some(id)
    }

    /// Ends session `id`, returning it.
    pub fn remove(&mut self, id: u32) -> Option<Session> {
        let s = self.slots.get_mut(id as usize)?.take()?;
        for (t, e) in [(s.original(), id), (s.reply(), id | REPLY_BIT)] {
            if let Ok(entry) = self.index.find_entry(t.hash(self.seed), |&x| x == e) {
                entry.remove();
            }
        }
        self.free.push(id);
        self.live -= 1;
        Some(s)
    }

    /// Looks at up to `budget` slots from where the last sweep stopped and ends the sessions
    /// expired by `now_ms`, giving each to `ended`. Returns how many ended.
    pub fn sweep(&mut self, now_ms: u64, budget: u32, mut ended: impl FnMut(&Session)) -> u32 {
        let n = self.slots.len() as u32;
        if n == 0 || self.live == 0 {
            return 0;
        }
        let mut count = 0;
        for _ in 0..budget.min(n) {
            self.cursor = if self.cursor + 1 >= n {
                0
            } else {
                self.cursor + 1
            };
            let id = self.cursor;
            if matches!(self.get(id), Some(s) if s.expires_ms <= now_ms)
                && let Some(s) = self.remove(id)
            {
                ended(&s);
                count += 1;
            }
        }
        count
    }

    /// Ends every session `which` selects, giving each to `ended` (a scan of the slab: for the
    /// control plane, between batches).
    pub fn remove_where(
        &mut self,
        mut which: impl FnMut(&Session) -> bool,
        mut ended: impl FnMut(&Session),
    ) {
        for id in 0..self.slots.len() as u32 {
            if matches!(self.get(id), Some(s) if which(s))
                && let Some(s) = self.remove(id)
            {
                ended(&s);
            }
        }
    }

    /// Every session with its id.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Session)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(id, s)| Some((id as u32, s.as_ref()?)))
    }

    /// The same sessions in a table of `capacity` (reserved now if this one was); those that
    /// do not fit are given to `ended`.
    pub fn resized(mut self, capacity: u32, mut ended: impl FnMut(&Session)) -> Sessions {
        let mut t = Sessions::new(capacity, self.seed);
        if self.reserved {
            t.reserve();
        }
        for id in 0..self.slots.len() as u32 {
            if let Some(s) = self.remove(id)
                && t.insert(s).is_none()
            {
                ended(&s);
            }
        }
        t
    }
}

/// The hash an index entry is filed under (for hashbrown's rehashing).
fn entry_hash(slots: &[Option<Session>], seed: u64, e: u32) -> u64 {
    let (id, dir) = split(e);
    match slots.get(id as usize) {
        Some(Some(s)) => s.tuple(dir).hash(seed),
        _ => 0,
    }
}

#[inline]
fn split(e: u32) -> (u32, Dir) {
    let dir = if e & REPLY_BIT != 0 {
        Dir::Reply
    } else {
        Dir::Original
    };
    (e & !REPLY_BIT, dir)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn session(client_port: u16, backend: u32) -> Session {
        Session {
            client: 0x0a00_0005,
            client_port,
            vip: 0x0a00_0064,
            vip_port: 80,
            backend,
            backend_port: 8080,
            proto: ipproto::TCP,
            state: SessionState::SynSent,
            fins: 0,
            backend_ref: BackendRef { slot: 0, serial: 1 },
            station: Mac::default(),
            station_gen: 0,
            created_ms: 0,
            last_ms: 0,
            expires_ms: 1000,
            ends: Ends::default(),
            hairpin: false,
        }
    }

    #[test]
    fn a_session_is_found_from_both_directions_until_it_ends() {
        let mut t = Sessions::new(4, 7);
        let s = session(40000, 0x0a00_0003);
        let id = t.insert(s).unwrap();
        assert_eq!(t.lookup(&s.original()), Some((id, Dir::Original)));
        assert_eq!(t.lookup(&s.reply()), Some((id, Dir::Reply)));
        let other = session(40001, 0x0a00_0003);
        assert_eq!(t.lookup(&other.original()), None);
        assert_eq!(t.remove(id), Some(s));
        assert_eq!(t.lookup(&s.original()), None);
        assert!(t.is_empty());
    }

    #[test]
    fn the_table_is_bounded_and_sweeps_a_bounded_number_of_slots() {
        let mut t = Sessions::new(3, 7);
        for p in 0..3 {
            t.insert(session(p, 1)).unwrap();
        }
        assert!(t.is_full());
        assert_eq!(t.insert(session(9, 1)), None);
        let mut ended = 0;
        assert_eq!(t.sweep(999, 10, |_| ended += 1), 0, "not expired yet");
        assert_eq!(t.sweep(1000, 2, |_| ended += 1), 2, "two slots looked at");
        assert_eq!(t.sweep(1000, 2, |_| ended += 1), 1);
        assert_eq!((ended, t.len()), (3, 0));
        let t = {
            let mut t = Sessions::new(3, 7);
            for p in 0..3 {
                t.insert(session(p, 1)).unwrap();
            }
            let mut gone = 0;
            let t = t.resized(2, |_| gone += 1);
            assert_eq!(gone, 1);
            t
        };
        assert_eq!((t.len(), t.capacity()), (2, 2));
        assert!(t.lookup(&session(0, 1).original()).is_some());
    }

    #[test]
    fn tcp_states_follow_the_handshake_and_the_close() {
        use SessionState::*;
        let mut s = session(1, 1);
        s.track(Dir::Original, tcp_flags::SYN);
        assert_eq!(s.state, SynSent);
        s.track(Dir::Reply, tcp_flags::SYN | tcp_flags::ACK);
        assert_eq!(s.state, Established);
        s.track(Dir::Original, tcp_flags::FIN | tcp_flags::ACK);
        assert_eq!(s.state, FinWait);
        assert_eq!(s.timeout_ms(900_000), 900_000);
        s.track(Dir::Reply, tcp_flags::FIN | tcp_flags::ACK);
        assert_eq!(s.state, Closing);
        assert_eq!(s.timeout_ms(900_000), CLOSING_TIMEOUT_MS);
        let mut r = session(2, 1);
        r.track(Dir::Reply, tcp_flags::RST);
        assert_eq!(r.state, Closing);
        let mut u = session(3, 1);
        u.proto = ipproto::UDP;
        u.state = Session::opening(ipproto::UDP);
        u.track(Dir::Reply, 0);
        assert_eq!(u.state, Replied);
    }

    proptest! {
        /// After any sequence of inserts and removes, every live session is found from both
        /// directions, no removed one is, and the count is right.
        #[test]
        fn index_matches_the_slab(ops in proptest::collection::vec((any::<bool>(), 0u16..40), 1..300)) {
            let mut t = Sessions::new(24, 3);
            let mut model: std::collections::HashMap<u16, u32> = Default::default();
            for (add, port) in ops {
                let s = session(port, 1 + u32::from(port % 5));
                if add {
                    if !model.contains_key(&port) && let Some(id) = t.insert(s) {
                        model.insert(port, id);
                    }
                } else if let Some(id) = model.remove(&port) {
                    prop_assert_eq!(t.remove(id), Some(s));
                }
                prop_assert_eq!(t.len(), model.len());
                for p in 0..40u16 {
                    let s = session(p, 1 + u32::from(p % 5));
                    let want = model.get(&p).copied();
                    prop_assert_eq!(t.lookup(&s.original()).map(|x| x.0), want);
                    prop_assert_eq!(t.lookup(&s.reply()).map(|x| x.0), want);
                }
            }
        }
    }
}
