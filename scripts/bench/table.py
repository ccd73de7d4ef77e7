#!/usr/bin/env python3
"""Turns scripts/bench/run.sh's results.jsonl (one line per scenario x server, each pointing at
its zvon-loadtest JSON report) into the benchmark table: server CPU per forwarded packet, the
ratios Zvon/raw and Zvon/Janus, loss, end-to-end latency and the server's peak RSS.

A forwarded packet is a packet a subscriber received (the load test's
packets.received_by_subscribers), so every server is charged for what it delivered.
"""

import json
import sys


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            row = json.loads(line)
            try:
                with open(row["report"]) as r:
                    row["r"] = json.load(r)
            except (KeyError, OSError, ValueError):
                row["r"] = None
            rows.append(row)
    return rows


def us_per_packet(row):
    r = row.get("r")
    if not r or row.get("cpu_s") is None:
        return None
    received = r["packets"]["received_by_subscribers"]
    return row["cpu_s"] * 1e6 / received if received else None


def fmt(v, spec):
    return "—" if v is None else format(v, spec)


def healthy(row):
    """A run counts only if the server started, everybody connected and packets flowed."""
    r = row.get("r")
    return bool(r) and not r["participants_failed"] and r["packets"]["received_by_subscribers"] > 0


def main():
    rows = load(sys.argv[1])
    by = {(row["scenario"], row["server"]): row for row in rows}
    scenarios = list(dict.fromkeys(row["scenario"] for row in rows))
    print("| scenario | server | forwarded pkts | server CPU s | µs CPU / pkt | × raw | zvon ÷ janus "
          "| loss % | e2e p50 ms | e2e p99 ms | peak RSS MiB | connected | notes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for sc in scenarios:
        raw = by.get((sc, "raw"))
        raw_us = us_per_packet(raw) if raw else None
        zvon_us = us_per_packet(by[(sc, "zvon")]) if (sc, "zvon") in by else None
        janus_us = us_per_packet(by[(sc, "janus")]) if (sc, "janus") in by else None
        ms_us = us_per_packet(by[(sc, "mediasoup")]) if (sc, "mediasoup") in by else None
        for server in ("raw", "zvon-before", "zvon", "janus", "mediasoup"):
            row = by.get((sc, server))
            if row is None:
                continue
            r = row.get("r")
            if not r:
                print(f"| {sc} | {server} | — | — | — | — | — | — | — | — | — | — | "
                      f"{row.get('error', 'no report')} |")
                continue
            us = us_per_packet(row)
            ratio = us / raw_us if us is not None and raw_us else None
            vs_janus = zvon_us / janus_us if server == "zvon" and zvon_us and janus_us else None
            notes = []
            if row.get("loadtest_rc") not in (0, None):
                notes.append(f"loadtest exit {row['loadtest_rc']}")
            if r["participants_failed"]:
                notes.append(f"{r['participants_failed']} failed: {r['failures']}")
            if server == "mediasoup" and zvon_us and ms_us:
                notes.append(f"zvon ÷ mediasoup {zvon_us / ms_us:.2f}")
            counted = row.get("server_counted_forwarded")
            if counted is not None:
                notes.append(f"server counted {counted} sent")
            e2e = r.get("e2e_latency_ms") or {}
            print(
                f"| {sc} | {server} | {r['packets']['received_by_subscribers']} "
                f"| {row['cpu_s']:.2f} | {fmt(us, '.2f')} | {fmt(ratio, '.1f')} "
                f"| {fmt(vs_janus, '.2f')} | {r['packets']['loss_percent']:.3f} "
                f"| {fmt(e2e.get('p50'), '.2f')} | {fmt(e2e.get('p99'), '.2f')} "
                f"| {row['peak_rss_kib'] / 1024:.1f} "
                f"| {r['participants_connected']}/{r['participants_planned']} | {'; '.join(notes)} |"
            )
    bad = [f"{row['scenario']}/{row['server']}" for row in rows if not healthy(row)]
    if bad:
        print(f"\nunhealthy runs (failed participants, no packets or no report): {', '.join(bad)}",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
