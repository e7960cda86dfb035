"""Where the servers and the load run: loopback in this network namespace (the default), or
`--net veth`: two network namespaces of our own joined by a veth pair with MTU 1500.

With veth, the server side (the server or proxy under test) lives in one namespace and the
client side (loadgen, the idle-connection holder, a proxy's backend) in the other, so every
byte the measured server sends or receives crosses a link with real segment sizes (offloads
are left at veth's defaults, as a NIC with TSO would have them) and, with `--rate`, a `tbf`
rate limit on both ends (netem is not in this kernel). Nothing is added to this namespace: the
addresses exist only inside the two namespaces. Both are deleted on exit, whatever the exit;
namespaces left by a run that was killed outright (SIGKILL) are deleted by the next one.
"""

import os
import re
import shutil
import subprocess

PREFIX = "ringd-cmp-"
SERVER_ADDR = "10.213.0.2"
CLIENT_ADDR = "10.213.0.1"


class Loopback:
    """Everything on 127.0.0.1 in the current namespace."""
    server_host = "127.0.0.1"
    client_host = "127.0.0.1"
    name = "loopback"

    def server_cmd(self, argv):
        return list(argv)

    def client_cmd(self, argv):
        return list(argv)

    def describe(self):
        return "loopback (127.0.0.1, 64 KiB MTU)"

    def close(self):
        pass


class Veth:
    """Two namespaces, `<prefix><pid>-s` (server) and `-c` (client), linked by veth."""
    server_host = SERVER_ADDR
    client_host = CLIENT_ADDR
    name = "veth"

    def __init__(self, rate=None):
        self.rate = rate
        tag = f"{PREFIX}{os.getpid()}"
        self.server_ns, self.client_ns = f"{tag}-s", f"{tag}-c"
        self.created = []

    def setup(self):
        remove_stale()
        s, c = self.server_ns, self.client_ns
        for ns in (s, c):
            ip("netns", "add", ns)
            self.created.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        # Both ends are created inside their namespaces: no name is ever taken in ours.
        ip("-n", s, "link", "add", "veth-s", "mtu", "1500", "type", "veth", "peer", "name", "veth-c",
           "netns", c)
        ip("-n", c, "link", "set", "veth-c", "mtu", "1500")
        ip("-n", s, "addr", "add", f"{SERVER_ADDR}/30", "dev", "veth-s")
        ip("-n", c, "addr", "add", f"{CLIENT_ADDR}/30", "dev", "veth-c")
        ip("-n", s, "link", "set", "veth-s", "up")
        ip("-n", c, "link", "set", "veth-c", "up")
        if self.rate:
            for ns, dev in ((s, "veth-s"), (c, "veth-c")):
                run(["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", self.rate,
                     "burst", "64kb", "latency", "20ms"])

    def server_cmd(self, argv):
        return ["ip", "netns", "exec", self.server_ns, *argv]

    def client_cmd(self, argv):
        return ["ip", "netns", "exec", self.client_ns, *argv]

    def describe(self):
        rate = f", tbf {self.rate} each way" if self.rate else ""
        return f"veth between two network namespaces ({CLIENT_ADDR} → {SERVER_ADDR}, MTU 1500{rate})"

    def close(self):
        # Deleting a namespace takes its end of the veth pair, and so the pair, with it. The
        # caller has stopped every process inside first (a namespace lives on while one does).
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.created = []


def check_veth():
    """None when --net veth can run here, else the one line saying why not."""
    if os.geteuid() != 0:
        return "--net veth needs root (it creates network namespaces and a veth pair); run as root or drop --net veth"
    for tool in ("ip", "tc"):
        if not shutil.which(tool):
            return f"--net veth needs `{tool}` (iproute2), which is not installed"
    return None


def remove_stale():
    """Deletes namespaces this script made in a run that is gone (its pid no longer exists)."""
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    for line in r.stdout.splitlines():
        m = re.match(rf"{re.escape(PREFIX)}(\d+)-[sc]\b", line)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            subprocess.run(["ip", "netns", "del", line.split()[0]], capture_output=True)


def ip(*args):
    run(["ip", *args])


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
