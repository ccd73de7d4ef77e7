//! A real fleet for tests: a `redis-server` and several `zvon` processes on loopback, started
//! and ended by the test (by PID), each with its own ports, roles and log file.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::die_with_parent::die_with_parent;
use crate::http_get;

/// The cluster secret every test node shares (unless a test gives one a wrong one).
pub const CLUSTER_SECRET: &str = "test-cluster-secret-0123456789abcdef";

fn free_tcp_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn free_udp_port() -> Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The `zvon` binary: `ZVON_BIN`, or `target/<profile>/zvon` next to this test's executable.
pub fn zvon_bin() -> Result<PathBuf> {
    if let Ok(bin) = std::env::var("ZVON_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe()?;
    // target/debug/deps/cluster-<hash> → target/debug/zvon
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("zvon"))
        .context("no target directory above the test executable")?;
    if !bin.exists() {
        bail!(
            "{} is missing: run `cargo build -p zvon-signaling --bin zvon` first (or set ZVON_BIN)",
            bin.display()
        );
    }
    Ok(bin)
}

fn log_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zvon-cluster-tests-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

fn kill(child: &mut Child, signal: i32) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: plain kill(2) on a child we started and have not reaped.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// A `redis-server` on a free loopback port, without persistence.
pub struct TestRedis {
    pub port: u16,
    /// Where nodes in other network namespaces reach it (see [`TestRedis::start_for_hosts`]).
    pub host_ip: Option<std::net::IpAddr>,
    child: Option<Child>,
}

impl TestRedis {
    pub fn start() -> Result<TestRedis> {
        let port = free_tcp_port()?;
        let mut redis = TestRedis {
            port,
            host_ip: None,
            child: None,
        };
        redis.restart()?;
        Ok(redis)
    }

    /// Also listening on `ip` (a veth address a test created), for nodes in namespaces.
    pub fn start_for_hosts(ip: std::net::IpAddr) -> Result<TestRedis> {
        let port = free_tcp_port()?;
        let mut redis = TestRedis {
            port,
            host_ip: Some(ip),
            child: None,
        };
        redis.restart()?;
        Ok(redis)
    }

