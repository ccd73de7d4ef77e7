//! `zvon`: the all-in-one server (signaling with the media node embedded) and its tools.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;
use tracing::{info, warn};
use zvon_signaling::client_ip::{IpNet, TrustedProxies};
use zvon_signaling::origin::{AllowedOrigins, Origin};
use zvon_signaling::token::{self, Claims};
use zvon_signaling::turn::TurnConfig;
use zvon_signaling::{ApiKey, ClusterConfig, Role, ServerConfig};

#[derive(Parser)]
#[command(
    name = "zvon",
    version,
    about = "Zvon: a real-time voice and video media server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: all-in-one by default, or a node of a fleet with --cluster.
    Serve(Box<ServeArgs>),
    /// Mint an access token for an app or script.
    Token(TokenArgs),
    /// Exit 0 if the server on this host answers GET /healthz (for a container HEALTHCHECK).
    Healthcheck(HealthcheckArgs),
    /// Print a fresh random cluster secret (give the same one to every node of a fleet).
    ClusterSecret,
}

#[derive(Args)]
struct HealthcheckArgs {
    /// The server's metrics listener; 0.0.0.0 / [::] mean this host.
    #[arg(long, env = "ZVON_METRICS_ADDR", default_value = "127.0.0.1:9350")]
    metrics_addr: SocketAddr,
}

