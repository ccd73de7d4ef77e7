//! The benchmark's two baselines carry a real scenario end to end: a 3-person meeting through
//! Janus VideoRoom (`--target janus`) and through the raw UDP relay (`--target raw`), every
//! participant connected and every expected stream flowing.
//!
//! Needs root (network namespaces: Janus will not gather on loopback) and, for the Janus half,
//! the Debian package `janus`; without them the test says why and passes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SRV_IP: &str = "192.0.2.2";
const CLI_IP: &str = "192.0.2.3";

struct Namespaces {
    srv: String,
    cli: String,
}

impl Namespaces {
    fn create(tag: &str) -> Namespaces {
        let id = std::process::id();
        let ns = Namespaces {
            srv: format!("zvt-{tag}-s{id}"),
            cli: format!("zvt-{tag}-c{id}"),
        };
        let ip = |args: &[&str]| {
            let ok = Command::new("ip").args(args).status().expect("run ip");
            assert!(ok.success(), "ip {args:?}");
        };
        ip(&["netns", "add", &ns.srv]);
        ip(&["netns", "add", &ns.cli]);
        ip(&["-n", &ns.srv, "link", "set", "lo", "up"]);
        ip(&["-n", &ns.cli, "link", "set", "lo", "up"]);
        ip(&[
            "-n", &ns.srv, "link", "add", "nic0", "type", "veth", "peer", "name", "nic1", "netns",
            &ns.cli,
        ]);
        ip(&[
            "-n",
            &ns.srv,
            "addr",
            "add",
            &format!("{SRV_IP}/24"),
            "dev",
            "nic0",
        ]);
        ip(&[
            "-n",
            &ns.cli,
            "addr",
            "add",
            &format!("{CLI_IP}/24"),
            "dev",
            "nic1",
        ]);
        ip(&["-n", &ns.srv, "link", "set", "nic0", "up"]);
        ip(&["-n", &ns.cli, "link", "set", "nic1", "up"]);
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.srv])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.cli])
            .status();
    }
}

/// A server started by this test, killed by its PID when the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: network namespaces need root");
    }
    root
}

fn has_janus() -> bool {
    let found = Command::new("janus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("skipped the Janus half: `janus` is not installed (apt-get install janus)");
    }
    found
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} not ready in 10 s");
}

/// Runs a 3-person meeting against `target` at `url` and returns the JSON report.
fn meeting(ns: &Namespaces, target: &str, url: &str, tag: &str) -> serde_json::Value {
    let report = std::env::temp_dir().join(format!("zvt-{tag}-{}.json", std::process::id()));
    let out = Command::new("timeout")
        .args(["60", "ip", "netns", "exec", &ns.cli])
        .arg(env!("CARGO_BIN_EXE_zvon-loadtest"))
        .args(["meeting", "--size", "3", "--target", target, "--url", url])
        .args([
            "--bind-ip",
            CLI_IP,
            "--duration",
            "3s",
            "--ramp",
            "20",
            "--quiet",
        ])
        .arg("--report")
        .arg(&report)
        .output()
        .expect("run zvon-loadtest");
    assert!(
        out.status.success(),
        "{target}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&report).expect("report written");
    let _ = std::fs::remove_file(&report);
    serde_json::from_str(&text).expect("report is JSON")
}

fn assert_all_flowing(target: &str, r: &serde_json::Value) {
    assert_eq!(r["participants_connected"], 3, "{target}: {r}");
    assert_eq!(r["participants_failed"], 0, "{target}: {r}");
    // 3 participants × 2 others × (audio + video).
    assert_eq!(r["streams"]["expected"], 12, "{target}: {r}");
    assert_eq!(r["streams"]["received"], 12, "{target}: {r}");
    let received = r["packets"]["received_by_subscribers"]
        .as_u64()
        .unwrap_or(0);
    assert!(received > 500, "{target}: only {received} packets arrived");
}

#[test]
fn meeting_through_janus_and_through_the_raw_relay() {
    if !can_run() {
        return;
    }
    let ns = Namespaces::create("bl");

    let relay = Server(
        Command::new("ip")
            .args(["netns", "exec", &ns.srv])
            .arg(env!("CARGO_BIN_EXE_zvon-rawrelay"))
            .args(["--bind", SRV_IP, "--port", "7400", "--stats-every", "0"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start zvon-rawrelay"),
    );
    let r = meeting(&ns, "raw", &format!("{SRV_IP}:7400"), "raw");
    assert_all_flowing("raw", &r);
    drop(relay);

    if !has_janus() {
        return;
    }
    let config = repo_root().join("scripts/bench/janus");
    let _janus = Server(
        Command::new("ip")
            .args(["netns", "exec", &ns.srv, "janus", "-F"])
            .arg(&config)
            .args(["-E", "nic0", "-i", SRV_IP, "-o"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start janus"),
    );
    let api = format!("http://{SRV_IP}:8088/janus");
    wait_until("janus", || {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.cli,
                "curl",
                "-sf",
                "-o",
                "/dev/null",
                "-X",
                "POST",
            ])
            .args(["-d", r#"{"janus":"info","transaction":"t"}"#, &api])
            .status()
            .is_ok_and(|s| s.success())
    });
    let r = meeting(&ns, "janus", &api, "janus");
    assert_all_flowing("janus", &r);
}
