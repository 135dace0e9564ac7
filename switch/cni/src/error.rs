//! The plugin's errors and their CNI codes: every failure is printed on stdout as the spec's
//! error object (`{"cniVersion","code","msg","details"}`) and the plugin exits 1. Codes 1-99
//! are the spec's; 100 and up are xvs-cni's own. Pure: no I/O.

use serde_json::{Value, json};

/// Why the plugin failed; the doc comment of each variant is its CNI code.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// 1: the config's `cniVersion` is not one this plugin speaks.
    #[error("incompatible CNI version {requested:?}: xvs-cni supports {supported}")]
    IncompatibleVersion {
        /// The version asked for.
        requested: String,
        /// The versions supported, comma-separated.
        supported: String,
    },
    /// 1: the verb is not defined for the config's `cniVersion`.
    #[error("{verb} needs cniVersion {needs} or later (the config has {has})")]
    VerbNeedsVersion {
        /// The verb.
        verb: &'static str,
        /// The first version defining it.
        needs: &'static str,
        /// The config's version.
        has: String,
    },
    /// 4: a CNI_* variable is missing or malformed.
    #[error("invalid environment variable {var}: {why}")]
    InvalidEnv {
        /// The variable.
        var: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// 5: reading stdin, talking to xvsd or looking into the namespace failed.
    #[error("{0}")]
    Io(String),
    /// 6: stdin is not JSON.
    #[error("cannot decode the network configuration on stdin: {0}")]
    Decode(serde_json::Error),
    /// 7: stdin is JSON but not a valid xvs-cni configuration.
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    /// 7: the configuration names a network xvsd does not have.
    #[error(
        "xvs network {network:?} does not exist: {why} (create it with `xvsctl network create {network}`)"
    )]
    NoSuchNetwork {
        /// The network.
        network: String,
        /// xvsd's own words.
        why: String,
    },
    /// 11: xvsd's control socket cannot be reached.
    #[error("xvsd is not running or not reachable: {0}")]
    XvsdUnavailable(String),
    /// 50: STATUS found the plugin unable to serve ADD.
    #[error("xvs-cni cannot serve ADD: {0}")]
    NotAvailable(String),
    /// 100: xvsd refused the request; its message says why.
    #[error("xvsd refused: {0}")]
    Refused(String),
    /// 101: CHECK found the attachment not as it should be.
    #[error("check failed: {0}")]
    CheckFailed(String),
    /// The delegated IPAM plugin failed: its own code and message are passed on.
    #[error("ipam plugin {plugin}: {msg}")]
    Ipam {
        /// The plugin's name.
        plugin: String,
        /// Its code (or 5 when it did not print one).
        code: u32,
        /// Its message.
        msg: String,
        /// Its details.
        details: String,
    },
}

impl CniError {
    /// The CNI error code.
    pub fn code(&self) -> u32 {
        match self {
            CniError::IncompatibleVersion { .. } | CniError::VerbNeedsVersion { .. } => 1,
            CniError::InvalidEnv { .. } => 4,
            CniError::Io(_) => 5,
            CniError::Decode(_) => 6,
            CniError::InvalidConfig(_) | CniError::NoSuchNetwork { .. } => 7,
            CniError::XvsdUnavailable(_) => 11,
            CniError::NotAvailable(_) => 50,
            CniError::Refused(_) => 100,
            CniError::CheckFailed(_) => 101,
            CniError::Ipam { code, .. } => *code,
        }
    }

    /// The spec's error object, in `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let details = match self {
            CniError::Ipam { details, .. } => details.clone(),
            CniError::XvsdUnavailable(_) => "start xvsd, or point the config's \"socket\" (or \
                 XVS_SOCKET) at its control socket"
                .to_string(),
            _ => String::new(),
        };
        let msg = self.to_string();
        let mut v = json!({"cniVersion": cni_version, "code": self.code(), "msg": msg});
        if !details.is_empty() {
            v["details"] = Value::String(details);
        }
        v
    }
}

#[cfg(test)]
#[path = "tests/error.rs"]
mod tests;
