//! The control socket under abuse (issue 14, item 5): 10,000 malformed, oversized, half-sent,
//! refused and concurrent requests from 8 clients at once. xvsd must not crash, every client
//! must be answered (or, for one that goes silent, time out), and the state file must be
//! byte-identical after.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use xvs_tests::{Netns, Xvsd, unique_prefix};

const CLIENTS: usize = 8;
const PER_CLIENT: usize = 1250;

/// What one request was, and whether it got an answer line.
#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    answered: u64,
    closed: u64,
    busy: u64,
}

/// Request number `i`, as bytes (some without a newline: half-sent, closed after).
fn request(i: usize) -> Vec<u8> {
    match i % 10 {
        0 => b"{not json\n".to_vec(),
        1 => {
            let mut v = b"{\"cmd\":\"network-create\",\"network\":\"".to_vec();
            v.extend(std::iter::repeat_n(b'x', 70 * 1024));
            v
        }
        2 => b"{\"cmd\":\"network-create\",\"network\":".to_vec(),
        3 => b"{\"cmd\":\"launch-missiles\"}\n".to_vec(),
        4 => b"{\"cmd\":\"network-connect\",\"network\":\"nope\",\"sandbox\":\"x\"}\n".to_vec(),
        5 => b"{\"cmd\":\"network-create\",\"network\":\"n2\",\"subnet\":\"10.300.0.0/24\"}\n"
            .to_vec(),
        6 => b"{\"cmd\":\"show\"}\n".to_vec(),
        7 => b"{\"cmd\":\"network-ls\"}\n".to_vec(),
        8 => vec![0xff, 0xfe, 0x00, b'{', 0x80, b'\n'],
        _ => b"{\"cmd\":\"del-br\",\"bridge\":\"nobr\"}\n{\"cmd\":\"ping\"}\n".to_vec(),
    }
}

fn one(socket: &PathBuf, i: usize) -> Tally {
    let mut t = Tally::default();
    let Ok(mut s) = UnixStream::connect(socket) else {
        t.closed += 1;
        return t;
    };
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let bytes = request(i);
    let _ = s.write_all(&bytes);
    if bytes.last() != Some(&b'\n') {
        // Half-sent: no more is coming.
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut line = String::new();
    match BufReader::new(&s).read_line(&mut line) {
        Ok(n) if n > 0 => {
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply {line:?}: {e}"));
            if v["error"].as_str().is_some_and(|e| e.contains("busy")) {
                t.busy += 1;
            } else {
                t.answered += 1;
            }
        }
        _ => t.closed += 1,
    }
    t
}

#[test]
fn ten_thousand_bad_requests_from_eight_clients_crash_nothing_and_change_nothing() {
    let p = unique_prefix("abuse");
    let mut x = Xvsd::start(&[]);
    x.must(&["add-br", "br0"]);
    x.must(&["network", "create", "n1", "--subnet", "10.184.0.0/24"]);
    let ns = Netns::new(&format!("{p}a"));
    x.must(&["network", "connect", "n1", &ns.name, "--name", "a"]);
    let state = x.dir.join("state").join("state.json");
    let before = std::fs::read(&state).unwrap();

    // Silent clients holding connections open meanwhile (they time out on their own).
    let silent: Vec<UnixStream> = (0..32)
        .map(|_| UnixStream::connect(x.socket()).unwrap())
        .collect();
    let t0 = Instant::now();
    let socket = x.socket();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut t = Tally::default();
                for i in 0..PER_CLIENT {
                    let r = one(&socket, c * PER_CLIENT + i);
                    t.answered += r.answered;
                    t.closed += r.closed;
                    t.busy += r.busy;
                }
                t
            })
        })
        .collect();
    let mut total = Tally::default();
    for w in workers {
        let t = w.join().unwrap();
        total.answered += t.answered;
        total.closed += t.closed;
        total.busy += t.busy;
    }
    let took = t0.elapsed();
    println!(
        "{} requests from {CLIENTS} clients in {took:?}: {} answered, {} busy, {} closed without an answer",
        CLIENTS * PER_CLIENT,
        total.answered,
        total.busy,
        total.closed
    );
    assert_eq!(
        total.answered + total.busy,
        (CLIENTS * PER_CLIENT) as u64,
        "every client answered: {total:?}"
    );
    assert!(x.alive(), "xvsd died:\n{}", x.log());
    x.must(&["ping"]);
    drop(silent);
    assert_eq!(
        std::fs::read(&state).unwrap(),
        before,
        "the state file changed"
    );
    let nets = x.json(&["network", "ls"]);
    assert_eq!(nets.as_array().unwrap().len(), 1, "{nets}");

    // More connections than xvsd keeps open: the ones over the limit are told so at once.
    let held: Vec<UnixStream> = (0..256)
        .map(|_| UnixStream::connect(x.socket()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let over = UnixStream::connect(x.socket()).unwrap();
    over.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut line = String::new();
    BufReader::new(&over).read_line(&mut line).unwrap();
    assert!(line.contains("busy"), "{line}");
    drop(held);
    assert!(xvs_tests::wait_until(Duration::from_secs(5), || x
        .ctl(&["ping"])
        .status
        .success()));
}
