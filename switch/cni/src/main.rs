//! xvs-cni: a CNI 1.0/1.1 plugin (ADD, DEL, CHECK, VERSION, GC, STATUS) that connects a
//! container's namespace to an xvs network through xvsd's control socket. xvsd makes the
//! interface inside the namespace and keeps every bit of state (the endpoint carries the
//! container ID); the plugin only translates. This file is the I/O: environment, stdin,
//! xvsd, the namespace; the rules are in `conf`, `result` and `error`.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};

use nix::sched::{CloneFlags, setns};
use serde_json::Value;
use xvs_ctl::client::{Client, ClientError};
use xvs_ctl::protocol::{EndpointView, NetworkView, Request, SOCKET_ENV};

use xvs_cni::conf::{Command, Env, LATEST_VERSION, NetConf};
use xvs_cni::error::CniError;
use xvs_cni::result::SeenInterface;
use xvs_cni::{conf, result};

fn main() {
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let outcome = match read {
        Ok(_) => run(&stdin),
        Err(e) => Err((
            LATEST_VERSION.to_string(),
            CniError::Io(format!("cannot read stdin: {e}")),
        )),
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{}", pretty(&v));
        }
        Ok(None) => {}
        Err((version, e)) => {
            let _ = writeln!(out, "{}", pretty(&e.to_json(&version)));
            let _ = out.flush();
            std::process::exit(1);
        }
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// Runs the verb; an error comes with the version to report it in.
fn run(stdin: &[u8]) -> Result<Option<Value>, (String, CniError)> {
    let env = Env::parse(|k| std::env::var(k).ok()).map_err(|e| (conf::version_of(stdin), e))?;
    if env.command == Command::Version {
        return Ok(Some(conf::version_reply(&conf::version_of(stdin))));
    }
    let conf = conf::parse_conf(stdin).map_err(|e| (conf::version_of(stdin), e))?;
    let version = conf.cni_version.clone();
    let on = |e| (version.clone(), e);
    conf.require_version(env.command).map_err(on)?;
    let socket = conf.socket(std::env::var(SOCKET_ENV).ok());
    match env.command {
        Command::Add => add(&conf, &env, &socket, stdin).map(Some),
        Command::Del => del(&conf, &env, &socket, stdin).map(|()| None),
        Command::Check => check(&conf, &env, &socket, stdin).map(|()| None),
        Command::Gc => gc(&conf, &socket).map(|()| None),
        Command::Status => status(&conf, &socket).map(|()| None),
        Command::Version => Ok(None),
    }
    .map_err(on)
}

/// A connection to xvsd; not reaching it at all is "try again later".
fn connect(socket: &str) -> Result<Client, CniError> {
    Client::connect(socket).map_err(|e| CniError::XvsdUnavailable(e.to_string()))
}

fn request(client: &mut Client, req: &Request) -> Result<Value, CniError> {
    client.request(req).map_err(|e| match e {
        ClientError::Refused(msg) => CniError::Refused(msg),
        ClientError::Connect { .. } => CniError::XvsdUnavailable(e.to_string()),
        other => CniError::Io(other.to_string()),
    })
}

/// The network as xvsd has it; None when there is no such network.
fn inspect(client: &mut Client, network: &str) -> Result<Option<NetworkView>, CniError> {
    let req = Request::NetworkInspect {
        network: network.to_string(),
    };
    match request(client, &req) {
        Ok(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| CniError::Io(format!("xvsd sent an unreadable network: {e}"))),
        Err(CniError::Refused(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn require_network(client: &mut Client, network: &str) -> Result<NetworkView, CniError> {
    inspect(client, network)?.ok_or_else(|| CniError::NoSuchNetwork {
        network: network.to_string(),
        why: "xvsd has no network of that name".into(),
    })
}

/// ADD: the address from the delegated IPAM plugin if there is one (released again if the
/// connect fails), then `network connect`.
fn add(conf: &NetConf, env: &Env, socket: &str, stdin: &[u8]) -> Result<Value, CniError> {
    conf.connect_request(env, None)?;
    let mut client = connect(socket)?;
    let net = require_network(&mut client, conf.network())?;
    let ipam = conf.ipam_plugin()?;
    let ipam_ip = match ipam {
        Some(plugin) => {
            let r = delegate(plugin, env, Command::Add, stdin)?;
            match conf::ipam_address(&r) {
                Ok(ip) => Some(ip),
                Err(e) => return Err(release(plugin, env, stdin, e)),
            }
        }
        None => None,
    };
    let req = conf.connect_request(env, ipam_ip)?;
    let ep = request(&mut client, &req).and_then(|reply| {
        serde_json::from_value::<EndpointView>(reply)
            .map_err(|e| CniError::Io(format!("xvsd sent an unreadable endpoint: {e}")))
    });
    let ep = match (ep, ipam) {
        (Ok(ep), _) => ep,
        (Err(e), Some(plugin)) => return Err(release(plugin, env, stdin, e)),
        (Err(e), None) => return Err(e),
    };
    Ok(result::add_result(
        &conf.cni_version,
        &ep,
        net.mtu,
        env.netns.as_deref().unwrap_or_default(),
    ))
}

/// DEL succeeds when there is nothing left to delete: no such network, no endpoint for the
/// attachment, or a namespace already gone (xvsd forgets the endpoint all the same).
fn del(conf: &NetConf, env: &Env, socket: &str, stdin: &[u8]) -> Result<(), CniError> {
    let mut client = connect(socket)?;
    if let Some(net) = inspect(&mut client, conf.network())?
        && let Some(ep) = result::find_endpoint(&net, &env.container_id, &env.ifname)
    {
        disconnect(&mut client, conf.network(), ep)?;
    }
    if let Some(plugin) = conf.ipam_plugin()? {
        delegate(plugin, env, Command::Del, stdin)?;
    }
    Ok(())
}

/// Gives a delegated IPAM plugin's address back after `why` stopped the ADD; returns `why`.
fn release(plugin: &str, env: &Env, stdin: &[u8], why: CniError) -> CniError {
    let _ = delegate(plugin, env, Command::Del, stdin);
    why
}

/// Runs the IPAM plugin `plugin` (found in CNI_PATH) with this invocation's environment,
/// CNI_COMMAND set to `verb`, and the same config on stdin; its result, or its error passed on.
fn delegate(plugin: &str, env: &Env, verb: Command, stdin: &[u8]) -> Result<Value, CniError> {
    let path = env
        .path
        .iter()
        .map(|d| std::path::Path::new(d).join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::InvalidConfig(format!(
                "ipam plugin {plugin:?} not found in CNI_PATH ({})",
                env.path.join(":")
            ))
        })?;
    let mut child = std::process::Command::new(&path)
        .env("CNI_COMMAND", verb.name())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| CniError::Io(format!("cannot run {}: {e}", path.display())))?;
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin)
            .map_err(|e| CniError::Io(format!("cannot write to {}: {e}", path.display())))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::Io(format!("running {}: {e}", path.display())))?;
    let v: Value = if out.stdout.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout)
            .map_err(|e| CniError::Io(format!("{} printed no JSON: {e}", path.display())))?
    };
    if out.status.success() {
        return Ok(v);
    }
    let text = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Err(CniError::Ipam {
        plugin: plugin.to_string(),
        code: v
            .get("code")
            .and_then(Value::as_u64)
            .map_or(5, |c| c as u32),
        msg: match text("msg") {
            m if m.is_empty() => format!("exited with {}", out.status),
            m => m,
        },
        details: text("details"),
    })
}

