//! xvsd: the xvs daemon. Starts the datapath workers, restores the saved configuration,
//! serves the control socket (and optionally metrics), and exits cleanly on SIGTERM/SIGINT.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use xvs_switch::datapath::{Datapath, DatapathConfig};
use xvs_vswitchd::{cluster, config, control, docker, error, server, uplink, validate};

/// The xvs userspace virtual switch daemon.
#[derive(Debug, Parser)]
#[command(name = "xvsd", version, about)]
struct Args {
    /// Control socket path (env XVS_SOCKET overrides the default).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Directory holding the saved configuration.
    #[arg(long, default_value = "/var/lib/xvs")]
    state_dir: PathBuf,
    /// Datapath worker threads (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    workers: Option<u32>,
    /// Frames in each worker's pool (the AF_XDP UMEM), 4 KiB each.
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u32).range(1024..=262144))]
    pool_frames: u32,
    /// Serve Prometheus metrics over HTTP on ADDR:PORT.
    #[arg(long)]
    metrics: Option<String>,
    /// Forward DNS names no network knows to this server (IP or IP:PORT).
    #[arg(long, value_parser = parse_upstream)]
    dns_upstream: Option<std::net::SocketAddr>,
    /// Connections tracked at most (all workers together).
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u32).range(1024..=(1 << 24)))]
    conntrack_max: u32,
    /// Connections one endpoint may hold at most (as OVS zone limits).
    #[arg(long, default_value_t = 1 << 16, value_parser = clap::value_parser!(u32).range(1..=(1 << 24)))]
    conntrack_endpoint_limit: u32,
    /// Serve Docker's remote network driver and IPAM driver on /run/docker/plugins/NAME.sock.
    #[arg(long)]
    docker_plugin: bool,
    /// The plugin's name (`docker network create -d NAME`).
    #[arg(long, default_value = "xvs", value_parser = parse_plugin_name)]
    docker_plugin_name: String,
    /// Share overlay networks, their addresses and endpoints with other hosts through etcd.
    #[arg(long, value_name = "etcd://HOST:PORT[,HOST:PORT...]", value_parser = parse_etcd, requires = "host_id")]
    cluster: Option<EtcdEndpoints>,
    /// This host's name in the cluster (unique among its hosts).
    #[arg(long, value_parser = parse_host_id, requires = "cluster")]
    host_id: Option<String>,
    /// The cluster's key prefix in etcd.
    #[arg(long, default_value = cluster::DEFAULT_PREFIX, value_parser = cluster::parse_prefix)]
    cluster_prefix: String,
    /// Seconds this host's entries outlive it (its etcd lease's TTL).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=3600))]
    lease_ttl: u32,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn parse_upstream(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse::<std::net::SocketAddr>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
        .map_err(|_| format!("{s:?} is not an IP address or IP:PORT"))
}

/// `--cluster`'s etcd endpoints.
#[derive(Debug, Clone)]
struct EtcdEndpoints(Vec<String>);

fn parse_etcd(s: &str) -> Result<EtcdEndpoints, String> {
    cluster::parse_cluster(s).map(EtcdEndpoints)
}