    pub fn url_from_hosts(&self) -> String {
        match self.host_ip {
            Some(ip) => format!("redis://{ip}:{}", self.port),
            None => self.url(),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on the same port.
    pub fn restart(&mut self) -> Result<()> {
        // Clients from a test's namespace are not loopback: protected mode would refuse them.
        let (bind, protected) = match self.host_ip {
            Some(ip) => (format!("127.0.0.1 {ip}"), "no"),
            None => ("127.0.0.1".to_string(), "yes"),
        };
        let child = die_with_parent(&mut Command::new("redis-server"))
            .args(["--port", &self.port.to_string(), "--bind", &bind])
            .args(["--protected-mode", protected])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("redis-server is not installed (apt-get install redis-server)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                bail!("redis-server did not listen on {} within 5 s", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Kills it (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// One command through `redis-cli` (e.g. `GET key`), its output trimmed.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .context("redis-cli")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How a test node is started.
#[derive(Clone)]
pub struct NodeOptions {
    pub id: String,
    pub role: &'static str,
    pub secret: String,
    pub extra: Vec<String>,
    /// Run inside this network namespace, bound to this address (a separate host).
    pub host: Option<(String, std::net::IpAddr)>,
}

impl NodeOptions {
    pub fn new(id: &str, role: &'static str) -> Self {
        NodeOptions {
            id: id.to_string(),
            role,
            secret: CLUSTER_SECRET.to_string(),
            extra: vec![],
            host: None,
        }
    }
}

/// A network namespace joined to this one by a veth pair: a separate host at `10.77.N.2`,
/// reached from here through `10.77.N.1`. Deleted on drop.
pub struct TestHost {
    pub netns: String,
    pub ip: std::net::IpAddr,
    pub gateway: std::net::IpAddr,
    veth: String,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl TestHost {
    pub fn create(n: u8) -> Result<TestHost> {
        let tag = format!("{}{n}", std::process::id() % 10_000);
        let netns = format!("zvt-{tag}");
        let veth = format!("zvh{tag}");
        let peer = format!("zvn{tag}");
        let (host_ip, ns_ip) = (format!("10.77.{n}.1"), format!("10.77.{n}.2"));
        ip(&["netns", "add", &netns])?;
        let host = TestHost {
            netns: netns.clone(),
            ip: ns_ip.parse()?,
            gateway: host_ip.parse()?,
            veth: veth.clone(),
        };
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer])?;
        ip(&["link", "set", &peer, "netns", &netns])?;
        ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &veth])?;
        ip(&["link", "set", &veth, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &netns, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["addr", "add", &format!("{ns_ip}/24"), "dev", &peer])?;
        inside(&["link", "set", &peer, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(host)
    }

    /// Cuts the host off the network: every packet either way is dropped by a blackhole route
    /// (the links stay up and the addresses assigned; its process keeps running).
    pub fn cut(&self) -> Result<()> {
        ip(&["route", "add", "blackhole", &format!("{}/32", self.ip)])?;
        ip(&[
            "netns",
            "exec",
            &self.netns,
            "ip",
            "route",
            "add",
            "blackhole",
            &format!("{}/32", self.gateway),
        ])
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = ip(&["route", "del", "blackhole", &format!("{}/32", self.ip)]);
        let _ = ip(&["link", "del", &self.veth]);
        let _ = ip(&["netns", "del", &self.netns]);
    }
}

/// One `zvon serve --cluster` process.
pub struct ClusterNode {
    pub id: String,
    pub role: &'static str,
    pub http_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub quic_addr: SocketAddr,
    pub log: PathBuf,
    child: Option<Child>,
}

impl ClusterNode {
    /// Starts a node and waits until `/readyz` answers 200.
    pub async fn start(redis: &TestRedis, options: NodeOptions) -> Result<ClusterNode> {
        // In a namespace of its own every port is free; on loopback ask the kernel.
        let (ip, ports) = match &options.host {
            Some((_, ip)) => (ip.to_string(), [7350, 9350, 7370]),
            None => (
                "127.0.0.1".to_string(),
                [free_tcp_port()?, free_tcp_port()?, free_udp_port()?],
            ),
        };
        let http_addr: SocketAddr = format!("{ip}:{}", ports[0]).parse()?;
        let metrics_addr: SocketAddr = format!("{ip}:{}", ports[1]).parse()?;
        let quic_addr: SocketAddr = format!("{ip}:{}", ports[2]).parse()?;
        let redis_url = match &options.host {
            Some(_) => redis.url_from_hosts(),
            None => redis.url(),
        };
        let log = log_dir().join(format!("{}.log", options.id));
        let log_file = std::fs::File::create(&log)?;
        let mut command = match &options.host {
            Some((netns, _)) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", netns]).arg(zvon_bin()?);
                c
            }
            None => Command::new(zvon_bin()?),
        };
        let child = die_with_parent(&mut command)
            .arg("serve")
            .arg("--dev")
            .args(["--cluster", &redis_url])
            .args(["--node-id", &options.id])
            .args(["--role", options.role])
            .args(["--http-addr", &http_addr.to_string()])
            .args(["--metrics-addr", &metrics_addr.to_string()])
            .args(["--media-bind-ip", &ip, "--media-ip", &ip])
            .args(["--media-port", "0", "--workers", "1"])
            .args(["--quic-addr", &quic_addr.to_string()])
            .args(["--drain-timeout", "5s"])
            // As in ServerConfig::for_tests: exact forwarding checks with webrtc-rs peers
            // (no RTX, so str0m's probe padding would resend media packets as duplicates).
            .arg("--bandwidth-allocation=false")
            .args(&options.extra)
            .env("ZVON_CLUSTER_SECRET", &options.secret)
            .env(
                "RUST_LOG",
                std::env::var("ZVON_NODE_LOG").unwrap_or_else(|_| "info,str0m=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("starting zvon")?;
        let mut node = ClusterNode {
            id: options.id,
            role: options.role,
            http_addr,
            metrics_addr,
            quic_addr,
            log,
            child: Some(child),
        };
        node.wait_ready(Duration::from_secs(15)).await?;
        Ok(node)
    }

    /// Starts an all-in-one `zvon serve --dev` (no `--cluster`) on free loopback ports, one
    /// worker, with `extra` flags; waits until `/readyz` answers 200.
    pub async fn start_standalone(id: &str, extra: &[&str]) -> Result<ClusterNode> {
        let http_addr: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()?).parse()?;
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()?).parse()?;
        let log = log_dir().join(format!("{id}.log"));
        let log_file = std::fs::File::create(&log)?;
        let child = die_with_parent(&mut Command::new(zvon_bin()?))
            .args(["serve", "--dev"])
            .args(["--http-addr", &http_addr.to_string()])
            .args(["--metrics-addr", &metrics_addr.to_string()])
            .args(["--media-bind-ip", "127.0.0.1", "--media-ip", "127.0.0.1"])
            .args(["--media-port", "0", "--workers", "1"])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("ZVON_NODE_LOG").unwrap_or_else(|_| "info,str0m=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("starting zvon")?;
        let mut node = ClusterNode {
            id: id.to_string(),
            role: "both",
            http_addr,
            metrics_addr,
            quic_addr: http_addr,
            log,
            child: Some(child),
        };
        node.wait_ready(Duration::from_secs(15)).await?;
        Ok(node)
    }

    /// Sends SIGTERM and returns at once (see [`ClusterNode::wait_exit`]).
    pub fn send_sigterm(&mut self) {
        if let Some(child) = &mut self.child {
            kill(child, libc::SIGTERM);
        }
    }

    /// The exit status if the process has exited, without waiting.
    pub fn exited(&mut self) -> Result<Option<std::process::ExitStatus>> {
        match &mut self.child {
            Some(child) => Ok(child.try_wait()?),
            None => bail!("node {} is not running", self.id),
        }
    }

    /// Waits up to `limit` for the process to exit (after [`ClusterNode::send_sigterm`]).
    pub async fn wait_exit(&mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("node {} did not exit within {limit:?}", self.id);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!(
                        "node {} exited ({status}) before it was ready:\n{}",
                        self.id,
                        self.log_tail()
                    );
                }
            }
            if let Ok((200, _)) = http_get(self.metrics_addr, "/readyz").await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "node {} not ready within {limit:?}:\n{}",
                    self.id,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of the node's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (drain) and wait up to `limit` for the exit.
    pub async fn terminate(&mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("node {} is not running", self.id);
        };
        kill(&mut child, libc::SIGTERM);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("node {} did not exit within {limit:?} of SIGTERM", self.id);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Freezes the process (SIGSTOP): it holds its sockets but answers nothing.
    pub fn pause(&mut self) {
        if let Some(child) = &mut self.child {
            kill(child, libc::SIGSTOP);
        }
    }

    pub fn resume(&mut self) {
        if let Some(child) = &mut self.child {
            kill(child, libc::SIGCONT);
        }
    }

    /// One sample of a metric (the sum over its series matching `labels`), from `/metrics`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        let (status, body) = http_get(self.metrics_addr, "/metrics").await?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        Ok(sum_metric(&body, name, labels))
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            kill(child, libc::SIGCONT);
        }
        self.kill();
    }
}

/// Sums the samples of `name` whose labels include all of `labels`.
pub fn sum_metric(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, rest)) => (m, rest),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}
