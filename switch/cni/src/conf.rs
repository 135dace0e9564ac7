//! What a runtime hands the plugin: the CNI_* environment (the verb, the container, its
//! namespace and interface name, CNI_ARGS) and the network configuration on stdin, parsed and
//! checked here, and turned into the xvsd request they ask for. Pure: the caller passes the
//! variables and the bytes in.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use xvs_ctl::protocol::{DEFAULT_SOCKET, Request};

use crate::error::CniError;

/// Spec versions this plugin speaks, oldest first; the last is what VERSION answers without
/// a version of its own on stdin.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest supported version.
pub const LATEST_VERSION: &str = "1.1.0";

/// A CNI verb (CNI_COMMAND).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach the container to the network.
    Add,
    /// Detach it; succeeds when already detached.
    Del,
    /// Verify the attachment.
    Check,
    /// Report the supported versions.
    Version,
    /// Remove attachments of containers no longer listed (CNI 1.1).
    Gc,
    /// Whether ADD can be served (CNI 1.1).
    Status,
}

impl Command {
    /// The verb as CNI_COMMAND spells it.
    pub fn name(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Gc => "GC",
            Command::Status => "STATUS",
        }
    }

    fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            _ => return None,
        })
    }
}

/// The CNI_* environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    /// CNI_COMMAND.
    pub command: Command,
    /// CNI_CONTAINERID (ADD, DEL, CHECK).
    pub container_id: String,
    /// CNI_NETNS: a path to the namespace (may be empty for DEL).
    pub netns: Option<String>,
    /// CNI_IFNAME (ADD, DEL, CHECK).
    pub ifname: String,
    /// CNI_ARGS as key/value pairs.
    pub args: BTreeMap<String, String>,
    /// CNI_PATH, the directories to find delegated plugins in.
    pub path: Vec<String>,
}

impl Env {
    /// Reads the environment through `var` (`std::env::var` in the plugin).
    pub fn parse(var: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let command = match var("CNI_COMMAND") {
            None => return Err(env_err("CNI_COMMAND", "not set")),
            Some(c) => Command::parse(&c).ok_or_else(|| {
                env_err(
                    "CNI_COMMAND",
                    format!("unknown verb {c:?} (ADD, DEL, CHECK, VERSION, GC or STATUS)"),
                )
            })?,
        };
        let non_empty = |k: &str| var(k).filter(|v| !v.is_empty());
        let needs_container = matches!(command, Command::Add | Command::Del | Command::Check);
        let container_id = non_empty("CNI_CONTAINERID").unwrap_or_default();
        let ifname = non_empty("CNI_IFNAME").unwrap_or_default();
        let netns = non_empty("CNI_NETNS");
        if needs_container {
            check_container_id(&container_id)?;
            check_ifname(&ifname)?;
        }
        if matches!(command, Command::Add | Command::Check) {
            match &netns {
                None => return Err(env_err("CNI_NETNS", "not set")),
                Some(p) if !p.starts_with('/') => {
                    return Err(env_err(
                        "CNI_NETNS",
                        format!("{p:?} is not an absolute path"),
                    ));
                }
                Some(_) => {}
            }
        }
        let args = parse_args(&var("CNI_ARGS").unwrap_or_default())?;
        let path = var("CNI_PATH")
            .unwrap_or_default()
            .split(':')
            .filter(|d| !d.is_empty())
            .map(String::from)
            .collect();
        Ok(Env {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }

    /// The endpoint's DNS name: the pod's name from CNI_ARGS (K8S_POD_NAME), when it is one.
    pub fn dns_name(&self) -> Option<String> {
        let name = self.args.get("K8S_POD_NAME")?.to_ascii_lowercase();
        let ok = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        ok.then_some(name)
    }
}

fn env_err(var: &'static str, why: impl Into<String>) -> CniError {
    CniError::InvalidEnv {
        var,
        why: why.into(),
    }
}

/// The spec's rule: a letter or digit, then letters, digits, `_`, `.` or `-`.
fn check_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && id.len() <= 256;
    if ok {
        Ok(())
    } else if id.is_empty() {
        Err(env_err("CNI_CONTAINERID", "not set"))
    } else {
        Err(env_err(
            "CNI_CONTAINERID",
            format!("{id:?} is not a container ID (letters, digits, '_', '.', '-')"),
        ))
    }
}

/// An interface name the kernel takes (`dev_valid_name`).
fn check_ifname(name: &str) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(env_err("CNI_IFNAME", "not set"));
    }
    let bad = name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| matches!(c, '/' | ':' | '\0') || c.is_whitespace());
    if bad {
        return Err(env_err(
            "CNI_IFNAME",
            format!("{name:?} is not an interface name"),
        ));
    }
    Ok(())
}

