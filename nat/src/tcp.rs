//! TCP connection tracking: the state machine netfilter's `tcp_conntracks` table describes
//! (SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE and
//! SYN_SENT2 for simultaneous open), driven by a segment's flags and direction. The side that
//! sent the first FIN is remembered, so "the other side acknowledged it" is exact rather than
//! netfilter's direction-blind guess. No sequence-window tracking (a RST is believed).
//!
//! Pure functions: usable from any thread.

use crate::state::ConnState;
use crate::tuple::Dir;

/// TCP header flag bits (byte 13 of the header).
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// What a segment's flags say, for tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    Syn,
    SynAck,
    Fin,
    Ack,
    Rst,
}

fn segment(f: u8) -> Option<Segment> {
    use flags::*;
    if f & RST != 0 {
        return Some(Segment::Rst);
    }
    match (f & SYN != 0, f & FIN != 0, f & ACK != 0) {
        (true, false, false) => Some(Segment::Syn),
        (true, false, true) => Some(Segment::SynAck),
        (false, true, _) => Some(Segment::Fin),
        (false, false, true) => Some(Segment::Ack),
        // SYN+FIN, or no flag at all: never valid (netfilter's tcp_valid_flags).
        _ => None,
    }
}

/// A TCP connection's tracking state: its state and who sent the first FIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpTrack {
    /// The state.
    pub state: ConnState,
    /// The side whose FIN came first (meaningful from FIN_WAIT on).
    pub fin_by: Dir,
}

/// Whether a segment with `flags` may open a connection (a pure SYN).
#[inline]
pub fn opens(flags: u8) -> bool {
    segment(flags) == Some(Segment::Syn)
}

impl TcpTrack {
    /// A connection opened by a SYN.
    pub const OPENED: TcpTrack = TcpTrack {
        state: ConnState::SynSent,
        fin_by: Dir::Original,
    };

