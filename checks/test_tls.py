"""Monday security review: TLS certificates and protocols of every endpoint and https service.

Expiry is measured from the presented chain even when it does not validate, so an expired
certificate reads "expired", not "untrusted". Trust is judged without dates, and the host
name on its own, so each problem fails its own case.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from acgs_checks.environment import Environment
from acgs_checks.verdict import breached, judge, measure, no_data, require_answer

if TYPE_CHECKING:
    from acgs_checks.probes.tls import TlsSnapshot

pytestmark = [pytest.mark.monday, pytest.mark.security]


def _days(seen: TlsSnapshot) -> float:
    if seen.days_left is None:
        no_data(f"{seen.target}: {seen.address} presented no certificate")
    return seen.days_left


def _left(seen: TlsSnapshot, days: float) -> str:
    shown = f"expired {-days:.1f} days ago" if days < 0 else f"expires in {days:.1f} days"
    return f"{seen.target}: {seen.address} (SNI {seen.server_name}): {seen.earliest} {shown}"


@pytest.mark.p0
@pytest.mark.runbook("monday.ssl-expiry")
@pytest.mark.reachability
def test_tls_certificate_expiry_critical(tls_probe: TlsSnapshot, acgs_environment: Environment) -> None:
    """No certificate of the presented chain is expired or expires within {tls_expiry_critical_days:g} days."""
    seen = tls_probe
    require_answer(seen, f"TLS handshake with {seen.address}")
    limit = acgs_environment.thresholds.tls_expiry_critical_days
    days = _days(seen)
    judge(days < limit, _left(seen, days), f"at least {limit:g} days left", value=days, threshold=limit)


@pytest.mark.p1
@pytest.mark.runbook("monday.ssl-expiry")
def test_tls_certificate_expiry(tls: TlsSnapshot, acgs_environment: Environment) -> None:
    """No certificate of the presented chain expires within {tls_expiry_warning_days:g} days (renew now)."""
    limit = acgs_environment.thresholds.tls_expiry_warning_days
    days = _days(tls)
    judge(days < limit, _left(tls, days), f"at least {limit:g} days left", value=days, threshold=limit)


@pytest.mark.p1
@pytest.mark.runbook("monday.ssl-expiry")
def test_tls_chain_trusted(tls: TlsSnapshot) -> None:
    """The chain validates against the system store or the endpoint's ca_file (dates aside)."""
    leaf = tls.certificates[0] if tls.certificates else {}
    if not tls.trusted:
        breached(f"{tls.target}: {tls.address}: the chain does not validate against {tls.trust_store}: "
                 f"{tls.trust_error} (leaf issued by {leaf.get('issuer', '?')})", "a chain to a trusted root")
    measure(f"{tls.target}: chain of {len(tls.certificates)} certificate(s) validates against {tls.trust_store}",
            "a chain to a trusted root")


@pytest.mark.p1
@pytest.mark.runbook("monday.ssl-expiry")
def test_tls_hostname(tls: TlsSnapshot) -> None:
    """The leaf certificate names the endpoint's server name."""
    sans = tls.certificates[0].get("sans", []) if tls.certificates else []
    if tls.hostname_ok is None:
        no_data(f"{tls.target}: the host name could not be checked ({tls.trust_error})")
    judge(not tls.hostname_ok, f"{tls.target}: {tls.server_name} against the certificate's names {sans}"
          + (f": {tls.hostname_error}" if tls.hostname_error else ""), f"{tls.server_name} among them")


@pytest.mark.p1
@pytest.mark.runbook("monday.ssl-expiry")
def test_tls_minimum_protocol(tls: TlsSnapshot) -> None:
    """TLS 1.0 and 1.1 are refused: the oldest protocol accepted is TLS 1.2 or newer."""
    accepted = [v for v, ok in tls.protocols.items() if ok]
    refused = [v for v, ok in tls.protocols.items() if not ok]
    lowest = accepted[0] if accepted else "TLSv1.3" if "TLSv1.2" in refused else tls.protocol
    old = [v for v in accepted if v in ("TLSv1", "TLSv1.1")]
    judge(bool(old), f"{tls.target}: {tls.address} accepts {', '.join(old) or 'nothing older than TLS 1.2'}; "
          f"refused {', '.join(refused) or 'none'}; oldest accepted {lowest}; negotiated {tls.protocol}",
          "TLS 1.0 and 1.1 refused (oldest accepted TLS 1.2)")
