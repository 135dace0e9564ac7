//! The control protocol's request parser (what xvsd reads from its socket): arbitrary bytes
//! never panic, and a request that parses re-encodes to JSON that parses to the same request
//! (and re-encodes to the same bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use xvs_ctl::protocol::Request;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<Request>(data) else {
        return;
    };
    let json = serde_json::to_vec(&req).expect("a parsed request serializes");
    let again: Request = serde_json::from_slice(&json).unwrap_or_else(|e| {
        panic!(
            "re-encoded request does not parse ({e}): {}",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(again, req, "{}", String::from_utf8_lossy(&json));
    let json2 = serde_json::to_vec(&again).expect("serializes");
    assert_eq!(json, json2, "encoding is stable");
});
