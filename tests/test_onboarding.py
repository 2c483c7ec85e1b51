"""From zero to a real environment: ``acgs-checks init`` writes a first file from ACGS-2's variables and a real
Prometheus's targets; ``acgs-checks doctor`` names, per target, each grant the selected checks are missing.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import subprocess
import sys
import tomllib
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import jsonschema
import pytest

import servers
from acgs_checks.sandbox.servers import PostgresServer, RedisServer, free_port
from acgs_checks.sandbox.stack import render_toml
from conftest import ROOT, RunSuite

# How ACGS-2 deployments name the services' scrape jobs.
JOBS = {"auth": "auth_service", "constitutional-ai": "ac_service", "policy-governance": "pgc_service",
        "governance-synthesis": "gs_service"}


def _cli(*args: str, environ: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("CI", "DATABASE_URL", "REDIS_URL", "PGBOUNCER_URL", "PROMETHEUS_URL")}
    return subprocess.run([sys.executable, "-m", "acgs_checks.cli", *args], cwd=cwd, env={**env, **(environ or {})},
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture
def scraping(tmp_path: Path) -> Iterator[Callable[[dict[str, object]], str]]:
    """A real Prometheus scraping the sandbox's services under ACGS-2's job names, plus a job it cannot use."""
    with contextlib.ExitStack() as running:

        def start(data: dict[str, object]) -> str:
            if servers.PROMETHEUS is None:
                pytest.skip("needs prometheus (.ci/run installs it)")
            jobs = "".join(f"  - job_name: {JOBS[s['name']]}\n    static_configs:\n      - targets: "
                           f"['{urllib.parse.urlsplit(s['url']).netloc}']\n"
                           for s in data["services"])  # type: ignore[attr-defined]
            config = ("global:\n  scrape_interval: 500ms\nscrape_configs:\n" + jobs
                      + f"  - job_name: postgres_exporter\n    static_configs:\n      - targets: "
                      f"['127.0.0.1:{free_port()}']\n")
            # a few scrapes, so rate() has samples
            return running.enter_context(servers.prometheus(tmp_path, config, until='count(up{job=~".+_service"} == 1)',
                                                            equals=4, settle=3))

        yield start


def _outcomes(run_summary: Path) -> dict[str, str]:
    return {c["name"]: c["outcome"] for c in json.loads(run_summary.read_text())["checks"]}


def test_init_writes_a_file_whose_daily_verdicts_equal_the_hand_written_ones(
        run_suite: RunSuite, standalone_sandbox: Callable[..., Path], scraping: Callable[[dict[str, object]], str],
        tmp_path: Path) -> None:
    hand_file = standalone_sandbox()
    data = tomllib.loads(hand_file.read_text())
    base = scraping(data)
    variables = {"DATABASE_URL": data["databases"][0]["dsn"], "REDIS_URL": data["caches"][0]["url"],
                 "PGBOUNCER_URL": data["poolers"][0]["dsn"], "PROMETHEUS_URL": base}
    generated = tmp_path / "first" / "sandbox.toml"
    generated.parent.mkdir()
    done = _cli("init", "--name", "sandbox", "--output", str(generated), environ=variables)
    assert done.returncode == 0, done.stderr
    text = generated.read_text()
    # What it found, said; no secret in the file or the output; ${VAR} references instead.
    for line in ("service auth: from Prometheus target job='auth_service'", "database primary: from DATABASE_URL",
                 "cache main: from REDIS_URL", "pooler pgbouncer: from PGBOUNCER_URL",
                 "Prometheus targets not used (not a core service or node_exporter): job='postgres_exporter' (1)"):
        assert line in done.stdout, done.stdout
    for secret in (urllib.parse.urlsplit(variables[v]).password for v in ("DATABASE_URL", "REDIS_URL")):
        assert secret
        assert secret not in text + done.stdout + done.stderr
    assert 'dsn = "${DATABASE_URL}"' in text
    assert 'url = "${REDIS_URL}"' in text
    assert text.startswith("#:schema ./env.schema.json\n")
    assert "# p95_warning_seconds = 2  # seconds:" in text
    assert text.count("review:") >= 4
    # It validates against the published schema (written beside it) and as a run loads it.
    document = tomllib.loads(text)
    jsonschema.validate(document, json.loads((generated.parent / "env.schema.json").read_text()))
    assert [s["name"] for s in document["services"]] == list(JOBS)
    assert document["services"][0]["prometheus_selector"].startswith('job="auth_service",instance="127.0.0.1:')
    # Never overwritten without --force, and nothing read before saying so.
    again = _cli("init", "--name", "sandbox", "--output", str(generated), environ=variables)
    assert again.returncode == 4
    assert again.stderr.count("\n") == 1
    assert "already exists; fix: choose another --output, or pass --force" in again.stderr
    assert generated.read_text() == text

    # The same daily run through the hand-written file (with the same Prometheus) and the generated one, unedited.
    data["prometheus"] = {"url": base}
    data["slo"] = {"source": "prometheus"}
    hand = tmp_path / "hand.toml"
    hand.write_text(render_toml(data))
    by_hand = run_suite("-m", "daily", "--env", str(hand), f"--summary-json={tmp_path / 'hand.json'}")
    by_init = run_suite("-m", "daily", "--env", str(generated), f"--summary-json={tmp_path / 'init.json'}",
                        environ=variables)
    hand_outcomes, init_outcomes = _outcomes(tmp_path / "hand.json"), _outcomes(tmp_path / "init.json")
    # What init cannot know (the sandbox's host folder, its TLS gateway, [business] URLs) is only in the hand file.
    only_hand = {n for n in hand_outcomes if n not in init_outcomes}
    assert all(n.endswith("[sandbox-host]") or "[gateway]" in n or n.startswith(("test_constitutional_compliance",
               "test_policy_evaluation_success")) for n in only_hand), only_hand
    shared = set(hand_outcomes) & set(init_outcomes)
    assert len(shared) >= 60, shared
    assert {n: (hand_outcomes[n], init_outcomes[n]) for n in shared if hand_outcomes[n] != init_outcomes[n]} == {}, \
        by_hand.output + by_init.output
    # The only failure either way: this Prometheus holds none of the suite's alert rules (doctor and the alerting
    # docs say how to load them).
    assert {n for n, o in init_outcomes.items() if o == "failed"} == {"test_alert_rules_match_the_runbook"}, \
        by_init.output


def test_init_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    for args, needle in ((["--service", "auth"], "--service 'auth': not NAME=http(s)://host:port"),
                         (["--service", "auth=http://u:pw@auth:8000"], "the URL carries credentials"),
                         (["--from-env", "NOPE_URL"], "--from-env NOPE_URL: the variable is not set"),
                         (["--name", "Prod"], "--name 'Prod' is not a lower-case name")):
        done = _cli("init", "--output", str(tmp_path / "x.toml"), *args)
        assert done.returncode == 4, done.stderr
        assert needle in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
        assert not (tmp_path / "x.toml").exists()
    # A folder nothing can be written in (root included): one line, no traceback.
    done = _cli("init", "--output", "/sys/acgs-init.toml")
    assert done.returncode == 4
    assert done.stderr == ("acgs-checks init: /sys/acgs-init.toml: cannot be written (Permission denied); fix: "
                           "choose a writable --output\n"), done.stderr


def _doctor(*args: str, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _cli("doctor", *args, environ=environ)


def test_doctor_names_each_missing_grant_with_its_fix(narrow: tuple[PostgresServer, RedisServer, str],
                                                      tmp_path: Path) -> None:
    pg, cache, password = narrow
    env_file = tmp_path / "narrow.toml"
    env_file.write_text(
        'name = "narrow"\n'
        f'[[databases]]\nname = "primary"\ndsn = "postgresql://narrow:${{PW}}@127.0.0.1:{pg.port}/plain"\n'
        f'[[caches]]\nname = "main"\nurl = "redis://narrow:${{PW}}@127.0.0.1:{cache.port}/0"\n'
        '[[security.failed_logins]]\nname = "redis-acl"\ncache = "main"\n')
    done = _doctor("--env", str(env_file), "-k", "trust or failed_logins or slow_queries or connectivity",
                   environ={"PW": password})
    assert done.returncode == 1, done.stdout + done.stderr
    out = " ".join(done.stdout.split())  # a long fix is wrapped in the table
    assert password not in done.stdout + done.stderr
    assert "MISSING primary" in out, out
    # The exact statements: the account each target is read with is named, not <role>.
    assert "fix: GRANT SELECT ON pg_hba_file_rules TO narrow; GRANT EXECUTE ON FUNCTION pg_hba_file_rules() TO " \
           "narrow (as a superuser)" in out
    assert "test_slow_queries[primary]: no data" in out
    assert "CREATE EXTENSION pg_stat_statements" in out
    assert "MISSING redis-acl" in out
    assert "fix: ACL SETUSER narrow +acl|log (on main)" in out
    assert done.stdout.rstrip().splitlines()[-1].startswith("doctor: ")
    assert "cannot (exit 1)" in out
    report = json.loads(_doctor("--env", str(env_file), "-k", "trust", "--json", environ={"PW": password}).stdout)
    assert report["ok"] is False
    gaps = [gap for target in report["targets"] for gap in target["missing"]]
    assert [(g["check"], g["kind"]) for g in gaps] == [("test_postgres_no_remote_trust[primary]",
                                                        "insufficient privilege")], gaps
    # Nothing is written where a run would write (reports, history).
    assert not list(tmp_path.glob("**/history.sqlite"))

    # The README's grants (the sandbox's monitoring accounts) are enough: exit 0.
    granted = tmp_path / "granted.toml"
    granted.write_text(f'name = "granted"\n[[databases]]\nname = "primary"\ndsn = "{pg.dsn}"\n'
                       f'[[caches]]\nname = "main"\nurl = "{cache.url}"\n'
                       '[[security.failed_logins]]\nname = "redis-acl"\ncache = "main"\n')
    ok = _doctor("--env", str(granted), "-m", "monday", "-k", "trust or failed_logins or anonymous", environ={})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok      primary" in ok.stdout
    assert "0 cannot (exit 0)" in ok.stdout  # then the environment's runbook coverage (no daily check selected)


def test_doctor_and_init_answer_help_and_bad_input_in_one_line(tmp_path: Path) -> None:
    for command in ("init", "doctor"):
        assert _cli(command, "--help").returncode == 0
    # validate takes paths, and says so (it has no --env option to suggest).
    named = _cli("validate", "production.example")
    assert named.returncode == 4
    assert named.stderr == ("acgs-checks validate: production.example: no such file; fix: acgs-checks validate "
                            "fixtures/environments/production.example.toml\n")
    missing = _cli("doctor", "--env", str(tmp_path / "nope.toml"))
    assert missing.returncode == 4, missing.stdout + missing.stderr
    assert missing.stderr.count("\n") == 1, missing.stderr
    assert "environment file not found" in missing.stderr
    # Nothing selected is no preflight pass: one line saying why, exit 4.
    nothing = _cli("doctor", "--env", "sandbox", "-m", "friday and cache")
    assert nothing.returncode == 4, nothing.stdout + nothing.stderr
    assert nothing.stderr.count("\n") == 1, nothing.stderr
    assert "-m 'friday and cache' selects no check in environment 'sandbox'" in nothing.stderr


class _Targets(http.server.BaseHTTPRequestHandler):
    """A Prometheus whose targets carry hostile labels: quotes, newlines, control characters, TOML and PromQL
    syntax, a megabyte of label, more targets than init reads, and every password it can learn echoed back (the one
    its Authorization header carries, and the database's, which the test hands it)."""

    def do_GET(self) -> None:
        hostile = 'x"\n[[databases]]\nname = "evil"\x1b[31m\u2028\'' + "\\"
        sent = base64.b64decode(self.headers.get("Authorization", "Basic ").split()[-1]).decode()
        echoed = f"{sent.partition(':')[2]}-{getattr(self.server, 'echo', '')}"
        targets = [
            {"labels": {"job": f"echo-{echoed}", "instance": "e:1", "app": echoed}, "scrapeUrl": "http://e:1/m"},
            {"labels": {"job": "auth_service", "instance": f"127.0.0.1:1{hostile}"},
             "scrapeUrl": f"http://127.0.0.1:18000/metrics?{hostile}"},
            {"labels": {"job": "ac_service", "instance": "10.0.0.2:8001"}, "scrapeUrl": "http://10.0.0.2:8001/metrics"},
            {"labels": {"job": "node", "instance": f"db{hostile}:9100"}, "scrapeUrl": "http://db:9100/metrics"},
            {"labels": {"job": hostile * 20000, "instance": "a:1"}, "scrapeUrl": "http://a:1/metrics"},
            {"labels": "not a map", "scrapeUrl": 7},
            *({"labels": {"job": "x", "instance": f"h{i}:1"}, "scrapeUrl": f"http://h{i}:1/m"} for i in range(6000)),
        ]
        servers.answer(self, 200, json.dumps({"status": "success", "data": {"activeTargets": targets}}).encode())

    def log_message(self, *args: object) -> None:
        pass


def test_init_writes_what_a_hostile_prometheus_sends_as_data_never_as_syntax(tmp_path: Path) -> None:
    out = tmp_path / "hostile.toml"
    prometheus_password, database_password = "prom-Secret-4711", "db-Secret-0815"
    with servers.serving(_Targets, echo=database_password) as server:
        prometheus = servers.url_of(server).replace("http://", f"http://reader:{prometheus_password}@")
        done = _cli("init", "--output", str(out), environ={
            "PROMETHEUS_URL": prometheus, "DATABASE_URL": f"postgresql://m:{database_password}@db:5432/acgs"})
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "\x1b" not in done.stdout  # labels are shown escaped
    assert "Prometheus listed 6006 targets; the first 5000 were read" in done.stdout
    # What a target echoes is redacted before it is shown or written: the job is named, its secrets are not.
    assert "job='echo-***-***' (1)" in done.stdout, done.stdout
    for secret in (prometheus_password, database_password):
        assert secret not in done.stdout + done.stderr + out.read_text()
    document = tomllib.loads(out.read_text())  # still one valid TOML document
    # A label cannot add a section or an entry: the one database is DATABASE_URL's.
    assert [(d["name"], d["dsn"]) for d in document["databases"]] == [("primary", "${DATABASE_URL}")]
    # A target whose instance or address is not host:port is named as skipped, never written.
    assert [s["name"] for s in document["services"]] == ["constitutional-ai"]
    assert "hosts" not in document
    assert "2 Prometheus target(s) skipped: their instance or scrape address is not host:port" in done.stdout
    assert len(out.read_text()) < 100_000  # the megabyte label is cut, not copied
    jsonschema.validate(document, json.loads((tmp_path / "env.schema.json").read_text()))
