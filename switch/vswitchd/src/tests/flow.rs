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
    assert!(
        parse("dl_src=02:00:00:00:00:01")
            .unwrap_err()
            .contains("in_port")
    );
    assert!(parse("in_port=p1,dl_src=zz").unwrap_err().contains("MAC"));
    assert!(parse("in_port=p1,bogus=1").unwrap_err().contains("bogus"));
    assert!(
        parse("in_port=p1,tp_dst=99999")
            .unwrap_err()
            .contains("tp_dst")
    );
}