fn disconnect(client: &mut Client, network: &str, ep: &EndpointView) -> Result<(), CniError> {
    let req = Request::NetworkDisconnect {
        network: network.to_string(),
        sandbox: ep.sandbox.clone(),
    };
    match request(client, &req) {
        Ok(_) => Ok(()),
        // Gone between the look and the disconnect (another DEL or GC): done all the same.
        Err(CniError::Refused(_)) if !still_there(client, network, ep)? => Ok(()),
        Err(e) => Err(e),
    }
}

fn still_there(client: &mut Client, network: &str, ep: &EndpointView) -> Result<bool, CniError> {
    Ok(inspect(client, network)?.is_some_and(|n| n.endpoints.iter().any(|e| e.port == ep.port)))
}

/// CHECK: xvsd has the endpoint, the namespace has its interface with its MAC and address,
/// and a delegated IPAM plugin agrees.
fn check(conf: &NetConf, env: &Env, socket: &str, stdin: &[u8]) -> Result<(), CniError> {
    let mut client = connect(socket)?;
    let net = require_network(&mut client, conf.network())?;
    let ep = result::find_endpoint(&net, &env.container_id, &env.ifname).ok_or_else(|| {
        CniError::CheckFailed(format!(
            "no endpoint of container {} ({}) on network {}",
            env.container_id,
            env.ifname,
            conf.network()
        ))
    })?;
    let netns = env.netns.as_deref().unwrap_or_default();
    let seen = interfaces_in(netns)?;
    result::check(ep, seen.get(&ep.ifname), conf.prev_result.as_ref())
        .map_err(CniError::CheckFailed)?;
    if let Some(plugin) = conf.ipam_plugin()? {
        delegate(plugin, env, Command::Check, stdin)?;
    }
    Ok(())
}

