#!/usr/bin/env python3
"""Check grafana/: dashboards, alert rules and the Prometheus config, statically and live.

Static (always):
  * dashboard structure: unique uids and panel ids, Prometheus datasource by uid, the
    `$instance` variable defined and applied (every selector has job="zvon" and
    instance=~"$instance"), no unknown `$variables`, no overlapping panels;
  * every panel query, with template variables substituted, compiles: they are written as
    recording rules to a temp file and run through `promtool check rules`;
  * `promtool check rules grafana/alerts.yml`, `promtool check config grafana/prometheus.yml`,
    `promtool test rules grafana/tests/*.yml`;
  * every metric a dashboard or alert reads is documented in docs/metrics.md (or is `up` or a
    standard `process_*` metric), and rate()/increase() are only applied to counters.
Live (with --metrics-url http://127.0.0.1:9350/metrics):
  * every metric name referenced exists in the server's exposition (`X_bucket`, `X_sum`,
    `X_count` resolve to histogram `X`), label names used in selectors and `by (...)` exist on
    those series, and label values selected (`direction="in"`, `code=~"a|b"`) are among the
    values the server initialises; `promtool check metrics` accepts the exposition.
  * with --prometheus BIN as well: a real Prometheus scrapes the server every second, every
    dashboard query returns series, every alert rule evaluates without error and none is
    pending or firing on the idle server.
Cluster (the Zvon / Cluster dashboard, and every query or alert rule reading `zvon_cluster_*`):
  an all-in-one server has none of these series, so they are checked live only against the
  /metrics of cluster nodes, --cluster-metrics-url (repeatable; give a node with the signaling
  role and an open QUIC link, and a node with the media role: link series exist only on the
  former, control-listener series only on the latter). Their expositions are merged: a name,
  label or label value must be in at least one of them; every `zvon_cluster_*` metric
  documented in docs/metrics.md must be in one of them and every one they expose must be
  documented; the --metrics-url server must expose none. With --prometheus the cluster nodes are
  scraped as well (same job) and the cluster queries must return series too. Without
  --cluster-metrics-url the cluster queries and rules are checked statically only, and the
  script says so; an all-in-one --metrics-url must expose no `zvon_cluster_*` metric either way.

Python 3 standard library only. Exit status 0 when everything passes.
"""

import argparse
import glob
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRAFANA = os.path.join(ROOT, "grafana")
DATASOURCE_UID = "prometheus"
JOB = "zvon"
# Dashboards about cluster mode: every query in them is a cluster query.
CLUSTER_DASHBOARDS = {"grafana/dashboards/cluster.json"}
CLUSTER_PREFIX = "zvon_cluster_"

# What Grafana substitutes at query time; any value that keeps PromQL valid will do.
BUILTIN_VARS = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
    "__range_s": "3600",
    "__interval_ms": "60000",
}
# A multi-value variable becomes a regex alternation; ".*" stands for "All".
TEMPLATE_VAR_VALUE = ".*"

AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
                "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
RATE_FUNCS = {"rate", "irate", "increase"}
HIST_SUFFIXES = ("_bucket", "_sum", "_count")
TARGET_LABELS = {"job", "instance"}  # added by Prometheus, never in /metrics
# `promtool check metrics` style findings accepted on purpose, with the reason.
# None today; parse errors are never accepted (they do not start with a metric name).
ACCEPTED_LINT: dict = {}

TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<num>(?:0x[0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)(?:[a-zA-Z]+[0-9]*)*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<var>\$\{\w+(?::\w+)?\}|\$\w+)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],@])
""", re.VERBOSE)


class Failures:
    def __init__(self):
        self.items = []

    def add(self, where, msg):
        self.items.append(f"{where}: {msg}")


def tokenize(expr):
    out, pos = [], 0
    while pos < len(expr):
        m = TOKEN_RE.match(expr, pos)
        if not m:
            raise ValueError(f"cannot tokenize at {expr[pos:pos + 20]!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group()))
    return out


class Selector:
    def __init__(self, name, matchers, in_rate):
        self.name = name          # metric name as written
        self.matchers = matchers  # {label: (op, value)}
        self.in_rate = in_rate    # direct argument of rate()/irate()/increase()


def analyze(expr):
    """Metric selectors and grouping labels of a PromQL expression (a small lexer, not a parser:
    enough for the queries a dashboard holds; promtool checks the real syntax)."""
    toks = tokenize(expr)
    selectors, grouping = [], set()
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else None
        if kind == "op" and text == "[":
            while i < len(toks) and toks[i][1] != "]":
                i += 1
        elif kind == "ident" and text in GROUPING and nxt == "(":
            i += 2
            while i < len(toks) and toks[i][1] != ")":
                if toks[i][0] == "ident":
                    grouping.add(toks[i][1])
                i += 1
        elif kind == "ident" and (nxt == "(" or text in AGGREGATIONS or text.lower() in KEYWORDS):
            pass
        elif kind == "ident":
            in_rate = i >= 2 and toks[i - 1][1] == "(" and toks[i - 2][1] in RATE_FUNCS
            matchers = {}
            if nxt == "{":
                i += 2
                while i < len(toks) and toks[i][1] != "}":
                    if toks[i][0] == "ident" and i + 2 < len(toks):
                        op, val = toks[i + 1][1], toks[i + 2][1]
                        matchers[toks[i][1]] = (op, val[1:-1])
                        i += 3
                    else:
                        i += 1
            selectors.append(Selector(text, matchers, in_rate))
        elif kind == "op" and text == "{":
            raise ValueError("selector without a metric name")
        i += 1
    return selectors, grouping


def is_cluster(where, expr):
    """A query or rule that needs a cluster node's /metrics: it is on a cluster dashboard or
    reads a zvon_cluster_* metric."""
    if where.split(" ", 1)[0] in CLUSTER_DASHBOARDS:
        return True
    try:
        return any(s.name.startswith(CLUSTER_PREFIX) for s in analyze(expr)[0])
    except ValueError:
        return False


def substitute(expr, variables):
    def repl(m):
        name = m.group(1) or m.group(2)
        if name in BUILTIN_VARS:
            return BUILTIN_VARS[name]
        if name in variables:
            return TEMPLATE_VAR_VALUE
        raise KeyError(name)
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)


def panels_of(dashboard):
    for p in dashboard.get("panels", []):
        yield p
        for child in p.get("panels", []):  # rows hold their panels when collapsed
            yield child


def check_dashboard(path, fails, queries, refs):
    where = os.path.relpath(path, ROOT)
    try:
        with open(path) as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        fails.add(where, f"unreadable: {e}")
        return None
    if dash.get("schemaVersion", 0) < 36:
        fails.add(where, f"schemaVersion {dash.get('schemaVersion')} is older than Grafana 9")
    variables = {}
    for v in dash.get("templating", {}).get("list", []):
        variables[v["name"]] = v
        if v.get("type") == "query":
            if v.get("datasource", {}).get("uid") != DATASOURCE_UID:
                fails.add(where, f"variable ${v['name']}: datasource is not uid {DATASOURCE_UID!r}")
            q = v.get("query")
            q = q.get("query", "") if isinstance(q, dict) else (q or "")
            m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", q)
            if m:
                refs.append((f"{where} variable ${v['name']}", m.group(1), None))
    if "instance" not in variables:
        fails.add(where, "no $instance template variable")
    ids, boxes = set(), []
    for p in panels_of(dash):
        pid = p.get("id")
        pwhere = f"{where} panel {pid} {p.get('title')!r}"
        if pid in ids:
            fails.add(pwhere, "duplicate panel id")
        ids.add(pid)
        g = p.get("gridPos", {})
        if not all(k in g for k in "hwxy") or g["x"] + g["w"] > 24:
            fails.add(pwhere, f"bad gridPos {g}")
        elif p.get("type") != "row":
            for other, og in boxes:
                if (g["x"] < og["x"] + og["w"] and og["x"] < g["x"] + g["w"]
                        and g["y"] < og["y"] + og["h"] and og["y"] < g["y"] + g["h"]):
                    fails.add(pwhere, f"overlaps panel {other}")
            boxes.append((pid, g))
        if p.get("type") == "row":
            continue
        if p.get("datasource", {}).get("uid") != DATASOURCE_UID:
            fails.add(pwhere, f"datasource is not uid {DATASOURCE_UID!r}")
        targets = p.get("targets") or []
        if not targets:
            fails.add(pwhere, "no queries")
        refids = set()
        for t in targets:
            twhere = f"{pwhere} query {t.get('refId')}"
            if t.get("refId") in refids or not t.get("refId"):
                fails.add(twhere, "missing or duplicate refId")
            refids.add(t.get("refId"))
            if t.get("datasource", {}).get("uid", DATASOURCE_UID) != DATASOURCE_UID:
                fails.add(twhere, f"datasource is not uid {DATASOURCE_UID!r}")
            expr = t.get("expr", "")
            if not expr.strip():
                fails.add(twhere, "empty expr")
                continue
            try:
                concrete = substitute(expr, variables)
            except KeyError as e:
                fails.add(twhere, f"unknown template variable ${e.args[0]}")
                continue
            try:
                selectors, _ = analyze(expr)
            except ValueError as e:
                fails.add(twhere, str(e))
                continue
            for s in selectors:
                if s.matchers.get("job") != ("=", JOB):
                    fails.add(twhere, f'{s.name} is not filtered by job="{JOB}"')
                if s.matchers.get("instance") != ("=~", "$instance"):
                    fails.add(twhere, f'{s.name} is not filtered by instance=~"$instance"')
            rule = f"dashboard:{dash.get('uid', 'nouid')}:panel{pid}_{t.get('refId')}"
            queries.append((re.sub(r"[^A-Za-z0-9_:]", "_", rule), concrete, twhere))
            refs.append((twhere, concrete, p.get("type")))
    return dash


def alert_exprs(path):
    """`expr:` values of a rules file (plain, quoted or block scalars), without a YAML library."""
    lines = open(path).read().splitlines()
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^(\s*)(?:- )?(alert|expr):\s*(.*)$", lines[i])
        i += 1
        if not m or m.group(2) != "expr":
            continue
        indent, value = len(m.group(1)), m.group(3).strip()
        cont = []
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
            cont.append(lines[i].strip())
            i += 1
        if value[:1] in "|>":
            value = " ".join(cont)
        else:
            value = " ".join([value] + cont)
            if value[:1] in "'\"" and value[-1:] == value[:1]:
                value = value[1:-1]
        out.append(value.strip())
    return out


def documented_metrics():
    """name -> type from the tables in docs/metrics.md."""
    types = {}
    with open(os.path.join(ROOT, "docs", "metrics.md")) as f:
        for line in f:
            m = re.match(r"^\|\s*`([a-z_:]+)`\s*\|\s*(counter|gauge|histogram|summary)\s*\|", line)
            if m:
                types[m.group(1)] = m.group(2)
    return types


def resolve(name, types):
    """(family, type) a sample name belongs to, or None: X_bucket/_sum/_count → histogram X."""
    if name in types:
        return name, types[name]
    for suffix in HIST_SUFFIXES:
        base = name[: -len(suffix)]
        if name.endswith(suffix) and types.get(base) in ("histogram", "summary"):
            if suffix == "_bucket" and types[base] != "histogram":
                return None
            return base, types[base]
    if name.endswith("_total") and types.get(name[: -len("_total")]) == "counter":
        return name[: -len("_total")], "counter"  # OpenMetrics style family name
    return None


def counter_like(name, family, mtype):
    return mtype == "counter" or (mtype in ("histogram", "summary") and name != family)


def check_static_names(refs, alert_refs, fails):
    doc = documented_metrics()
    if not doc:
        fails.add("docs/metrics.md", "no metric tables found")
    for where, expr, _ in refs + alert_refs:
        try:
            selectors, _ = analyze(expr)
        except ValueError as e:
            fails.add(where, str(e))
            continue
        for s in selectors:
            if s.name == "up" or s.name.startswith("process_"):
                mtype = "counter" if s.name.endswith("_total") else "gauge"
                family = s.name
            else:
                r = resolve(s.name, doc)
                if r is None:
                    fails.add(where, f"{s.name} is not a metric documented in docs/metrics.md")
                    continue
                family, mtype = r
            if s.in_rate and not counter_like(s.name, family, mtype):
                fails.add(where, f"rate()/increase() of {s.name}, a {mtype}")


def parse_exposition(text):
    """types {family: type}, labels {sample name: {label name: set of values}}."""
    types, labels = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                types[parts[2]] = parts[3]
        elif line and not line.startswith("#"):
            m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s", line)
            if m:
                have = labels.setdefault(m.group(1), {})
                for k, v in re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""):
                    have.setdefault(k, set()).add(v)
    return types, labels


def fetch_exposition(urls, promtool, fails):
    """types and labels of the expositions at urls, merged (a name, label or value is present if
    any of them has it), or None if one cannot be fetched. Each is run through
    `promtool check metrics`."""
    types, labels = {}, {}
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                text = r.read().decode()
        except OSError as e:
            fails.add(url, f"cannot fetch: {e}")
            return None
        t, lab = parse_exposition(text)
        for name in lab:  # untyped samples still count as present
            t.setdefault(name, "untyped")
        for name, mtype in t.items():
            types.setdefault(name, mtype)
        for name, have in lab.items():
            merged = labels.setdefault(name, {})
            for k, vals in have.items():
                merged.setdefault(k, set()).update(vals)
        res = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        for line in (res.stdout + res.stderr).splitlines():
            name = line.split()[0] if line.strip() else ""
            if line.strip() and name not in ACCEPTED_LINT:
                fails.add(url, f"promtool check metrics: {line.strip()}")
    return types, labels


def check_live(urls, refs, alert_refs, promtool, fails, exposition=None):
    exposition = exposition or fetch_exposition(urls, promtool, fails)
    if exposition is None:
        return
    types, labels = exposition
    url = " + ".join(urls)
    checked = set()
    for where, expr, _ in refs + alert_refs:
        selectors, grouping = analyze(expr)
        present = []
        for s in selectors:
            if s.name == "up":  # made by Prometheus, not by the server
                continue
            r = resolve(s.name, types)
            if r is None:
                if s.name not in checked and s.name.startswith(CLUSTER_PREFIX):
                    fails.add(where, f"{s.name} is not in {url} (link series exist only on a signaling "
                                     "node with an open link, control ones only on a media node)")
                elif s.name not in checked:
                    fails.add(where, f"{s.name} is not in {url} (a labelled metric with no series yet? "
                                     "initialise its label values at start)")
                checked.add(s.name)
                continue
            have = labels.get(s.name, {})
            present.append(have)
            for label, (op, value) in s.matchers.items():
                if label in TARGET_LABELS:
                    continue
                if label not in have:
                    fails.add(where, f"{s.name} has no label {label!r} in {url}")
                elif "$" in value:
                    continue
                # Label values are initialised at start, so a matcher that selects none of
                # them would leave the panel or alert empty for ever.
                elif op == "=" and value not in have[label]:
                    fails.add(where, f'{s.name}{{{label}="{value}"}}: no such value in {url} '
                                     f"(has {sorted(have[label])})")
                elif op == "=~" and re.fullmatch(r"[\w|]+", value):  # a list of literals: each must exist
                    for alt in set(value.split("|")) - have[label]:
                        fails.add(where, f'{s.name}{{{label}=~"{value}"}}: no value {alt!r} in {url}')
                elif op == "=~" and not any(re.fullmatch(value, v) for v in have[label]):
                    fails.add(where, f'{s.name}{{{label}=~"{value}"}} matches none of {sorted(have[label])}')
        for label in grouping - TARGET_LABELS:
            if present and not any(label in have for have in present):
                fails.add(where, f"groups by {label!r}, which none of its series carry in {url}")


def check_cluster_coverage(cluster_urls, cluster_exposition, fails):
    """The cluster nodes expose exactly the documented zvon_cluster_* families."""
    documented = {n for n in documented_metrics() if n.startswith(CLUSTER_PREFIX)}
    types, _ = cluster_exposition
    exposed = {n for n, t in types.items() if n.startswith(CLUSTER_PREFIX) and t != "untyped"}
    where = " + ".join(cluster_urls)
    for name in sorted(documented - exposed):
        fails.add(where, f"{name} is documented in docs/metrics.md but none of the cluster nodes "
                         "exposes it (give a signaling node with an open link and a media node)")
    for name in sorted(exposed - documented):
        fails.add(where, f"{name} is exposed but not documented in docs/metrics.md")


def http_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_with_prometheus(prom_bin, metrics_urls, queries, fails):
    """Run a real Prometheus scraping the live servers (one job, as in production): every
    dashboard query must return series, every alert rule must evaluate without error, and none
    may be pending or firing on idle, healthy servers."""
    metrics_urls = list(dict.fromkeys(metrics_urls))  # Prometheus scrapes a target once
    by_path = {}
    for url in metrics_urls:
        target = urllib.parse.urlsplit(url)
        by_path.setdefault(target.path or "/metrics", []).append(target.netloc)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
            f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {json.dumps(os.path.join(GRAFANA, "alerts.yml"))}
scrape_configs:
""")
            for i, (path, netlocs) in enumerate(sorted(by_path.items())):
                # One job name in every scrape config: the dashboards and rules select job="zvon".
                f.write(f"""  - job_name: {JOB}{"" if i == 0 else f"_{i}"}
    metrics_path: {json.dumps(path)}
    static_configs:
      - targets: {json.dumps(netlocs)}
    relabel_configs:
      - target_label: job
        replacement: {JOB}
""")
        log = open(os.path.join(tmp, "log"), "w")
        proc = subprocess.Popen([prom_bin, f"--config.file={tmp}/prometheus.yml",
                                 f"--storage.tsdb.path={tmp}/data", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            def query(q):
                return http_json(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": q}))
            deadline = time.monotonic() + 30
            scrapes = 0
            while time.monotonic() < deadline and scrapes < 4:
                time.sleep(0.5)
                try:
                    res = query(f'count_over_time(up{{job="{JOB}"}}[1m])')["data"]["result"]
                    if len(res) == len(metrics_urls):
                        scrapes = min(int(float(r["value"][1])) for r in res)
                except (OSError, ValueError, KeyError, IndexError):
                    pass
            if scrapes < 4:
                fails.add("prometheus", f"no 4 scrapes of each of {', '.join(metrics_urls)} within 30 s; log:\n"
                          + open(os.path.join(tmp, "log")).read()[-2000:])
                return
            for r in query(f'up{{job="{JOB}"}} != 1')["data"]["result"]:
                fails.add("prometheus", f"the scrape of {r['metric'].get('instance')} fails")
            for _, expr, where in queries:
                try:
                    res = query(expr)
                except OSError as e:
                    fails.add(where, f"query failed in Prometheus: {e}")
                    continue
                if res.get("status") != "success":
                    fails.add(where, f"query failed in Prometheus: {res.get('error')}")
                elif not res["data"]["result"]:
                    fails.add(where, "returns no series from a running server")
            time.sleep(2)  # every rule evaluated at least once after the scrapes above
            for group in http_json(f"{base}/api/v1/rules")["data"]["groups"]:
                for rule in group["rules"]:
                    if rule.get("health") != "ok":
                        fails.add(f"alert {rule['name']}", f"health {rule.get('health')}: {rule.get('lastError')}")
            for alert in http_json(f"{base}/api/v1/alerts")["data"]["alerts"]:
                fails.add(f"alert {alert['labels'].get('alertname')}",
                          f"{alert['state']} on an idle, healthy server: {alert['labels']}")
            print(f"prometheus: {len(queries)} dashboard queries return series from "
                  f"{len(metrics_urls)} target(s), alert rules evaluate, none active")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def run(cmd, fails, where):
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    out = (res.stdout + res.stderr).strip()
    if res.returncode != 0:
        fails.add(where, f"{' '.join(cmd)} failed:\n{out}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--metrics-url", help="live /metrics of an all-in-one server to check the "
                    "referenced names against (all but the cluster queries and rules)")
    ap.add_argument("--cluster-metrics-url", action="append", default=[], metavar="URL",
                    help="live /metrics of a cluster node, for the cluster dashboard and the queries "
                         "and rules reading zvon_cluster_*; repeat it for a signaling node with an "
                         "open link and a media node (their expositions are merged)")
    ap.add_argument("--promtool", default="promtool")
    ap.add_argument("--prometheus", metavar="BIN",
                    help="with --metrics-url: also run this Prometheus binary against the server "
                         "(and the --cluster-metrics-url nodes) and run every dashboard query and "
                         "alert rule in it")
    args = ap.parse_args()

    fails, queries, refs = Failures(), [], []
    paths = sorted(glob.glob(os.path.join(GRAFANA, "dashboards", "*.json")))
    if not paths:
        fails.add("grafana/dashboards", "no dashboards")
    uids = {}
    for path in paths:
        dash = check_dashboard(path, fails, queries, refs)
        if dash is not None:
            uid = dash.get("uid")
            if not uid or uid in uids:
                fails.add(os.path.relpath(path, ROOT), f"missing or duplicate uid {uid!r}")
            uids[uid] = path

    with tempfile.TemporaryDirectory() as tmp:
        rules = os.path.join(tmp, "dashboard_queries.yml")
        with open(rules, "w") as f:
            f.write("groups:\n  - name: dashboard_queries\n    rules:\n")
            for record, expr, _ in queries:
                # JSON strings are valid YAML double-quoted scalars.
                f.write(f"      - record: {record}\n        expr: {json.dumps(expr)}\n")
        out = run([args.promtool, "check", "rules", rules], fails, "dashboard queries")
        print(f"dashboard queries: {len(queries)} compiled by promtool" if "SUCCESS" in out else out)

    alerts = os.path.join(GRAFANA, "alerts.yml")
    exprs = alert_exprs(alerts)
    out = run([args.promtool, "check", "rules", alerts], fails, "grafana/alerts.yml")
    m = re.search(r"SUCCESS: (\d+) rules found", out)
    if m and int(m.group(1)) != len(exprs):
        fails.add("grafana/alerts.yml", f"promtool found {m.group(1)} rules, this checker read {len(exprs)} exprs")
    print(f"alert rules: {len(exprs)} checked by promtool")
    run([args.promtool, "check", "config", os.path.join(GRAFANA, "prometheus.yml")], fails, "grafana/prometheus.yml")
    print("prometheus.yml: promtool check config done")
    tests = sorted(glob.glob(os.path.join(GRAFANA, "tests", "*.yml")))
    for t in tests:
        run([args.promtool, "test", "rules", t], fails, os.path.relpath(t, ROOT))
    print(f"alert unit tests: {len(tests)} file(s) run")

    alert_refs = [(f"grafana/alerts.yml expr {i + 1}", e, None) for i, e in enumerate(exprs)]
    check_static_names(refs, alert_refs, fails)
    names = set()
    for _, expr, _ in refs + alert_refs:
        try:
            names.update(s.name for s in analyze(expr)[0])
        except ValueError:
            pass
    print(f"metric names referenced: {len(names)}")
    cluster_refs = [r for r in refs if is_cluster(r[0], r[1])]
    cluster_alert_refs = [r for r in alert_refs if is_cluster(r[0], r[1])]
    cluster_queries = [q for q in queries if is_cluster(q[2], q[1])]
    print(f"cluster: {len(cluster_refs)} dashboard queries/variables and "
          f"{len(cluster_alert_refs)} alert rules read cluster metrics")
    if args.metrics_url:
        exposition = fetch_exposition([args.metrics_url], args.promtool, fails)
        if exposition is not None:
            check_live([args.metrics_url], [r for r in refs if r not in cluster_refs],
                       [r for r in alert_refs if r not in cluster_alert_refs], args.promtool, fails,
                       exposition)
            # An all-in-one server has no cluster series (a zvon_cluster_redis_up of 0 there
            # would page someone for a Redis it does not use).
            for name in sorted(n for n in exposition[0] if n.startswith(CLUSTER_PREFIX)):
                fails.add(args.metrics_url, f"{name}: an all-in-one server must expose no "
                                            f"{CLUSTER_PREFIX}* metric (is --metrics-url a cluster node?)")
        print(f"live check against {args.metrics_url} done (all but the cluster queries and rules)")
    if args.cluster_metrics_url:
        exposition = fetch_exposition(args.cluster_metrics_url, args.promtool, fails)
        if exposition is not None:
            check_live(args.cluster_metrics_url, cluster_refs, cluster_alert_refs, args.promtool, fails,
                       exposition)
            check_cluster_coverage(args.cluster_metrics_url, exposition, fails)
        print(f"cluster: live check against {' + '.join(args.cluster_metrics_url)} done")
    elif cluster_refs or cluster_alert_refs:
        print("cluster: NOT checked live (no --cluster-metrics-url): the cluster queries and rules "
              "were only compiled by promtool and checked against docs/metrics.md")
    if args.metrics_url and args.prometheus:
        if args.cluster_metrics_url:
            check_with_prometheus(args.prometheus, [args.metrics_url] + args.cluster_metrics_url,
                                  queries, fails)
        else:
            print(f"prometheus: the {len(cluster_queries)} cluster queries are skipped (no cluster node scraped)")
            check_with_prometheus(args.prometheus, [args.metrics_url],
                                  [q for q in queries if q not in cluster_queries], fails)

    if fails.items:
        print(f"\nFAILED ({len(fails.items)}):", file=sys.stderr)
        for item in fails.items:
            print("  " + item, file=sys.stderr)
        return 1
    print("grafana/: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