/// CNI_ARGS: `K1=V1;K2=V2`.
fn parse_args(s: &str) -> Result<BTreeMap<String, String>, CniError> {
    let mut args = BTreeMap::new();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(env_err("CNI_ARGS", format!("{pair:?} is not KEY=VALUE")));
        };
        args.insert(k.to_string(), v.to_string());
    }
    Ok(args)
}

/// One `portMappings` entry of runtimeConfig (the portmap capability).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// The port on the host (xvs's uplink address).
    pub host_port: u16,
    /// The port in the container.
    pub container_port: u16,
    /// `tcp` (the default) or `udp`.
    #[serde(default)]
    pub protocol: String,
    /// The host address to publish on; empty for any.
    #[serde(default, rename = "hostIP")]
    pub host_ip: String,
}

/// The runtime's per-container settings (capabilities).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    /// `portMappings`: become the endpoint's published ports.
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// `ips`: a static address for the endpoint (the first IPv4 one is used).
    #[serde(default)]
    pub ips: Vec<String>,
}

/// An attachment the runtime still wants, in GC's `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    /// Its container.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Its interface.
    pub ifname: String,
}

/// The network configuration on stdin.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// The spec version the runtime speaks.
    pub cni_version: String,
    /// The CNI network's name.
    pub name: String,
    /// The plugin (`xvs-cni`).
    #[serde(rename = "type")]
    pub plugin: String,
    /// The xvs network; the CNI network's `name` when not given.
    #[serde(default)]
    pub network: Option<String>,
    /// `{}` or absent: xvs's own IPAM.
    #[serde(default)]
    pub ipam: Option<Value>,
    /// Capabilities' arguments.
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    /// xvsd's control socket.
    #[serde(default)]
    pub socket: Option<String>,
    /// `tap` or `veth`; xvsd's default when not given.
    #[serde(default)]
    pub port_type: Option<String>,
    /// Port security off for the pods of this network (routers, VPN gateways).
    #[serde(default)]
    pub allow_spoofing: bool,
    /// The result of the plugins before this one in a chain (and of ADD, for CHECK).
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// GC: the attachments to keep.
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// Parses the configuration: not JSON is code 6, JSON without the fields is code 7, and a
/// version this plugin does not speak is code 1.
pub fn parse_conf(stdin: &[u8]) -> Result<NetConf, CniError> {
    let v: Value = serde_json::from_slice(stdin).map_err(CniError::Decode)?;
    if let Some(ver) = v.get("cniVersion").and_then(Value::as_str) {
        check_version(ver)?;
    }
    let conf: NetConf =
        serde_json::from_value(v).map_err(|e| CniError::InvalidConfig(e.to_string()))?;
    if conf.name.is_empty() {
        return Err(CniError::InvalidConfig("\"name\" is empty".into()));
    }
    if conf.network.as_deref() == Some("") {
        // Found by fuzz/cni_conf: it went on to ask xvsd for network "".
        return Err(CniError::InvalidConfig(
            "\"network\" is empty (leave it out to use \"name\")".into(),
        ));
    }
    conf.ipam_plugin()?;
    Ok(conf)
}

/// The cniVersion of a VERSION request's stdin (which may be empty or not a config).
pub fn version_of(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(String::from))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| LATEST_VERSION.to_string())
}

fn check_version(v: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&v) {
        Ok(())
    } else {
        Err(CniError::IncompatibleVersion {
            requested: v.to_string(),
            supported: SUPPORTED_VERSIONS.join(", "),
        })
    }
}

/// The IPv4 address (prefix dropped) of a delegated IPAM plugin's ADD result.
pub fn ipam_address(result: &Value) -> Result<String, CniError> {
    result
        .get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("address")?.as_str())
        .map(|a| a.split('/').next().unwrap_or(a))
        .find(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
        .map(String::from)
        .ok_or_else(|| CniError::Io(format!("the IPAM plugin gave no IPv4 address: {result}")))
}

