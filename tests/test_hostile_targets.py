"""Hostile targets: whatever a target sends, a run never hangs, lies, leaks or crashes.

Real loopback servers (tests/hostile.py) that stream huge bodies, send huge headers, dribble a byte at a
time, redirect in loops, speak garbage, answer Prometheus with NaN, ±Inf, errors and 100 k series, answer
Redis INFO with invalid RESP, and speak PostgreSQL that stalls or echoes the password. Each case asserts
the verdict, a wall-time bound as a multiple of the configured timeout (generous: it catches a hang, not
noise), no traceback and no leaked secret.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest

from acgs_checks.environment import Prometheus, Service
from acgs_checks.environment.model import Cache
from acgs_checks.probes import cache as cache_probe
from acgs_checks.probes import http, http_body
from acgs_checks.probes import prometheus as prom
from conftest import Run, RunSuite
from hostile import (
    Hostile,
    bulk,
    echo,
    endless_body,
    garbage,
    health_after_padding,
    huge_header,
    postgres_echo,
    prometheus,
    raw_json,
    redirect_to,
    redis,
    serving,
    slow_loris,
    vector,
)

TIMEOUT = 2.0


def _bounded(started: float, timeout: float = TIMEOUT, *, runs: int = 1) -> None:
    """The wall time of what started at ``started`` against its bound: a run of the suite costs about one
    timeout plus its start (a few seconds); ten timeouts and 15 s each is a hang, never noise."""
    elapsed = time.monotonic() - started
    assert elapsed < runs * (10 * timeout + 15), f"took {elapsed:.1f} s with a {timeout:g} s timeout"


def _message(run: Run, name: str) -> str:
    text = str(run.results()[name].get("statusDetails", {}).get("message", ""))
    return text.removeprefix("Failed: ").removeprefix("Skipped: ")


def _no_traceback(run: Run) -> None:
    assert "Traceback" not in run.output, run.output[-3000:]
    assert "INTERNALERROR" not in run.output, run.output[-3000:]


# --- the probes themselves, in process ------------------------------------------------------------

def _probe(handler: Callable[..., None], **service: object) -> http.HttpResult:
    with serving(handler) as server:
        started = time.monotonic()
        result = asyncio.run(http.probe_service(Service(name="svc", url=server.url, timeout_seconds=TIMEOUT,
                                                        **service)))  # type: ignore[arg-type]
        assert time.monotonic() - started < 3 * TIMEOUT + 2
        return result


def test_a_status_after_the_cap_is_not_read_and_never_passes() -> None:
    seen = _probe(health_after_padding(70 * 1024))
    assert seen.status == 200
    assert seen.body_truncated
    assert seen.health == http_body.UNREAD
    assert seen.health_value == "health body over 64 KiB; status not read"


def test_an_endless_body_is_cut_at_the_cap_within_the_timeout() -> None:
    seen = _probe(endless_body())
    assert seen.body_truncated
    assert seen.body_bytes == http.BODY_LIMIT
    assert seen.health == http_body.UNREAD


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "utf-8-sig"])
def test_a_body_is_decoded_by_what_it_is(encoding: str) -> None:
    seen = _probe(raw_json('{"status": "down"}'.encode(encoding)))
    assert seen.health == http_body.UNHEALTHY, seen


def test_a_body_that_cannot_be_decoded_is_unread() -> None:
    seen = _probe(raw_json(b'{"status": "ok\xff"}', "application/json; charset=utf-8"))
    assert seen.health == http_body.UNREAD
    assert "not valid utf-8 (declared)" in seen.health_value


def test_a_90_kib_header_answers_and_evidence_keeps_it_capped() -> None:
    seen = _probe(huge_header(90 * 1024))
    assert seen.status == 200
    assert seen.health == http_body.HEALTHY
    padding = dict(seen.headers)["x-padding"]
    assert len(padding) < http.HEADER_VALUE_LIMIT + 100
    assert "more characters" in padding


def test_a_header_over_the_http_limit_is_a_protocol_error() -> None:
    seen = _probe(huge_header(2 * 1024 * 1024))
    assert seen.outcome in (http.PROTOCOL, http.CLOSED), seen


def test_slow_loris_is_a_timeout() -> None:
    seen = _probe(slow_loris())
    assert seen.outcome == http.TIMEOUT, seen


def test_garbage_is_a_protocol_error() -> None:
    seen = _probe(garbage(b"\x00\xff\xfeNOT HTTP AT ALL\r\n\r\n"))
    assert seen.outcome in (http.PROTOCOL, http.CLOSED), seen


def test_a_redirect_loop_names_its_chain() -> None:
    seen = _probe(redirect_to("/health"))
    assert seen.outcome == http.REDIRECTS
    assert seen.detail.startswith("redirect loop: http://127.0.0.1:"), seen.detail
    assert "/health → http://127.0.0.1:" in seen.detail


def test_too_many_redirects_fail_and_a_redirect_is_followed_to_the_final_answer() -> None:
    counter = iter(range(1000))

    def onwards(conn: socket.socket, server: Hostile) -> None:  # a new place every time: no loop, only length
        redirect_to(f"/hop{next(counter)}")(conn, server)

    with serving(onwards) as server:
        seen = asyncio.run(http.probe_service(Service(name="svc", url=server.url, timeout_seconds=TIMEOUT,
                                                      max_redirects=3)))
    assert seen.outcome == http.REDIRECTS
    assert "more than 3 redirects" in seen.detail
    with serving(raw_json(b'{"status": "down"}', status="503 Service Unavailable")) as final, \
            serving(redirect_to(f"{final.url}/health")) as first:
        seen = asyncio.run(http.probe_service(Service(name="svc", url=first.url, timeout_seconds=TIMEOUT,
                                                      headers={"Authorization": "Bearer SecretToken1"})))
        assert seen.status == 503
        assert seen.redirects == (f"{final.url}/health",)
        # The token goes to the service's own host and port only.
        assert all(b"SecretToken1" not in request for request in final.seen)
    with serving(redirect_to("/elsewhere")) as server:
        seen = asyncio.run(http.probe_service(Service(name="svc", url=server.url, timeout_seconds=TIMEOUT,
                                                      follow_redirects=False)))
    assert seen.status == 302
    assert seen.outcome == http.RESPONSE


def _query(handler: Callable[..., None], promql: str = "up") -> tuple[float | None, str]:
    with serving(handler) as server:
        started = time.monotonic()
        found = asyncio.run(prom.query(Prometheus(url=server.url, timeout_seconds=TIMEOUT), promql))
        assert time.monotonic() - started < 3 * TIMEOUT + 2
        return found


@pytest.mark.parametrize(("body", "said"), [
    (vector("NaN"), "no data for up (NaN"),
    (vector("+Inf"), "no data for up (+inf: not a measurable value)"),
    (vector("-Inf"), "no data for up (-inf: not a measurable value)"),
    (b'{"status": "success", "data": {"resultType": "vector", "result": []}}', "no data for up"),
    (b'{"status": "error", "errorType": "bad_data", "error": "parse error at char 3"}',
     "query failed: HTTP 200 bad_data: parse error at char 3"),
    (b'{"status": "error"}', "query failed: HTTP 200 error: "),
    # JSON's own detection reads a NUL first byte as UTF-16 (RFC 8259's patterns).
    (b"\x00\xffgarbage", "query failed: HTTP 200, answer not valid utf-16-be at byte 8"),
    (b"\xff\xfe\x00", "query failed: HTTP 200, answer not valid utf-16"),
    (b"<html>no</html>", "query failed: HTTP 200, answer is not JSON: '<html>no</html>'"),
    (b'{"status": "success", "data": {"resultType": "vector", "result": [{"value": "x"}]}}',
     "query failed: up: not a sample"),
])
def test_prometheus_answers_that_are_not_a_number_say_what_came_back(body: bytes, said: str) -> None:
    value, error = _query(raw_json(body))
    assert value is None
    assert error.startswith(said), error


def test_a_megabyte_prometheus_error_is_kept_to_its_cap_in_linear_time() -> None:
    body = json.dumps({"status": "error", "errorType": "execution", "error": "ab://" * 200_000}).encode()
    value, error = _query(raw_json(body))
    assert value is None
    assert len(error) < prom.ERROR_LIMIT + 200
    assert "more characters" in error


def test_an_oversized_prometheus_answer_says_its_limit() -> None:
    value, error = _query(raw_json(vector("1", series=100_000)))
    assert value is None
    assert error == f"query failed: HTTP 200, answer over the {prom.ANSWER_LIMIT // 1024} KiB limit (not read)"


def test_a_prometheus_that_stalls_is_a_timeout() -> None:
    value, error = _query(prometheus({}, delay=TIMEOUT * 3))
    assert value is None
    assert "within" in error, error


def test_an_inf_series_makes_a_vector_no_data() -> None:
    with serving(raw_json(vector("+Inf", series=3))) as server:
        found, error = asyncio.run(prom.vector(Prometheus(url=server.url, timeout_seconds=TIMEOUT), "up"))
    assert found == []
    assert "is +inf" in error


def _cache(handler: Callable[..., None]) -> cache_probe.CacheSnapshot:
    with serving(handler) as server:
        seen = asyncio.run(cache_probe.probe_cache(Cache(name="main", url=f"redis://127.0.0.1:{server.port}/0",
                                                         timeout_seconds=TIMEOUT), window_seconds=0.1))
        assert all(not command.upper().startswith(b"HELLO") for command in server.seen), server.seen
        return seen


def test_a_redis_without_resp3_is_spoken_to_in_resp2() -> None:
    seen = _cache(redis(bulk(b"# Server\r\nredis_version:5.0.14\r\nkeyspace_hits:10\r\nkeyspace_misses:1\r\n")))
    assert seen.answered
    assert not seen.errors, seen
    assert seen.first["redis_version"] == "5.0.14"


@pytest.mark.parametrize("info", [b"$abc\r\n", b"!oops\r\n", bulk(b"\xff\xfe\x00 no fields at all"),
                                  bulk(b"used_memory:12:34:56\r\nkeyspace_hits\r\n"), b"*2\r\n:x\r\n"])
def test_redis_info_garbage_is_one_line(info: bytes) -> None:
    seen = _cache(redis(info))
    assert seen.answered
    message = seen.errors.get("info", "")
    if message:
        assert "\n" not in message
        assert "Traceback" not in message
        assert len(message) < 400


def test_a_redis_reply_declared_at_2_gb_is_refused_before_it_is_read() -> None:
    seen = _cache(redis(b"$2000000000\r\n" + b"x" * 65536))
    limit = cache_probe.READ_LIMIT // 2 ** 20
    assert seen.errors["info"] == ("protocol error: expected INFO's field:value lines, got ValueError: "
                                   f"the reply is over the {limit} MiB a connection may read")


# --- whole runs, as users run them ---------------------------------------------------------------

def _env(services: dict[str, str], extra: str = "") -> str:
    lines = [f'name = "hostile"\n[defaults]\ntimeout_seconds = {TIMEOUT:g}\n']
    for name, url in services.items():
        lines.append(f'[[services]]\nname = "{name}"\nurl = "{url}"\n')
    return "".join(lines) + extra


def test_a_run_against_hostile_http_and_prometheus_neither_hangs_nor_passes_what_it_did_not_read(
        run_suite: RunSuite, write_env: Callable[[str], Path]) -> None:
    with serving(health_after_padding(70 * 1024)) as padded, \
            serving(raw_json('{"status": "down"}'.encode("utf-16"))) as utf16, \
            serving(redirect_to("/health")) as loop, \
            serving(endless_body()) as endless, \
            serving(huge_header(90 * 1024)) as big_header, \
            serving(slow_loris()) as loris, \
            serving(prometheus({"": vector("+Inf")})) as metrics:
        env_file = write_env(_env({"padded": padded.url, "utf16": utf16.url, "loop": loop.url,
                                   "endless": endless.url, "bigheader": big_header.url, "loris": loris.url},
                                  f'[prometheus]\nurl = "{metrics.url}"\n'))
        started = time.monotonic()
        run = run_suite("-m", "daily", "--env", str(env_file), as_written=True)  # as the README writes it
        _bounded(started)
    _no_traceback(run)
    statuses = run.statuses()
    assert _message(run, "test_service_health[padded]").startswith("no data: padded: GET ")
    assert _message(run, "test_service_health[padded]").endswith("health body over 64 KiB; status not read")
    assert _message(run, "test_service_health[endless]").endswith("health body over 64 KiB; status not read")
    assert "body status='down'" in _message(run, "test_service_health[utf16]")
    assert "redirect loop: " in _message(run, "test_service_health[loop]")
    assert statuses["test_service_health[loop]"] == "failed"
    assert statuses["test_service_health[bigheader]"] == "passed"
    assert "no complete response within" in _message(run, "test_service_health[loris]")
    # +Inf from Prometheus is never a pass: no SLO case of any service passes on it.
    slo = {name: status for name, status in statuses.items() if name.startswith(("test_p9", "test_error_rate",
                                                                                "test_request_rate", "test_client"))}
    assert slo
    assert "passed" not in slo.values(), slo
    assert _message(run, "test_request_rate_floor[bigheader]").startswith("no data: "), run.output


NASTY_PASSWORD = 'Pw"q\\7Zx\'Lm9<&>%Kd'


def _forms(password: str, users: tuple[str, ...]) -> set[str]:
    found = {password, quote(password, safe=""), json.dumps(password)[1:-1], base64.b64encode(
        f":{password}".encode()).decode(), base64.b64encode(password.encode()).decode().rstrip("=")}
    found |= {base64.b64encode(f"{user}:{password}".encode()).decode() for user in users}
    return found


def test_targets_that_echo_the_credential_leak_it_nowhere(run_suite: RunSuite, write_env: Callable[[str], Path],
                                                          tmp_path: Path) -> None:
    encoded = quote(NASTY_PASSWORD, safe="")
    with serving(postgres_echo()) as pg, serving(redis(b"", echo_auth=True)) as cache, \
            serving(echo()) as service, serving(echo()) as metrics:
        env_file = write_env(_env(
            {"auth": f"http://monitor:{encoded}@127.0.0.1:{service.port}"},
            f'[prometheus]\nurl = "http://127.0.0.1:{metrics.port}"\nusername = "monitor"\n'
            f'password = "${{ACGS_NASTY}}"\n'
            f'[[databases]]\nname = "primary"\ndsn = "postgresql://acgs_monitor:{encoded}@127.0.0.1:{pg.port}/acgs"\n'
            f'[[caches]]\nname = "main"\nurl = "redis://acgs_monitor:{encoded}@127.0.0.1:{cache.port}/0"\n'))
        started = time.monotonic()
        run = run_suite("-m", "daily", "--env", str(env_file), f"--metrics-textfile={tmp_path / 'acgs.prom'}",
                        environ={"ACGS_NASTY": NASTY_PASSWORD})
        _bounded(started)
        # Every target was really sent the password, so each could echo it.
        assert any(NASTY_PASSWORD.encode() in seen for seen in pg.seen), pg.seen
        assert any(NASTY_PASSWORD.encode() in seen for seen in cache.seen), cache.seen
        assert any(b"Authorization: Basic" in seen for seen in service.seen + metrics.seen)
    _no_traceback(run)
    assert run.returncode == 1
    assert "password authentication failed" in _message(run, "test_database_connectivity[primary]")
    texts = {"terminal": run.output} | {str(p): p.read_text(errors="replace") for p in tmp_path.rglob("*")
                                        if p.is_file() and p != env_file}
    assert len(texts) > 10, sorted(texts)  # the terminal, JUnit, summary, metrics and the Allure files
    for form in _forms(NASTY_PASSWORD, ("monitor", "acgs_monitor")):
        leaked = [name for name, text in texts.items() if form in text]
        assert not leaked, (form, leaked)


def test_redis_garbage_and_a_stalling_postgres_are_one_line_each(run_suite: RunSuite,
                                                                  write_env: Callable[[str], Path]) -> None:
    with serving(redis(b"!garbage\r\n")) as cache, serving(postgres_echo(stall=True)) as pg:
        env_file = write_env(
            f'name = "hostile"\n[defaults]\ntimeout_seconds = {TIMEOUT:g}\n'
            f'[[caches]]\nname = "main"\nurl = "redis://127.0.0.1:{cache.port}/0"\n'
            f'[[databases]]\nname = "primary"\ndsn = "postgresql://monitor@127.0.0.1:{pg.port}/acgs"\n')
        started = time.monotonic()
        run = run_suite("-m", "daily", "--env", str(env_file))
        _bounded(started)
    _no_traceback(run)
    assert run.statuses()["test_cache_reachable[main]"] == "passed"
    assert _message(run, "test_cache_hit_rate[main]").startswith("no data: main: INFO on redis://127.0.0.1:")
    assert run.statuses()["test_database_connectivity[primary]"] == "failed"


def test_huge_text_from_files_and_targets_costs_linear_time(run_suite: RunSuite,
                                                            write_env: Callable[[str], Path]) -> None:
    """A 900 KB description in the environment file and 1 MB Prometheus errors (the masking worst case, which
    once made runs take minutes) cost a run about its timeout; a file over the 1 MiB cap is one line, exit 4."""
    error = json.dumps({"status": "error", "errorType": "execution", "error": "ab://x:" * 150_000}).encode()
    with serving(raw_json(b'{"status": "ok"}')) as service, serving(prometheus({"query": error})) as metrics:
        text = _env({"auth": service.url}, f'[prometheus]\nurl = "{metrics.url}"\n')
        env_file = write_env(text.replace('name = "hostile"\n', 'name = "hostile"\ndescription = "'
                                          + "ab://x:" * 128_000 + '"\n'))
        started = time.monotonic()
        run = run_suite("-m", "daily", "--env", str(env_file))
        _bounded(started)
        big = write_env(text.replace('name = "hostile"\n', 'name = "hostile"\ndescription = "'
                                     + "x" * (2 * 1024 * 1024) + '"\n'), name="big.toml")
        refused = run_suite("-m", "daily", "--env", str(big), alluredir=False)
    _no_traceback(run)
    assert run.statuses()["test_service_health[auth]"] == "passed"
    message = _message(run, "test_p95_latency[auth]")
    assert "query failed: HTTP 200 execution: ab://x:" in message, message
    assert len(message) < 1000, message  # the error is kept to its cap
    assert refused.returncode == 4
    lines = [line for line in refused.output.splitlines() if line.strip()]
    assert len(lines) == 1, refused.output[:2000]
    assert "more than the 1024 KiB an environment file may be" in lines[0]
