"""Tests of the summary and report: `python3 -m unittest discover -s scripts/compare_lib`."""

import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from compare_lib import report  # noqa: E402


def run(rps, client_bound=False):
    return {"throughput_rps": rps, "server_us_per_request": 1e6 / rps, "p50_us": 50.0, "p99_us": 90.0,
            "p999_us": 120.0, "rss_kb": 4000, "errors": 0, "hgrm": "runs/x.hgrm",
            "client_bound": client_bound}


def summary(a_runs, b_runs):
    results = {"echo64": {"description": "echo", "kind": "direct",
                          "runs": {"uring": a_runs, "epoll": b_runs}}}
    return report.summarise(results, ["uring", "epoll"], "uring", {}, {}, None, [])


class ClientBound(unittest.TestCase):
    def test_a_row_client_bound_in_any_round_is_never_faster_or_slower(self):
        fast = [run(150_000), run(152_000), run(149_000, client_bound=True), run(151_000), run(150_500)]
        slow = [run(100_000), run(101_000), run(99_000), run(100_500), run(100_200)]
        s = summary(fast, slow)
        sc = s["scenarios"][0]
        verdicts = {c["metric"]: c["verdict"] for c in sc["comparisons"]}
        self.assertEqual(verdicts, {"throughput_rps": "client-bound", "server_us_per_request": "client-bound"})
        self.assertEqual(sc["comparisons"][0]["client_bound_rows"], ["uring"])
        self.assertEqual(sc["results"]["uring"]["runs_client_bound"], 1)
        self.assertEqual(sc["results"]["epoll"]["runs_client_bound"], 0)
        md = "\n".join(report.scenario_md(sc, "uring", perf=False))
        row = next(line for line in md.splitlines() if line.startswith("| epoll | 1.50×"))
        self.assertEqual(row.count("client-bound"), 2, row)
        self.assertIn("loadgen was the limit (client-bound) in 1 of 5 runs", md)
        self.assertNotIn("faster", md)
        self.assertIn("client-bound", report.headline(s))

    def test_the_same_runs_without_a_client_bound_round_get_a_verdict(self):
        fast = [run(150_000), run(152_000), run(149_000), run(151_000), run(150_500)]
        slow = [run(100_000), run(101_000), run(99_000), run(100_500), run(100_200)]
        sc = summary(fast, slow)["scenarios"][0]
        verdicts = {c["metric"]: c["verdict"] for c in sc["comparisons"]}
        self.assertEqual(verdicts["throughput_rps"], "faster")
        self.assertNotIn("client_bound_rows", sc["comparisons"][0])


class Handshakes(unittest.TestCase):
    def test_a_tls_scenario_shows_its_handshake_p99_and_a_plain_one_does_not(self):
        plain = [run(100_000) for _ in range(3)]
        md = "\n".join(report.scenario_md(summary(plain, plain)["scenarios"][0], "uring", perf=False))
        self.assertNotIn("handshake", md)
        tls = [dict(run(1_000), handshake_p99_us=h, tls_handshakes=2_000) for h in (700.0, 900.0, 800.0)]
        sc = summary(tls, tls)["scenarios"][0]
        self.assertEqual(sc["results"]["uring"]["median"]["handshake_p99_us"], 800.0)
        md = "\n".join(report.scenario_md(sc, "uring", perf=False))
        head = next(line for line in md.splitlines() if line.startswith("| row |"))
        self.assertIn("handshake p99 µs", head)
        self.assertIn("| 800.0 |", next(line for line in md.splitlines() if line.startswith("| uring |")))


class CpuLimit(unittest.TestCase):
    def test_the_limit_and_the_throttling_seen_are_stated_only_under_a_limit(self):
        plain = [run(100_000) for _ in range(3)]
        self.assertIsNone(report.limit_md(None, summary(plain, plain)["scenarios"]))
        limited = [dict(run(50_000), throttled_share=t) for t in (0.3, 0.45, 0.4)]
        text = report.limit_md(dict(fraction=0.5, quota_us=5000, period_us=10000, cgroup="v1"),
                               summary(limited, plain)["scenarios"])
        self.assertIn("5,000 µs of CPU per 10,000 µs period (0.5 of the server CPUs)", text)
        self.assertIn("stalls of a throttled server", text)
        self.assertIn("during 30%..45% of the measured window", text)


if __name__ == "__main__":
    unittest.main()
