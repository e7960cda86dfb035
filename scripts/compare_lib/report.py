"""From the runs of `scripts/compare` to summary.json (medians, min..max, every run, the
comparisons with their intervals and verdicts, the targets) and report.md."""

import fnmatch
import statistics

from . import stats

FIELDS = ["throughput_rps", "throughput_in_mib_s", "server_us_per_request", "backend_us_per_request",
          "loadgen_us_per_request", "p50_us", "p99_us", "p999_us", "uncorrected_p99_us", "rss_kb",
          "rss_growth_kb", "rss_per_connection_b", "syscalls_per_request", "context_switches_per_request",
          "handshake_p99_us", "tls_handshakes", "errors"]

# The metrics compared between rows, per kind of scenario (throughput and CPU everywhere).
COMPARED = ["throughput_rps", "server_us_per_request"]
COMPARED_OPEN_LOOP = COMPARED + ["p99_us"]

# The verdict of a comparison in which loadgen, not a server, was the limit in some round:
# its figures are lower bounds, so neither side can be called faster or slower.
CLIENT_BOUND = "client-bound"


def client_bound_runs(runs):
    """How many of `runs` loadgen reported as client-bound (its JSON's `client_bound.bound`)."""
    return sum(1 for r in runs if r.get("client_bound"))


def mark_client_bound(c, runs_by_row):
    """Gives comparison `c` the verdict client-bound when either row was in any round."""
    rows = [row for row in (c["subject"], c["against"]) if client_bound_runs(runs_by_row[row])]
    if rows:
        c["verdict"] = CLIENT_BOUND
        c["client_bound_rows"] = rows
    return c


def summarise(results, engines, subject, env, cfg, open_rate, targets):
    scenarios = []
    for sc, data in results.items():
        entry = {"name": sc, "description": data["description"], "kind": data["kind"],
                 "open_loop": bool(data.get("open_loop")), "results": {},
                 "rows": list(data["runs"]), "external": data.get("external", {})}
        for row, all_runs in data["runs"].items():
            runs = [r for r in all_runs if not r.get("no_requests")]
            if not runs:
                continue
            st = {"median": {}, "min": {}, "max": {}}
            for f in FIELDS:
                vals = [r[f] for r in runs if r.get(f) is not None]
                if vals:
                    st["median"][f] = statistics.median(vals)
                    st["min"][f] = min(vals)
                    st["max"][f] = max(vals)
            # The run closest to the median throughput stands for the row's latency curve.
            mid = min(runs, key=lambda r: abs(r["throughput_rps"] - st["median"]["throughput_rps"]))
            st["median_run_hgrm"] = mid["hgrm"]
            st["runs"] = all_runs
            st["runs_without_requests"] = len(all_runs) - len(runs)
            st["runs_rate_not_kept"] = sum(1 for r in runs if r.get("rate_kept") is False)
            st["runs_client_bound"] = client_bound_runs(all_runs)
            entry["results"][row] = st
        entry["rows"] = [r for r in entry["rows"] if r in entry["results"]]
        entry["comparisons"] = []
        if subject in entry["results"]:
            metrics = COMPARED_OPEN_LOOP if data.get("open_loop") else COMPARED
            if data["kind"] == "conns":
                metrics = metrics + ["rss_kb"]
            for other in entry["rows"]:
                if other == subject:
                    continue
                for m in metrics:
                    c = stats.compare(subject, data["runs"][subject], other, data["runs"][other], m)
                    if c:
                        entry["comparisons"].append(mark_client_bound(c, data["runs"]))
        scenarios.append(entry)
    return {"schema": "ringd-compare/2", "environment": env, "config": cfg, "engines": engines,
            "subject": subject, "open_loop_rate": open_rate, "method": stats.METHOD,
            "scenarios": scenarios, "targets": evaluate_targets(scenarios, subject, targets)}