fn gc(conf: &NetConf, socket: &str) -> Result<(), CniError> {
    let valid = conf
        .valid_attachments
        .as_deref()
        .ok_or_else(|| CniError::InvalidConfig("GC needs \"cni.dev/valid-attachments\"".into()))?;
    let mut client = connect(socket)?;
    let Some(net) = inspect(&mut client, conf.network())? else {
        return Ok(());
    };
    let mut first_error = None;
    for ep in result::stale_endpoints(&net, valid) {
        if let Err(e) = disconnect(&mut client, conf.network(), ep) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn status(conf: &NetConf, socket: &str) -> Result<(), CniError> {
    let unavailable = |e: CniError| CniError::NotAvailable(e.to_string());
    let mut client = connect(socket).map_err(unavailable)?;
    require_network(&mut client, conf.network()).map_err(unavailable)?;
    Ok(())
}

/// The interfaces in the namespace at `netns` (a path), by name: MAC and IPv4 addresses.
/// Looked at from a thread of its own, so the plugin's main thread never changes namespace.
fn interfaces_in(netns: &str) -> Result<HashMap<String, SeenInterface>, CniError> {
    let file = File::open(netns)
        .map_err(|e| CniError::CheckFailed(format!("cannot open namespace {netns}: {e}")))?;
    let io = |what: &str, e: nix::Error| CniError::Io(format!("{what} {netns}: {e}"));
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| io("cannot enter", e))?;
            let mut seen: HashMap<String, SeenInterface> = HashMap::new();
            for a in nix::ifaddrs::getifaddrs().map_err(|e| io("cannot list addresses in", e))? {
                let entry = seen.entry(a.interface_name.clone()).or_default();
                let Some(addr) = a.address else { continue };
                if let Some(link) = addr.as_link_addr() {
                    if let Some(mac) = link.addr() {
                        entry.mac = Some(
                            mac.iter()
                                .map(|b| format!("{b:02x}"))
                                .collect::<Vec<_>>()
                                .join(":"),
                        );
                    }
                } else if let Some(v4) = addr.as_sockaddr_in() {
                    let prefix = a
                        .netmask
                        .and_then(|m| m.as_sockaddr_in().map(|m| m.ip().to_bits().count_ones()))
                        .unwrap_or(32);
                    entry.addresses.push(format!("{}/{prefix}", v4.ip()));
                }
            }
            Ok(seen)
        })
        .join()
        .unwrap_or_else(|_| Err(CniError::Io("the namespace thread panicked".into())))
    })
}
