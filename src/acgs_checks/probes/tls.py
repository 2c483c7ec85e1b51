"""TLS endpoints: the presented chain, its expiry, trust, host name and the oldest protocol accepted.

Targets are every ``[[tls_endpoints]]`` entry (``address = "host:port"``, ``server_name`` for SNI,
``ca_file``) and every ``https`` service (its host and port; an endpoint of the same name wins).

A probe makes a few bounded handshakes and sends no application data:

* one without verification (pyOpenSSL) to read the whole presented chain as DER; expiry is
  measured from it, so an expired or untrusted certificate is still reported with its dates;
* one with verification (the system store or ``ca_file``) and host-name checking, with the
  time check turned off: trust and host name are their own cases, expiry is the expiry case's;
* one per old protocol (TLS 1.0, 1.1, and 1.2 when both are refused), each allowed only that
  version, to show they are refused or to name the oldest one accepted.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, field_validator

from acgs_checks import kinds
from acgs_checks.environment import Environment, Target
from acgs_checks.environment.base import problem
from acgs_checks.probes import aio
from acgs_checks.records import JsonRecord

# OpenSSL's X509_V_FLAG_NO_CHECK_TIME: validate the path and signatures, not the dates.
_NO_CHECK_TIME = 0x200000
_HOSTNAME_MISMATCH = 62  # X509_V_ERR_HOSTNAME_MISMATCH
OLD_PROTOCOLS = ("TLSv1", "TLSv1.1")
_VERSIONS = {"TLSv1": "TLS1_VERSION", "TLSv1.1": "TLS1_1_VERSION", "TLSv1.2": "TLS1_2_VERSION"}


class TlsEndpoint(Target):
    """A TLS endpoint whose certificate and protocols the Monday review checks."""

    address: str = Field(description='"host:port" to connect to')
    server_name: str = Field("", description="the name sent as SNI and checked against the certificate "
                             "(default: the host of address)")

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise problem(f"{value!r} is not host:port", 'write e.g. address = "api.example.com:443"')
        return value

    @property
    def host(self) -> str:
        return self.address.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    @property
    def sni(self) -> str:
        return self.server_name or self.host


def targets(env: Environment) -> tuple[TlsEndpoint, ...]:
    """The configured endpoints, then every https service not named among them."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    found: list[TlsEndpoint] = list(env.section("tls_endpoints"))
    named = {t.name for t in found}
    for service in env.services:
        parts = urlsplit(service.url)
        if parts.scheme != "https" or service.name in named or not parts.hostname:
            continue
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        found.append(TlsEndpoint.model_construct(
            name=service.name, title=service.title, timeout_seconds=service.timeout_seconds,
            verify_tls=True, ca_file=service.ca_file, client_cert=None, client_key=None,
            address=f"{host}:{parts.port or 443}", server_name=parts.hostname))
    return tuple(found)


@dataclass(frozen=True)
class TlsSnapshot(JsonRecord):
    """What an endpoint presented. ``reachable`` False means no handshake completed (see ``error``)."""

    target: str
    address: str
    server_name: str
    answered: bool
    error: str = ""
    protocol: str = ""                 # negotiated with the client's defaults
    certificates: list[dict[str, Any]] = field(default_factory=list)  # leaf first, as presented
    days_left: float | None = None     # until the earliest notAfter in the chain (negative: expired)
    earliest: str = ""                 # which certificate that is
    trusted: bool | None = None
    trust_error: str = ""
    trust_store: str = ""
    hostname_ok: bool | None = None
    hostname_error: str = ""
    protocols: dict[str, bool] = field(default_factory=dict)   # TLSv1 / TLSv1.1 / TLSv1.2 -> accepted
    protocol_errors: dict[str, str] = field(default_factory=dict)
    checked_at: float = 0.0
    denied: str = ""  # the target refused the suite: the credential or grant to check