#[derive(Args)]
struct KeyArgs {
    /// TOML config file (same keys as the flags, in snake_case).
    #[arg(long, env = "ZVON_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, env = "ZVON_API_KEY")]
    api_key: Option<String>,
    #[arg(long, env = "ZVON_API_SECRET", hide_env_values = true)]
    api_secret: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    keys: KeyArgs,
    /// Signaling HTTP + WebSocket listener.
    #[arg(long, env = "ZVON_HTTP_ADDR")]
    http_addr: Option<SocketAddr>,
    /// Private listener for /metrics, /healthz and /readyz (keep it off the public internet).
    #[arg(long, env = "ZVON_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Address the media UDP sockets bind to.
    #[arg(long, env = "ZVON_MEDIA_BIND_IP")]
    media_bind_ip: Option<IpAddr>,
    /// Address put in ICE candidates: this machine's public IP when clients are elsewhere.
    #[arg(long, env = "ZVON_MEDIA_IP")]
    media_ip: Option<IpAddr>,
    /// First media UDP port; worker i uses port + i.
    #[arg(long, env = "ZVON_MEDIA_PORT")]
    media_port: Option<u16>,
    /// Media worker threads (0 = one per core).
    #[arg(long, env = "ZVON_WORKERS")]
    workers: Option<usize>,
    #[arg(long, env = "ZVON_MAX_PARTICIPANTS")]
    max_participants: Option<usize>,
    /// How long an empty room lives on (e.g. 0s, 30s, 5m).
    #[arg(long, env = "ZVON_EMPTY_TIMEOUT", value_parser = parse_duration)]
    empty_timeout: Option<Duration>,
    /// How long a participant whose socket dropped may resume (e.g. 10s).
    #[arg(long, env = "ZVON_RECONNECT_GRACE", value_parser = parse_duration)]
    reconnect_grace: Option<Duration>,
    /// Dev mode: anyone can get a token from /api/dev-token. Never in production.
    #[arg(long, env = "ZVON_DEV")]
    dev: bool,
    /// Where call events are POSTed, signed with the API secret (plain http://).
    #[arg(long, env = "ZVON_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// How long a call rings before it is missed (e.g. 45s).
    #[arg(long, env = "ZVON_RING_TIMEOUT", value_parser = parse_duration)]
    ring_timeout: Option<Duration>,
    /// A callee already in a call gets the new call as "waiting" instead of answering busy.
    #[arg(long, env = "ZVON_CALL_WAITING")]
    call_waiting: bool,
    /// Fit each subscriber's video layers into its TWCC bandwidth estimate: audio first, then
    /// the dominant speaker and screen shares, then the rest; video below the lowest layer
    /// pauses. On by default; `--bandwidth-allocation=false` forwards what each subscriber's
    /// tile size asks for, whatever its link.
    #[arg(long, env = "ZVON_BANDWIDTH_ALLOCATION", num_args = 0..=1, default_missing_value = "true")]
    bandwidth_allocation: Option<bool>,
    /// Also accept media over TCP on each media port (ICE-TCP passive candidates, RFC 6544)
    /// for clients whose network blocks UDP and that have no TURN server. Off by default.
    #[arg(long, env = "ZVON_ICE_TCP", num_args = 0..=1, default_missing_value = "true")]
    ice_tcp: Option<bool>,
    /// A room's new participants go to the least-loaded media worker once the room's worker
    /// is this busy (0..1; above 1: rooms never span workers).
    #[arg(long, env = "ZVON_MEDIA_SPREAD_BUSY")]
    media_spread_busy: Option<f64>,
    /// Also spread a room over workers once it has this many participants (0: by load only).
    #[arg(long, env = "ZVON_MEDIA_SPREAD_AFTER")]
    media_spread_after: Option<usize>,
    /// Reverse proxies (IPs or CIDR networks, comma-separated) whose X-Forwarded-For /
    /// Forwarded headers name the client; from anyone else those headers are ignored.
    #[arg(long, env = "ZVON_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<IpNet>,
    /// Web origins (scheme://host[:port], comma-separated) whose pages may open /rtc besides
    /// the server's own; other browser pages get HTTP 403.
    #[arg(long, env = "ZVON_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Vec<Origin>,
    /// Record rooms into this directory (a recording per subdirectory: a WebM file per
    /// track and a manifest.json); without it rooms cannot be recorded.
    #[arg(long, env = "ZVON_RECORD_DIR")]
    record_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    turn: TurnArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// TURN relays for clients whose network blocks UDP to the media server (docs/turn.md).
#[derive(Args)]
struct TurnArgs {
    /// A TURN server clients may relay through, e.g. turn:turn.example.org:3478?transport=udp,
    /// turns:turn.example.org:443?transport=tcp (repeat the flag, or comma-separate).
    #[arg(long = "turn-url", env = "ZVON_TURN_URLS", value_delimiter = ',')]
    turn_urls: Vec<String>,
    /// The TURN server's shared secret (coturn `static-auth-secret` with `use-auth-secret`).
    #[arg(long, env = "ZVON_TURN_SECRET", hide_env_values = true)]
    turn_secret: Option<String>,
    /// How long the TURN credentials in `joined` stay valid (default 6h).
    #[arg(long, env = "ZVON_TURN_TTL", value_parser = parse_duration)]
    turn_ttl: Option<Duration>,
}

/// Cluster mode (docs/cluster.md): without `--cluster` the server runs all-in-one.
#[derive(Args)]
struct ClusterArgs {
    /// Join a fleet through this Redis, e.g. redis://10.0.0.2:6379.
    #[arg(long = "cluster", env = "ZVON_CLUSTER", value_name = "REDIS_URL")]
    redis_url: Option<String>,
    /// What this process runs: both halves, or only signaling or only media.
    #[arg(long, env = "ZVON_ROLE", value_enum)]
    role: Option<Role>,
    /// Unique name in the fleet (default: host name and HTTP port).
    #[arg(long, env = "ZVON_NODE_ID")]
    node_id: Option<String>,
    /// Shared by every node; authenticates the QUIC links (`zvon cluster-secret` makes one).
    #[arg(long, env = "ZVON_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
    /// Where a media node's QUIC link listens.
    #[arg(long, env = "ZVON_QUIC_ADDR")]
    quic_addr: Option<SocketAddr>,
    /// Where other nodes dial this node's QUIC link (default: --quic-addr with --media-ip).
    #[arg(long, env = "ZVON_ADVERTISE_QUIC")]
    advertise_quic: Option<SocketAddr>,
    /// Base URL other signaling nodes reach this one at (default http://<--http-addr>).
    #[arg(long, env = "ZVON_ADVERTISE_HTTP")]
    advertise_http: Option<String>,
    /// How long a media node keeps forwarding for participants whose signaling node is gone.
    #[arg(long, env = "ZVON_ORPHAN_GRACE", value_parser = parse_duration)]
    orphan_grace: Option<Duration>,
    /// How long SIGTERM waits before the process exits: for media and rooms to move to other
    /// nodes (cluster), or for participants to leave (all-in-one; then the rest is closed).
    #[arg(long, env = "ZVON_DRAIN_TIMEOUT", value_parser = parse_duration)]
    drain_timeout: Option<Duration>,
    /// A room's new participants go to another media node once each of the room's media
    /// nodes holds this many of its participants; the nodes cascade media (0: one node per
    /// room).
    #[arg(long, env = "ZVON_ROOM_SPREAD_AFTER")]
    room_spread_after: Option<usize>,
    /// Also send a room's next participant to another media node once the room's node is
    /// this busy (busiest worker, 0..1; above 1: never by load).
    #[arg(long, env = "ZVON_ROOM_SPREAD_BUSY")]
    room_spread_busy: Option<f32>,
    /// Congestion controller of the QUIC cascade between media nodes: cubic or bbr
    /// (BENCHMARKS.md compares them on a lossy link).
    #[arg(long, env = "ZVON_CASCADE_CONGESTION")]
    cascade_congestion: Option<zvon_sfu::cascade::Congestion>,
}

#[derive(Args)]
struct TokenArgs {
    #[command(flatten)]
    keys: KeyArgs,
    /// Room the token joins (omit for device and server-API tokens).
    #[arg(long, default_value = "")]
    room: String,
    #[arg(long)]
    identity: String,
    #[arg(long)]
    name: Option<String>,
    /// Validity, e.g. 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
    #[arg(long)]
    no_publish: bool,
    #[arg(long)]
    no_subscribe: bool,
    #[arg(long)]
    no_publish_data: bool,
    #[arg(long)]
    admin: bool,
    #[arg(long)]
    hidden: bool,
    /// A device token for calls: the device id of this identity.
    #[arg(long)]
    device: Option<String>,
    /// A token for the app backend's server API (/api/calls).
    #[arg(long)]
    server_api: bool,
    /// Sign with the dev key (matches a server started with --dev and no key).
    #[arg(long)]
    dev: bool,
}

/// The config file; every field optional, flags and environment win over it.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    api_key: Option<String>,
    api_secret: Option<String>,
    http_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    media_bind_ip: Option<IpAddr>,
    media_ip: Option<IpAddr>,
    media_port: Option<u16>,
    workers: Option<usize>,
    max_participants: Option<usize>,
    empty_timeout_secs: Option<u64>,
    webhook_url: Option<String>,
    ring_timeout_secs: Option<u64>,
    call_waiting: Option<bool>,
    bandwidth_allocation: Option<bool>,
    ice_tcp: Option<bool>,
    media_spread_busy: Option<f64>,
    media_spread_after: Option<usize>,
    record_dir: Option<std::path::PathBuf>,
    reconnect_grace_secs: Option<u64>,
    dev: Option<bool>,
    cluster: Option<String>,
    role: Option<String>,
    node_id: Option<String>,
    cluster_secret: Option<String>,
    quic_addr: Option<SocketAddr>,
    advertise_quic: Option<SocketAddr>,
    advertise_http: Option<String>,
    orphan_grace_secs: Option<u64>,
    drain_timeout_secs: Option<u64>,
    room_spread_after: Option<usize>,
    room_spread_busy: Option<f32>,
    cascade_congestion: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    allowed_origins: Option<Vec<String>>,
    turn_urls: Option<Vec<String>>,
    turn_secret: Option<String>,
    turn_ttl_secs: Option<u64>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("bad duration unit in {s:?} (use s, m, h, d)")),
    };
    Ok(Duration::from_secs(secs))
}

