//! From xvsd's view of an endpoint to what CNI wants: the ADD result (interface, address,
//! gateway, default route, DNS), the endpoint of an attachment (container ID and interface),
//! the attachments GC removes, and CHECK's comparison of the namespace with both. Pure.

use serde_json::{Value, json};
use xvs_ctl::protocol::{EndpointView, NetworkView};

use crate::conf::{Attachment, at_least};

/// The ADD result for `ep` (on a network of MTU `mtu`) in the namespace `netns`.
pub fn add_result(cni_version: &str, ep: &EndpointView, mtu: u32, netns: &str) -> Value {
    let mut iface = json!({"name": ep.ifname, "mac": ep.mac, "sandbox": netns});
    if at_least(cni_version, "1.1.0") {
        iface["mtu"] = json!(mtu);
    }
    let mut ip = json!({"address": ep.address, "gateway": ep.gateway, "interface": 0});
    if !at_least(cni_version, "1.0.0") {
        // Before 1.0 every address said its family.
        ip["version"] = json!("4");
    }
    json!({
        "cniVersion": cni_version,
        "interfaces": [iface],
        "ips": [ip],
        "routes": [{"dst": "0.0.0.0/0", "gw": ep.gateway}],
        "dns": {"nameservers": [ep.gateway]},
    })
}

/// The endpoint of the attachment (`container_id`, `ifname`) on `net`.
pub fn find_endpoint<'a>(
    net: &'a NetworkView,
    container_id: &str,
    ifname: &str,
) -> Option<&'a EndpointView> {
    net.endpoints
        .iter()
        .find(|e| e.container_id.as_deref() == Some(container_id) && e.ifname == ifname)
}

/// The endpoints of `net` that CNI made and `valid` no longer lists. Endpoints made by
/// xvsctl or Docker (no container ID) are never GC's to remove.
pub fn stale_endpoints<'a>(net: &'a NetworkView, valid: &[Attachment]) -> Vec<&'a EndpointView> {
    net.endpoints
        .iter()
        .filter(|e| {
            e.container_id.as_ref().is_some_and(|id| {
                !valid
                    .iter()
                    .any(|a| &a.container_id == id && a.ifname == e.ifname)
            })
        })
        .collect()
}

/// An interface as seen inside the namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeenInterface {
    /// Its MAC, `aa:bb:cc:dd:ee:ff`.
    pub mac: Option<String>,
    /// Its IPv4 addresses, `A.B.C.D/N`.
    pub addresses: Vec<String>,
}

/// CHECK: the interface in the namespace (`seen`, None when it is missing) against the
/// endpoint xvsd has and the result the runtime kept (`prev_result`, which a chained plugin
/// may have changed). Returns what is wrong.
pub fn check(
    ep: &EndpointView,
    seen: Option<&SeenInterface>,
    prev_result: Option<&Value>,
) -> Result<(), String> {
    let Some(seen) = seen else {
        return Err(format!("no interface {} in the namespace", ep.ifname));
    };
    if !seen.addresses.iter().any(|a| a == &ep.address) {
        return Err(format!(
            "interface {} has {:?}, not its address {}",
            ep.ifname, seen.addresses, ep.address
        ));
    }
    // The MAC the last plugin of the chain reported (tuning may set another), else xvs's.
    let want_mac = prev_result
        .and_then(|r| r.get("interfaces")?.as_array().cloned())
        .and_then(|ifs| {
            ifs.iter()
                .find(|i| i.get("name").and_then(Value::as_str) == Some(ep.ifname.as_str()))
                .and_then(|i| i.get("mac")?.as_str().map(str::to_ascii_lowercase))
        })
        .unwrap_or_else(|| ep.mac.clone());
    if seen.mac.as_deref() != Some(want_mac.as_str()) {
        return Err(format!(
            "interface {} has MAC {}, not {want_mac}",
            ep.ifname,
            seen.mac.as_deref().unwrap_or("(none)")
        ));
    }
    if let Some(ips) = prev_result.and_then(|r| r.get("ips")?.as_array().cloned()) {
        let listed = ips
            .iter()
            .any(|i| i.get("address").and_then(Value::as_str) == Some(ep.address.as_str()));
        if !listed {
            return Err(format!(
                "prevResult does not list the endpoint's address {}",
                ep.address
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "tests/result.rs"]
mod tests;