def _describe(cert: Any) -> dict[str, Any]:
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa  # noqa: PLC0415

    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key_type = f"RSA {key.key_size}"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key_type = f"EC {key.curve.name} ({key.key_size})"
    elif isinstance(key, dsa.DSAPublicKey):
        key_type = f"DSA {key.key_size}"
    elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        key_type = type(key).__name__.replace("PublicKey", "")
    else:
        key_type = type(key).__name__
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [*san.get_values_for_type(x509.DNSName), *map(str, san.get_values_for_type(x509.IPAddress))]
    except x509.ExtensionNotFound:
        names = []
    return {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(), "sans": names,
            "not_before": cert.not_valid_before_utc.isoformat(), "not_after": cert.not_valid_after_utc.isoformat(),
            "key": key_type, "self_signed": cert.subject == cert.issuer}


def _unverified(version: int | None = None) -> Any:
    """A pyOpenSSL client context that verifies nothing, optionally allowed one protocol version only.

    pyOpenSSL, not ``ssl``: pinning TLS 1.0/1.1 in ``ssl`` raises DeprecationWarnings, and silencing them
    with ``warnings.catch_warnings`` is not thread-safe (the probes run side by side in threads).
    """
    from OpenSSL import SSL  # noqa: PLC0415

    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_verify(SSL.VERIFY_NONE, lambda *args: True)
    if version is not None:
        context.set_min_proto_version(version)
        context.set_max_proto_version(version)
        context.set_cipher_list(b"ALL:@SECLEVEL=0")  # the client must be able to offer what it asks about
    return context


def _handshake(target: TlsEndpoint, timeout: float, context: Any) -> tuple[str, list[Any]]:
    """One handshake with ``context``, bounded: the negotiated protocol and the presented chain."""
    from OpenSSL import SSL  # noqa: PLC0415

    with socket.create_connection((target.host, target.port), timeout=timeout) as raw:
        conn = SSL.Connection(context, raw)
        if not _is_ip(target.sni):
            conn.set_tlsext_host_name(target.sni.encode("idna"))
        conn.set_connect_state()
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn.do_handshake()
                break
            except SSL.WantReadError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no TLS handshake within {timeout:g} s") from None
                time.sleep(0.01)
        chain = conn.get_peer_cert_chain(as_cryptography=True) or []
        protocol = conn.get_protocol_version_name()
        conn.shutdown()
    return protocol, list(chain)