/// Whether version `a` is at least `b` (both supported versions: `X.Y.Z`).
pub fn at_least(a: &str, b: &str) -> bool {
    let key = |s: &str| -> Vec<u32> { s.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    key(a) >= key(b)
}

/// VERSION's answer.
pub fn version_reply(cni_version: &str) -> Value {
    serde_json::json!({"cniVersion": cni_version, "supportedVersions": SUPPORTED_VERSIONS})
}

impl NetConf {
    /// The xvs network the config names.
    pub fn network(&self) -> &str {
        self.network.as_deref().unwrap_or(&self.name)
    }

    /// The IPAM plugin to delegate to: None for xvs's own (`ipam` absent or `{}`), else its
    /// `type`, a plain executable name to find in CNI_PATH.
    pub fn ipam_plugin(&self) -> Result<Option<&str>, CniError> {
        let Some(ipam) = &self.ipam else {
            return Ok(None);
        };
        if ipam.is_null() || ipam.as_object().is_some_and(|o| o.is_empty()) {
            return Ok(None);
        }
        match ipam.get("type").and_then(Value::as_str) {
            Some(t) if !t.is_empty() && !t.contains('/') && t != "." && t != ".." => Ok(Some(t)),
            _ => Err(CniError::InvalidConfig(
                "\"ipam\" needs a \"type\" (an IPAM plugin's name), or leave it out for xvs's own"
                    .into(),
            )),
        }
    }

    /// The control socket: the config's `socket`, else `$XVS_SOCKET`, else the default.
    pub fn socket(&self, env_socket: Option<String>) -> String {
        self.socket
            .clone()
            .or(env_socket)
            .unwrap_or_else(|| DEFAULT_SOCKET.to_string())
    }

    /// Refuses a verb the config's version does not define.
    pub fn require_version(&self, verb: Command) -> Result<(), CniError> {
        let needs = match verb {
            Command::Check => "0.4.0",
            Command::Gc | Command::Status => "1.1.0",
            _ => return Ok(()),
        };
        if at_least(&self.cni_version, needs) {
            Ok(())
        } else {
            Err(CniError::VerbNeedsVersion {
                verb: verb.name(),
                needs,
                has: self.cni_version.clone(),
            })
        }
    }

    /// The published ports `portMappings` ask for, as `network connect --publish` takes them
    /// (IPv6 host addresses are left out: xvs publishes on its IPv4 uplink).
    pub fn publish(&self) -> Result<Vec<String>, CniError> {
        let mut out = Vec::new();
        for m in &self.runtime_config.port_mappings {
            let proto = match m.protocol.to_ascii_lowercase().as_str() {
                "" | "tcp" => "tcp",
                "udp" => "udp",
                p => {
                    return Err(CniError::InvalidConfig(format!(
                        "portMappings: protocol {p:?} is not supported (tcp or udp)"
                    )));
                }
            };
            if m.host_ip.contains(':') {
                continue;
            }
            let host = if m.host_ip.is_empty() || m.host_ip == "0.0.0.0" {
                String::new()
            } else {
                format!("{}:", m.host_ip)
            };
            out.push(format!(
                "{host}{}:{}/{proto}",
                m.host_port, m.container_port
            ));
        }
        Ok(out)
    }

    /// The static address `runtimeConfig.ips` asks for (its first IPv4 entry, prefix dropped).
    pub fn static_ip(&self) -> Option<String> {
        self.runtime_config
            .ips
            .iter()
            .map(|a| a.split('/').next().unwrap_or(a))
            .find(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
            .map(String::from)
    }

    /// The `network connect` that ADD sends; `ipam_ip` is the address a delegated IPAM
    /// plugin gave.
    pub fn connect_request(&self, env: &Env, ipam_ip: Option<String>) -> Result<Request, CniError> {
        Ok(Request::NetworkConnect {
            network: self.network().to_string(),
            sandbox: env.netns.clone().unwrap_or_default(),
            ip: ipam_ip.or_else(|| self.static_ip()),
            name: env.dns_name(),
            aliases: Vec::new(),
            ifname: Some(env.ifname.clone()),
            publish: self.publish()?,
            port_type: self.port_type.clone(),
            container_id: Some(env.container_id.clone()),
            allow_spoofing: self.allow_spoofing,
        })
    }
}

#[cfg(test)]
#[path = "tests/conf.rs"]
mod tests;