/// A list from the config file, each entry parsed like its flag's values.
fn parse_list<T>(list: &[String], key: &str) -> Result<Vec<T>>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    list.iter()
        .map(|s| s.parse::<T>().with_context(|| format!("config key {key}")))
        .collect()
}

fn load_file(path: &Option<PathBuf>) -> Result<FileConfig> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn api_key(keys: &KeyArgs, file: &FileConfig, dev: bool) -> Result<ApiKey> {
    match (keys.api_key.clone().or(file.api_key.clone()), keys.api_secret.clone().or(file.api_secret.clone())) {
        (Some(key), Some(secret)) => Ok(ApiKey { key, secret }),
        (None, None) if dev => Ok(ApiKey { key: ServerConfig::DEV_API_KEY.into(), secret: ServerConfig::DEV_API_SECRET.into() }),
        (None, None) => bail!("an API key and secret are required (--api-key/--api-secret or ZVON_API_KEY/ZVON_API_SECRET); use --dev to try Zvon locally"),
        _ => bail!("give both --api-key and --api-secret"),
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let file = load_file(&args.keys.config)?;
    let dev = args.dev || file.dev.unwrap_or(false);
    let mut config = ServerConfig {
        dev_mode: dev,
        ..ServerConfig::default()
    };
    config.api_keys = vec![api_key(&args.keys, &file, dev)?];
    if let Some(a) = args.http_addr.or(file.http_addr) {
        config.http_addr = a;
    }
    if let Some(a) = args.metrics_addr.or(file.metrics_addr) {
        config.metrics_addr = a;
    }
    if let Some(ip) = args.media_bind_ip.or(file.media_bind_ip) {
        config.sfu.bind_ip = ip;
    }
    if let Some(ip) = args.media_ip.or(file.media_ip) {
        config.sfu.advertised_ip = ip;
    }
    if let Some(p) = args.media_port.or(file.media_port) {
        config.sfu.port_base = p;
    }
    if let Some(w) = args.workers.or(file.workers) {
        config.sfu.workers = w;
    }
    if let Some(m) = args.max_participants.or(file.max_participants) {
        config.limits.max_participants = m;
    }
    if let Some(t) = args
        .empty_timeout
        .or(file.empty_timeout_secs.map(Duration::from_secs))
    {
        config.limits.empty_timeout = t;
    }
    if let Some(t) = args
        .reconnect_grace
        .or(file.reconnect_grace_secs.map(Duration::from_secs))
    {
        config.limits.reconnect_grace = t;
    }
    config.webhook_url = args.webhook_url.or(file.webhook_url.clone());
    if let Some(t) = args
        .ring_timeout
        .or(file.ring_timeout_secs.map(Duration::from_secs))
    {
        config.calls.ring_timeout = t;
    }
    if let Some(on) = args.ice_tcp.or(file.ice_tcp) {
        config.sfu.ice_tcp = on;
    }
    if let Some(on) = args.bandwidth_allocation.or(file.bandwidth_allocation) {
        config.sfu.bandwidth_allocation = on;
    }
    if let Some(b) = args.media_spread_busy.or(file.media_spread_busy) {
        config.sfu.spread_busy = b;
    }
    if let Some(n) = args.media_spread_after.or(file.media_spread_after) {
        config.sfu.spread_after = n;
    }
    if let Some(dir) = args.record_dir.or(file.record_dir.clone()) {
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("--record-dir {}: {e}", dir.display()))?;
        info!(record_dir = %dir.display(), "rooms can be recorded");
        config.sfu.record_dir = Some(dir);
    }
    if args.call_waiting || file.call_waiting.unwrap_or(false) {
        config.calls.busy_policy = zvon_signaling::calls::BusyPolicy::CallWaiting;
    }
    config.cluster = cluster_config(&args.cluster, &file, config.http_addr)?;
    let drain_timeout = args
        .cluster
        .drain_timeout
        .or(file.drain_timeout_secs.map(Duration::from_secs))
        .unwrap_or(DEFAULT_DRAIN_TIMEOUT);
    let trusted_proxies = match (args.trusted_proxies, &file.trusted_proxies) {
        (flag, _) if !flag.is_empty() => flag,
        (_, Some(list)) => parse_list(list, "trusted_proxies")?,
        _ => vec![],
    };
    if !trusted_proxies.is_empty() {
        let shown: Vec<String> = trusted_proxies.iter().map(ToString::to_string).collect();
        info!(
            trusted_proxies = ?shown,
            "client addresses of these proxies' requests come from X-Forwarded-For / Forwarded"
        );
    }
    config.trusted_proxies = TrustedProxies::new(trusted_proxies);
    let allowed_origins = match (args.allowed_origins, &file.allowed_origins) {
        (flag, _) if !flag.is_empty() => flag,
        (_, Some(list)) => parse_list(list, "allowed_origins")?,
        _ => vec![],
    };
    config.allowed_origins = AllowedOrigins::new(allowed_origins);
    config.turn = turn_config(args.turn, &file)?;
    if let Some(turn) = &config.turn {
        // The URLs only: the secret never reaches a log.
        info!(turn_urls = ?turn.urls, ttl_secs = turn.ttl.as_secs(), "clients get TURN credentials");
    }
    if dev {
        warn!("DEV MODE: /api/dev-token gives a token to anyone who asks. Never run this in production.");
        if config.api_keys[0].key == ServerConfig::DEV_API_KEY {
            warn!("DEV MODE: using the built-in dev API key/secret");
        }
    }
    let server = zvon_signaling::start(config.clone()).await?;
    let media: Vec<String> = server.media_addrs.iter().map(|a| a.to_string()).collect();
    info!(media_sockets = ?media, advertised_ip = %config.sfu.advertised_ip, "media workers listening");
    info!(
        "metrics, health and readiness on http://{}/metrics, /healthz, /readyz",
        server.metrics_addr
    );
    match &config.cluster {
        Some(c) if !c.role.signaling() => println!(
            "Zvon media node {} is running in the fleet at {}.",
            c.node_id, c.redis_url
        ),
        Some(c) => println!(
            "Zvon node {} is running in the fleet at {}. Open http://{}/ in two browser tabs to call.",
            c.node_id, c.redis_url, server.http_addr
        ),
        None => println!(
            "Zvon is running. Open http://{}/ in two browser tabs to call.",
            server.http_addr
        ),
    }
    wait_for_stop_signal().await?;
    if config.cluster.is_some() {
        info!("draining: rooms and media move to other nodes");
        server.drain().await;
    } else {
        info!("draining; stop again (Ctrl-C) to skip the wait");
        tokio::select! {
            () = server.drain_standalone(drain_timeout) => {}
            stop = wait_for_stop_signal() => {
                stop?;
                warn!("stopped again: not waiting for participants to leave");
            }
        }
    }
    info!("shutting down");
    server.shutdown().await;
    Ok(())
}

