"""One probe's exception fails only its own target's cases; every other case runs as usual.

The targets are the real sandbox; what is simulated is a bug: for each probe kind, its probe
function is replaced in-process (pytester) by one that raises.
"""

from __future__ import annotations

from pathlib import Path

import psycopg  # noqa: F401 - imported once here: in-process runs must not load a second copy of the clients
import pytest
import redis  # noqa: F401

from acgs_checks.probes import business, cache, http, postgres, slo  # noqa: F401 - loaded before any run: see above

# probe kind -> (module, function, the target, a case of it, a case of another kind that must still pass)
KINDS = {
    "service": ("acgs_checks.probes.http", "probe_service", "auth", "test_service_health[auth]",
                "test_cache_reachable[main]"),
    "database": ("acgs_checks.probes.postgres", "probe_database", "primary", "test_database_connectivity[primary]",
                 "test_service_health[auth]"),
    "pooler": ("acgs_checks.probes.pooler", "probe_pooler", "pgbouncer", "test_pooler_reachable[pgbouncer]",
               "test_database_connectivity[primary]"),
    "cache": ("acgs_checks.probes.cache", "probe_cache", "main", "test_cache_reachable[main]",
              "test_database_connectivity[primary]"),
    "slo": ("acgs_checks.probes.slo", "from_samples", "auth", "test_p95_latency[auth]", "test_service_health[auth]"),
    "business": ("acgs_checks.probes.business", "business_metric", "compliance", "test_constitutional_compliance",
                 "test_p95_latency[auth]"),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_raising_probe_fails_only_its_own_cases(pytester: pytest.Pytester, armed_suite: Path,
                                                  monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    module, function, target, own_case, other_case = KINDS[kind]

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"simulated bug in the {kind} probe")

    monkeypatch.setattr(f"{module}.{function}", broken)
    reports = pytester.path / "reports"
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-m", "daily", f"--rootdir={armed_suite}", "--env=sandbox",
        f"--alluredir={reports / 'allure'}", f"--junitxml={reports / 'junit.xml'}",
        f"--summary-json={reports / 'summary.json'}", "-c", str(armed_suite / "pyproject.toml"),
        str(armed_suite / "checks"))
    outcomes = {report.head_line.split("::")[-1]: report.outcome
                for report in result.reprec.getreports("pytest_runtest_logreport")  # type: ignore[attr-defined]
                if report.when == "call" or report.outcome != "passed"}
    text = "\n".join(result.outlines)
    assert outcomes[own_case] == "failed", text
    assert outcomes[other_case] == "passed", text
    assert f"probe error: {target}: the {kind} probe raised RuntimeError: simulated bug in the {kind} probe" in text
    assert "ERROR" not in {o.upper() for o in outcomes.values()}
    assert int(result.ret) == 1
