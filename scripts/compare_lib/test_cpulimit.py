"""Tests of `--server-cpu-limit`'s pure parts: `python3 -m unittest discover -s scripts/compare_lib`."""

import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from compare_lib import cpulimit  # noqa: E402

# /proc/self/mounts of a host with cgroup v1 controllers and an empty cgroup2 beside them.
HYBRID = """tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""
V2_ONLY = """proc /proc proc rw 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0
"""
V1_COMBINED = "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0\n"


class Fraction(unittest.TestCase):
    def test_accepts_fractions_of_the_server_cpus_and_rejects_the_rest(self):
        self.assertEqual(cpulimit.parse_fraction("0.5"), 0.5)
        self.assertEqual(cpulimit.parse_fraction("1"), 1.0)
        for bad in ("0", "-0.5", "1.5", "half", "", "nan"):
            with self.assertRaises(ValueError, msg=bad):
                cpulimit.parse_fraction(bad)

    def test_quota_is_the_fraction_of_every_server_cpu_per_period(self):
        self.assertEqual(cpulimit.quota_us(0.5, 1, 10_000), 5_000)
        self.assertEqual(cpulimit.quota_us(0.5, 2, 10_000), 10_000)
        self.assertEqual(cpulimit.quota_us(0.1, 1, 10_000), 1_000)
        with self.assertRaises(ValueError):
            cpulimit.quota_us(0.05, 1, 10_000)  # 500 µs: below the kernel's minimum


class Hierarchy(unittest.TestCase):
    def test_v1_cpu_controller_wins_over_a_cgroup2_mount(self):
        self.assertEqual(cpulimit.find_hierarchy(HYBRID, lambda m: ""), ("v1", "/sys/fs/cgroup/cpu"))
        self.assertEqual(cpulimit.find_hierarchy(V1_COMBINED, lambda m: ""), ("v1", "/sys/fs/cgroup/cpu,cpuacct"))

    def test_v2_only_when_it_offers_the_cpu_controller(self):
        self.assertEqual(cpulimit.find_hierarchy(V2_ONLY, lambda m: "cpuset cpu io memory pids\n"),
                         ("v2", "/sys/fs/cgroup"))
        self.assertIsNone(cpulimit.find_hierarchy(V2_ONLY, lambda m: "cpuset io memory\n"))
        self.assertIsNone(cpulimit.find_hierarchy("proc /proc proc rw 0 0\n", lambda m: "cpu"))

    def test_limit_files_set_the_period_before_the_quota(self):
        self.assertEqual(cpulimit.limit_files("v1", 5000, 10000),
                         [("cpu.cfs_period_us", "10000"), ("cpu.cfs_quota_us", "5000")])
        self.assertEqual(cpulimit.limit_files("v2", 5000, 10000), [("cpu.max", "5000 10000")])

    def test_throttling_read_from_either_cpu_stat(self):
        v1 = "nr_periods 900\nnr_throttled 450\nthrottled_time 2250000000\nnr_bursts 0\n"
        v2 = "usage_usec 5\nnr_periods 900\nnr_throttled 450\nthrottled_usec 2250000\n"
        self.assertEqual(cpulimit.throttled("v1", v1), (450, 2.25))
        self.assertEqual(cpulimit.throttled("v2", v2), (450, 2.25))
        self.assertEqual(cpulimit.throttled("v1", ""), (0, 0.0))


class Wrap(unittest.TestCase):
    def test_the_server_writes_its_own_pid_then_runs_as_that_pid(self):
        with tempfile.TemporaryDirectory() as d:
            lim = cpulimit.CpuLimit(0.5, 1)
            lim.path = Path(d)
            procs = Path(d, "cgroup.procs")
            procs.write_text("")
            argv = [sys.executable, "-c", "import os, sys; print(os.getpid(), sys.argv[1:])", "a b", "$c"]
            proc = subprocess.Popen(lim.wrap(argv), stdout=subprocess.PIPE, text=True)
            out, _ = proc.communicate(timeout=30)
            self.assertEqual(out.strip(), f"{proc.pid} ['a b', '$c']")
            self.assertEqual(procs.read_text().strip(), str(proc.pid))


if __name__ == "__main__":
    unittest.main()