fn cluster_config(
    args: &ClusterArgs,
    file: &FileConfig,
    http_addr: SocketAddr,
) -> Result<Option<ClusterConfig>> {
    let Some(redis_url) = args.redis_url.clone().or(file.cluster.clone()) else {
        return Ok(None);
    };
    let secret = args
        .cluster_secret
        .clone()
        .or(file.cluster_secret.clone())
        .context("--cluster needs --cluster-secret (or ZVON_CLUSTER_SECRET); `zvon cluster-secret` makes one")?;
    let node_id = args
        .node_id
        .clone()
        .or(file.node_id.clone())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), http_addr.port())
        });
    let mut cluster = ClusterConfig::new(&redis_url, &node_id, &secret);
    let role = match (args.role, file.role.as_deref()) {
        (Some(role), _) => role,
        (None, Some(name)) => Role::from_str(name, true)
            .map_err(|_| anyhow::anyhow!("role must be both, signaling or media, not {name:?}"))?,
        (None, None) => Role::Both,
    };
    cluster.role = role;
    if let Some(a) = args.quic_addr.or(file.quic_addr) {
        cluster.quic_addr = a;
    }
    cluster.advertise_quic = args.advertise_quic.or(file.advertise_quic);
    cluster.advertise_http = args.advertise_http.clone().or(file.advertise_http.clone());
    if let Some(t) = args
        .orphan_grace
        .or(file.orphan_grace_secs.map(Duration::from_secs))
    {
        cluster.orphan_grace = t;
    }
    if let Some(t) = args
        .drain_timeout
        .or(file.drain_timeout_secs.map(Duration::from_secs))
    {
        cluster.drain_timeout = t;
    }
    if let Some(n) = args.room_spread_after.or(file.room_spread_after) {
        cluster.room_spread_after = n;
    }
    if let Some(b) = args.room_spread_busy.or(file.room_spread_busy) {
        cluster.room_spread_busy = b;
    }
    if let Some(c) = args.cascade_congestion {
        cluster.cascade_congestion = c;
    } else if let Some(c) = &file.cascade_congestion {
        cluster.cascade_congestion = c.parse().map_err(anyhow::Error::msg)?;
    }
    Ok(Some(cluster))
}

