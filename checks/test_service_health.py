"""Morning health check, step 1: every core service answers its health endpoint.

The runbook does this with ``curl -f http://HOST:PORT/health`` per service: a status
below 400 passes. Here a JSON body that reports its own status must also say healthy.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from acgs_checks.probes.http import REDIRECTS, HttpResult, summary
from acgs_checks.probes.http_body import DEGRADED, UNHEALTHY, UNREAD, UNRECOGNISED
from acgs_checks.verdict import blocked_by, breached, judge, measure, no_data, unreachable

pytestmark = [pytest.mark.daily, pytest.mark.health]


def _down(seen: HttpResult) -> bool:
    return not seen.answered or (seen.status or 0) >= 400 or seen.health in (UNHEALTHY, UNREAD)


@pytest.mark.p0
@pytest.mark.runbook("daily.service-health", "alerts.critical.service-down")
@pytest.mark.reachability
def test_service_health(health: HttpResult) -> None:
    """The health endpoint answers with a status below 400 and does not report itself failing.

    Redirects are followed as the service's ``follow_redirects`` says, and the final answer is judged.
    """
    if health.outcome == REDIRECTS:
        breached(summary(health), "a final answer within the redirects allowed")
    if not health.answered:
        unreachable(summary(health))
    if health.status in (401, 403):
        unreachable(summary(health), denied=health.denied)
    if health.status == 400 and "invalid host header" in health.body_excerpt.lower():
        # Starlette's TrustedHostMiddleware (ACGS-2's services): the name in the URL is not one the service allows.
        host = urlsplit(health.url).netloc.rsplit("@", 1)[-1]
        breached(f"{summary(health)}: the service refused the Host header {host!r} (\"Invalid host header\"); fix: "
                 "add that name to the service's allowed hosts (ACGS-2: ALLOWED_HOSTS, TrustedHostMiddleware) or set "
                 "the service's url to a name it allows", "status < 400", value=health.status, threshold=400)
    if health.status is not None and health.status >= 400:
        breached(summary(health), "status < 400", value=health.status, threshold=400)
    if health.health == UNREAD:
        no_data(f"{summary(health)}: {health.health_value}")
    if health.health == UNHEALTHY:
        breached(f"{summary(health)}, body {health.health_field}={health.health_value!r}",
                 "a healthy status: healthy, ok, up or pass")
    measure(summary(health), "status < 400", value=health.status, threshold=400)


@pytest.mark.p1
@pytest.mark.runbook("daily.service-health")
def test_service_not_degraded(health: HttpResult) -> None:
    """A service that answers but reports itself degraded (warn) is a P1 warning."""
    if _down(health):
        blocked_by("service", health.target, "is down")
    body = f", body {health.health_field}={health.health_value!r}" if health.health_field else ""
    judge(health.health in (DEGRADED, UNRECOGNISED), f"{summary(health)}{body}",
          "a healthy status: healthy, ok, up or pass")
