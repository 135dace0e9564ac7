//! Unit tests of `publish.rs`: the spec grammar, its error texts, and host port allocation.

use super::*;

use proptest::prelude::*;

fn req(spec: &str) -> PublishRequest {
    parse(spec).unwrap_or_else(|e| panic!("{spec:?} should parse: {e}"))
}

fn err(spec: &str) -> String {
    match parse(spec) {
        Ok(r) => panic!("{spec:?} should not parse, got {r:?}"),
        Err(e) => e.to_string(),
    }
}

fn problem(spec: &str) -> SpecError {
    match parse(spec) {
        Err(PublishError::Invalid { spec: s, problem }) => {
            assert_eq!(s, spec);
            problem
        }
        other => panic!("{spec:?}: expected Invalid, got {other:?}"),
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn bind(proto: Proto, host_ip: Option<&str>, host_port: u16, container_port: u16) -> PortBinding {
    PortBinding {
        proto,
        host_ip: host_ip.map(ip),
        host_port,
        container_port,
    }
}

fn tcp(host_port: u16, container_port: u16) -> PortBinding {
    bind(Proto::Tcp, None, host_port, container_port)
}

fn alloc(
    specs: &[&str],
    in_use: &[(PortBinding, String)],
) -> Result<Vec<PortBinding>, PublishError> {
    let reqs: Vec<PublishRequest> = specs.iter().map(|s| req(s)).collect();
    allocate(&reqs, in_use)
}

fn held(b: PortBinding, holder: &str) -> (PortBinding, String) {
    (b, holder.to_string())
}

// --- Grammar ---

#[test]
fn host_port_to_container_port_defaults_to_tcp_on_every_address() {
    assert_eq!(
        req("8080:80"),
        PublishRequest {
            proto: Proto::Tcp,
            host_ip: None,
            host_ports: Some((8080, 8080)),
            container_ports: (80, 80),
        }
    );
    assert_eq!(alloc(&["8080:80"], &[]).unwrap(), vec![tcp(8080, 80)]);
}

#[test]
fn host_ip_and_protocol() {
    assert_eq!(
        req("127.0.0.1:8080:80/udp"),
        PublishRequest {
            proto: Proto::Udp,
            host_ip: Some(ip("127.0.0.1")),
            host_ports: Some((8080, 8080)),
            container_ports: (80, 80),
        }
    );
    assert_eq!(req("198.18.0.1:8080:80").host_ip, Some(ip("198.18.0.1")));
    assert_eq!(req("198.18.0.1:8080:80").proto, Proto::Tcp);
    assert_eq!(req("8080:80/tcp").proto, Proto::Tcp);
    // Docker lower-cases the protocol.
    assert_eq!(req("80/UDP").proto, Proto::Udp);
    assert_eq!(req("80/Tcp").proto, Proto::Tcp);
}

#[test]
fn unspecified_and_empty_host_ip_mean_every_address() {
    assert_eq!(req("0.0.0.0:8080:80"), req("8080:80"));
    assert_eq!(req(":8080:80"), req("8080:80"));
    // Docker's `:PORT` and `::PORT`: no host IP, automatic host port.
    assert_eq!(req(":80"), req("80"));
    assert_eq!(req("::80"), req("80"));
    assert_eq!(req("0.0.0.0::80"), req("80"));
}

#[test]
fn equal_ranges_pair_in_order() {
    let r = req("8000-8010:80-90");
    assert_eq!(r.host_ports, Some((8000, 8010)));
    assert_eq!(r.container_ports, (80, 90));
    let b = allocate(&[r], &[]).unwrap();
    assert_eq!(b.len(), 11);
    for (k, b) in b.iter().enumerate() {
        let k = u16::try_from(k).unwrap();
        assert_eq!(*b, tcp(8000 + k, 80 + k));
    }
}

#[test]
fn a_host_range_for_one_container_port_takes_its_first_free_port() {
    // Docker's behaviour: the range is where the one host port is picked.
    let r = req("8000-8010:80");
    assert_eq!(r.host_ports, Some((8000, 8010)));
    assert_eq!(r.container_ports, (80, 80));
    assert_eq!(allocate(&[r], &[]).unwrap(), vec![tcp(8000, 80)]);
    let in_use = [held(tcp(8000, 1), "a"), held(tcp(8001, 2), "b")];
    assert_eq!(allocate(&[r], &in_use).unwrap(), vec![tcp(8002, 80)]);
    // Two such requests take two ports.
    assert_eq!(
        alloc(&["8000-8010:80", "8000-8010:81"], &in_use).unwrap(),
        vec![tcp(8002, 80), tcp(8003, 81)]
    );
}

#[test]
fn no_host_port_means_automatic() {
    let r = req("80");
    assert_eq!(r.host_ports, None);
    assert_eq!(r.host_ip, None);
    assert_eq!(r.container_ports, (80, 80));
    assert_eq!(req("80/udp").proto, Proto::Udp);
    assert_eq!(req("80/udp").host_ports, None);
    assert_eq!(alloc(&["80"], &[]).unwrap(), vec![tcp(49153, 80)]);
    assert_eq!(
        alloc(&["80-82"], &[]).unwrap(),
        vec![tcp(49153, 80), tcp(49154, 81), tcp(49155, 82)]
    );
}

#[test]
fn empty_host_port_after_an_ip_is_automatic_on_that_ip() {
    let r = req("127.0.0.1::80");
    assert_eq!(r.host_ip, Some(ip("127.0.0.1")));
    assert_eq!(r.host_ports, None);
    assert_eq!(
        allocate(&[r], &[]).unwrap(),
        vec![bind(Proto::Tcp, Some("127.0.0.1"), 49153, 80)]
    );
}

#[test]
fn range_bounds() {
    assert_eq!(req("1-1024").container_ports, (1, 1024));
    assert_eq!(req("64512-65535:1-1024").host_ports, Some((64512, 65535)));
    assert_eq!(req("65535").container_ports, (65535, 65535));
    assert_eq!(req("1:1").host_ports, Some((1, 1)));
    assert_eq!(req("80-80").container_ports, (80, 80));
    // Leading zeros are digits, as Docker reads them.
    assert_eq!(req("080").container_ports, (80, 80));
}

// --- Errors ---

#[test]
fn bad_port_numbers_are_named() {
    assert_eq!(
        err("80:abc"),
        "invalid --publish \"80:abc\": container port \"abc\" is not a number 1-65535"
    );
    assert_eq!(
        err("abc:80"),
        "invalid --publish \"abc:80\": host port \"abc\" is not a number 1-65535"
    );
    assert_eq!(
        err("0"),
        "invalid --publish \"0\": container port \"0\" is not a number 1-65535"
    );
    assert_eq!(
        err("0:80"),
        "invalid --publish \"0:80\": host port \"0\" is not a number 1-65535"
    );
    assert_eq!(
        err("65536"),
        "invalid --publish \"65536\": container port \"65536\" is not a number 1-65535"
    );
    assert_eq!(
        err("8080:70000"),
        "invalid --publish \"8080:70000\": container port \"70000\" is not a number 1-65535"
    );
    for (spec, side, value) in [
        (
            "99999999999999999999",
            Side::Container,
            "99999999999999999999",
        ),
        ("+80", Side::Container, "+80"),
        ("-80", Side::Container, ""),
        (" 80", Side::Container, " 80"),
        ("80 ", Side::Container, "80 "),
        ("8080:", Side::Container, ""),
        ("/tcp", Side::Container, ""),
        ("8000-:80", Side::Host, ""),
        ("80-x", Side::Container, "x"),
        ("0-5", Side::Container, "0"),
        ("1-2-3", Side::Container, "2-3"),
        ("1.5", Side::Container, "1.5"),
    ] {
        assert_eq!(
            problem(spec),
            SpecError::Port {
                side,
                value: value.into()
            },
            "{spec:?}"
        );
    }
}

#[test]
fn reversed_and_oversized_ranges() {
    assert_eq!(
        err("90-80"),
        "invalid --publish \"90-80\": container port range 90-80 is reversed (90 > 80)"
    );
    assert_eq!(
        err("9000-8000:80"),
        "invalid --publish \"9000-8000:80\": host port range 9000-8000 is reversed (9000 > 8000)"
    );
    assert_eq!(
        err("1-1025"),
        "invalid --publish \"1-1025\": container port range 1-1025 has 1025 ports; at most 1024 per --publish"
    );
    assert_eq!(
        problem("1-65535:1-65535"),
        SpecError::RangeTooLarge {
            side: Side::Host,
            start: 1,
            end: 65535
        }
    );
}

#[test]
fn ranges_of_different_lengths_name_both_lengths() {
    assert_eq!(
        err("8000-8010:80-85"),
        "invalid --publish \"8000-8010:80-85\": host ports 8000-8010 (11 ports) and container \
         ports 80-85 (6 ports) differ in number; use ranges of the same length"
    );
    // A single host port for a container range: Docker refuses it too.
    assert_eq!(
        problem("8080:80-90"),
        SpecError::RangeLengths {
            host: (8080, 8080),
            container: (80, 90)
        }
    );
    assert!(err("8080:80-90").contains("host ports 8080 (1 ports)"));
}

#[test]
fn protocols_other_than_tcp_and_udp() {
    assert_eq!(
        err("80/sctp"),
        "invalid --publish \"80/sctp\": unknown protocol \"sctp\": use tcp or udp"
    );
    assert_eq!(problem("80/"), SpecError::Protocol(String::new()));
    assert_eq!(problem("80/tcp/udp"), SpecError::Protocol("tcp/udp".into()));
    assert_eq!(problem("8080:80/icmp"), SpecError::Protocol("icmp".into()));
}

#[test]
fn malformed_host_ips() {
    assert_eq!(
        err("300.1.1.1:8080:80"),
        "invalid --publish \"300.1.1.1:8080:80\": host IP \"300.1.1.1\" is not an IPv4 address"
    );
    assert_eq!(
        problem("localhost:8080:80"),
        SpecError::HostIp("localhost".into())
    );
    assert_eq!(problem("1.2.3:8080:80"), SpecError::HostIp("1.2.3".into()));
    assert_eq!(
        problem("[1.2.3.4]:8080:80"),
        SpecError::HostIp("[1.2.3.4]".into())
    );
    assert_eq!(
        problem("[nope:8080:80"),
        SpecError::HostIp("[nope:8080:80".into())
    );
}

#[test]
fn ipv6_host_ips_are_not_supported_yet() {
    assert_eq!(
        err("[::1]:8080:80"),
        "invalid --publish \"[::1]:8080:80\": host IP ::1 is IPv6: IPv6 host addresses are not supported yet"
    );
    assert_eq!(problem("[::]::80/udp"), SpecError::Ipv6("::".into()));
    assert_eq!(problem("::1:8080:80"), SpecError::Ipv6("::1".into()));
    assert_eq!(
        problem("fe80::1:8080:80"),
        SpecError::Ipv6("fe80::1".into())
    );
}

#[test]
fn too_many_colons_and_empty() {
    assert_eq!(
        err("1:2:3:4"),
        "invalid --publish \"1:2:3:4\": too many colons (3); expected [HOSTIP:][HOSTPORT:]PORT[/tcp|udp]"
    );
    assert_eq!(problem(":::80"), SpecError::TooManyColons(3));
    assert_eq!(
        err(""),
        "invalid --publish \"\": empty spec; expected [HOSTIP:][HOSTPORT:]PORT[/tcp|udp]"
    );
}

#[test]
fn an_address_in_the_host_port_place_gets_a_hint() {
    assert_eq!(
        err("127.0.0.1:80"),
        "invalid --publish \"127.0.0.1:80\": host port \"127.0.0.1\" is an address, not a number \
         1-65535 (for an automatic host port on 127.0.0.1, write 127.0.0.1::PORT)"
    );
}

// --- Printing and storing ---

#[test]
fn bindings_print_as_docker_port_does() {
    assert_eq!(tcp(8080, 80).to_string(), "0.0.0.0:8080->80/tcp");
    assert_eq!(
        bind(Proto::Udp, Some("127.0.0.1"), 5353, 53).to_string(),
        "127.0.0.1:5353->53/udp"
    );
}

#[test]
fn bindings_parse_back_from_what_they_print() {
    let b = bind(Proto::Udp, Some("127.0.0.1"), 5353, 53);
    assert_eq!("127.0.0.1:5353->53/udp".parse::<PortBinding>(), Ok(b));
    assert_eq!(
        "0.0.0.0:8080->80/tcp".parse::<PortBinding>(),
        Ok(tcp(8080, 80))
    );
    assert_eq!("8080->80".parse::<PortBinding>(), Ok(tcp(8080, 80)));
    for text in ["8080:80", "8000-8001->80-81", "->80", "1->2->3", ""] {
        assert_eq!(
            text.parse::<PortBinding>(),
            Err(PublishError::Binding {
                text: text.into(),
                problem: SpecError::NotABinding
            }),
            "{text:?}"
        );
    }
    assert_eq!(
        "x->80".parse::<PortBinding>().unwrap_err().to_string(),
        "invalid port binding \"x->80\": host port \"x\" is not a number 1-65535"
    );
}

#[test]
fn requests_print_as_full_specs() {
    for (spec, full) in [
        ("8080:80", "8080:80/tcp"),
        ("0.0.0.0:8080:80/UDP", "8080:80/udp"),
        ("127.0.0.1:8080:80", "127.0.0.1:8080:80/tcp"),
        ("127.0.0.1::80", "127.0.0.1::80/tcp"),
        ("80", "80/tcp"),
        ("::80-82/udp", "80-82/udp"),
        ("8000-8010:80-90", "8000-8010:80-90/tcp"),
        ("8000-8010:80", "8000-8010:80/tcp"),
    ] {
        assert_eq!(req(spec).to_string(), full);
        assert_eq!(req(full), req(spec));
    }
}

#[test]
fn serde_forms_for_the_state_file() {
    let b = tcp(8080, 80);
    let json = serde_json::to_string(&b).unwrap();
    assert_eq!(
        json,
        r#"{"proto":"tcp","host_port":8080,"container_port":80}"#
    );
    assert_eq!(serde_json::from_str::<PortBinding>(&json).unwrap(), b);
    let b = bind(Proto::Udp, Some("127.0.0.1"), 5353, 53);
    let json = serde_json::to_string(&b).unwrap();
    assert_eq!(
        json,
        r#"{"proto":"udp","host_ip":"127.0.0.1","host_port":5353,"container_port":53}"#
    );
    assert_eq!(serde_json::from_str::<PortBinding>(&json).unwrap(), b);
    let r = req("127.0.0.1:8000-8010:80-90/udp");
    let back: PublishRequest = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);
    assert_eq!(
        serde_json::to_string(&req("80")).unwrap(),
        r#"{"proto":"tcp","container_ports":[80,80]}"#
    );
    assert!(
        serde_json::from_str::<PortBinding>(r#"{"proto":"sctp","host_port":1,"container_port":1}"#)
            .is_err()
    );
}

#[test]
fn protocol_names_and_numbers() {
    assert_eq!(Proto::Tcp.name(), "tcp");
    assert_eq!(Proto::Udp.to_string(), "udp");
    assert_eq!(Proto::Tcp.number(), 6);
    assert_eq!(Proto::Udp.number(), 17);
}

// --- Allocation ---

#[test]
fn an_explicit_port_in_use_is_refused_naming_spec_port_and_holder() {
    let in_use = [held(tcp(8080, 80), "endpoint web on network front")];
    assert_eq!(
        alloc(&["8080:81"], &in_use).unwrap_err().to_string(),
        "cannot publish \"8080:81/tcp\": host port 8080/tcp is already in use by endpoint web on \
         network front (0.0.0.0:8080->80/tcp)"
    );
    assert_eq!(
        alloc(&["8079-8081:79-81"], &in_use),
        Err(PublishError::InUse {
            spec: "8079-8081:79-81/tcp".into(),
            held: tcp(8080, 80),
            holder: "endpoint web on network front".into(),
        })
    );
    // Other protocol, other port: free.
    assert_eq!(
        alloc(&["8080:80/udp", "8081:80"], &in_use).unwrap(),
        vec![bind(Proto::Udp, None, 8080, 80), tcp(8081, 80)]
    );
}

#[test]
fn host_ip_overlap_rules() {
    let lo = Some("127.0.0.1");
    let other = Some("198.18.0.1");
    // (held, asked, clash?)
    for (held_ip, asked, clash) in [
        (None, "8080:80", true),
        (None, "127.0.0.1:8080:80", true),
        (lo, "8080:80", true),
        (lo, "0.0.0.0:8080:80", true),
        (lo, "127.0.0.1:8080:80", true),
        (lo, "198.18.0.1:8080:80", false),
        (other, "127.0.0.1:8080:80", false),
        (Some("0.0.0.0"), "127.0.0.1:8080:80", true),
    ] {
        let in_use = [held(bind(Proto::Tcp, held_ip, 8080, 1), "x")];
        assert_eq!(
            matches!(alloc(&[asked], &in_use), Err(PublishError::InUse { .. })),
            clash,
            "held on {held_ip:?}, asked {asked}"
        );
    }
    let a = bind(Proto::Tcp, lo, 8080, 1);
    assert!(a.clashes_with(&tcp(8080, 2)));
    assert!(a.clashes_with(&bind(Proto::Tcp, Some("0.0.0.0"), 8080, 2)));
    assert!(!a.clashes_with(&bind(Proto::Tcp, other, 8080, 2)));
    assert!(!a.clashes_with(&bind(Proto::Udp, lo, 8080, 2)));
    assert!(!a.clashes_with(&bind(Proto::Tcp, lo, 8081, 1)));
}

#[test]
fn requests_of_one_call_clash_with_each_other() {
    assert_eq!(
        alloc(&["8080:80", "8080:81"], &[]).unwrap_err().to_string(),
        "cannot publish \"8080:81/tcp\": host port 8080/tcp is also asked for by \"8080:80/tcp\""
    );
    assert!(matches!(
        alloc(&["8080:80", "8080:80"], &[]),
        Err(PublishError::Clash { .. })
    ));
    assert!(matches!(
        alloc(&["127.0.0.1:8085:80", "8080-8090:80-90"], &[]),
        Err(PublishError::Clash { .. })
    ));
    assert_eq!(
        alloc(
            &["127.0.0.1:8080:80", "198.18.0.1:8080:80", "8080:80/udp"],
            &[]
        )
        .unwrap(),
        vec![
            bind(Proto::Tcp, Some("127.0.0.1"), 8080, 80),
            bind(Proto::Tcp, Some("198.18.0.1"), 8080, 80),
            bind(Proto::Udp, None, 8080, 80),
        ]
    );
}

#[test]
fn automatic_ports_skip_used_ones_per_protocol_and_address() {
    let in_use = [
        held(tcp(49153, 1), "a"),
        held(tcp(49154, 2), "b"),
        held(bind(Proto::Udp, None, 49155, 3), "c"),
        held(bind(Proto::Tcp, Some("198.18.0.1"), 49155, 4), "d"),
    ];
    assert_eq!(alloc(&["80"], &in_use).unwrap(), vec![tcp(49156, 80)]);
    assert_eq!(
        alloc(&["80/udp"], &in_use).unwrap(),
        vec![bind(Proto::Udp, None, 49153, 80)]
    );
    // On another specific address, 49155 (held on 198.18.0.1 only) is free.
    assert_eq!(
        alloc(&["127.0.0.1::80"], &in_use).unwrap(),
        vec![bind(Proto::Tcp, Some("127.0.0.1"), 49155, 80)]
    );
    // A range of automatic ports takes the lowest free ones, not necessarily adjacent.
    let in_use = [held(tcp(49154, 1), "a")];
    assert_eq!(
        alloc(&["80-82"], &in_use).unwrap(),
        vec![tcp(49153, 80), tcp(49155, 81), tcp(49156, 82)]
    );
    // Requests of one call do not share automatic ports.
    assert_eq!(
        alloc(&["80", "81/udp", "82"], &in_use).unwrap(),
        vec![
            tcp(49153, 80),
            bind(Proto::Udp, None, 49153, 81),
            tcp(49155, 82)
        ]
    );
}

#[test]
fn explicit_ports_are_placed_before_automatic_ones() {
    // The automatic port comes first in the call, yet does not take the port named later.
    assert_eq!(
        alloc(&["80", "49153:81", "8000-8001:82", "8000:83"], &[]).unwrap(),
        vec![tcp(49154, 80), tcp(49153, 81), tcp(8001, 82), tcp(8000, 83)]
    );
}

fn every_auto_port(proto: Proto, host_ip: Option<&str>) -> Vec<(PortBinding, String)> {
    (AUTO_PORTS.0..=AUTO_PORTS.1)
        .map(|p| held(bind(proto, host_ip, p, 80), "endpoint x on network y"))
        .collect()
}

#[test]
fn exhausting_the_automatic_range_is_an_error() {
    let in_use = every_auto_port(Proto::Tcp, None);
    assert_eq!(
        alloc(&["80"], &in_use).unwrap_err().to_string(),
        "cannot publish \"80/tcp\": no free tcp host port left in 49153-65535 for container port 80"
    );
    assert_eq!(
        alloc(&["127.0.0.1::80"], &in_use),
        Err(PublishError::Exhausted {
            spec: "127.0.0.1::80/tcp".into(),
            proto: Proto::Tcp,
            host_ip: Some(ip("127.0.0.1")),
            range: AUTO_PORTS,
            container_port: 80,
        })
    );
    assert!(
        alloc(&["127.0.0.1::80"], &in_use)
            .unwrap_err()
            .to_string()
            .ends_with("in 49153-65535 on 127.0.0.1 for container port 80")
    );
    // UDP and explicit ports are still free.
    assert_eq!(
        alloc(&["80/udp", "8080:80"], &in_use).unwrap(),
        vec![bind(Proto::Udp, None, 49153, 80), tcp(8080, 80)]
    );
    // Taken on one address only: another address still has them all.
    let in_use = every_auto_port(Proto::Tcp, Some("198.18.0.1"));
    assert_eq!(
        alloc(&["127.0.0.1::80"], &in_use).unwrap(),
        vec![bind(Proto::Tcp, Some("127.0.0.1"), 49153, 80)]
    );
    assert!(alloc(&["80"], &in_use).is_err());
}

#[test]
fn the_last_automatic_ports_are_handed_out_then_refused() {
    // Everything but 65534 and 65535 held: two ports fit, the third container port fails.
    let in_use: Vec<_> = every_auto_port(Proto::Tcp, None)
        .into_iter()
        .filter(|(b, _)| b.host_port < 65534)
        .collect();
    assert_eq!(
        alloc(&["80-81"], &in_use).unwrap(),
        vec![tcp(65534, 80), tcp(65535, 81)]
    );
    assert_eq!(
        alloc(&["80-82"], &in_use),
        Err(PublishError::Exhausted {
            spec: "80-82/tcp".into(),
            proto: Proto::Tcp,
            host_ip: None,
            range: AUTO_PORTS,
            container_port: 82,
        })
    );
}

#[test]
fn an_exhausted_host_range_is_an_error() {
    let in_use = [held(tcp(8000, 1), "a"), held(tcp(8001, 2), "b")];
    assert_eq!(
        alloc(&["8000-8001:80"], &in_use).unwrap_err().to_string(),
        "cannot publish \"8000-8001:80/tcp\": no free tcp host port left in 8000-8001 for container port 80"
    );
}

#[test]
fn allocation_is_all_or_nothing() {
    let in_use = [held(tcp(9090, 1), "endpoint db on network back")];
    let asked = ["8080:80", "80", "9090:90"];
    assert!(matches!(
        alloc(&asked, &in_use),
        Err(PublishError::InUse { .. })
    ));
    // Nothing was kept from the failed call: the same ports are handed out again.
    assert_eq!(
        alloc(&asked[..2], &in_use).unwrap(),
        vec![tcp(8080, 80), tcp(49153, 80)]
    );
    assert_eq!(allocate(&[], &in_use).unwrap(), vec![]);
}

#[test]
fn allocate_checks_requests_not_made_by_parse() {
    let bad = [
        (
            PublishRequest {
                proto: Proto::Tcp,
                host_ip: None,
                host_ports: Some((0, 0)),
                container_ports: (80, 80),
            },
            SpecError::Port {
                side: Side::Host,
                value: "0".into(),
            },
        ),
        (
            PublishRequest {
                proto: Proto::Tcp,
                host_ip: None,
                host_ports: None,
                container_ports: (90, 80),
            },
            SpecError::Reversed {
                side: Side::Container,
                start: 90,
                end: 80,
            },
        ),
        (
            PublishRequest {
                proto: Proto::Udp,
                host_ip: None,
                host_ports: Some((1, 2)),
                container_ports: (1, 3),
            },
            SpecError::RangeLengths {
                host: (1, 2),
                container: (1, 3),
            },
        ),
        (
            PublishRequest {
                proto: Proto::Udp,
                host_ip: None,
                host_ports: None,
                container_ports: (1, 2000),
            },
            SpecError::RangeTooLarge {
                side: Side::Container,
                start: 1,
                end: 2000,
            },
        ),
    ];
    for (r, problem) in bad {
        assert_eq!(
            allocate(&[req("8080:80"), r], &[]),
            Err(PublishError::Invalid {
                spec: r.to_string(),
                problem
            })
        );
    }
    // A stored 0.0.0.0 is every address.
    let r = PublishRequest {
        host_ip: Some(Ipv4Addr::UNSPECIFIED),
        ..req("8080:80")
    };
    assert_eq!(allocate(&[r], &[]).unwrap(), vec![tcp(8080, 80)]);
}

// --- Properties ---

fn any_proto() -> impl Strategy<Value = Proto> {
    prop_oneof![Just(Proto::Tcp), Just(Proto::Udp)]
}

/// A host IP as parse gives it: `0.0.0.0` is `None`.
fn any_host_ip() -> impl Strategy<Value = Option<Ipv4Addr>> {
    proptest::option::of(any::<[u8; 4]>().prop_map(Ipv4Addr::from)).prop_map(any_to_none)
}

/// A range of `1..=MAX_RANGE` ports.
fn any_range() -> impl Strategy<Value = (u16, u16)> {
    (1u16.., 1u16..=1024).prop_map(|(start, len)| (start, start.saturating_add(len - 1)))
}

/// Every request parse can give.
fn any_request() -> impl Strategy<Value = PublishRequest> {
    (
        any_proto(),
        any_host_ip(),
        any_range(),
        0u8..3,
        any::<u16>(),
    )
        .prop_map(|(proto, host_ip, container_ports, mode, seed)| {
            let len = u16::try_from(range_len(container_ports)).unwrap_or(1);
            let host_ports = match mode {
                0 => None,
                1 => {
                    let start = 1 + seed % (65536 - u32::from(len)) as u16;
                    Some((start, start + (len - 1)))
                }
                _ => Some((seed.max(1), seed.max(1).saturating_add(len - 1))),
            };
            let container_ports = if mode == 2 {
                (container_ports.0, container_ports.0)
            } else {
                container_ports
            };
            PublishRequest {
                proto,
                host_ip,
                host_ports,
                container_ports,
            }
        })
}

proptest! {
    #[test]
    fn parse_never_panics(s in "\\PC{0,40}") {
        let _ = parse(&s);
        let _ = s.parse::<PortBinding>();
    }

    #[test]
    fn parse_never_panics_on_near_specs(s in "[0-9a-fA-Fptcu.:/\\[\\]>\\- ]{0,30}") {
        if let Ok(r) = parse(&s) {
            prop_assert!(r.check().is_ok());
        }
        let _ = s.parse::<PortBinding>();
    }

    #[test]
    fn an_explicit_binding_parses_prints_and_parses_back(
        proto in any_proto(), host_ip in any_host_ip(), host_port in 1u16.., container_port in 1u16..
    ) {
        let b = PortBinding { proto, host_ip, host_port, container_port };
        let spec = match host_ip {
            Some(ip) => format!("{ip}:{host_port}:{container_port}/{proto}"),
            None => format!("{host_port}:{container_port}/{proto}"),
        };
        let r = parse(&spec).unwrap();
        prop_assert_eq!(allocate(&[r], &[]), Ok(vec![b]));
        prop_assert_eq!(b.to_string().parse::<PortBinding>(), Ok(b));
    }

    #[test]
    fn a_request_prints_as_a_spec_that_parses_back(r in any_request()) {
        prop_assert_eq!(r.check(), Ok(()));
        prop_assert_eq!(parse(&r.to_string()), Ok(r));
    }

    #[test]
    fn allocated_bindings_never_clash(
        in_use in proptest::collection::vec(
            (any_proto(), prop_oneof![Just(None), Just(Some(Ipv4Addr::new(127, 0, 0, 1)))],
             49153u16..49200),
            0..40),
        asked in proptest::collection::vec(
            prop_oneof![Just("80"), Just("81-83/udp"), Just("127.0.0.1::84"), Just("49160:85"),
                        Just("49170-49172:86"), Just("127.0.0.1:49180-49181:87-88")],
            0..6),
    ) {
        let in_use: Vec<_> = in_use.into_iter()
            .map(|(proto, host_ip, host_port)| held(PortBinding { proto, host_ip, host_port, container_port: 1 }, "x"))
            .collect();
        let reqs: Vec<_> = asked.iter().map(|s| req(s)).collect();
        if let Ok(made) = allocate(&reqs, &in_use) {
            let wanted: usize = reqs.iter().map(|r| range_len(r.container_ports) as usize).sum();
            prop_assert_eq!(made.len(), wanted);
            for (i, a) in made.iter().enumerate() {
                prop_assert!(in_use.iter().all(|(b, _)| !a.clashes_with(b)), "{} clashes", a);
                prop_assert!(made[i + 1..].iter().all(|b| !a.clashes_with(b)), "{} twice", a);
            }
        }
    }
}
