//! Unit tests of `server.rs`.

use super::*;

#[tokio::test]
async fn bind_refuses_what_is_not_a_stale_socket() {
    let dir = std::env::temp_dir().join(format!("xvs-server-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("file");
    std::fs::write(&file, "").unwrap();
    let e = bind(&file).unwrap_err();
    assert!(matches!(e, BindError::NotASocket(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "{} exists and is not a socket; refusing to replace it",
            file.display()
        )
    );

    let socket = dir.join("xvsd.sock");
    let listener = bind(&socket).unwrap();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let e = bind(&socket).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("another xvsd is already listening on {}", socket.display())
    );
    // Once nobody listens, the socket is stale and is replaced.
    drop(listener);
    drop(bind(&socket).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn line_errors_read_as_before() {
    assert_eq!(
        LineError::Idle.to_string(),
        "idle for 10 s without a request: closing"
    );
    assert_eq!(
        LineError::TooLarge.to_string(),
        "request too large: limit is 65536 bytes per line"
    );
    let json = serde_json::from_str::<Request>("{not json").unwrap_err();
    assert_eq!(
        LineError::Invalid(json).to_string(),
        "invalid request: key must be a string at line 1 column 2"
    );
    assert_eq!(
        LineError::Poisoned.to_string(),
        "internal error: switch state lock poisoned"
    );
    let refused = reply_of(Err(Error::Vlan(5000)));
    assert!(!refused.ok);
    assert_eq!(
        refused.error.as_deref(),
        Some("VLAN 5000 is out of range (1-4094)")
    );
    assert_eq!(
        serde_json::to_string(&refused).unwrap(),
        r#"{"ok":false,"error":"VLAN 5000 is out of range (1-4094)"}"#
    );
    assert_eq!(reply_of(Ok(Reply::done())), Reply::done());
}
