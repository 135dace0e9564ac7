//! The embedded DNS server's request handling (xvsd's `Resolver`, what every gateway answers
//! on port 53) over a name table holding endpoints, aliases, a service with several task
//! addresses and reverse names, in two networks.
//!
//! Checked for every input: no panic; a message with a readable header gets an answer and a
//! shorter one none; every answer parses, is a response, carries the query's ID, echoes its
//! question, and holds only addresses the name table has for that name in that network (never
//! the other network's); a name of the table asked for A is answered with all its addresses;
//! a name the table lacks (no upstream) is NXDOMAIN or an empty answer.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock, RwLock};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use libfuzzer_sys::fuzz_target;
use xvs_switch::gateway::{LocalService, ReplyTo};
use xvs_vswitchd::dns::{NameTable, Resolver};

const NETS: [&str; 2] = ["front", "back"];

fn table() -> NameTable {
    let mut t = NameTable::default();
    t.add("front", "web", Ipv4Addr::new(10, 0, 0, 2));
    t.add("front", "www", Ipv4Addr::new(10, 0, 0, 2));
    t.add_reverse("front", Ipv4Addr::new(10, 0, 0, 2), "web.front");
    t.add("front", "db", Ipv4Addr::new(10, 0, 0, 3));
    t.add_reverse("front", Ipv4Addr::new(10, 0, 0, 3), "db.front");
    t.set(
        "front",
        "tasks.api",
        &[
            Ipv4Addr::new(10, 0, 0, 4),
            Ipv4Addr::new(10, 0, 0, 5),
            Ipv4Addr::new(10, 0, 0, 6),
        ],
    );
    t.add("front", "api", Ipv4Addr::new(10, 0, 0, 100));
    t.add("back", "db", Ipv4Addr::new(10, 1, 0, 3));
    t
}

thread_local! {
    static RESOLVER: std::cell::RefCell<(Resolver, Arc<RwLock<NameTable>>)> = {
        let names = Arc::new(RwLock::new(table()));
        let r = Resolver::new(names.clone(), None, Arc::new(OnceLock::new())).expect("resolver");
        std::cell::RefCell::new((r, names))
    };
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, msg)) = data.split_first() else {
        return;
    };
    let network = NETS[usize::from(sel & 1)];
    let client: SocketAddr = ([10, 0, 0, 9], 5353).into();
    let reply_to = if sel & 2 == 0 {
        ReplyTo::Udp(client)
    } else {
        ReplyTo::Tcp(usize::from(sel >> 2), 1)
    };
    RESOLVER.with(|cell| {
        let (resolver, names) = &mut *cell.borrow_mut();
        let answer = resolver.request(network, client, reply_to, msg);
        let Some(answer) = answer else {
            assert!(msg.len() < 12, "a message with a header went unanswered");
            return;
        };
        let reply = Message::from_vec(&answer).expect("the answer parses");
        assert_eq!(reply.metadata.message_type, MessageType::Response);
        assert_eq!(reply.metadata.id, u16::from_be_bytes([msg[0], msg[1]]));
        let Ok(query) = Message::from_vec(msg) else {
            assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
            return;
        };
        assert_eq!(reply.queries, query.queries, "the question is echoed");
        let Some(q) = query.queries.first() else {
            return;
        };
        let names = names.read().expect("name table");
        let asked = q.name().to_ascii();
        let known = names.lookup(network, &asked).map(<[Ipv4Addr]>::to_vec);
        for rec in &reply.answers {
            if let RData::A(a) = &rec.data {
                let known = known.as_deref().unwrap_or_else(|| {
                    panic!("{asked} answered with {} but is not in {network}", a.0)
                });
                assert!(
                    known.contains(&a.0),
                    "{asked} answered {} not in {known:?}",
                    a.0
                );
            }
        }
        if query.metadata.op_code == hickory_proto::op::OpCode::Query
            && query.metadata.message_type == MessageType::Query
        {
            match (&known, q.query_type()) {
                (Some(addrs), RecordType::A) => {
                    let got = reply
                        .answers
                        .iter()
                        .filter(|r| matches!(r.data, RData::A(_)))
                        .count();
                    assert_eq!(got, addrs.len(), "{asked}: every address answered");
                }
                (None, _) if !asked.to_ascii_lowercase().contains("in-addr.arpa") => {
                    assert!(
                        reply.answers.is_empty(),
                        "{asked} is unknown in {network} but was answered"
                    );
                }
                _ => {}
            }
        }
    });
});
