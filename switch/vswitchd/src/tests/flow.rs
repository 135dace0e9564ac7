//! Unit tests of `flow.rs`.

use super::*;

#[test]
fn parses_a_full_udp_flow() {
    let f = parse("in_port=p1,dl_src=02:00:00:00:00:01,dl_dst=02:00:00:00:00:02,udp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_src=1,tp_dst=53").unwrap();
    assert_eq!(f.in_port, "p1");
    let k = xvs_switch::classify::classify(&f.frame, 1, 0).unwrap();
    assert_eq!(k.tp_dst, 53);
    assert_eq!(k.dl_dst.to_string(), "02:00:00:00:00:02");
}

#[test]
fn arp_and_errors() {
    let f = parse("in_port=p1,arp,dl_dst=ff:ff:ff:ff:ff:ff").unwrap();
    assert!(xvs_switch::classify::classify(&f.frame, 1, 0).is_ok());
    let message = |flow: &str| parse(flow).unwrap_err().to_string();
    assert_eq!(
        message("dl_src=02:00:00:00:00:01"),
        "flow needs in_port=PORT"
    );
    // A bad MAC gets the words of Mac's own parser.
    for bad in ["zz", "1:2", "02:00:00:00:00:01:03"] {
        let mac_error = bad.parse::<Mac>().unwrap_err().to_string();
        assert!(mac_error.contains("MAC"), "{mac_error}");
        assert_eq!(message(&format!("in_port=p1,dl_src={bad}")), mac_error);
        assert_eq!(message(&format!("in_port=p1,dl_dst={bad}")), mac_error);
    }
    assert_eq!(
        message("in_port=p1,bogus=1"),
        "unknown flow field \"bogus\" (expected in_port, dl_src, dl_dst, udp, tcp, icmp, arp, \
         nw_src, nw_dst, tp_src, tp_dst)"
    );
    assert_eq!(
        message("in_port=p1,tp_dst=99999"),
        "tp_dst=99999: not a port number (0-65535)"
    );
    assert_eq!(
        message("in_port=p1,nw_src=10.0.0"),
        "nw_src=10.0.0: not an IPv4 address"
    );
    assert_eq!(
        message("in_port=p1,nw_dst"),
        "flow field nw_dst needs a value"
    );
    assert!(matches!(
        parse("in_port"),
        Err(FlowError::NoValue("in_port"))
    ));
}
