//! The name rules of the control plane, one function per rule: bridge and network names,
//! interface names, DNS names, network namespace names. Every module that takes a name from a
//! request or the state file checks it here and nowhere else. Pure functions, no I/O; any
//! thread may call them.

use std::fmt;

/// Longest interface name the kernel takes (`IFNAMSIZ` less the NUL).
pub const MAX_IFNAME: usize = 15;

/// Longest DNS name (RFC 1035, without the trailing dot).
const MAX_DNS_NAME: usize = 253;

/// Longest DNS label.
const MAX_DNS_LABEL: usize = 63;

/// What a name given to [`name`] is for; each kind has its own length limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    /// A bridge (`add-br`).
    Bridge,
    /// A network (`network create`); its bridge is `net.NAME`, so it is shorter.
    Network,
    /// A service (`service create`): a DNS label too (`tasks.NAME` must fit).
    Service,
    /// A container runtime's container ID (`CNI_CONTAINERID`) kept with an endpoint.
    ContainerId,
    /// A host of a cluster (`xvsd --host-id`): a path component of its etcd keys.
    HostId,
}

impl Object {
    /// Longest name of this kind.
    pub const fn max_len(self) -> usize {
        match self {
            Object::Bridge => 64,
            Object::Network => 48,
            Object::Service => 57,
            Object::ContainerId => 256,
            Object::HostId => 64,
        }
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Object::Bridge => "bridge",
            Object::Network => "network",
            Object::Service => "service",
            Object::ContainerId => "container ID",
            Object::HostId => "host id",
        })
    }
}

/// A name its rule refuses; the message names the rule broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A bridge or network name that is empty or too long.
    #[error("invalid {kind} name {name:?}: must be 1-{max} characters", max = .kind.max_len())]
    Length {
        /// What the name is for.
        kind: Object,
        /// The name given.
        name: String,
    },
    /// A bridge or network name with a character outside `[A-Za-z0-9._-]`.
    #[error("invalid {kind} name {name:?}: use letters, digits, '-', '_' or '.'")]
    Characters {
        /// What the name is for.
        kind: Object,
        /// The name given.
        name: String,
    },
    /// An interface name that is empty or longer than the kernel takes.
    #[error("invalid interface name {0:?}: must be 1-{MAX_IFNAME} characters")]
    IfnameLength(String),
    /// An interface name the kernel refuses for its characters (`.`, `..`, `/`, `:`, NUL,
    /// white space).
    #[error("invalid interface name {0:?}")]
    Ifname(String),
    /// A DNS name with an empty or over-long label, or a character outside `[A-Za-z0-9_-]`.
    #[error("invalid DNS name {0:?}")]
    DnsName(String),
    /// A network namespace name that cannot be a single path component.
    #[error("invalid network namespace name {0:?}")]
    Namespace(String),
}

/// Checks a bridge or network name: 1 to `kind.max_len()` letters, digits, `-`, `_` or `.`.
pub fn name(kind: Object, name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > kind.max_len() {
        return Err(NameError::Length {
            kind,
            name: name.to_string(),
        });
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(NameError::Characters {
            kind,
            name: name.to_string(),
        });
    }
    Ok(())
}

/// Checks a Linux interface name as the kernel's `dev_valid_name` does: 1 to 15 bytes, not
/// `.` or `..`, no `/`, `:`, NUL or white space.
pub fn ifname(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > MAX_IFNAME {
        return Err(NameError::IfnameLength(name.to_string()));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| matches!(c, '/' | ':' | '\0') || c.is_whitespace())
    {
        return Err(NameError::Ifname(name.to_string()));
    }
    Ok(())
}

/// Checks a DNS name an endpoint registers (`--name`, `--alias`): dot-separated labels of 1 to
/// 63 letters, digits, `-` or `_`, 253 characters at most.
pub fn dns_name(name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_DNS_NAME
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_DNS_LABEL
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(NameError::DnsName(name.to_string()))
    }
}

/// Checks an `ip netns` name: a single path component (not empty, `.` or `..`; no `/` or NUL).
pub fn namespace_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(NameError::Namespace(name.to_string()));
    }
    Ok(())
}

#[cfg(test)]
#[path = "tests/validate.rs"]
mod tests;