fn parse_host_id(s: &str) -> Result<String, String> {
    validate::name(validate::Object::HostId, s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

fn parse_plugin_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !s.starts_with('.');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a plugin name: 1-64 letters, digits, '-', '_' or '.'"
        ))
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // The etcd client's transport (h2, tower, tonic) logs every frame at debug: kept at info.
    let directives = if args.log_level.contains('=') {
        args.log_level.clone()
    } else {
        format!(
            "{},h2=info,tower=info,tonic=info,hyper_util=info",
            args.log_level
        )
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xvsd: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Why xvsd could not start, or stopped uncleanly.
#[derive(Debug, thiserror::Error)]
enum StartError {
    /// The state dir cannot be used.
    #[error(transparent)]
    Store(#[from] config::StoreError),
    /// The control runtime could not be built.
    #[error("cannot start the control runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The control socket cannot be served.
    #[error(transparent)]
    Socket(#[from] server::BindError),
    /// The datapath's workers could not start.
    #[error("cannot start datapath workers: {0}")]
    Datapath(#[source] std::io::Error),
    /// The saved configuration could not be restored.
    #[error(transparent)]
    Restore(#[from] error::Error),
    /// A blocking control task failed.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
    /// The signal handlers could not be installed.
    #[error(transparent)]
    Signal(std::io::Error),
    /// The cluster's token could not be kept in the state dir.
    #[error("cannot keep the cluster token in the state dir: {0}")]
    Token(#[source] std::io::Error),
    /// The cluster could not be joined.
    #[error("cannot join the cluster: {0}")]
    Cluster(#[from] cluster::session::SessionError),
}

fn run(args: Args) -> Result<(), StartError> {
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(xvs_ctl::protocol::socket_path()));
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
    });
    let store = config::Store::open(&args.state_dir)?;
    let cluster = match (&args.cluster, &args.host_id) {
        (Some(eps), Some(host)) => Some(cluster::Handle::new(cluster::ClusterOptions {
            endpoints: eps.0.clone(),
            host_id: host.clone(),
            prefix: args.cluster_prefix.clone(),
            lease_ttl: args.lease_ttl,
            token: cluster::token(&args.state_dir).map_err(StartError::Token)?,
        })),
        _ => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    rt.block_on(async move {
        let listener = server::bind(&socket)?;
        let _guard = server::SocketGuard(socket.clone());
        let plugin = if args.docker_plugin {
            let path = docker::serve::socket_of(&args.docker_plugin_name);
            let l = docker::serve::bind_plugin(&args.docker_plugin_name)?;
            Some((l, server::SocketGuard(path)))
        } else {
            None
        };
        let dp = Datapath::start(DatapathConfig {
            workers,
            pool_frames: args.pool_frames,
            umem: true,
        })
        .map_err(StartError::Datapath)?;
        if let Some(why) = dp.afxdp_unavailable() {
            tracing::warn!("AF_XDP ports unavailable: {why}");
        }
        let options = control::Options {
            dns_upstream: args.dns_upstream,
            conntrack: uplink::ConntrackLimits {
                max: args.conntrack_max,
                per_endpoint: args.conntrack_endpoint_limit,
            },
            cluster: cluster.as_ref().map(|(h, _)| h.clone()),
        };
        let switch =
            tokio::task::spawn_blocking(move || control::Switch::restore(store, dp, options))
                .await??;
        let shared: server::Shared = Arc::new(Mutex::new(switch));
        // Joined before the socket answers: a host that cannot reach etcd (or whose id is
        // taken) does not start.
        let cluster_tasks = match cluster {
            Some((handle, cmds)) => {
                let (ctx, dirs) = cluster::session::Ctx::new(handle);
                let first = match cluster::session::Session::open(&ctx, 0).await {
                    Ok(s) => s,
                    Err(e) => {
                        let sw = shared.clone();
                        tokio::task::spawn_blocking(move || {
                            if let Ok(mut s) = sw.lock() {
                                s.shutdown();
                            }
                        })
                        .await?;
                        return Err(e.into());
                    }
                };
                Some((
                    tokio::spawn(cluster::session::run(ctx, first, cmds)),
                    tokio::spawn(control::apply_directories(dirs, shared.clone())),
                ))
            }
            None => None,
        };
        tracing::info!(
            "xvsd listening on {} with {workers} workers, state in {}",
            socket.display(),
            args.state_dir.display()
        );
        let server = tokio::spawn(server::serve(listener, shared.clone()));
        let (plugin, _plugin_guard) = match plugin {
            Some((l, guard)) => {
                tracing::info!("Docker plugin listening on {}", guard.0.display());
                (
                    Some(tokio::spawn(docker::serve::serve(l, shared.clone()))),
                    Some(guard),
                )
            }
            None => (None, None),
        };
        if let Some(addr) = args.metrics.clone() {
            tokio::spawn(server::serve_metrics(addr, shared.clone()));
        }
        let retry = {
            let sw = shared.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    let sw = sw.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        if let Ok(mut s) = sw.lock() {
                            s.retry();
                        }
                    })
                    .await;
                }
            })
        };
        let health = {
            let sw = shared.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let sw = sw.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        if let Ok(mut s) = sw.lock() {
                            s.check_health();
                        }
                    })
                    .await;
                }
            })
        };
        let mut term = signal(SignalKind::terminate()).map_err(StartError::Signal)?;
        let mut int = signal(SignalKind::interrupt()).map_err(StartError::Signal)?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        server.abort();
        if let Some(p) = plugin {
            p.abort();
        }
        retry.abort();
        health.abort();
        if let Some((session, applier)) = cluster_tasks {
            session.abort();
            applier.abort();
        }
        let sw = shared.clone();
        tokio::task::spawn_blocking(move || {
            if let Ok(mut s) = sw.lock() {
                s.shutdown();
            }
        })
        .await?;
        tracing::info!("xvsd stopped");
        Ok::<(), StartError>(())
    })
}
