#![allow(clippy::unwrap_used)]

use serde_json::json;

use super::*;

#[test]
fn errors_have_the_spec_codes_and_shape() {
    let e = CniError::IncompatibleVersion {
        requested: "9.9.9".into(),
        supported: "1.0.0, 1.1.0".into(),
    };
    assert_eq!(
        e.to_json("1.1.0"),
        json!({"cniVersion": "1.1.0", "code": 1,
               "msg": "incompatible CNI version \"9.9.9\": xvs-cni supports 1.0.0, 1.1.0"})
    );
    let e = CniError::InvalidEnv {
        var: "CNI_COMMAND",
        why: "not set".into(),
    };
    assert_eq!(e.code(), 4);
    let bad = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
    assert_eq!(CniError::Decode(bad).code(), 6);
    assert_eq!(CniError::InvalidConfig("x".into()).code(), 7);
    assert_eq!(CniError::Refused("x".into()).code(), 100);
    assert_eq!(CniError::CheckFailed("x".into()).code(), 101);
    assert_eq!(CniError::NotAvailable("x".into()).code(), 50);
}

#[test]
fn xvsd_not_running_is_try_again_later_and_says_so() {
    let e = CniError::XvsdUnavailable("cannot connect to xvsd at /run/xvs/xvsd.sock".into());
    let v = e.to_json("1.0.0");
    assert_eq!(v["code"], 11);
    assert!(
        v["msg"]
            .as_str()
            .unwrap()
            .starts_with("xvsd is not running")
    );
    assert!(v["details"].as_str().unwrap().contains("\"socket\""));
}

#[test]
fn an_ipam_plugins_own_error_is_passed_on() {
    let e = CniError::Ipam {
        plugin: "host-local".into(),
        code: 7,
        msg: "no range".into(),
        details: "d".into(),
    };
    assert_eq!(
        e.to_json("1.0.0"),
        json!({"cniVersion": "1.0.0", "code": 7, "msg": "ipam plugin host-local: no range", "details": "d"})
    );
}
