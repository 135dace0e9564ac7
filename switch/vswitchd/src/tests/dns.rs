//! Unit tests of `dns.rs`.

use super::*;
use hickory_proto::op::Query;
use hickory_proto::rr::Name;

fn query(name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 4242;
    m.metadata.recursion_desired = true;
    let mut q = Query::new();
    q.set_name(Name::from_ascii(name).unwrap())
        .set_query_type(t);
    m.add_query(q);
    m.to_vec().unwrap()
}

fn resolver() -> Resolver {
    let names = Arc::new(RwLock::new(NameTable::default()));
    names
        .write()
        .unwrap()
        .add("n1", "web", Ipv4Addr::new(10, 1, 0, 2));
    names
        .write()
        .unwrap()
        .add("n1", "www", Ipv4Addr::new(10, 1, 0, 2));
    names
        .write()
        .unwrap()
        .add("n2", "db", Ipv4Addr::new(10, 2, 0, 2));
    Resolver::new(names, None, Arc::new(OnceLock::new())).unwrap()
}

fn ask(r: &mut Resolver, net: &str, name: &str, t: RecordType) -> Message {
    let client: SocketAddr = "10.1.0.3:5353".parse().unwrap();
    let bytes = r
        .request(net, client, ReplyTo::Udp(client), &query(name, t))
        .unwrap();
    Message::from_vec(&bytes).unwrap()
}

#[test]
fn names_resolve_within_their_network_only() {
    let mut r = resolver();
    let m = ask(&mut r, "n1", "WEB.", RecordType::A);
    assert_eq!(m.metadata.id, 4242);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].data, RData::A(A(Ipv4Addr::new(10, 1, 0, 2))));
    assert_eq!(ask(&mut r, "n1", "www", RecordType::A).answers.len(), 1);
    let m = ask(&mut r, "n1", "db", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    // a known name with no AAAA: NOERROR, empty
    let m = ask(&mut r, "n1", "web", RecordType::AAAA);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
}

#[test]
fn garbage_gets_formerr_or_nothing() {
    let mut r = resolver();
    let client: SocketAddr = "10.1.0.3:5353".parse().unwrap();
    assert!(
        r.request("n1", client, ReplyTo::Udp(client), &[1, 2])
            .is_none()
    );
    let junk = [0u8, 7, 1, 0, 0, 9, 0, 0, 0, 0, 0, 0, 3];
    let reply = r
        .request("n1", client, ReplyTo::Udp(client), &junk)
        .unwrap();
    let m = Message::from_vec(&reply).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(m.metadata.id, 7);
}

#[test]
fn table_removal() {
    let mut t = NameTable::default();
    t.add("n", "a", Ipv4Addr::new(1, 1, 1, 1));
    t.add("n", "b", Ipv4Addr::new(1, 1, 1, 1));
    t.remove_addr("n", Ipv4Addr::new(1, 1, 1, 1));
    assert!(t.lookup("n", "a").is_none());
}

#[test]
fn names_also_resolve_as_name_dot_network_and_back() {
    let mut r = resolver();
    r.names
        .write()
        .unwrap()
        .add_reverse("n1", Ipv4Addr::new(10, 1, 0, 2), "web");
    let m = ask(&mut r, "n1", "web.n1.", RecordType::A);
    assert_eq!(m.answers.len(), 1, "NAME.NETWORK as Docker answers it");
    assert_eq!(
        ask(&mut r, "n1", "web.n2", RecordType::A)
            .metadata
            .response_code,
        ResponseCode::NXDomain,
        "another network's suffix is not this one"
    );
    let m = ask(&mut r, "n1", "2.0.1.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        m.answers[0].data,
        RData::PTR(PTR(Name::from_ascii("web.n1.").unwrap()))
    );
    let m = ask(&mut r, "n2", "2.0.1.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NXDomain,
        "another network's address is unknown here"
    );
}

#[test]
fn several_addresses_come_in_turns() {
    let mut r = resolver();
    let backends = [
        Ipv4Addr::new(10, 1, 0, 5),
        Ipv4Addr::new(10, 1, 0, 6),
        Ipv4Addr::new(10, 1, 0, 7),
    ];
    r.names.write().unwrap().set("n1", "tasks.api", &backends);
    let mut firsts = Vec::new();
    for _ in 0..3 {
        let m = ask(&mut r, "n1", "tasks.api", RecordType::A);
        assert_eq!(m.answers.len(), 3);
        firsts.push(m.answers[0].data.clone());
    }
    firsts.dedup();
    assert_eq!(firsts.len(), 3, "each answer starts with another address");
    r.names.write().unwrap().set("n1", "tasks.api", &[]);
    assert_eq!(
        ask(&mut r, "n1", "tasks.api", RecordType::A)
            .metadata
            .response_code,
        ResponseCode::NXDomain
    );
}
