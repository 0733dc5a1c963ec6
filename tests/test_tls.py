"""Sealed traffic: a real Redis that speaks only TLS and wants a password, with a certificate made here.

A run completes over `rediss://:PASSWORD@host:port/0?ssl_cert_reqs=required&ssl_ca_certs=CA`; Flower
lists its worker and the dashboard shows the run over the same settings; a wrong password and a
certificate signed by another authority each give one line that does not show the password.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from supersmm_tasks.broker import free_loopback_port
from supersmm_tasks.testing import redis_server_binary, wait_until_answering

DEBIAN_REDIS_SERVER = Path("/usr/bin/redis-server")  # built with TLS (a redis-server elsewhere may not be)
from test_flower import get_json, stop_flower

pytestmark = pytest.mark.integration  # a TLS redis-server and commands in subprocesses

PASSWORD = "tls-s3cret-4"


def write_authority(folder: Path, name: str) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed certificate authority: its PEM file, key and certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256()))
    path = folder / f"{name}.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path, key, certificate


def write_server_certificate(folder: Path, authority_key, authority: x509.Certificate) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost signed by the authority: (certificate file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(authority.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(authority_key, hashes.SHA256()))
    certificate_path, key_path = folder / "server.pem", folder / "server.key"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return certificate_path, key_path


class TlsRedis:
    """redis-server with its plain port off, TLS on a free port, and a password."""

    def __init__(self, folder: Path):
        folder.mkdir()
        self.folder = folder
        self.authority, key, certificate = write_authority(folder, "test_authority")
        self.stranger, _, _ = write_authority(folder, "another_authority")
        server_certificate, server_key = write_server_certificate(folder, key, certificate)
        self.port = free_loopback_port()
        self.process = subprocess.Popen(
            [str(DEBIAN_REDIS_SERVER) if DEBIAN_REDIS_SERVER.exists() else redis_server_binary(),
             "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
             "--tls-cert-file", str(server_certificate), "--tls-key-file", str(server_key),
             "--tls-ca-cert-file", str(self.authority), "--tls-auth-clients", "no",
             "--requirepass", PASSWORD, "--dir", str(folder), "--appendonly", "yes", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until_answering(redis.Redis.from_url(self.url()), f"TLS redis-server on port {self.port}")

    def url(self, password: str = PASSWORD, authority: Path | None = None) -> str:
        return (f"rediss://:{password}@127.0.0.1:{self.port}/0"
                f"?ssl_cert_reqs=required&ssl_ca_certs={authority or self.authority}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def tls_redis(tmp_path):
    server = TlsRedis(tmp_path / "tls")
    yield server
    server.stop()


@pytest.fixture
def tls_home(training_home, tls_redis, monkeypatch):
    """training_home with its broker on the TLS Redis."""
    monkeypatch.setenv("SUPERSMM_BROKER_URL", tls_redis.url())
    training_home.env["SUPERSMM_BROKER_URL"] = tls_redis.url()
    return training_home


def test_the_plain_port_is_closed_and_plain_text_is_refused(tls_redis):
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=tls_redis.port, socket_timeout=2).ping()


def test_a_run_completes_over_tls_and_flower_and_the_dashboard_see_it(tls_home, workers, tmp_path):
    assert tls_home.enqueue("sealed", epochs=2, chunk=1).startswith("queued run sealed")
    worker = workers.start("sealed")
    state = tls_home.wait_until_finished("sealed", 300, [worker])
    assert state["status"] == "completed"
    assert tls_home.csv_epochs("sealed") == [1, 2]

    flower_port, dashboard_port = free_loopback_port(), free_loopback_port()
    started = [
        subprocess.Popen([sys.executable, "-m", "celery", "-A", "supersmm_tasks", "flower", f"--port={flower_port}",
                          "--basic-auth=watcher:s3cret"], env=tls_home.env,
                         stdout=open(tmp_path / "flower.log", "wb"), stderr=subprocess.STDOUT),
        subprocess.Popen([sys.executable, "-m", "supersmm_tasks.cli", "dashboard", "--port", str(dashboard_port)],
                         env=tls_home.env, stdout=open(tmp_path / "dashboard.log", "wb"), stderr=subprocess.STDOUT),
    ]
    try:
        workers_seen = tls_home.wait_for(
            lambda: _answer(f"http://127.0.0.1:{flower_port}/api/workers?refresh=true", "watcher:s3cret"), 120,
            f"Flower to list the worker ({tmp_path / 'flower.log'})")
        assert worker.hostname in workers_seen
        runs_seen = tls_home.wait_for(lambda: _answer(f"http://127.0.0.1:{dashboard_port}/api/runs"), 120,
                                      f"the dashboard ({tmp_path / 'dashboard.log'})")
        assert "sealed" in str(runs_seen) and "completed" in str(runs_seen)
    finally:
        flower, dashboard = started
        stop_flower(flower)
        dashboard.terminate()
        dashboard.wait(timeout=30)


def _answer(url: str, credentials: str | None = None):
    try:
        return get_json(url, credentials) or None
    except OSError:
        return None


@pytest.mark.parametrize("problem", ["wrong_password", "untrusted_certificate"])
def test_a_wrong_password_or_certificate_is_one_line_without_the_password(tls_redis, tmp_path, problem):
    url = tls_redis.url(password="not-the-" + PASSWORD) if problem == "wrong_password" else \
        tls_redis.url(authority=tls_redis.stranger)
    env = {"SUPERSMM_HOME": str(tmp_path / "home"), "SUPERSMM_BROKER_URL": url}
    for command in (["supersmm_tasks.cli", "status"], ["supersmm_tasks.cli", "enqueue", "primus"]):
        result = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, timeout=120,
                                env={**os.environ, **env})
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert PASSWORD not in lines[0]
        assert f"127.0.0.1:{tls_redis.port}" in lines[0]
        assert ("password" in lines[0]) if problem == "wrong_password" else ("certificate" in lines[0])
