"""Loading environment files: variables, defaults, thresholds, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from acgs_checks import environment
from acgs_checks.errors import ConfigError
from acgs_checks.policy.thresholds import SPECS, Thresholds

ROOT = Path(__file__).resolve().parent.parent


def load(text: str, tmp_path: Path, **environ: str) -> environment.Environment:
    path = tmp_path / "e.toml"
    path.write_text(text)
    return environment.load(str(path), rootdir=ROOT, environ=environ)


def test_variables_and_defaults(tmp_path: Path) -> None:
    env = load(
        'name = "prod"\n[[services]]\nname = "auth"\nurl = "${AUTH_URL}"\n'
        '[[services]]\nname = "ai"\nurl = "${AI_URL:-http://ai:8001}"\nhealth_path = "/healthz"\n'
        'title = "Cost $$5"\n',
        tmp_path, AUTH_URL="https://auth.internal:8443",
    )
    assert env.service("auth").health_url == "https://auth.internal:8443/health"
    assert env.service("ai").health_url == "http://ai:8001/healthz"
    assert env.service("ai").title == "Cost $5"
    assert env.defaults.timeout_seconds == 2.0


def test_variable_set_wins_over_default(tmp_path: Path) -> None:
    env = load('name = "p"\n[[services]]\nname = "a"\nurl = "${U:-http://d}"\n', tmp_path, U="http://set")
    assert env.service("a").url == "http://set"


def test_secrets_are_collected_and_redacted(tmp_path: Path) -> None:
    env = load(
        'name = "p"\n[[services]]\nname = "a"\nurl = "http://user:${PW}@h:1"\n'
        'headers = { Authorization = "Bearer ${TOKEN}" }\n',
        tmp_path, PW="hunter2-secret", TOKEN="tok-123456",
    )
    assert "hunter2-secret" in env.secrets
    assert env.redact("x Bearer tok-123456 y hunter2-secret") == "x *** y ***"
    assert environment.display_url(env.service("a").url) == "http://user:***@h:1"
    assert "hunter2" not in repr(env.service("a"))


def test_thresholds_default_to_the_runbook(tmp_path: Path) -> None:
    t = load('name = "p"\n', tmp_path).thresholds
    assert (t.p95_warning_seconds, t.p99_warning_seconds, t.p99_critical_seconds) == (2.0, 5.0, 10.0)
    assert (t.error_rate_warning_percent, t.error_rate_critical_percent) == (1.0, 5.0)
    assert t.cache_hit_rate_min_percent == 85.0
    assert t.pool_usage_max_percent == 80.0
    assert (t.cpu_max_percent, t.memory_max_percent) == (80.0, 85.0)
    assert (t.disk_warning_percent, t.disk_critical_percent) == (90.0, 95.0)
    assert t.long_query_seconds == 300.0
    assert {s.key for s in SPECS} == set(Thresholds.__dataclass_fields__)


def test_threshold_override_from_variable(tmp_path: Path) -> None:
    env = load('name = "p"\n[thresholds]\np95_warning_seconds = "${P95:-1.5}"\n', tmp_path)
    assert env.thresholds.p95_warning_seconds == 1.5
    assert env.thresholds.overrides() == {"p95_warning_seconds": 1.5}


def test_error_names_file_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load('name = "p"\n[[services]]\nname = "a"\nurl = "http://h"\nverify_tls = "maybe"\n', tmp_path)
    assert str(caught.value).endswith("services[a].verify_tls: 'maybe' is not true or false; fix: write true or false")


def test_names_resolve_to_fixture_files() -> None:
    assert environment.resolve_path("local", rootdir=ROOT) == ROOT / "fixtures/environments/local.toml"
    local = environment.load("local", rootdir=ROOT)
    assert [(s.name, s.url) for s in local.services] == [
        ("auth", "http://localhost:8000"), ("constitutional-ai", "http://localhost:8001"),
        ("governance-synthesis", "http://localhost:8004"), ("policy-governance", "http://localhost:8005"),
    ]


def test_ca_file_is_relative_to_the_environment_file(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    env = load('name = "p"\n[[services]]\nname = "a"\nurl = "https://h"\nca_file = "ca.pem"\n', tmp_path)
    assert env.service("a").tls.ca_file == str(tmp_path / "ca.pem")
    with pytest.raises(ConfigError, match=r"services\[a\].ca_file: file .*missing.pem' does not exist"):
        load('name = "p"\n[[services]]\nname = "a"\nurl = "https://h"\nca_file = "missing.pem"\n', tmp_path)


def test_tls_keys_map_onto_libpq_and_relative_paths_follow_the_file(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    for name in ("ca.pem", "me.crt", "me.key"):
        (certs / name).write_text("-----BEGIN CERTIFICATE-----\n")
    env = load(
        'name = "p"\n[[databases]]\nname = "a"\ndsn = "postgresql://u@db:5432/x"\nca_file = "certs/ca.pem"\n'
        'client_cert = "certs/me.crt"\nclient_key = "certs/me.key"\n'
        '[[databases]]\nname = "b"\ndsn = "host=db1,db2 user=u sslmode=require sslrootcert=certs/ca.pem"\n'
        'ca_file = "certs/ca.pem"\n',
        tmp_path)
    a, b = env.databases
    assert dict(a.connect_params) == {"sslrootcert": str(certs / "ca.pem"), "sslcert": str(certs / "me.crt"),
                                      "sslkey": str(certs / "me.key"), "sslmode": "verify-full"}
    assert a.hosts == 1
    # The DSN's own sslmode wins; its relative sslrootcert is taken from the environment file's folder.
    assert dict(b.connect_params) == {"sslrootcert": str(certs / "ca.pem")}
    assert b.hosts == 2
    assert b.dsn == "host=db1,db2 user=u sslmode=require sslrootcert=certs/ca.pem"  # passed on unchanged


def test_prometheus_userinfo_becomes_basic_auth(tmp_path: Path) -> None:
    env = load('name = "p"\n[prometheus]\nurl = "https://mon%40team:${PW}@prom:9090/prefix"\n', tmp_path,
               PW="pa%2Fss-word")
    assert env.prometheus is not None
    assert (env.prometheus.url, env.prometheus.username, env.prometheus.password) == (
        "https://prom:9090/prefix", "mon@team", "pa/ss-word")
    assert env.redact("pa/ss-word and pa%2Fss-word") == "*** and ***"


@pytest.mark.parametrize("value", [
    "postgresql://acgs_monitor:ab/cd?ef@db:5432/acgs",
    "postgresql://acgs_monitor:ab@cd@db:5432/acgs",
    "postgresql://acgs_monitor:ab:cd@ef@db:5432/acgs",
])
def test_a_raw_reserved_character_in_a_password_is_refused_with_the_encoding_hint(tmp_path: Path,
                                                                                   value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load('name = "p"\n[[databases]]\nname = "a"\ndsn = "${DATABASE_URL}"\n', tmp_path, DATABASE_URL=value)
    line = str(caught.value)
    assert "databases[a].dsn" in line
    assert "percent-encode" in line
    assert "@ as %40" in line
    for fragment in ("ab", "cd", "ef"):
        assert f":{fragment}" not in line
        assert f"{fragment}@" not in line
    assert "acgs_monitor:***@" in line


def test_libpq_takes_a_raw_hash_in_a_password_and_the_suite_masks_it(tmp_path: Path) -> None:
    env = load('name = "p"\n[[databases]]\nname = "a"\ndsn = "postgresql://u:ab#cdef@db:5432/acgs"\n', tmp_path)
    assert environment.display_url(env.databases[0].dsn) == "postgresql://u:***@db:5432/acgs"
    assert env.redact("ab#cdef") == "***"


def test_libpq_parse_errors_never_echo_a_fragment_of_the_password(tmp_path: Path) -> None:
    """libpq quotes the token it choked on; a password with a quote in it must not split that masking."""
    with pytest.raises(ConfigError) as caught:
        load('name = "p"\n[[databases]]\nname = "a"\ndsn = "${DATABASE_URL}"\n', tmp_path,
             DATABASE_URL='postgresql://u:0001Aa%"0001Aa@db:5432/acgs')
    assert "0001Aa" not in str(caught.value)
