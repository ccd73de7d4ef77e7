// A Chromium subscriber on a network of its own: a network namespace joined to the host by a
// veth pair (the server listens on the host end), nftables rules on the namespace's input
// hook, and a Chromium launched inside it. Used by shaped.mjs (bad links) and turn.mjs
// (UDP-blocked networks). Needs root, ip and nft.
import { execFileSync } from 'node:child_process';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { launchBrowser, log } from './harness.mjs';

export function run(cmd, args, input) {
  return execFileSync(cmd, args, { input, stdio: [input ? 'pipe' : 'ignore', 'pipe', 'pipe'] }).toString();
}

/** The subscriber's namespace and veth pair, named from `tag`, cleaned up on exit. */
export class SubscriberNamespace {
  constructor(tag) {
    const id = `${process.pid % 100000}`;
    this.tag = tag;
    this.ns = `zvon${tag}${id}`;
    this.hostIf = `z${tag[0]}h${id}`;
    this.nsIf = `z${tag[0]}n${id}`;
    // A /30 of the documentation range that no interface of the host has yet (other tests
    // on this machine may use the same range).
    const used = run('ip', ['-4', '-o', 'addr']);
    const salt = [...tag].reduce((a, c) => a + c.charCodeAt(0), 0);
    const k = [...Array(60).keys()].map((i) => 1 + ((i + process.pid + salt) % 60))
      .find((n) => !used.includes(`198.51.100.${4 * n + 1}/`));
    this.hostIp = `198.51.100.${4 * k + 1}`;
    this.nsIp = `198.51.100.${4 * k + 2}`;
  }

  up() {
    process.once('exit', () => this.down());
    run('ip', ['netns', 'add', this.ns]);
    run('ip', ['link', 'add', this.hostIf, 'type', 'veth', 'peer', 'name', this.nsIf, 'netns', this.ns]);
    run('ip', ['addr', 'add', `${this.hostIp}/30`, 'dev', this.hostIf]);
    run('ip', ['link', 'set', this.hostIf, 'up']);
    run('ip', ['-n', this.ns, 'link', 'set', 'lo', 'up']);
    run('ip', ['-n', this.ns, 'addr', 'add', `${this.nsIp}/30`, 'dev', this.nsIf]);
    run('ip', ['-n', this.ns, 'link', 'set', this.nsIf, 'up']);
    log(`subscriber namespace ${this.ns}: ${this.nsIp} <-> host ${this.hostIp} (${this.hostIf})`);
  }

  /** Replaces the namespace's input rules with `rule` (empty: accept all): silent drops, as a firewall or a lossy link does. */
  filterInput(rule) {
    run('ip', ['netns', 'exec', this.ns, 'nft', '-f', '-'],
      `flush ruleset\ntable inet ${this.tag} {\n chain input {\n  type filter hook input priority 0; policy accept;\n  ${rule}\n }\n}\n`);
  }

  /** A Chromium running inside the namespace (a wrapper script in `dir` enters it). */
  async launchBrowser(dir, extraArgs = []) {
    const wrapper = join(dir, 'chromium-in-netns');
    writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${this.ns} ${process.env.CHROMIUM || '/usr/bin/chromium'} "$@"\n`);
    chmodSync(wrapper, 0o755);
    return launchBrowser({ executablePath: wrapper, extraArgs });
  }

  down() {
    try { run('ip', ['netns', 'del', this.ns]); } catch { /* gone */ }
    try { run('ip', ['link', 'del', this.hostIf]); } catch { /* went with the namespace */ }
  }
}