def results_of(summary):
    """The runs recorded in a summary.json, in the shape `summarise` takes (to recompute the
    statistics and the report of an earlier run)."""
    return {sc["name"]: {"description": sc["description"], "kind": sc.get("kind", "direct"),
                         "open_loop": sc.get("open_loop", sc["name"].endswith("-open")),
                         "runs": {row: sc["results"][row]["runs"] for row in sc["rows"]},
                         "external": sc.get("external", {})}
            for sc in summary["scenarios"]}


def evaluate_targets(scenarios, subject, targets):
    out = []
    for t in targets:
        for sc in scenarios:
            if not fnmatch.fnmatch(sc["name"], t["scenario"]):
                continue
            res = sc["results"]
            if subject not in res:
                continue
            if t.get("against"):
                c = next((c for c in sc["comparisons"] if c["against"] == t["against"]
                          and c["metric"] == t["metric"]), None)
                if c is None:
                    continue
                value, ci, n = c["ratio"], c["ci95"], c["rounds"]
                if c["verdict"] == CLIENT_BOUND:
                    out.append({"issue": t["issue"], "scenario": sc["name"], "what": t["what"],
                                "metric": t["metric"], "against": t.get("against"), "op": t["op"],
                                "bound": t["bound"], "value": value, "ci95": ci, "rounds": n,
                                "status": "undecided (client-bound: loadgen was the limit)"})
                    continue
            else:
                vals = [r[t["metric"]] for r in res[subject]["runs"] if r.get(t["metric"]) is not None]
                if not vals:
                    continue
                value, lo, hi = stats.mean_interval(vals)
                n = len(vals)
                ci = [lo, hi] if lo is not None else None
            lo, hi = ci if ci else (None, None)
            out.append({"issue": t["issue"], "scenario": sc["name"], "what": t["what"], "metric": t["metric"],
                        "against": t.get("against"), "op": t["op"], "bound": t["bound"], "value": value,
                        "ci95": ci, "rounds": n,
                        "status": stats.target_status(t["op"], t["bound"], lo, hi, n)})
    return out


def report_md(s):
    env, cfg, subject = s["environment"], s["config"], s["subject"]
    perf = env["perf"]
    lines = [
        f"# ringd engine comparison, {env['date']}",
        "",
        f"ringd {env['ringd_version']} at `{env['git_sha']}`, {env['rustc']}; kernel {env['kernel']}, "
        f"{env['cpu_model']} ({env['cpus']} CPUs). Network: {env['net']}.",
        f"Server (or proxy) on CPU {cpus(cfg['server_cpus'])}, loadgen (and a proxy's backend) on CPU "
        f"{cpus(cfg['client_cpus'])}. {cfg['rounds']} interleaved rounds per scenario "
        f"(every row once per round, order rotated), {cfg['warmup']} warm-up + {cfg['duration']} measured per run. "
        "Tables give medians over rounds, with min..max. Server µs/req is the server's (in proxy "
        "scenarios: the proxy's) CPU time (user+system, /proc) over the measured window divided by requests."
        + ("" if perf else " `perf` was not usable here, so system calls per request are not reported."),
        "",
    ]
    limit = limit_md(cfg.get("server_cpu_limit"), s["scenarios"])
    if limit:
        lines += [limit, ""]
    if env.get("loadavg_start"):
        lines += [f"Load average (1, 5, 15 min) at the start {', '.join(map(str, env['loadavg_start']))}"
                  + (f", at the end {', '.join(map(str, env['loadavg_end']))}" if env.get("loadavg_end") else "")
                  + ".", ""]
    lines += [
        f"**Noise.** {s['method']}" + (
            f" **Only {cfg['rounds']} rounds:** the intervals assume the per-round log ratios are roughly "
            "normal, which so few rounds cannot check; quote figures from 5 rounds or more (the issues' "
            "targets ask for 7)."
            if cfg["rounds"] < 5 else ""),
        "",
        "Plots: [throughput](throughput.svg), [server CPU per request](server-cpu.svg), "
        f"[{subject} against the others, with intervals](ratios.svg), and one latency percentile plot "
        "per scenario (`latency-<scenario>.svg`).",
        "",
    ]
    if s["targets"]:
        lines += ["## Targets", "",
                  f"Met only where the whole 95% interval clears the bound ({subject} is the subject).", "",
                  "| issue | scenario | target | measured [95% CI] | status |", "|---|---|---|---:|---|"]
        for t in s["targets"]:
            lines.append(f"| {t['issue']} | {t['scenario']} | {t['what']} | {fmt_value(t)} | {t['status']} |")
        lines.append("")
    for sc in s["scenarios"]:
        lines += scenario_md(sc, subject, perf)
    lines += ["## Raw data", "", "`summary.json` has every run (and every per-round ratio); `runs/` has "
              "loadgen's JSON and .hgrm of each.", ""]
    return "\n".join(lines)


