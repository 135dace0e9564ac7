//! The load balancer's drop reasons, counted under stage `lb`. The stage that uses this crate
//! registers the set when it is built ([`LbDrop::set`]`().register()`).
//!
//! Plain values, usable from any thread.

xvs_stage::drop_reasons! {
    /// Why the load balancer refuses a frame.
    pub enum LbDrop in "lb" {
        NoBackend => "no_backend", "new connection to a service with no live backend (refused: TCP answered with a RST)";
        BackendRemoved => "backend_removed", "packet of a connection whose backend was removed without --drain (the client's is answered with a RST)";
        NoService => "no_service", "packet to a virtual IP on a protocol or port no service listens on (TCP: answered with a RST)";
        NoStation => "no_station", "the chosen backend's address is not a station of the network (no MAC to send to)";
        NoSession => "no_session", "TCP segment to a virtual IP that is not a SYN and belongs to no connection";
        SessionTableFull => "session_table_full", "new connection refused: the session table is full";
        ReplyClash => "reply_clash", "new connection refused: its backend's replies would look like another connection's (same backend and client port through another service)";
        Malformed => "malformed", "packet shorter than its classified headers (not rewritten)";
        Fragment => "fragment", "IP fragment to a virtual IP (connections are balanced by port; fragments carry none)";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_count_under_lb() {
        LbDrop::set().register();
        let r = LbDrop::NoBackend.reason();
        assert_eq!(
            (r.stage(), r.name(), r.drops_frame()),
            ("lb", "no_backend", true)
        );
    }
}
