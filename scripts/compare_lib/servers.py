"""Starting and stopping what `scripts/compare` measures: ringd (an engine under test, or a
proxy's backend), and the reference servers when installed: nginx (HTTP), nginx `stream` and
HAProxy (`mode tcp`) as L4 proxies, and nginx and HAProxy terminating TLS (HTTPS, see
`tls.py`). The references get their configs written into the run's
temporary directory, run in the foreground with 1 worker / 1 thread, and are pinned like ringd.

Every process started here is registered, so that `stop_all` can end exactly those (by their
own PID) on any exit, Ctrl-C included.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from . import tls as tlsmod

STARTED = []

NGINX_MODULE_DIRS = ["/usr/lib/nginx/modules", "/usr/share/nginx/modules", "/usr/lib64/nginx/modules",
                     "/usr/local/nginx/modules", "/etc/nginx/modules"]

NGINX_HTTP_CONF = """worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    default_type text/plain;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {host}:{port}{ssl} reuseport;{tls}
        location / {{ return 200 'Hello, World!'; }}
    }}
}}
"""

# What NGINX_HTTP_CONF's server gets to serve HTTPS (TLS 1.3 only), for `--scenarios tls`.
NGINX_TLS = """
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;"""

NGINX_STREAM_CONF = """{load_module}worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
stream {{
    upstream backend {{ server {upstream}; }}
    server {{
        listen {host}:{port} reuseport;
        proxy_pass backend;
        proxy_connect_timeout 2s;
    }}
}}
"""

HAPROXY_CONF = """global
    nbthread 1
    maxconn 8000
    pidfile {dir}/haproxy.pid
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
frontend proxy
    bind {host}:{port}
    default_backend backend
backend backend
    server s1 {upstream}
"""


class Server:
    """A started server: its process, the PID whose CPU counts, and where it listens."""

    def __init__(self, proc, measure_pid, addr, name):
        self.proc, self.measure_pid, self.addr, self.name = proc, measure_pid, addr, name

    def stop(self):
        stop(self.proc)


def spawn(cmd, **kw):
    proc = subprocess.Popen(cmd, **kw)
    STARTED.append(proc)
    return proc


def stop(proc):
    """SIGTERM, then SIGKILL after 15 s; only ever this process, by its PID."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc in STARTED:
        STARTED.remove(proc)


def stop_all():
    for proc in list(reversed(STARTED)):
        try:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=5)
        except Exception:
            pass
    STARTED.clear()


def taskset(cpus):
    return ["taskset", "-c", ",".join(map(str, cpus))]


def start_ringd(bins, net_cmd, host, engine, args, cpus, name=None):
    """ringd pinned to `cpus` (one worker each) on host:0; returns a Server."""
    proc = spawn(net_cmd([*taskset(cpus), str(bins / "ringd"), "--engine", engine, "--listen", f"{host}:0",
                          "--threads", str(len(cpus)), "--log-level", "warn,ringd::process::server=info", *args]),
                 stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    return Server(proc, proc.pid, wait_listening(proc, engine), name or engine)


def wait_listening(proc, what):
    deadline = time.time() + 10
    seen = []
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError(f"ringd ({what}) exited before listening: {' '.join(seen[-3:]).strip()}")
        seen.append(line)
        m = re.search(r"listening on (\S+)", line)
        if m:
            # Keep reading stderr in the background so ringd never blocks on a full pipe.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return m.group(1)
    raise RuntimeError(f"ringd ({what}) did not say where it listens within 10 s")


def nginx_stream_module():
    """(load_module line, None) when nginx has the stream module, else (None, why not)."""
    if not shutil.which("nginx"):
        return None, "nginx is not installed (apt-get install nginx-light libnginx-mod-stream)"
    v = subprocess.run(["nginx", "-V"], capture_output=True, text=True).stderr
    if re.search(r"--with-stream(\s|$)", v):
        return "", None  # built in
    for d in NGINX_MODULE_DIRS:
        so = Path(d, "ngx_stream_module.so")
        if so.exists():
            return f"load_module {so};\n", None
    return None, "nginx has no stream module (apt-get install libnginx-mod-stream)"


def reference_available(kind):
    """None when the reference `kind` can run here, else the one line saying why not."""
    if kind == "nginx":
        return None if shutil.which("nginx") else "nginx is not installed (apt-get install nginx-light)"
    if kind == "nginx-stream":
        return nginx_stream_module()[1]
    if kind == "haproxy":
        return None if shutil.which("haproxy") else "haproxy is not installed (apt-get install haproxy)"
    raise ValueError(kind)


def nginx_http_conf(directory, host, port, tls=None):
    """nginx answering every GET as ringd's http protocol does; with `tls` (a tls.Material)
    over TLS 1.3."""
    extra = NGINX_TLS.format(cert=tls.cert, key=tls.key) if tls else ""
    return NGINX_HTTP_CONF.format(dir=directory, host=host, port=port, ssl=" ssl" if tls else "", tls=extra)


def start_reference(kind, net_cmd, host, cpus, tmp, upstream=None, tls=None):
    """nginx (HTTP), nginx-stream or haproxy on host:PORT, pinned to `cpus`; with `tls` (a
    tls.Material), nginx and haproxy serve HTTPS instead. Returns a Server whose measure_pid is
    the process that serves (nginx's worker, haproxy itself)."""
    port = free_port()
    d = Path(tmp, f"{kind}-{port}")
    d.mkdir(parents=True, exist_ok=True)
    if kind == "haproxy":
        conf = d / "haproxy.cfg"
        conf.write_text(tlsmod.haproxy_conf(tls, d, host, port) if tls else
                        HAPROXY_CONF.format(dir=d, host=host, port=port, upstream=upstream))
        cmd = ["haproxy", "-db", "-f", str(conf)]
    else:
        if kind == "nginx":
            text = nginx_http_conf(d, host, port, tls)
        else:
            load_module, why = nginx_stream_module()
            if load_module is None:
                raise RuntimeError(why)
            text = NGINX_STREAM_CONF.format(load_module=load_module, dir=d, host=host, port=port,
                                            upstream=upstream)
        conf = d / "nginx.conf"
        conf.write_text(text)
        cmd = ["nginx", "-p", str(d), "-c", str(conf)]
    proc = spawn(net_cmd([*taskset(cpus), *cmd]), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_port(proc, port, kind)
    measure = proc.pid if kind == "haproxy" else child_of(proc.pid)
    return Server(proc, measure, f"{host}:{port}", kind)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(proc, port, what):
    """Waits until `port` listens in `proc`'s network namespace (read from its /proc, so this
    works the same inside a namespace we cannot connect into)."""
    deadline = time.time() + 10
    suffix = f":{port:04X}"
    while time.time() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().strip().splitlines()
            raise RuntimeError(f"{what} exited at start: {err[-1] if err else 'no message'}")
        try:
            for line in Path(f"/proc/{proc.pid}/net/tcp").read_text().splitlines()[1:]:
                f = line.split()
                if f[1].endswith(suffix) and f[3] == "0A":  # 0A: LISTEN
                    threading.Thread(target=proc.stderr.read, daemon=True).start()
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within 10 s")


def child_of(parent):
    """nginx serves from its worker process: that is the one whose CPU counts."""
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            kids = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
            if kids:
                return int(kids[0])
        except OSError:
            pass
        time.sleep(0.05)
    return parent


def rss_kb(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid):
    """utime + stime of `pid` (all its threads), in seconds."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None
