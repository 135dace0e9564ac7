//! Connection states as listings show them: TCP's (netfilter's names: SYN_SENT ... TIME_WAIT,
//! CLOSE, SYN_SENT2 for simultaneous open) and, for UDP and ICMP echo, whether a reply was
//! seen (netfilter's `[UNREPLIED]` and, once replied, the longer "stream" timeout).
//! The TCP transitions are in [`tcp`](crate::tcp); UDP's and ICMP's are here.
//!
//! Plain values: usable from any thread.

use std::fmt;

use serde::Serialize;

use crate::tuple::Dir;

/// A connection's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[repr(u8)]
pub enum ConnState {
    /// TCP: SYN seen from the originator.
    SynSent,
    /// TCP: SYN/ACK seen.
    SynRecv,
    /// TCP: three-way handshake done.
    Established,
    /// TCP: one side sent FIN.
    FinWait,
    /// TCP: that FIN was acknowledged; the other side still sends.
    CloseWait,
    /// TCP: both sides sent FIN; the last ACK is awaited.
    LastAck,
    /// TCP: closed both ways, lingering for late segments.
    TimeWait,
    /// TCP: reset.
    Close,
    /// TCP: SYN seen both ways (simultaneous open).
    SynSent2,
    /// UDP / ICMP: no reply yet.
    Unreplied,
    /// UDP / ICMP: a reply was seen.
    Replied,
}

impl ConnState {
    /// The name listings print (`ESTABLISHED`, `UNREPLIED`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ConnState::SynSent => "SYN_SENT",
            ConnState::SynRecv => "SYN_RECV",
            ConnState::Established => "ESTABLISHED",
            ConnState::FinWait => "FIN_WAIT",
            ConnState::CloseWait => "CLOSE_WAIT",
            ConnState::LastAck => "LAST_ACK",
            ConnState::TimeWait => "TIME_WAIT",
            ConnState::Close => "CLOSE",
            ConnState::SynSent2 => "SYN_SENT2",
            ConnState::Unreplied => "UNREPLIED",
            ConnState::Replied => "REPLIED",
        }
    }

    /// UDP and ICMP echo: the first packet opens a connection unreplied; a packet in the
    /// reply direction makes it replied, and it stays so.
    #[inline]
    pub fn datagram(self, dir: Dir) -> ConnState {
        match (self, dir) {
            (ConnState::Unreplied, Dir::Original) => ConnState::Unreplied,
            _ => ConnState::Replied,
        }
    }
}

impl fmt::Display for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_become_replied_once_and_stay() {
        let s = ConnState::Unreplied;
        assert_eq!(s.datagram(Dir::Original), ConnState::Unreplied);
        let r = s.datagram(Dir::Reply);
        assert_eq!(r, ConnState::Replied);
        assert_eq!(r.datagram(Dir::Original), ConnState::Replied);
        assert_eq!(ConnState::SynSent2.to_string(), "SYN_SENT2");
    }
}