    /// The state after a segment with `flags` travelling `dir`; `None` when the segment is
    /// out of state (invalid: counted, the connection unchanged).
    pub fn next(self, dir: Dir, flags: u8) -> Option<TcpTrack> {
        use ConnState::*;
        use Segment::*;
        let seg = segment(flags)?;
        let orig = dir == Dir::Original;
        let first = dir == self.fin_by;
        let state = match (self.state, seg) {
            (_, Rst) => Close,
            // Opening.
            (SynSent, Syn) if orig => SynSent,
            (SynSent, Syn) => SynSent2,
            (SynSent, SynAck) if !orig => SynRecv,
            (SynSent2, Syn) => SynSent2,
            (SynSent2, SynAck) => SynRecv,
            (SynRecv, Syn) if orig => SynRecv,
            (SynRecv, SynAck) => SynRecv,
            (SynRecv, Ack) => Established,
            // A reply's retransmitted SYN/ACK once the handshake is done (our ACK was lost).
            (Established, SynAck) if !orig => Established,
            (Established, Ack) => Established,
            // Closing: the first FIN, its ACK, the second FIN, the last ACK.
            (SynRecv | Established, Fin) => {
                return Some(TcpTrack {
                    state: FinWait,
                    fin_by: dir,
                });
            }
            (FinWait, Ack) if !first => CloseWait,
            (FinWait, Ack | Fin) if first => FinWait,
            (FinWait | CloseWait, Fin) if !first => LastAck,
            (CloseWait, Ack) => CloseWait,
            (CloseWait, Fin) => CloseWait,
            (LastAck, Ack) if first => TimeWait,
            (LastAck, Ack | Fin) => LastAck,
            (TimeWait, Ack | Fin) => TimeWait,
            // Port reuse: a new SYN from the originator after the close.
            (TimeWait | Close, Syn) if orig => return Some(TcpTrack::OPENED),
            (Close, Ack | Fin) => Close,
            _ => return None,
        };
        Some(TcpTrack {
            state,
            fin_by: self.fin_by,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::flags::*;
    use super::*;
    use ConnState::*;
    use Dir::{Original as O, Reply as R};

    fn run(steps: &[(Dir, u8)]) -> Vec<Option<ConnState>> {
        let mut t = TcpTrack::OPENED;
        steps
            .iter()
            .map(|&(d, f)| {
                let n = t.next(d, f);
                if let Some(n) = n {
                    t = n;
                }
                n.map(|n| n.state)
            })
            .collect()
    }

    #[test]
    fn three_way_handshake_and_orderly_close_by_the_originator() {
        assert!(opens(SYN) && !opens(SYN | ACK) && !opens(ACK) && !opens(SYN | FIN));
        let got = run(&[
            (O, SYN),
            (R, SYN | ACK),
            (O, ACK),
            (O, ACK),
            (R, ACK),
            (O, FIN | ACK),
            (O, ACK),
            (R, ACK),
            (R, ACK),
            (R, FIN | ACK),
            (R, FIN | ACK),
            (O, ACK),
            (O, ACK),
        ]);
        let want = [
            SynSent,
            SynRecv,
            Established,
            Established,
            Established,
            FinWait,
            FinWait,
            CloseWait,
            CloseWait,
            LastAck,
            LastAck,
            TimeWait,
            TimeWait,
        ];
        assert_eq!(got, want.map(Some));
    }

    #[test]
    fn close_by_the_responder_and_fin_ack_together() {
        let got = run(&[
            (R, SYN | ACK),
            (O, ACK),
            (R, FIN | ACK),
            (O, FIN | ACK),
            (R, ACK),
        ]);
        assert_eq!(
            got,
            [SynRecv, Established, FinWait, LastAck, TimeWait].map(Some)
        );
    }

    #[test]
    fn simultaneous_open_goes_through_syn_sent2() {
        let got = run(&[(R, SYN), (O, SYN), (O, SYN | ACK), (R, SYN | ACK), (R, ACK)]);
        assert_eq!(
            got,
            [SynSent2, SynSent2, SynRecv, SynRecv, Established].map(Some)
        );
    }

    #[test]
    fn rst_closes_from_every_state() {
        for pre in [
            &[][..],
            &[(R, SYN)],
            &[(R, SYN | ACK)],
            &[(R, SYN | ACK), (O, ACK)],
            &[(R, SYN | ACK), (O, ACK), (O, FIN)],
            &[(R, SYN | ACK), (O, ACK), (O, FIN), (R, ACK)],
            &[(R, SYN | ACK), (O, ACK), (O, FIN), (R, FIN | ACK)],
            &[(R, SYN | ACK), (O, ACK), (O, FIN), (R, FIN | ACK), (O, ACK)],
        ] {
            for d in [O, R] {
                let mut steps = pre.to_vec();
                steps.push((d, RST | ACK));
                assert_eq!(
                    run(&steps).last(),
                    Some(&Some(Close)),
                    "{pre:?} then RST from {d:?}"
                );
            }
        }
        // After a RST, stragglers stay CLOSE; a new SYN from the originator reopens.
        assert_eq!(
            run(&[(R, RST), (O, ACK), (O, SYN)]),
            [Close, Close, SynSent].map(Some)
        );
    }

    #[test]
    fn time_wait_reopens_on_a_new_syn_from_the_originator_only() {
        let close = [(R, SYN | ACK), (O, ACK), (O, FIN), (R, FIN | ACK), (O, ACK)];
        let mut s = close.to_vec();
        s.push((R, SYN));
        assert_eq!(run(&s).last(), Some(&None));
        let mut s = close.to_vec();
        s.push((O, SYN));
        assert_eq!(run(&s).last(), Some(&Some(SynSent)));
    }

    #[test]
    fn out_of_state_segments_are_invalid() {
        // Before the SYN/ACK: no ACK, no FIN, no SYN/ACK from the originator.
        for (d, f) in [(R, ACK), (O, ACK), (O, FIN), (O, SYN | ACK), (R, FIN)] {
            assert_eq!(run(&[(d, f)]), [None], "{d:?} {f:#x} in SYN_SENT");
        }
        // Flags that are never valid.
        assert_eq!(run(&[(O, SYN | FIN)]), [None]);
        assert_eq!(run(&[(O, 0)]), [None]);
        // A SYN on an established connection.
        assert_eq!(
            run(&[(R, SYN | ACK), (O, ACK), (O, SYN)]).last(),
            Some(&None)
        );
        // An invalid segment leaves the state as it was.
        let t = TcpTrack::OPENED;
        assert_eq!(t.next(R, ACK), None);
        assert_eq!(t.next(R, SYN | ACK).map(|t| t.state), Some(SynRecv));
    }
}
