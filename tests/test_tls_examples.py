"""The documentation's "TLS and authentication" examples (docs/tls.md), run as written against real servers.

Each example is read from docs/tls.md (the block after its ``<!-- tls-example: NAME -->``
marker), written into an environment file next to a ``certs/`` folder from a private CA, and
given its variables; the target's P0 case must pass. Then one thing is broken (a stranger CA,
a wrong password or token, a certificate for another host, no client certificate) and the
same case must fail for that reason.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import trustme

import tls_servers
from acgs_checks import scratch as sandbox_processes
from acgs_checks.sandbox.servers import PgBouncerServer, PostgresServer, free_port, pgbouncer_binary
from conftest import ROOT, Run, RunSuite
from servers import answer, serving
from tls_servers import Pki

README = (ROOT / "docs" / "tls.md").read_text(encoding="utf-8")


def example(name: str) -> str:
    match = re.search(rf"<!-- tls-example: {re.escape(name)} -->\n```toml\n(.*?)```", README, re.S)
    assert match is not None, f"docs/tls.md has no tls-example {name}"
    return match.group(1)


@dataclass
class Setup:
    """An environment folder shaped like the examples expect: env.toml beside certs/."""

    folder: Path
    pki: Pki

    def write(self, body: str) -> Path:
        path = self.folder / "env.toml"
        path.write_text('name = "tls"\n' + body)
        return path


@pytest.fixture
def setup() -> Iterator[Setup]:
    # Servers that run as the postgres account must read the files: a folder that account owns.
    folder = sandbox_processes.workdir_for("acgs-test-tls-")
    try:
        pki = tls_servers.make_pki(folder / "certs")
        account = sandbox_processes.unprivileged_user()
        if account is not None:
            for path in (folder / "certs", *sorted((folder / "certs").iterdir())):
                os.chown(path, account.pw_uid, account.pw_gid)
        yield Setup(folder, pki)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _message(run: Run, case: str) -> str:
    """The case's one-line message as Allure shows it (allure-pytest puts pytest's "Failed: " before it)."""
    return str(run.results()[case].get("statusDetails", {}).get("message", "")).removeprefix("Failed: ")


def _stranger_ca(setup: Setup) -> None:
    trustme.CA().cert_pem.write_to_path(str(setup.pki.ca))


def test_postgres_verify_full(run_suite: RunSuite, setup: Setup) -> None:
    server = PostgresServer(port=free_port())
    server.start()
    try:
        tls_servers.enable_postgres_tls(server, setup.pki)
        env = setup.write(example("postgres"))
        variables = {"ACGS_DB_PASSWORD": server.monitor_password, "ACGS_DB_HOST": f"localhost:{server.port}"}
        run = run_suite("-m", "daily", "-k", "connectivity", "--env", str(env), environ=variables)
        assert run.statuses() == {"test_database_connectivity[primary]": "passed"}, run.output
        _stranger_ca(setup)
        refused = run_suite("-m", "daily", "-k", "connectivity", "--env", str(env), environ=variables)
        message = _message(refused, "test_database_connectivity[primary]")
        assert "certificate verify failed" in message, refused.output
        assert server.monitor_password not in refused.output + refused.all_files_text()
    finally:
        server.stop()


@pytest.mark.skipif(pgbouncer_binary() is None, reason="pgbouncer is not installed (.ci/run installs it)")
def test_pgbouncer_with_client_certificates(run_suite: RunSuite, setup: Setup) -> None:
    server = PostgresServer(port=free_port())
    server.start()
    pki = setup.pki
    bouncer = PgBouncerServer(port=free_port(), postgres=server, settings=(
        f"client_tls_sslmode = verify-full\nclient_tls_cert_file = {pki.server_cert}\n"
        f"client_tls_key_file = {pki.server_key}\nclient_tls_ca_file = {pki.ca}\n"))
    try:
        bouncer.start()
        variables = {"ACGS_DB_PASSWORD": server.monitor_password, "ACGS_PGBOUNCER_HOST": f"localhost:{bouncer.port}"}
        env = setup.write(example("pgbouncer"))
        run = run_suite("-m", "daily", "-k", "pooler_reachable", "--env", str(env), environ=variables)
        assert run.statuses() == {"test_pooler_reachable[pgbouncer]": "passed"}, run.output
        without_certificate = "\n".join(line for line in example("pgbouncer").splitlines()
                                        if not line.startswith("client_"))
        refused = run_suite("-m", "daily", "-k", "pooler_reachable", "--env", str(setup.write(without_certificate)),
                            environ=variables)
        assert refused.statuses() == {"test_pooler_reachable[pgbouncer]": "failed"}, refused.output
    finally:
        bouncer.stop()
        server.stop()


def test_redis_tls_with_client_certificates(run_suite: RunSuite, setup: Setup) -> None:
    password = secrets.token_urlsafe(12)
    port = free_port()
    process = tls_servers.redis_tls(setup.folder, port, setup.pki, password=password)
    other_port = free_port()
    try:
        # The same CA, but a certificate for another host: redis-py must refuse it.
        other = tls_servers.redis_tls(setup.folder, other_port, setup.pki, password=password,
                                      cert=setup.pki.wrong_host_cert, key=setup.pki.wrong_host_key)
    except BaseException:
        tls_servers.stop(process)
        raise
    try:
        env = setup.write(example("redis"))
        variables = {"ACGS_REDIS_PASSWORD": password, "ACGS_REDIS_HOST": f"localhost:{port}"}
        run = run_suite("-m", "daily", "-k", "cache_reachable", "--env", str(env), environ=variables)
        assert run.statuses() == {"test_cache_reachable[main]": "passed"}, run.output

        wrong_host = run_suite("-m", "daily", "-k", "cache_reachable", "--env", str(env),
                               environ={**variables, "ACGS_REDIS_HOST": f"localhost:{other_port}"})
        message = _message(wrong_host, "test_cache_reachable[main]")
        assert "(target unreachable)" in message, wrong_host.output
        assert "hostname" in message.lower() or "match" in message.lower(), message

        denied = run_suite("-m", "daily", "-k", "cache_reachable", "--env", str(env),
                           environ={**variables, "ACGS_REDIS_PASSWORD": "not-the-password"})
        assert _message(denied, "test_cache_reachable[main]").startswith("access denied: main: PING"), denied.output
    finally:
        tls_servers.stop(process)
        tls_servers.stop(other)


class _TokenHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = self.headers.get("Authorization") == f"Bearer {self.server.token}"  # type: ignore[attr-defined]
        answer(self, 200 if ok else 401, json.dumps({"status": "ok"} if ok else {"error": "unauthorized"}).encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def mutual_tls_service(setup: Setup) -> Iterator[tuple[int, str]]:
    """An HTTPS health endpoint that requires a client certificate from the CA and a bearer token."""
    token = secrets.token_urlsafe(12)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(setup.pki.server_cert, setup.pki.server_key)
    context.load_verify_locations(setup.pki.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    with serving(_TokenHandler, tls=context, token=token) as server:
        yield int(server.server_address[1]), token


def test_https_with_private_ca_mutual_tls_and_token(run_suite: RunSuite, setup: Setup,
                                                   mutual_tls_service: tuple[int, str]) -> None:
    port, token = mutual_tls_service
    env = setup.write(example("https"))
    variables = {"ACGS_AUTH_HOST": f"localhost:{port}", "ACGS_HEALTH_TOKEN": token}
    run = run_suite("-m", "daily and health", "--env", str(env), environ=variables)
    assert run.statuses() == {"test_service_health[auth]": "passed", "test_service_not_degraded[auth]": "passed"}, \
        run.output
    denied = run_suite("-m", "daily and health", "--env", str(env), environ={**variables, "ACGS_HEALTH_TOKEN": "no"})
    assert _message(denied, "test_service_health[auth]").startswith("access denied: auth: GET"), denied.output
    assert "→ 401" in _message(denied, "test_service_health[auth]")


@pytest.mark.skipif(tls_servers.PROMETHEUS is None, reason="prometheus is not installed (.ci/run installs it)")
def test_prometheus_basic_auth_and_tls(run_suite: RunSuite, setup: Setup) -> None:
    password = secrets.token_urlsafe(12)
    port = free_port()
    process = tls_servers.prometheus(setup.folder / "prometheus", port, setup.pki, username="acgs-checks",
                                     password=password)
    try:
        env = setup.write(example("prometheus-basic"))
        variables = {"ACGS_PROMETHEUS_HOST": f"localhost:{port}", "ACGS_PROMETHEUS_PASSWORD": password}
        run = run_suite("-m", "daily", "-k", "metrics_source", "--env", str(env), environ=variables)
        assert run.statuses() == {"test_metrics_source_reachable": "passed"}, run.output

        # The same credentials in the URL become basic auth.
        in_url = setup.write('[prometheus]\nurl = "https://acgs-checks:${ACGS_PROMETHEUS_PASSWORD}@'
                             '${ACGS_PROMETHEUS_HOST}"\nca_file = "certs/internal-ca.pem"\n')
        run = run_suite("-m", "daily", "-k", "metrics_source", "--env", str(in_url), environ=variables)
        assert run.statuses() == {"test_metrics_source_reachable": "passed"}, run.output

        denied = run_suite("-m", "daily", "-k", "metrics_source", "--env", str(env),
                           environ={**variables, "ACGS_PROMETHEUS_PASSWORD": "wrong-password"})
        message = _message(denied, "test_metrics_source_reachable")
        assert message.startswith("access denied: prometheus: the metrics source → "), denied.output
        assert "HTTP 401" in message
    finally:
        tls_servers.stop(process)


@pytest.mark.skipif(tls_servers.PROMETHEUS is None or tls_servers.NGINX is None,
                    reason="prometheus and nginx are not installed (.ci/run installs them)")
def test_prometheus_behind_a_bearer_token_proxy(run_suite: RunSuite, setup: Setup) -> None:
    token = secrets.token_urlsafe(16)
    backend, proxy = free_port(), free_port()
    prometheus = tls_servers.prometheus(setup.folder / "prometheus", backend)
    try:
        nginx = tls_servers.nginx_bearer_proxy(setup.folder / "nginx", proxy, setup.pki, token=token,
                                               upstream=f"http://127.0.0.1:{backend}")
    except BaseException:
        tls_servers.stop(prometheus)  # nothing may outlive the test, whatever failed
        raise
    try:
        env = setup.write(example("prometheus-bearer"))
        variables = {"ACGS_PROMETHEUS_PROXY_HOST": f"localhost:{proxy}", "ACGS_PROMETHEUS_TOKEN": token}
        run = run_suite("-m", "daily", "-k", "metrics_source", "--env", str(env), environ=variables)
        assert run.statuses() == {"test_metrics_source_reachable": "passed"}, run.output
        denied = run_suite("-m", "daily", "-k", "metrics_source", "--env", str(env),
                           environ={**variables, "ACGS_PROMETHEUS_TOKEN": "wrong-token"})
        assert _message(denied, "test_metrics_source_reachable").startswith("access denied:"), denied.output
        assert token not in denied.output + denied.all_files_text()
    finally:
        tls_servers.stop(nginx)
        tls_servers.stop(prometheus)


def test_credentials_given_twice_are_refused(run_suite: RunSuite, setup: Setup) -> None:
    env = setup.write('[prometheus]\nurl = "https://u:${P}@localhost:9"\nusername = "u"\n')
    run = run_suite("-m", "daily", "--env", str(env), environ={"P": "a-secret-password"}, alluredir=False)
    assert run.returncode == 4, run.output
    assert "prometheus.url: has user:password@ and username, password or bearer_token is set too" in run.output
    assert "a-secret-password" not in run.output

