"""When is a difference noise? Paired ratios over interleaved rounds, their confidence
interval, a verdict, and the targets of the issues checked against the interval.

Method. Every round runs every row (engine or reference) once, back to back, so round r gives
one paired ratio A_r / B_r per metric. The ratio reported is the geometric mean of those
per-round ratios, and its 95% confidence interval is Student's t on their logarithms:
exp(mean(log r) ± t(0.975, n-1) · sd(log r) / √n). Logarithms make A/B and B/A symmetric,
and t (rather than a bootstrap) keeps the interval honest with the 2 to 7 rounds we can
afford: a percentile bootstrap over 5 rounds cannot give an interval wider than the
smallest..largest ratio seen, and over 2 rounds it claims certainty from two numbers. One
round gives no interval. With 2 rounds the standard deviation rests on one degree of freedom,
so a narrow interval there is luck: a verdict needs at least 3 rounds, and a target (met or
missed) at least 5, as docs/benchmarks.md says. A verdict other than a tie needs the whole
interval on one side of 1; a target is met only when the whole interval is on its good side.
"""

import math
import statistics

# Two-sided 95%: t(0.975, df) for df = 1..30; beyond that the normal 1.96 is close enough.
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042]

MIN_ROUNDS_VERDICT = 3
MIN_ROUNDS_TARGET = 5

METHOD = ("Ratios are the geometric mean of the per-round paired ratios (each round runs every "
          "row once, back to back); [lo–hi] is their 95% confidence interval, Student's t on the "
          "logarithms of those ratios (n = rounds). A verdict other than *tie within noise* needs "
          "the whole interval on one side of 1 and at least 3 rounds; a target is met only when the "
          "whole interval clears it, over at least 5 rounds.")

# What a ratio above 1 means, per metric: (better when higher?, word when better, when worse).
METRICS = {
    "throughput_rps": (True, "faster", "slower"),
    "server_us_per_request": (False, "less CPU", "more CPU"),
    "p99_us": (False, "lower p99", "higher p99"),
    "rss_kb": (False, "less memory", "more memory"),
    "throughput_in_mib_s": (True, "faster", "slower"),
}


def t975(df):
    return T975[df - 1] if df <= len(T975) else 1.96


def interval(values):
    """Geometric mean of positive `values` and its 95% CI (None, None with one value)."""
    logs = [math.log(v) for v in values]
    centre = statistics.fmean(logs)
    if len(logs) < 2:
        return math.exp(centre), None, None
    half = t975(len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(centre), math.exp(centre - half), math.exp(centre + half)


def mean_interval(values):
    """Arithmetic mean of `values` and its 95% CI, for absolute targets (syscalls/request)."""
    centre = statistics.fmean(values)
    if len(values) < 2:
        return centre, None, None
    half = t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return centre, centre - half, centre + half


def paired(a_runs, b_runs, field):
    """Per-round ratios a/b of `field`; rounds where either is missing or zero are left out."""
    out = []
    for a, b in zip(a_runs, b_runs):
        x, y = a.get(field), b.get(field)
        if x and y and x > 0 and y > 0:
            out.append(x / y)
    return out


def verdict(metric, lo, hi, n):
    higher_better, better, worse = METRICS[metric]
    if lo is None or n < MIN_ROUNDS_VERDICT:
        return f"no verdict ({n} round{'s' if n != 1 else ''})"
    if lo > 1.0:
        return better if higher_better else worse
    if hi < 1.0:
        return worse if higher_better else better
    return "tie within noise"


def compare(a_name, a_runs, b_name, b_runs, metric):
    """One comparison: `a_name` over `b_name` on `metric`, with its interval and verdict."""
    ratios = paired(a_runs, b_runs, metric)
    if not ratios:
        return None
    ratio, lo, hi = interval(ratios)
    return {"subject": a_name, "against": b_name, "metric": metric, "rounds": len(ratios),
            "ratio": ratio, "ci95": [lo, hi] if lo is not None else None,
            "per_round": ratios, "verdict": verdict(metric, lo, hi, len(ratios))}


def target_status(op, bound, lo, hi, n):
    """`op` is "<=" or ">=": met when the whole interval is on the good side of `bound`,
    missed when the whole interval is on the bad side, otherwise not decided by this run."""
    if lo is None or n < MIN_ROUNDS_TARGET:
        return f"undecided ({n} round{'s' if n != 1 else ''}; needs {MIN_ROUNDS_TARGET})"
    if op == "<=":
        return "met" if hi <= bound else "missed" if lo > bound else "undecided (interval straddles it)"
    return "met" if lo >= bound else "missed" if hi < bound else "undecided (interval straddles it)"


def num(v):
    """A ratio for a table: two decimals, and no false precision at the extremes."""
    if v < 0.01:
        return "<0.01"
    if v >= 100:
        return ">100"
    return f"{v:.2f}"


def fmt_ratio(c):
    """`1.09× [1.02–1.15] faster`, or `1.09× (one round)`."""
    if c is None:
        return "-"
    if c["ci95"] is None:
        return f"{num(c['ratio'])}× (one round)"
    lo, hi = c["ci95"]
    return f"{num(c['ratio'])}× [{num(lo)}–{num(hi)}] {c['verdict']}"
