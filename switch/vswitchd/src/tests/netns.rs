//! Unit tests of `netns.rs`.

use super::*;

use std::process::Command;

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A per-run, per-test prefix (short: interface names are at most 15 bytes).
fn unique(tag: &str) -> String {
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("xt{:x}{tag}{seq}", std::process::id() & 0xfffff)
}

/// Runs a test tool (tests may use `ip` and `ethtool`; the product may not).
fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn run_ok(args: &[&str]) -> String {
    let (ok, text) = run(args);
    assert!(ok, "{args:?} failed: {text}");
    text
}

/// A named namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = unique(tag);
        run_ok(&["ip", "netns", "add", &name]);
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.0]);
        let _ = remove_resolv_conf(&self.0);
    }
}

/// A host-side interface, deleted on drop in case the test failed before deleting it.
struct HostLink(String);

impl Drop for HostLink {
    fn drop(&mut self) {
        if link_exists(&self.0) {
            let _ = run(&["ip", "link", "del", &self.0]);
        }
    }
}

fn spec(ns: &Netns, host: &HostLink, ifname: &str) -> EndpointSpec {
    EndpointSpec {
        host_ifname: host.0.clone(),
        sandbox: Sandbox::Named(ns.0.clone()),
        ifname: ifname.to_string(),
        mac: Mac([0x02, 0x00, 0xc6, 0x12, 0x00, 0x02]),
        addr: Ipv4Addr::new(198, 18, 0, 2),
        prefix: 24,
        gateway: Some(Ipv4Addr::new(198, 18, 0, 1)),
        mtu: 1450,
    }
}

