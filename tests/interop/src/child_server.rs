//! A release `zvon serve --dev` started as a child process, for the benchmarks in `src/bin/`
//! that must read the server's own memory, file descriptors and CPU from `/proc/<pid>`
//! (an in-process [`crate::TestServer`] would mix the harness's numbers into the server's).

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::TestParticipant;

/// The server child process; killed by PID when dropped (also on error or panic).
pub struct ChildServer {
    child: Child,
    pub pid: u32,
    pub http_addr: SocketAddr,
    /// The private listener: `/metrics`, `/healthz`, `/readyz`.
    pub metrics_addr: SocketAddr,
    log: PathBuf,
}

impl ChildServer {
    /// Starts `$ZVON_BIN` (default `target/release/zvon`) on free loopback ports with one
    /// media worker, plus `extra` arguments; `name` tags its log file.
    pub fn spawn(name: &str, extra: &[&str]) -> Result<ChildServer> {
        let bin = std::env::var("ZVON_BIN").unwrap_or_else(|_| "target/release/zvon".into());
        let http_port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("pick a free TCP port")?
            .port();
        let media_port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .context("pick a free UDP port")?
            .port();
        let metrics_port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("pick a free TCP port")?
            .port();
        let http_addr = SocketAddr::from(([127, 0, 0, 1], http_port));
        let metrics_addr = SocketAddr::from(([127, 0, 0, 1], metrics_port));
        let log = std::env::temp_dir().join(format!("zvon-{name}-{}.log", std::process::id()));
        let log_file = std::fs::File::create(&log).context("create server log")?;
        let mut cmd = Command::new(&bin);
        // Killed with the benchmark or test that started it, even by SIGKILL (no Drop then).
        crate::die_with_parent::die_with_parent(&mut cmd);
        cmd.args([
            "serve",
            "--dev",
            "--http-addr",
            &http_addr.to_string(),
            "--metrics-addr",
            &metrics_addr.to_string(),
            "--media-bind-ip",
            "127.0.0.1",
            "--media-ip",
            "127.0.0.1",
            "--media-port",
            &media_port.to_string(),
            "--workers",
            "1",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().context("clone log handle")?)
        .stderr(log_file);
        let child = cmd
            .spawn()
            .with_context(|| format!("start {bin} (build it with cargo build --release)"))?;
        let pid = child.id();
        Ok(ChildServer {
            child,
            pid,
            http_addr,
            metrics_addr,
            log,
        })
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Polls `GET /api/info` until it answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                bail!("server exited during start: {status}");
            }
            if let Ok(Ok(true)) =
                tokio::time::timeout(Duration::from_secs(1), http_info_ok(self.http_addr)).await
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("GET /api/info did not answer within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        // std's Child::kill sends SIGKILL to exactly this PID.
        if self.exited().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

async fn http_info_ok(addr: SocketAddr) -> Result<bool> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET /api/info HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    Ok(buf.starts_with(b"HTTP/1.1 200"))
}

/// One reading of the server's memory, KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    pub rss: u64,
    pub pss: u64,
    pub anon: u64,
}

pub fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l[name.len()..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

pub fn read_mem(pid: u32) -> Result<Mem> {
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
        if let (Some(rss), Some(pss), Some(anon)) = (
            kib_field(&text, "Rss:"),
            kib_field(&text, "Pss:"),
            kib_field(&text, "Anonymous:"),
        ) {
            return Ok(Mem { rss, pss, anon });
        }
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let rss = kib_field(&text, "VmRSS:").ok_or_else(|| anyhow!("no VmRSS"))?;
    let anon = kib_field(&text, "RssAnon:").unwrap_or(0);
    Ok(Mem {
        rss,
        pss: rss,
        anon,
    })
}

pub fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| kib_field(&t, "VmHWM:"))
        .unwrap_or(0)
}

/// utime + stime of a process in clock ticks.
pub fn cpu_ticks(pid: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// Joins, retrying while the server's per-IP upgrade limit answers 429.
pub async fn join_retrying(
    addr: SocketAddr,
    room: &str,
    identity: &str,
) -> Result<TestParticipant> {
    let token = crate::token(room, identity);
    let mut tries = 0;
    loop {
        match TestParticipant::join(addr, &token, room).await {
            Ok(p) => return Ok(p),
            Err(e) if tries < 50 && format!("{e:#}").contains("HTTP 429") => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.context(format!("{identity} joining {room}"))),
        }
    }
}

/// The command line of a benchmark whose flags all take a number: `--flag N` pairs in order.
/// `--help` prints `usage` and exits.
pub fn numeric_flags(usage: &str) -> Result<Vec<(String, u64)>> {
    let mut flags = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{usage}\nenv ZVON_BIN: server binary (default target/release/zvon)");
            std::process::exit(0);
        }
        let value = it.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
        let n: u64 = value
            .parse()
            .with_context(|| format!("{flag} {value}: not a number"))?;
        flags.push((flag, n));
    }
    Ok(flags)
}
