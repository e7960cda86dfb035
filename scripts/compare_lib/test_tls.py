"""Tests of the HTTPS scenarios' certificate and server settings:
`python3 -m unittest discover -s scripts/compare_lib`."""

import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from compare_lib import servers, tls  # noqa: E402

MATERIAL = tls.Material(cert="/t/cert.pem", key="/t/key.pem", combined="/t/both.pem")


class Settings(unittest.TestCase):
    def test_every_row_is_held_to_tls_1_3_with_the_same_certificate(self):
        nginx = servers.nginx_http_conf("/t/nginx", "127.0.0.1", 8443, MATERIAL)
        self.assertIn("listen 127.0.0.1:8443 ssl reuseport;", nginx)
        self.assertIn("ssl_certificate /t/cert.pem;", nginx)
        self.assertIn("ssl_certificate_key /t/key.pem;", nginx)
        self.assertIn("ssl_protocols TLSv1.3;", nginx)
        plain = servers.nginx_http_conf("/t/nginx", "127.0.0.1", 8080)
        self.assertIn("listen 127.0.0.1:8080 reuseport;", plain)
        self.assertNotIn("ssl", plain)
        haproxy = tls.haproxy_conf(MATERIAL, "/t/haproxy", "127.0.0.1", 8444)
        self.assertIn("bind 127.0.0.1:8444 ssl crt /t/both.pem ssl-min-ver TLSv1.3 alpn http/1.1", haproxy)
        self.assertIn("nbthread 1", haproxy)
        self.assertIn("mode http", haproxy)
        self.assertEqual(tls.ringd_args(MATERIAL), ["--tls-cert", "/t/cert.pem", "--tls-key", "/t/key.pem"])

    def test_loadgen_checks_the_certificate_over_https_without_resuming(self):
        self.assertEqual(tls.loadgen_target("127.0.0.1:8443"), "https://127.0.0.1:8443/")
        args = tls.loadgen_args(MATERIAL)
        self.assertEqual(args, ["--cacert", "/t/cert.pem", "--tls-version", "1.3"])
        self.assertNotIn("--insecure", args)
        self.assertNotIn("--tls-resume", args)

    def test_the_certificate_is_a_p256_leaf_for_the_loopback_address(self):
        cmd = tls.openssl_command("c.pem", "k.pem")
        self.assertIn("ec_paramgen_curve:P-256", cmd)
        self.assertIn("subjectAltName=IP:127.0.0.1,DNS:localhost", cmd)
        self.assertIn("basicConstraints=critical,CA:FALSE", cmd)


@unittest.skipUnless(shutil.which("openssl"), "openssl is not installed")
class Certificate(unittest.TestCase):
    def test_make_certificate_writes_the_pair_and_their_concatenation(self):
        with tempfile.TemporaryDirectory() as d:
            m = tls.make_certificate(d)
            cert, key = Path(m.cert).read_text(), Path(m.key).read_text()
            self.assertTrue(cert.startswith("-----BEGIN CERTIFICATE-----"))
            self.assertIn("PRIVATE KEY-----", key)
            self.assertEqual(Path(m.combined).read_text(), cert + key)
            text = subprocess.run(["openssl", "x509", "-in", m.cert, "-noout", "-text"], check=True,
                                  capture_output=True, text=True).stdout
            self.assertIn("prime256v1", text)
            self.assertIn("IP Address:127.0.0.1", text)


if __name__ == "__main__":
    unittest.main()
