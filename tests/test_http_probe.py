"""The HTTP probe against real servers: each way of failing gets its own message."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from acgs_checks.environment import Service, Tls
from acgs_checks.probes import http, http_body
from conftest import RunSuite
from servers import RealServers, free_port


def service(url: str, **kw: object) -> Service:
    return Service(name="svc", title="svc", url=url, timeout_seconds=kw.pop("timeout", 1.0), **kw)  # type: ignore[arg-type]


def probe(svc: Service) -> http.HttpResult:
    return http.probe_services([svc])["svc"]


def test_healthy_json(servers: RealServers) -> None:
    port = servers.http(body=b'{"status": "UP"}').server_address[1]
    result = probe(service(f"http://127.0.0.1:{port}"))
    assert (result.outcome, result.status, result.health) == ("response", 200, "healthy")
    assert result.connect_seconds is not None
    assert result.first_byte_seconds is not None


def test_chunked_body_is_read(servers: RealServers) -> None:
    port = servers.http(body=b'{"status": "fail", "checks": {}}', chunked=True).server_address[1]
    result = probe(service(f"http://127.0.0.1:{port}"))
    assert result.health == "unhealthy"
    assert result.body_excerpt == '{"status": "fail", "checks": {}}'


def test_refused() -> None:
    result = probe(service(f"http://127.0.0.1:{free_port()}"))
    assert result.outcome == http.REFUSED
    assert "connection refused" in result.detail


def test_dns_failure() -> None:
    result = probe(service("http://acgs-checks-no-such-host.invalid:8000"))
    assert result.outcome == http.DNS
    assert "DNS lookup for 'acgs-checks-no-such-host.invalid' failed" in result.detail


def test_tls_untrusted_certificate(servers: RealServers) -> None:
    port = servers.https()
    result = probe(service(f"https://localhost:{port}"))
    assert result.outcome == http.TLS
    assert "certificate" in result.detail


def test_tls_with_the_right_ca_file(servers: RealServers, tmp_path: Path) -> None:
    port = servers.https(trusted_ca=servers.ca)
    ca = servers.ca_file(tmp_path)
    result = probe(service(f"https://localhost:{port}", tls=Tls(ca_file=str(ca))))
    assert (result.outcome, result.status) == ("response", 200), result.detail


def test_tls_hostname_mismatch(servers: RealServers, tmp_path: Path) -> None:
    port = servers.https(hostname="other.example", trusted_ca=servers.ca)
    result = probe(service(f"https://localhost:{port}", tls=Tls(ca_file=str(servers.ca_file(tmp_path)))))
    assert result.outcome == http.TLS
    assert "hostname" in result.detail.lower() or "match" in result.detail.lower()


def test_hang_is_a_timeout(servers: RealServers) -> None:
    result = probe(service(f"http://127.0.0.1:{servers.hang()}", timeout=0.5))
    assert result.outcome == http.TIMEOUT
    assert "no complete response within 0.5 s" in result.detail


def test_localhost_falls_back_to_ipv4(servers: RealServers) -> None:
    # "localhost" may resolve to ::1 first; the server listens on 127.0.0.1 only.
    port = servers.http().server_address[1]
    result = probe(service(f"http://localhost:{port}"))
    assert result.status == 200, result.detail


def test_configured_headers_are_sent(servers: RealServers) -> None:
    server = servers.http()
    port = server.server_address[1]
    probe(service(f"http://127.0.0.1:{port}", headers={"Authorization": "Bearer abc"}))
    assert server.seen_headers[0]["Authorization"] == "Bearer abc"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b'{"status": "healthy"}', "application/json", "healthy"),
        (b'{"status": "ok"}', "application/json", "healthy"),
        (b'{"status": "UP"}', "application/vnd.spring-boot.actuator.v3+json", "healthy"),
        (b'{"status": "pass"}', "application/health+json", "healthy"),
        (b'{"status": "warn"}', "application/health+json", "degraded"),
        (b'{"status": "fail"}', "application/health+json", "unhealthy"),
        (b'{"status": "DOWN"}', "application/json", "unhealthy"),
        (b'{"status": "OUT_OF_SERVICE"}', "application/json", "unhealthy"),
        (b'{"status": "maybe"}', "application/json", "unrecognised"),
        (b'{"status": 1}', "application/json", "unrecognised"),
        (b'{"uptime": 3}', "application/json", "not-reported"),
        (b"OK", "text/plain", "not-reported"),
        # Declared JSON that is not JSON: the status cannot be read, so it is not taken as "no status".
        (b"{not json", "application/json", "unread"),
        (b"{not json", "text/plain", "not-reported"),
        ('{"status": "down"}'.encode("utf-16"), "application/json", "unhealthy"),
        ('{"status": "down"}'.encode("utf-16-le"), "application/json", "unhealthy"),
        ('{"status": "down"}'.encode("utf-32"), "application/json", "unhealthy"),
        ('{"status": "down"}'.encode("latin-1"), "application/json; charset=latin-1", "unhealthy"),
        (b'{"status": "d\xffown"}', "application/json", "unread"),
        (b'{"status": "down"}', "application/json; charset=nonesuch", "unread"),
    ],
)
def test_classify_health(body: bytes, content_type: str, expected: str) -> None:
    assert http_body.classify_health(body, content_type)[0] == expected


def test_each_failure_has_its_own_message_in_the_suite(
        run_suite: RunSuite, servers: RealServers, write_env: Callable[[str], Path]) -> None:
    targets = {
        "refused": f"http://127.0.0.1:{free_port()}",
        "dns": "http://acgs-checks-no-such-host.invalid:8000",
        "tls": f"https://localhost:{servers.https()}",
        "hangs": f"http://127.0.0.1:{servers.hang()}",
        "error": f"http://127.0.0.1:{servers.http(status=500, body=b'boom').server_address[1]}",
        "unhealthy": f"http://127.0.0.1:{servers.http(body=json.dumps({'status': 'DOWN'}).encode()).server_address[1]}",
    }
    text = 'name = "edge"\n[defaults]\ntimeout_seconds = 1.0\n' + "".join(
        f'[[services]]\nname = "{name}"\nurl = "{url}"\n' for name, url in targets.items())
    run = run_suite("-m", "daily and p0 and health", "--env", str(write_env(text)))
    assert run.returncode == 1
    messages = {name.split("[")[1].rstrip("]"): r["statusDetails"]["message"]
                for name, r in run.results().items()}
    assert "connection refused: nothing is listening on 127.0.0.1:" in messages["refused"]
    assert "DNS lookup for 'acgs-checks-no-such-host.invalid' failed" in messages["dns"]
    assert "TLS certificate rejected" in messages["tls"]
    assert "connected, but no complete response within 1 s (target unreachable)" in messages["hangs"]
    assert "→ 500 in" in messages["error"]
    assert "(expected status < 400)" in messages["error"]
    assert "body status='DOWN'" in messages["unhealthy"]
    for name in ("refused", "dns", "tls", "hangs"):
        assert messages[name].endswith("(target unreachable)"), messages[name]


def test_a_stalled_tls_handshake_is_told_apart_from_a_stalled_connect(servers: RealServers) -> None:
    result = probe(service(f"https://127.0.0.1:{servers.hang()}", timeout=0.5))
    assert result.outcome == http.TLS_TIMEOUT
    assert result.detail == "TCP connected, but the TLS handshake did not finish within 0.5 s"


def test_client_certificate_for_mutual_tls(servers: RealServers, tmp_path: Path) -> None:
    """A service that requires a client certificate refuses the handshake without one and accepts ours."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    servers.ca.issue_cert("localhost").configure_cert(context)
    servers.ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    port = servers.http(tls=context).server_address[1]
    ca = str(servers.ca_file(tmp_path))
    client = servers.ca.issue_cert("acgs-checks")
    client.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "client.pem"))
    without = probe(service(f"https://localhost:{port}", tls=Tls(ca_file=ca)))
    assert without.outcome in (http.TLS, http.CLOSED), without.detail
    mine = Tls(ca_file=ca, client_cert=str(tmp_path / "client.pem"))
    with_cert = probe(service(f"https://localhost:{port}", tls=mine))
    assert (with_cert.outcome, with_cert.status) == ("response", 200), with_cert.detail
