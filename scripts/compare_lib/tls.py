"""TLS for `scripts/compare`'s HTTPS scenarios: one certificate per run (ECDSA P-256, made with
`openssl req`), and how every row gets it: ringd `--tls-cert/--tls-key`, nginx `ssl`
(`servers.nginx_http_conf`), HAProxy `bind … ssl crt`, each held to TLS 1.3, and loadgen checking it with `--cacert` against an
`https://` target. The same certificate, version and client for every row."""

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Material:
    """The run's certificate: its PEM files, and both in one file (HAProxy's `crt`)."""
    cert: str
    key: str
    combined: str


def make_certificate(directory):
    """A self-signed ECDSA P-256 certificate for 127.0.0.1 and localhost, written under
    `directory`; raises RuntimeError with openssl's last line when it cannot be made."""
    d = Path(directory)
    cert, key, combined = d / "tls-cert.pem", d / "tls-key.pem", d / "tls-combined.pem"
    try:
        subprocess.run(openssl_command(cert, key), check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise RuntimeError("the TLS scenarios need openssl to make their certificate (apt-get install openssl)")
    except subprocess.CalledProcessError as e:
        lines = e.stderr.strip().splitlines()
        raise RuntimeError(f"openssl could not make the TLS certificate: {lines[-1] if lines else e}")
    combined.write_text(cert.read_text() + key.read_text())
    return Material(cert=str(cert), key=str(key), combined=str(combined))


def openssl_command(cert, key):
    """`openssl req` for a one-day self-signed P-256 leaf (not a CA: webpki, which loadgen's
    rustls uses, refuses a CA certificate presented as a server's own)."""
    return ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext", "basicConstraints=critical,CA:FALSE"]


def ringd_args(m):
    """ringd's TLS options. It offers TLS 1.3 and 1.2; loadgen offers 1.3 alone
    (`loadgen_args`), so 1.3 is what is spoken, or the row fails."""
    return ["--tls-cert", m.cert, "--tls-key", m.key]


def loadgen_target(addr):
    """The `https://` URL loadgen loads for a server at `addr`."""
    return f"https://{addr}/"


def loadgen_args(m):
    """loadgen checks the certificate like a client would (no --insecure), resumes no
    session (every connection of a crr run does a full handshake) and offers TLS 1.3 alone:
    a server that would fall back to 1.2 fails its row instead of measuring another thing."""
    return ["--cacert", m.cert, "--tls-version", "1.3"]


HAPROXY_HTTPS_CONF = """global
    nbthread 1
    maxconn 8000
    pidfile {dir}/haproxy.pid
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
frontend https
    bind {host}:{port} ssl crt {combined} ssl-min-ver TLSv1.3 alpn http/1.1
    http-request return status 200 content-type text/plain string "Hello, World!"
"""


def haproxy_conf(m, directory, host, port):
    """HAProxy terminating TLS 1.3 (`bind … ssl crt`) and answering every request itself."""
    return HAPROXY_HTTPS_CONF.format(dir=directory, host=host, port=port, combined=m.combined)