fn turn_config(args: TurnArgs, file: &FileConfig) -> Result<Option<TurnConfig>> {
    let urls = match (args.turn_urls, &file.turn_urls) {
        (flag, _) if !flag.is_empty() => flag,
        (_, Some(list)) => list.clone(),
        _ => vec![],
    };
    let secret = args.turn_secret.or(file.turn_secret.clone());
    let ttl = args
        .turn_ttl
        .or(file.turn_ttl_secs.map(Duration::from_secs))
        .unwrap_or(zvon_signaling::turn::DEFAULT_TTL);
    Ok(TurnConfig::new(urls, secret, ttl)?)
}

fn cluster_secret() {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    println!("{}", hex::encode(bytes));
}

/// All-in-one drain on SIGTERM without `--drain-timeout`: what the cluster default is.
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Ctrl-C, or SIGTERM from systemd / a container runtime.
async fn wait_for_stop_signal() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// Plain std HTTP/1.0: the runtime image has no curl, and a probe needs no async runtime.
fn healthcheck(args: HealthcheckArgs) -> Result<()> {
    use std::io::{Read, Write};
    let mut addr = args.metrics_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let timeout = Duration::from_secs(2);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET /healthz HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut reply = Vec::new();
    stream.take(4096).read_to_end(&mut reply)?;
    let status = reply.split(|&b| b == b'\r').next().unwrap_or_default();
    let status = String::from_utf8_lossy(status);
    if !(status.starts_with("HTTP/1.") && status.get(9..12) == Some("200")) {
        bail!("http://{addr}/healthz answered {status:?}");
    }
    Ok(())
}

fn mint_token(args: TokenArgs) -> Result<()> {
    let file = load_file(&args.keys.config)?;
    let key = api_key(&args.keys, &file, args.dev)?;
    let mut claims = Claims::new(&key.key, &args.room, &args.identity, args.ttl);
    claims.name = args.name;
    claims.grants.can_publish = !args.no_publish;
    claims.grants.can_subscribe = !args.no_subscribe;
    claims.grants.can_publish_data = !args.no_publish_data;
    claims.grants.room_admin = args.admin;
    claims.grants.hidden = args.hidden;
    claims.grants.server_api = args.server_api;
    claims.device = args.device;
    println!("{}", token::mint(&claims, &key.secret)?);
    Ok(())
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,str0m=warn,dimpl=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Token(args) => mint_token(args),
        Command::Healthcheck(args) => healthcheck(args),
        Command::ClusterSecret => {
            cluster_secret();
            Ok(())
        }
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?
            .block_on(serve(*args)),
    }
}
