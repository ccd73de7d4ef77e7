//! A private wire between two test hosts ([`TestHost`]): a veth pair straight from one
//! network namespace to the other, so traffic between the two hosts' own addresses takes it
//! (and never the host's namespace, which does not forward). The test shapes it: random loss
//! with nftables on each end's input hook (this kernel has no netem), a rate limit with tbf.
//! Deleted on drop.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cluster::TestHost;

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<()> {
    let mut c = Command::new(program);
    c.args(args);
    let out = match stdin {
        Some(text) => {
            use std::io::Write;
            let mut child = c
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .with_context(|| program.to_string())?;
            child
                .stdin
                .take()
                .context("stdin")?
                .write_all(text.as_bytes())?;
            child.wait_with_output()?
        }
        None => c.output().with_context(|| program.to_string())?,
    };
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn in_ns(netns: &str, program: &str, args: &[&str], stdin: Option<&str>) -> Result<()> {
    let mut all = vec!["netns", "exec", netns, program];
    all.extend_from_slice(args);
    run("ip", &all, stdin)
}

/// The wire between hosts `a` and `b`; its ends are `a.netns`/`end_a` and `b.netns`/`end_b`.
pub struct HostLink {
    netns_a: String,
    end_a: String,
}

impl HostLink {
    /// Joins `a` and `b` directly, and gives each a default route to the test's namespace
    /// (so a host reaches the test's services on any of its addresses, the other host's
    /// gateway address included).
    pub fn connect(a: &TestHost, b: &TestHost) -> Result<HostLink> {
        let tag = format!("{}", std::process::id() % 100_000);
        let (end_a, end_b) = (format!("zwa{tag}"), format!("zwb{tag}"));
        run(
            "ip",
            &[
                "link", "add", &end_a, "netns", &a.netns, "type", "veth", "peer", "name", &end_b,
                "netns", &b.netns,
            ],
            None,
        )?;
        let link = HostLink {
            netns_a: a.netns.clone(),
            end_a: end_a.clone(),
        };
        for (host, end, other) in [(a, &end_a, b), (b, &end_b, a)] {
            in_ns(&host.netns, "ip", &["link", "set", end, "up"], None)?;
            // The other host's address is on the wire (answered by ARP there: Linux owns its
            // addresses on every interface).
            let to = format!("{}/32", other.ip);
            let src = host.ip.to_string();
            in_ns(
                &host.netns,
                "ip",
                &["route", "add", &to, "dev", end, "src", &src],
                None,
            )?;
            let gw = host.gateway.to_string();
            in_ns(
                &host.netns,
                "ip",
                &["route", "add", "default", "via", &gw],
                None,
            )?;
        }
        Ok(link)
    }

    /// Drops `percent` % of the packets arriving at each end from the wire, at random
    /// (nftables `numgen random` on the input hook of both namespaces).
    pub fn drop_randomly(&self, a: &TestHost, b: &TestHost, percent: u32) -> Result<()> {
        let end_b = self.end_a.replacen("zwa", "zwb", 1);
        for (host, end) in [(a, &self.end_a), (b, &end_b)] {
            let rules = format!(
                "table inet zvon_lossy {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    iifname \"{end}\" numgen random mod 100 < {percent} counter drop\n  }}\n}}\n"
            );
            in_ns(&host.netns, "nft", &["-f", "-"], Some(&rules))?;
        }
        Ok(())
    }

    /// Limits each end's sending to `rate` (tbf, e.g. "20mbit") with `burst` and `latency`.
    pub fn limit_rate(
        &self,
        a: &TestHost,
        b: &TestHost,
        rate: &str,
        burst: &str,
        latency: &str,
    ) -> Result<()> {
        let end_b = self.end_a.replacen("zwa", "zwb", 1);
        for (host, end) in [(a, &self.end_a), (b, &end_b)] {
            in_ns(
                &host.netns,
                "tc",
                &[
                    "qdisc", "replace", "dev", end, "root", "tbf", "rate", rate, "burst", burst,
                    "latency", latency,
                ],
                None,
            )?;
        }
        Ok(())
    }

    /// Packets the loss rules dropped so far, at both ends.
    pub fn dropped(&self, a: &TestHost, b: &TestHost) -> Result<u64> {
        let mut total = 0;
        for host in [a, b] {
            let out = Command::new("ip")
                .args(["netns", "exec", &host.netns, "nft", "list", "table", "inet"])
                .arg("zvon_lossy")
                .output()
                .context("nft")?;
            let text = String::from_utf8_lossy(&out.stdout);
            total += text
                .split("packets ")
                .skip(1)
                .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .sum::<u64>();
        }
        Ok(total)
    }
}

impl Drop for HostLink {
    fn drop(&mut self) {
        // Deleting one end deletes the pair; the namespaces' tables go with them.
        let _ = in_ns(&self.netns_a, "ip", &["link", "del", &self.end_a], None);
    }
}
