//! Bad input never changes the daemon's state: unknown bridges and ports, missing interfaces,
//! a port attached twice, malformed or oversized JSON, a silent client. Each gets a clear
//! one-line error (or, for the silent client, a timeout) and `show` is unchanged after.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use xvs_tests::{Link, Netns, Xvsd, unique_prefix, veth};

fn raw_request(x: &Xvsd, bytes: &[u8]) -> serde_json::Value {
    let mut s = UnixStream::connect(x.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(bytes).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply {line:?}: {e}"))
}

/// `show` without what traffic moves (counters, learned MACs: IPv6 chatter goes on).
fn configuration(mut show: serde_json::Value) -> serde_json::Value {
    for b in show["bridges"].as_array_mut().unwrap() {
        b["macs"] = serde_json::Value::Null;
        for port in b["ports"].as_array_mut().unwrap() {
            port["counters"] = serde_json::Value::Null;
        }
    }
    show
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    let p = unique_prefix("bi");
    let mut x = Xvsd::start(&[]);
    x.must(&["add-br", "br0"]);
    x.must(&["add-br", "br1"]);
    let ns = Netns::new(&format!("{p}n"));
    let host = format!("{p}a");
    let _l: Link = veth(&host, &ns, "eth0", "10.234.0.1/24");
    x.must(&["add-port", "br0", &host]);
    let before = configuration(x.json(&["show"]));
    let same = |x: &Xvsd| {
        assert_eq!(
            configuration(x.json(&["show"])),
            before,
            "state changed by a refused request"
        );
    };

    let e = x.refused(&["add-port", "nobr", &host]);
    assert!(e.contains("nobr"), "{e}");
    let e = x.refused(&["del-port", "br0", "noport"]);
    assert!(e.contains("noport"), "{e}");
    let e = x.refused(&["del-br", "nobr"]);
    assert!(e.contains("nobr"), "{e}");
    let e = x.refused(&["fdb/show", "nobr"]);
    assert!(e.contains("nobr"), "{e}");
    let e = x.refused(&["add-port", "br1", &format!("{p}missing")]);
    assert!(e.contains("missing"), "{e}");
    let e = x.refused(&["add-port", "br1", &host]);
    assert!(
        e.contains(&host) && e.contains("br0"),
        "port attached twice: {e}"
    );
    let e = x.refused(&["add-br", "br0"]);
    assert!(e.contains("br0"), "{e}");
    let e = x.refused(&["trace", "br0", "in_port=nope,dl_dst=zz"]);
    assert!(!e.is_empty());
    let e = x.refused_with(2, &["add-port", "br0", "x", "--vlan", "5000"]);
    assert!(e.contains("5000"), "{e}");
    same(&x);

    // Malformed JSON, unknown commands and fields, oversized lines: error replies.
    for bad in [
        &b"{not json\n"[..],
        b"{\"cmd\":\"launch-missiles\"}\n",
        b"{\"cmd\":\"add-br\",\"bridge\":\"b9\",\"extra\":1}\n",
        b"[1,2,3]\n",
    ] {
        let r = raw_request(&x, bad);
        assert_eq!(r["ok"], false, "{r}");
        assert!(!r["error"].as_str().unwrap().is_empty());
    }
    let mut big = vec![b' '; 70 * 1024];
    big.extend_from_slice(b"{\"cmd\":\"show\"}\n");
    let r = raw_request(&x, &big);
    assert_eq!(r["ok"], false, "{r}");
    same(&x);

    // A client that connects and says nothing is closed after the idle timeout, and others
    // are served meanwhile.
    let start = Instant::now();
    let mut silent = UnixStream::connect(x.socket()).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    x.must(&["show"]);
    let mut buf = Vec::new();
    let _ = silent.read_to_end(&mut buf);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(19),
        "silent client closed after {waited:?}"
    );
    same(&x);
    assert!(x.alive(), "xvsd died");
}