#[test]
fn endpoint_is_made_configured_and_removed() {
    let ns = Netns::new("n");
    let host = HostLink(unique("h"));
    let sandbox = resolve_sandbox(&ns.0).expect("resolve");
    assert_eq!(sandbox, Sandbox::Named(ns.0.clone()));
    let spec = spec(&ns, &host, "eth0");

    let index = create_endpoint(&spec).expect("create");

    let host_link = run_ok(&["ip", "-o", "link", "show", &host.0]);
    assert!(
        host_link.starts_with(&format!("{index}: {}@", host.0)),
        "{host_link}"
    );
    assert!(host_link.contains("mtu 1450"), "{host_link}");
    assert!(host_link.contains(",UP"), "{host_link}");

    let link = run_ok(&["ip", "-n", &ns.0, "-o", "link", "show", "eth0"]);
    assert!(link.contains("mtu 1450"), "{link}");
    assert!(link.contains("link/ether 02:00:c6:12:00:02"), "{link}");
    assert!(link.contains(",UP"), "{link}");
    let lo = run_ok(&["ip", "-n", &ns.0, "-o", "link", "show", "lo"]);
    assert!(lo.contains(",UP"), "{lo}");
    let addr = run_ok(&["ip", "-n", &ns.0, "-o", "-4", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains("inet 198.18.0.2/24"), "{addr}");
    let route = run_ok(&["ip", "-n", &ns.0, "route", "show", "default"]);
    assert!(route.contains("default via 198.18.0.1 dev eth0"), "{route}");
    let features = run_ok(&["ip", "netns", "exec", &ns.0, "ethtool", "-k", "eth0"]);
    assert!(features.contains("tx-checksumming: off"), "{features}");
    // As with `ethtool -K IF tx off`, TSO goes with it (6.18 still lists
    // tx-tcp-accecn-segmentation as on, so the summary line may say "on").
    assert!(features.contains("tx-tcp-segmentation: off"), "{features}");

    assert!(link_exists(&host.0));
    assert_eq!(
        links_with_prefix(&host.0).expect("list"),
        vec![host.0.clone()]
    );
    assert!(sandbox_has_link(&sandbox, "eth0").expect("has eth0"));
    assert!(!sandbox_has_link(&sandbox, "eth9").expect("has eth9"));

    // The same switch-side name again: refused, and nothing new anywhere.
    let mut again = spec.clone();
    again.ifname = "eth1".to_string();
    let err = create_endpoint(&again).expect_err("duplicate host name");
    assert_eq!(
        err.to_string(),
        format!("cannot create veth {}: File exists", host.0)
    );
    assert!(!sandbox_has_link(&sandbox, "eth1").expect("has eth1"));
    assert_eq!(
        links_with_prefix(&host.0).expect("list"),
        vec![host.0.clone()]
    );

    // The same sandbox-side name again: refused, and no new switch side.
    let other = HostLink(unique("o"));
    let mut taken = spec.clone();
    taken.host_ifname = other.0.clone();
    let err = create_endpoint(&taken).expect_err("duplicate sandbox name");
    assert_eq!(
        err.to_string(),
        format!(
            "interface eth0 already exists in network namespace {}",
            ns.0
        )
    );
    assert!(!link_exists(&other.0));

    delete_endpoint(&host.0).expect("delete");
    assert!(!link_exists(&host.0));
    assert!(!sandbox_has_link(&sandbox, "eth0").expect("has eth0 after delete"));
    delete_endpoint(&host.0).expect("deleting a missing endpoint is fine");
}

#[test]
fn a_failure_inside_the_sandbox_leaves_no_veth() {
    let ns = Netns::new("f");
    let host = HostLink(unique("h"));
    let mut bad = spec(&ns, &host, "eth0");
    bad.gateway = Some(Ipv4Addr::new(198, 19, 255, 1)); // not on the link

    let err = create_endpoint(&bad).expect_err("unreachable gateway");
    assert!(
        err.to_string()
            .starts_with("cannot add default route via 198.19.255.1 on eth0 in network namespace"),
        "{err}"
    );
    assert!(!link_exists(&host.0));
    let sandbox = Sandbox::Named(ns.0.clone());
    assert!(!sandbox_has_link(&sandbox, "eth0").expect("has eth0"));
}

#[test]
fn a_namespace_file_path_is_a_sandbox_and_the_gateway_is_optional() {
    let ns = Netns::new("p");
    let host = HostLink(unique("h"));
    let path = Sandbox::Named(ns.0.clone()).path();
    let sandbox = resolve_sandbox(path.to_str().expect("utf-8")).expect("resolve path");
    assert_eq!(sandbox, Sandbox::Path(path));
    let mut spec = spec(&ns, &host, "eth3");
    spec.sandbox = sandbox.clone();
    spec.gateway = None;

    create_endpoint(&spec).expect("create");
    assert!(sandbox_has_link(&sandbox, "eth3").expect("has eth3"));
    let route = run_ok(&["ip", "-n", &ns.0, "route", "show", "default"]);
    assert!(route.trim().is_empty(), "{route}");
    delete_endpoint(&host.0).expect("delete");
    assert!(!link_exists(&host.0));
}

#[test]
fn a_second_network_keeps_the_first_default_route() {
    let ns = Netns::new("m");
    let first = HostLink(unique("a"));
    let second = HostLink(unique("b"));
    create_endpoint(&spec(&ns, &first, "eth0")).expect("first");
    let mut other = spec(&ns, &second, "eth1");
    other.mac = Mac([0x02, 0x00, 0xc6, 0x13, 0x00, 0x02]);
    other.addr = Ipv4Addr::new(198, 19, 0, 2);
    other.gateway = Some(Ipv4Addr::new(198, 19, 0, 1));
    create_endpoint(&other).expect("second");
    let route = run_ok(&["ip", "-n", &ns.0, "route", "show", "default"]);
    assert!(route.contains("default via 198.18.0.1 dev eth0"), "{route}");
    assert!(!route.contains("eth1"), "{route}");
    delete_endpoint(&first.0).expect("delete first");
    delete_endpoint(&second.0).expect("delete second");
}

#[test]
fn missing_and_malformed_sandboxes_are_refused() {
    let name = unique("x");
    let err = resolve_sandbox(&name).expect_err("missing name");
    assert_eq!(
        err.to_string(),
        format!("network namespace {name} does not exist")
    );
    let path = format!("/var/run/netns/{name}");
    let err = resolve_sandbox(&path).expect_err("missing path");
    assert_eq!(err.to_string(), format!("namespace {path} does not exist"));
    for bad in ["", "..", "relative/path"] {
        assert!(
            matches!(resolve_sandbox(bad), Err(NetError::BadSandbox(_))),
            "{bad:?}"
        );
    }

    // A namespace deleted after it was resolved.
    let gone = Sandbox::Named(name.clone());
    let err = sandbox_has_link(&gone, "eth0").expect_err("gone");
    assert_eq!(
        err.to_string(),
        format!("network namespace {name} does not exist")
    );

    // A file that is not a namespace.
    let not_ns = Sandbox::Path(PathBuf::from("/proc/self/status"));
    let err = sandbox_has_link(&not_ns, "eth0").expect_err("not a namespace");
    assert_eq!(
        err.to_string(),
        "/proc/self/status is not a network namespace"
    );
}

#[test]
fn bad_specs_are_refused_before_anything_is_made() {
    let ns = Netns::new("v");
    let host = HostLink(unique("h"));
    let good = spec(&ns, &host, "eth0");
    type Change = fn(&mut EndpointSpec);
    let cases: [(Change, &str); 6] = [
        (|s| s.mtu = 3507, "MTU 3507 is out of range 68..=3506"),
        (|s| s.mtu = 67, "MTU 67 is out of range 68..=3506"),
        (
            |s| s.mac = Mac([1, 0, 0, 0, 0, 1]),
            "invalid MAC address 01:00:00:00:00:01",
        ),
        (|s| s.prefix = 33, "invalid prefix length /33"),
        (
            |s| s.ifname = "sixteen-chars-xx".into(),
            "invalid interface name",
        ),
        (
            |s| s.host_ifname = "a:b".into(),
            "invalid interface name \"a:b\"",
        ),
    ];
    for (change, message) in cases {
        let mut spec = good.clone();
        change(&mut spec);
        let err = create_endpoint(&spec).expect_err(message);
        assert!(err.to_string().starts_with(message), "{err} vs {message}");
    }
    assert!(!link_exists(&host.0));
}

#[test]
fn resolv_conf_follows_the_ip_netns_exec_convention() {
    let ns = Netns::new("r");
    write_resolv_conf(&ns.0, Ipv4Addr::new(198, 18, 0, 1)).expect("write");
    write_resolv_conf(&ns.0, Ipv4Addr::new(198, 18, 0, 254)).expect("rewrite");
    let seen = run_ok(&["ip", "netns", "exec", &ns.0, "cat", "/etc/resolv.conf"]);
    assert!(seen.contains("\nnameserver 198.18.0.254\n"), "{seen}");
    assert!(!seen.contains("198.18.0.1\n"), "{seen}");
    let dir = Path::new(NETNS_ETC).join(&ns.0);
    let files: Vec<_> = fs::read_dir(&dir).expect("dir").collect();
    assert_eq!(files.len(), 1, "no temporary file is left: {files:?}");

    remove_resolv_conf(&ns.0).expect("remove");
    assert!(!dir.exists());
    remove_resolv_conf(&ns.0).expect("removing twice is fine");
    assert!(write_resolv_conf("../etc", Ipv4Addr::LOCALHOST).is_err());
}

#[test]
fn resolv_conf_dir_keeps_other_files() {
    let base = std::env::temp_dir().join(unique("etc"));
    let _cleanup = DirGuard(base.clone());
    write_resolv_conf_in(&base, "ns1", Ipv4Addr::new(198, 18, 0, 1)).expect("write");
    fs::write(base.join("ns1/hosts"), "").expect("other file");
    remove_resolv_conf_in(&base, "ns1").expect("remove");
    assert!(!base.join("ns1/resolv.conf").exists());
    assert!(base.join("ns1/hosts").exists());
}

struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