def limit_md(limit, scenarios):
    """The report's paragraph on `--server-cpu-limit` (config `server_cpu_limit`), or None."""
    if not limit:
        return None
    shares = [r["throttled_share"] for sc in scenarios for res in sc["results"].values() for r in res["runs"]
              if r.get("throttled_share") is not None]
    seen = (f" The server waited for its next period during {min(shares):.0%}..{max(shares):.0%} of the "
            "measured window (min..max over runs)." if shares else "")
    return (f"**Server CPU limit.** Every row's server (not a proxy's backend, not loadgen) ran in a cgroup "
            f"{limit['cgroup']} allowed {limit['quota_us']:,} µs of CPU per {limit['period_us']:,} µs period "
            f"({limit['fraction']:g} of the server CPUs), so that the server, not loadgen, is the bottleneck. "
            "Throughput is that of the limited server; CPU per request is measured as without a limit. "
            "Latency percentiles include the stalls of a throttled server (up to a period), so latency "
            f"here is comparable only with runs under the same limit.{seen}")


def scenario_md(sc, subject, perf):
    kind = sc["kind"]
    wrk = sc.get("external", {}).get("wrk_rps")
    cols = [("req/s (median)", lambda m, lo, hi: f"{m['throughput_rps']:,.0f}"),
            ("min..max", lambda m, lo, hi: f"{lo['throughput_rps']:,.0f}..{hi['throughput_rps']:,.0f}")]
    if "throughput_in_mib_s" in next(iter(sc["results"].values()))["median"] and "stream" in sc["name"]:
        cols.append(("MiB/s", lambda m, lo, hi: f"{m['throughput_in_mib_s']:,.0f}"))
    cols.append(("proxy µs/req" if kind == "proxy" else "server µs/req",
                 lambda m, lo, hi: f"{m.get('server_us_per_request', 0):.2f}"))
    if kind == "proxy":
        cols.append(("backend µs/req", lambda m, lo, hi: opt(m, "backend_us_per_request", "{:.2f}")))
    cols += [("p50 µs", lambda m, lo, hi: f"{m['p50_us']:.1f}"), ("p99 µs", lambda m, lo, hi: f"{m['p99_us']:.1f}"),
             ("p99.9 µs", lambda m, lo, hi: f"{m['p999_us']:.1f}")]
    if any("handshake_p99_us" in r["median"] for r in sc["results"].values()):
        cols.append(("handshake p99 µs", lambda m, lo, hi: opt(m, "handshake_p99_us", "{:.1f}")))
    if perf:
        cols.append(("syscalls/req", lambda m, lo, hi: opt(m, "syscalls_per_request", "{:.3f}")))
    cols.append(("proxy RSS KiB" if kind == "proxy" else "RSS KiB", lambda m, lo, hi: f"{m['rss_kb']:,.0f}"))
    if kind == "conns":
        cols.append(("RSS B/conn", lambda m, lo, hi: opt(m, "rss_per_connection_b", "{:,.0f}")))
    cols.append(("errors", lambda m, lo, hi: f"{m['errors']:.0f}"))
    heads = [c[0] for c in cols] + (["wrk -t1 req/s (second load generator, 1 run)"] if wrk else [])
    lines = [f"## {sc['name']}: {sc['description']}", "",
             "| row | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
    for row in sc["rows"]:
        r = sc["results"][row]
        cells = [f(r["median"], r["min"], r["max"]) for _, f in cols]
        if wrk:
            cells.append(f"{wrk[row]:,.0f}" if wrk.get(row) else "-")
        lines.append(f"| {label(row)} | " + " | ".join(cells) + " |")
    for name, why in sc.get("external", {}).items():
        if isinstance(why, str):
            lines += ["", f"Reference {name}: {why}."]
    for row in sc["rows"]:
        r = sc["results"][row]
        if r["runs_without_requests"]:
            lines += ["", f"{label(row)}: {r['runs_without_requests']} run(s) completed no request in the "
                      "measured window; they are left out of the medians and ratios."]
        if r.get("runs_client_bound"):
            lines += ["", f"{label(row)}: loadgen was the limit (client-bound) in {r['runs_client_bound']} "
                      f"of {len(r['runs'])} runs: its figures are lower bounds, and its comparisons have the "
                      "verdict client-bound."]
        if r["runs_rate_not_kept"]:
            lines += ["", f"{label(row)}: loadgen could not keep the open-loop rate in {r['runs_rate_not_kept']} "
                      f"of {len(r['runs'])} runs (its latency then includes the backlog it built)."]
    if sc["comparisons"]:
        metrics = []
        for c in sc["comparisons"]:
            if c["metric"] not in metrics:
                metrics.append(c["metric"])
        heads = {"throughput_rps": "req/s", "server_us_per_request": "CPU per request",
                 "p99_us": "p99", "rss_kb": "RSS"}
        lines += ["", f"{subject} against each other row: ratio {subject}/row, 95% interval, verdict.", "",
                  f"| {subject} vs | " + " | ".join(heads.get(m, m) for m in metrics) + " |",
                  "|---|" + "---|" * len(metrics)]
        for other in sc["rows"]:
            if other == subject:
                continue
            cells = [stats.fmt_ratio(next((c for c in sc["comparisons"] if c["against"] == other
                                           and c["metric"] == m), None)) for m in metrics]
            lines.append(f"| {label(other)} | " + " | ".join(cells) + " |")
    lines += ["", f"![latency {sc['name']}](latency-{sc['name']}.svg)", ""]
    return lines


def headline(s):
    subject = s["subject"]
    out = []
    for sc in s["scenarios"]:
        cells = []
        for row in sc["rows"]:
            m = sc["results"][row]["median"]
            cells.append(f"{row} {m['throughput_rps']:,.0f}/s {m.get('server_us_per_request', 0):.2f}µs")
        out.append(f"{sc['name']}: " + ", ".join(cells))
        names = {"throughput_rps": "req/s", "server_us_per_request": "CPU/req", "p99_us": "p99", "rss_kb": "RSS"}
        for c in sc["comparisons"]:
            out.append(f"    {subject}/{c['against']} {names.get(c['metric'], c['metric'])}: {stats.fmt_ratio(c)}")
    for t in s["targets"]:
        out.append(f"target (issue {t['issue']}) {t['scenario']}: {t['what']}: {fmt_value(t)} → {t['status']}")
    return "\n".join(out)


def fmt_value(t):
    """A target's measured value: a ratio (`0.72× [0.67–0.78]`) or an absolute figure."""
    f = stats.num if t["against"] else (lambda v: f"{v:.3f}")
    unit = "×" if t["against"] else ""
    if t["ci95"] is None:
        return f(t["value"]) + unit
    return f"{f(t['value'])}{unit} [{f(t['ci95'][0])}–{f(t['ci95'][1])}]"


def label(row):
    return f"{row} (reference)" if row in ("nginx", "nginx-stream", "haproxy") else row


def opt(m, key, fmt):
    return fmt.format(m[key]) if m.get(key) is not None else "-"


def cpus(c):
    return ",".join(map(str, c))
