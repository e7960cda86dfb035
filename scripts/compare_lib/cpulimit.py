"""`--server-cpu-limit`: the server under test (every row alike: ringd, nginx, HAProxy, the proxy)
runs in a CPU-bandwidth cgroup, so that on a machine too small to give loadgen more CPU than
the server, the server is still the bottleneck. A proxy scenario's backend and loadgen stay
outside it.

The cgroup gets `quota` µs of CPU time per `period` µs (cgroup v1 `cpu.cfs_quota_us` and
`cpu.cfs_period_us`, or cgroup v2 `cpu.max`, whichever hierarchy has the cpu controller here).
A server is started inside it by a shell that writes its own PID to `cgroup.procs` and then
execs the server, so every process and thread the server makes is in it from the start. Once
its quota is spent, the cgroup's threads wait for the next period: latency percentiles then
include those stalls, which a short period keeps short.
"""

import os
import time
from pathlib import Path

PERIOD_US = 10_000   # 10 ms: throttling stalls of at most a few ms, not the default 100 ms
MIN_QUOTA_US = 1_000  # the kernel's smallest quota
PREFIX = "ringd-compare-"


def parse_fraction(text):
    """The limit as a fraction of the server CPUs' time, 0 < f ≤ 1; ValueError with the reason."""
    try:
        f = float(text)
    except ValueError:
        raise ValueError(f"--server-cpu-limit {text!r} is not a number (use e.g. 0.5)") from None
    if not 0 < f <= 1:
        raise ValueError(f"--server-cpu-limit {text!r} is outside (0, 1] (a fraction of the server CPUs)")
    return f


def quota_us(fraction, ncpus, period_us=PERIOD_US):
    """CPU µs per period for `fraction` of `ncpus` CPUs; ValueError below the kernel's minimum."""
    q = round(fraction * ncpus * period_us)
    if q < MIN_QUOTA_US:
        raise ValueError(f"--server-cpu-limit {fraction} gives {q} µs per {period_us} µs period, below the "
                         f"kernel's minimum of {MIN_QUOTA_US} µs")
    return q


def find_hierarchy(mounts, v2_controllers):
    """("v1", mount point) when a cgroup v1 hierarchy has the cpu controller, else ("v2", mount
    point) when the cgroup2 mount offers it (`v2_controllers(mount)` reads its
    cgroup.controllers), else None. `mounts` is /proc/self/mounts' text."""
    v2 = None
    for line in mounts.splitlines():
        f = line.split()
        if len(f) < 4:
            continue
        point, fstype, opts = f[1], f[2], f[3].split(",")
        if fstype == "cgroup" and "cpu" in opts:
            return "v1", point
        if fstype == "cgroup2" and v2 is None:
            v2 = point
    if v2 and "cpu" in v2_controllers(v2).split():
        return "v2", v2
    return None


def limit_files(version, quota, period):
    """The files to write, in order, and what: the period before the quota (v1), or cpu.max (v2)."""
    if version == "v1":
        return [("cpu.cfs_period_us", str(period)), ("cpu.cfs_quota_us", str(quota))]
    return [("cpu.max", f"{quota} {period}")]


def throttled(version, stat_text):
    """(periods throttled, seconds throttled) from the cgroup's cpu.stat."""
    kv = {}
    for line in stat_text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            kv[parts[0]] = int(parts[1])
    if version == "v1":
        return kv.get("nr_throttled", 0), kv.get("throttled_time", 0) / 1e9
    return kv.get("nr_throttled", 0), kv.get("throttled_usec", 0) / 1e6


class CpuLimit:
    """One cgroup for the run's server rows, made by `create` and removed by `close`."""

    def __init__(self, fraction, ncpus, period_us=PERIOD_US):
        self.fraction, self.period = fraction, period_us
        self.quota = quota_us(fraction, ncpus, period_us)
        self.path = None
        self.version = None

    def create(self):
        """Makes the cgroup; RuntimeError with the reason when this host cannot."""
        if os.geteuid() != 0:
            raise PermissionError("--server-cpu-limit needs root (it makes a cgroup)")
        found = find_hierarchy(Path("/proc/self/mounts").read_text(),
                               lambda m: read(Path(m, "cgroup.controllers")))
        if not found:
            raise RuntimeError("--server-cpu-limit: no cgroup hierarchy with the cpu controller is mounted")
        self.version, root = found
        remove_stale(Path(root))
        try:
            if self.version == "v2" and "cpu" not in read(Path(root, "cgroup.subtree_control")).split():
                Path(root, "cgroup.subtree_control").write_text("+cpu")
            path = Path(root, f"{PREFIX}{os.getpid()}")
            path.mkdir(exist_ok=True)
            self.path = path
            for name, value in limit_files(self.version, self.quota, self.period):
                Path(path, name).write_text(value)
        except OSError as e:
            raise RuntimeError(f"--server-cpu-limit: cannot set up a cgroup: {e}") from None

    def wrap(self, argv):
        """`argv` run inside the cgroup: a shell moves itself in, then execs it (same PID)."""
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.path / "cgroup.procs"), *argv]

    def stat(self):
        """(periods throttled, seconds throttled) so far."""
        return throttled(self.version, read(self.path / "cpu.stat"))

    def describe(self):
        return (f"server limited to {self.fraction:g} of its CPUs ({self.quota} µs per {self.period} µs period, "
                f"cgroup {self.version})")

    def close(self):
        """Removes the cgroup once its processes are gone (they are stopped before this)."""
        if self.path is None:
            return
        for _ in range(50):
            try:
                self.path.rmdir()
                self.path = None
                return
            except FileNotFoundError:
                self.path = None
                return
            except OSError:
                time.sleep(0.1)  # a stopped server's last threads are still exiting
        print(f"compare: could not remove cgroup {self.path} (still has processes)")


def remove_stale(root):
    """Removes empty cgroups left by an earlier run that was killed (rmdir fails on busy ones)."""
    for d in root.glob(f"{PREFIX}*"):
        pid = d.name[len(PREFIX):]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            try:
                d.rmdir()
            except OSError:
                pass


def read(path):
    try:
        return Path(path).read_text()
    except OSError:
        return ""
