//! The load balancer's drop reasons, counted under stage `lb`. The stage that uses this crate
//! registers the set when it is built ([`LbDrop::set`]`().register()`).
//!
//! Plain values, usable from any thread.

xvs_stage::drop_reasons! {
    /// Why the load balancer refuses a frame.
    pub enum LbDrop in "lb" {
        NoBackend => "no_backend", "new connection to a service with no live backend (refused: TCP RST)";
        BackendRemoved => "backend_removed", "packet of a connection whose backend was removed (connection reset)";
        NoService => "no_service", "packet to a virtual IP on a protocol or port no service listens on";
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