def _chain(target: TlsEndpoint, timeout: float) -> tuple[str, list[Any]]:
    """The negotiated protocol and the presented chain (cryptography certificates), without verifying."""
    return _handshake(target, timeout, _unverified())


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _verify(target: TlsEndpoint, timeout: float) -> tuple[bool, str, bool | None, str]:
    """(trusted, why not, host name matches (None: unknown), why not), dates not checked."""
    context = ssl.create_default_context(cafile=target.ca_file) if target.ca_file else ssl.create_default_context()
    context.verify_flags |= _NO_CHECK_TIME
    try:
        with socket.create_connection((target.host, target.port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=target.sni):
            return True, "", True, ""
    except ssl.SSLCertVerificationError as exc:
        if exc.verify_code == _HOSTNAME_MISMATCH:
            return True, "", False, str(exc.verify_message)
        return False, str(exc.verify_message or exc), None, ""


def _hostname_matches(name: str, cert: dict[str, Any]) -> bool:
    """RFC 6125 matching of the SANs: exact, or a wildcard for the whole left-most label."""
    wanted = name.lower().rstrip(".")
    for san in cert.get("sans", []):
        pattern = str(san).lower().rstrip(".")
        if pattern == wanted:
            return True
        if pattern.startswith("*.") and "." in wanted and wanted.split(".", 1)[1] == pattern[2:] \
                and not _is_ip(wanted):
            return True
    return False


def _accepts(target: TlsEndpoint, version: str, timeout: float) -> tuple[bool, str]:
    """Whether the endpoint completes a handshake allowed only ``version``."""
    from OpenSSL import SSL  # noqa: PLC0415

    try:
        protocol, _presented = _handshake(target, timeout, _unverified(getattr(SSL, _VERSIONS[version])))
    except SSL.Error as exc:
        reasons = [str(part[-1]) for part in (exc.args[0] if exc.args and isinstance(exc.args[0], list) else [])
                   if isinstance(part, tuple)]
        return False, "; ".join(reasons) or str(exc) or "refused"
    except (OSError, TimeoutError) as exc:
        return False, str(exc) or type(exc).__name__
    return protocol == version, ""


def probe_endpoint(target: TlsEndpoint) -> TlsSnapshot:
    """Blocking; every handshake bounded by the target's timeout."""
    timeout = target.timeout_seconds
    base: dict[str, Any] = {"target": target.name, "address": target.address, "server_name": target.sni}
    try:
        protocol, chain = _chain(target, timeout)
    except Exception as exc:  # noqa: BLE001 - refused, reset, timed out, not TLS: all "no handshake"
        text = str(exc).strip() or type(exc).__name__
        return TlsSnapshot(**base, answered=False, error=f"{type(exc).__name__}: {text}".splitlines()[0],
                           checked_at=time.time())
    certificates = [_describe(c) for c in chain]
    now = datetime.datetime.now(datetime.UTC)
    days_left, earliest = None, ""
    if chain:
        soonest = min(chain, key=lambda c: c.not_valid_after_utc)
        days_left = round((soonest.not_valid_after_utc - now).total_seconds() / 86400, 3)
        earliest = soonest.subject.rfc4514_string()
    try:
        trusted, trust_error, hostname_ok, hostname_error = _verify(target, timeout)
    except (OSError, ssl.SSLError) as exc:
        trusted, trust_error, hostname_ok, hostname_error = False, f"handshake failed: {exc}", None, ""
    if hostname_ok is None and certificates:  # trust failed first: match the leaf's names ourselves
        hostname_ok = _hostname_matches(target.sni, certificates[0])
        if not hostname_ok:
            hostname_error = f"{target.sni} is not among the certificate's names {certificates[0]['sans']}"
    protocols: dict[str, bool] = {}
    errors: dict[str, str] = {}
    for version in (*OLD_PROTOCOLS, "TLSv1.2"):
        if version == "TLSv1.2" and any(protocols.values()):
            break  # an older one is accepted already: it is the lowest
        protocols[version], why = _accepts(target, version, timeout)
        if why:
            errors[version] = why
    return TlsSnapshot(**base, answered=True, protocol=protocol, certificates=certificates, days_left=days_left,
                       earliest=earliest, trusted=trusted, trust_error=trust_error,
                       trust_store=target.ca_file or "the system store", hostname_ok=hostname_ok,
                       hostname_error=hostname_error, protocols=protocols, protocol_errors=errors,
                       checked_at=time.time())


async def _probe(target: TlsEndpoint, job: kinds.Job) -> TlsSnapshot:
    del job
    bound = target.timeout_seconds * 6 + 1  # at most six handshakes, each bounded
    try:
        return await asyncio.wait_for(aio.in_thread(probe_endpoint, target), timeout=bound)
    except TimeoutError:
        return TlsSnapshot(target=target.name, address=target.address, server_name=target.sni, answered=False,
                           error=f"no answer within {bound:g} s", checked_at=time.time())


def _gate(seen: TlsSnapshot, env: Environment) -> kinds.Blocked | None:
    del env
    if seen.answered:
        return None
    return kinds.Blocked("tls", seen.target, "completed no TLS handshake")


TLS = kinds.register(kinds.ProbeKind(
    name="tls", section="tls_endpoints", record=TlsSnapshot, param="endpoint", fixture="tls_probe",
    probe=_probe, entry=TlsEndpoint, targets=targets,
    gate=kinds.Gate(_gate, fixture="tls", doc="the snapshot; blocked when no handshake completed"),
    grant="network access to the endpoint; no credentials (handshakes only)",
    doc="a few bounded TLS handshakes: the presented chain, trust, host name, oldest protocol accepted",
))
