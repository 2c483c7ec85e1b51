"""What the sandbox brings for the weekly reviews: a TLS endpoint, alerts, backups, DR documents, history.

* **TLS endpoint** ``gateway``: a TLS server on loopback with a certificate from the sandbox's own CA
  (made here with ``cryptography``; the environment trusts it through ``ca_file``). The same CA signs
  PostgreSQL's server certificate (the sandbox runs PostgreSQL with ``ssl = on``).
* **Alerts**: a stand-in for Alertmanager's ``GET /api/v2/alerts`` (the sandbox has no Alertmanager):
  nothing firing, or with ``alerts:critical`` one critical alert.
* **Backups**: a real ``pg_dump -Fc`` of the sandbox database, taken when PostgreSQL starts, and copies
  of it dated back over the 30-day retention; WAL archived with ``archive_mode = on`` into a folder.
* **DR documents**: two Markdown files, changed today (``docs:stale``: 120 days ago).
* **Access log**: 8 days of combined-format lines in the sandbox host's log folder, steady from day to day.
* **History**: the sandbox has no past, so its history store is seeded with five weeks of steady daily
  values (``history:regression`` and ``history:disk-fills=DAYS`` seed a regression and a filling disk).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import math
import os
import shutil
import ssl
import time
from pathlib import Path
from typing import Any

from acgs_checks import measurements as history
from acgs_checks.sandbox.faults import ALERTS, BACKUP, DOCS, HISTORY, RETENTION, TLS, Fault
from acgs_checks.scratch import unprivileged_user, workdir_for

DAY = 86400.0
RETENTION_DAYS = 30
SERVER_NAME = "localhost"


def _chown(path: Path) -> None:
    account = unprivileged_user()
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)


class Certificates:
    """A CA and the certificates it issues (EC P-256), written as PEM files into ``folder``."""

    def __init__(self, folder: Path) -> None:
        from cryptography import x509  # noqa: PLC0415
        from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
        from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
        from cryptography.x509.oid import NameOID  # noqa: PLC0415

        self._x509, self._hashes, self._ser, self._ec, self._oid = x509, hashes, serialization, ec, NameOID
        self.folder = folder
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acgs sandbox CA")])
        now = datetime.datetime.now(datetime.UTC)
        self.ca_cert = (x509.CertificateBuilder().subject_name(self.ca_name).issuer_name(self.ca_name)
                        .public_key(self.ca_key.public_key()).serial_number(x509.random_serial_number())
                        .not_valid_before(now - datetime.timedelta(days=1))
                        .not_valid_after(now + datetime.timedelta(days=3650))
                        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                        .sign(self.ca_key, hashes.SHA256()))
        self.ca_file = folder / "ca.pem"
        self.ca_file.write_bytes(self.ca_cert.public_bytes(serialization.Encoding.PEM))
        self.ca_file.chmod(0o644)

    def issue(self, name: str, *, names: tuple[str, ...] = (SERVER_NAME, "127.0.0.1"), days: float = 365,
              self_signed: bool = False) -> tuple[Path, Path]:
        """(certificate, key) files for ``names``, valid for ``days`` from now (negative: expired)."""
        import ipaddress  # noqa: PLC0415

        x509, ec = self._x509, self._ec
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(self._oid.COMMON_NAME, names[0])])
        sans: list[Any] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        now = datetime.datetime.now(datetime.UTC)
        end = now + datetime.timedelta(days=days)
        builder = (x509.CertificateBuilder().subject_name(subject)
                   .issuer_name(subject if self_signed else self.ca_name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(min(now, end) - datetime.timedelta(days=30)).not_valid_after(end)
                   .add_extension(x509.SubjectAlternativeName(sans), critical=False))
        cert = builder.sign(key if self_signed else self.ca_key, self._hashes.SHA256())
        cert_file, key_file = self.folder / f"{name}.crt", self.folder / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(self._ser.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(self._ser.Encoding.PEM, self._ser.PrivateFormat.PKCS8,
                                               self._ser.NoEncryption()))
        key_file.chmod(0o600)
        return cert_file, key_file


class JsonServer:
    """A tiny HTTP/1.1 server answering GETs from a path -> JSON table (optionally over TLS)."""

    def __init__(self, routes: dict[str, Any], context: ssl.SSLContext | None = None) -> None:
        self.routes = routes
        self.context = context
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            path = line.decode("latin-1").split(" ")[1].split("?")[0] if line.count(b" ") >= 2 else ""
            found = path in self.routes
            body = json.dumps(self.routes.get(path, {"error": "not found"})).encode()
            writer.write(f"HTTP/1.1 {200 if found else 404} {'OK' if found else 'Not Found'}\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (OSError, ssl.SSLError, TimeoutError, IndexError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


def postgres_has_tls(bindir: Path) -> bool:
    """Whether the PostgreSQL binaries were built with OpenSSL (the pgserver wheel's are not)."""
    import subprocess  # noqa: PLC0415

    pg_config = bindir / "pg_config"
    if not pg_config.exists():
        return False
    done = subprocess.run([str(pg_config), "--configure"], capture_output=True, text=True, timeout=10, check=False)
    return "--with-openssl" in done.stdout or "--with-ssl=openssl" in done.stdout


class SandboxWeekly:
    """Created with the sandbox's faults; :meth:`start` makes the files, :meth:`start_servers` the servers."""

    def __init__(self, faults: dict[str, Fault]) -> None:
        self.tls_fault = faults.get(TLS)
        self.backup_fault = faults.get(BACKUP)
        self.retention_fault = faults.get(RETENTION)
        self.docs_fault = faults.get(DOCS)
        self.alerts_fault = faults.get(ALERTS)
        self.history_fault = faults.get(HISTORY)
        logs = faults.get("logs")
        self.access_spike = logs is not None and logs.name == "access-spike"
        self.access_log: Path | None = None
        auth = faults.get("auth")
        self.failed_logins = int(auth.arg or 0) if auth is not None and auth.name == "failed-logins" else 0
        self.workdir: Path | None = None
        self.postgres_tls = True  # whether the binaries can run ssl = on (the sandbox finds out at start)
        self.certificates: Certificates | None = None
        self.gateway: JsonServer | None = None
        self.alerts: JsonServer | None = None

    # --- files --------------------------------------------------------------------------------

    def start(self, *, log_dir: Path | None) -> None:
        self.workdir = workdir_for("acgs-sandbox-weekly-")
        for name in ("backups", "archive", "docs"):
            (self.workdir / name).mkdir()
            _chown(self.workdir / name)
        self.certificates = Certificates(self.workdir)
        self._documents()
        history.append(self.history_path, self._seeded_history(time.time()))
        if log_dir is not None:
            self.access_log = log_dir / "access.log"
            self._access_log(self.access_log, time.time())

    @property
    def history_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "history.sqlite"

    @property
    def postgres_log(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "postgresql.log"

    def _documents(self) -> None:
        assert self.workdir is not None
        docs = self.workdir / "docs"
        for name, text in (("restore-procedure.md", "# Restore procedure\n\nRestore the newest pg_dump with "
                            "pg_restore --no-owner into a new server; RTO 4 h, RPO 1 h.\n"),
                           ("contacts.md", "# DR contacts\n\nPrimary on-call, then the team lead.\n")):
            (docs / name).write_text(text)
        if self.docs_fault is not None:
            stale = time.time() - 120 * DAY
            os.utime(docs / "restore-procedure.md", (stale, stale))

    def documents(self) -> list[str]:
        assert self.workdir is not None
        return [str(self.workdir / "docs" / n) for n in ("restore-procedure.md", "contacts.md")]

    def _seeded_history(self, now: float) -> list[history.Row]:
        """Five weeks of one run a day: steady values (a small deterministic wobble), plus the history faults."""
        # The cases' history as their runs would have stored it: value, threshold, and the role the check declares
        # by marker (a self-test holds these to the checks' markers).
        steady = {"test_p95_latency[auth]": (0.4, 2.0, "trended:p95"),
                  "test_p95_latency[policy-governance]": (0.4, 2.0, "trended:p95"),
                  "test_error_rate_warning[auth]": (0.2, 1.0, "trended:error_rate"),
                  "test_cache_hit_rate[main]": (95.0, 85.0, "trended"),
                  "test_buffer_cache_hit_ratio[primary]": (99.5, 90.0, "trended"),
                  "test_connection_usage[primary]": (12.0, 80.0, "capacity:max_connections reached"),
                  "test_cache_memory[main]": (8.0, 85.0, "capacity:Redis maxmemory reached"),
                  "test_host_disk_usage[sandbox-host]": (12.0, 90.0, "capacity:disk full")}
        rows = []
        fills = self.history_fault is not None and self.history_fault.name == "disk-fills"
        regressed = self.history_fault is not None and self.history_fault.name == "regression"
        for day in range(35):
            at = now - day * DAY - 3600
            wobble = 1 + 0.02 * math.sin(day * 1.7)
            for case, (value, threshold, role) in steady.items():
                measured = value * wobble
                if regressed and case == "test_p95_latency[auth]" and day < 7:
                    measured = value * 1.6
                if fills and case.startswith("test_host_disk_usage"):
                    days = self.history_fault.arg or 20.0  # type: ignore[union-attr]
                    measured = max(1.0, 60.0 - (40.0 / days) * (now - at) / DAY)  # 100 % in DAYS days
                rows.append(history.Row(at=at, environment="sandbox", review="daily", case_name=case,
                                        value=measured, threshold=threshold, outcome="passed",
                                        worse=history.worse_direction(measured, threshold, "passed"), role=role))
        return rows

    def _access_log(self, path: Path, now: float) -> None:
        """Eight days of steady traffic, hour by hour; ``logs:access-spike`` is read from the host fault."""
        lines = []
        spike = self.access_spike
        start = int(now // 3600) * 3600 - 8 * 24 * 3600
        for hour in range(8 * 24 + 1):
            stamp = datetime.datetime.fromtimestamp(start + hour * 3600 + 60, datetime.UTC)
            shown = stamp.strftime("%d/%b/%Y:%H:%M:%S +0000")
            recent = now - (start + hour * 3600) < DAY
            for n in range(20):
                status = 200
                if n == 7:
                    status = 404
                elif n == 13 and hour % 4 == 0:
                    status = 500
                if spike and recent and n < 6:
                    status = 503
                client = f"10.0.0.{1 + (hour + n) % 8}"
                lines.append(f'{client} - - [{shown}] "GET /api/v1/auth/validate HTTP/1.1" {status} 120 "-" '
                             f'"acgs-client/1.0"\n')
        path.write_text("".join(lines))

    # --- servers ------------------------------------------------------------------------------

    async def start_servers(self) -> None:
        assert self.certificates is not None
        fault = self.tls_fault.name if self.tls_fault is not None else ""
        days = 365.0
        if fault == "expiring":
            days = float(self.tls_fault.arg or 20.0)  # type: ignore[union-attr]
        elif fault == "expired":
            days = -1.0
        names = ("wrong.example",) if fault == "wrong-host" else (SERVER_NAME, "127.0.0.1")
        cert, key = self.certificates.issue("gateway", names=names, days=days, self_signed=fault == "self-signed")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        if fault == "old-protocol":
            import warnings  # noqa: PLC0415

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                context.minimum_version = ssl.TLSVersion.TLSv1
            context.set_ciphers("ALL:@SECLEVEL=0")
        else:
            context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.gateway = JsonServer({"/": {"service": "ACGS gateway (sandbox)"}}, context)
        firing = []
        if self.alerts_fault is not None:
            started = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=20)
            firing = [{"labels": {"alertname": "ACGSServiceDown", "severity": "critical", "service": "auth"},
                       "annotations": {"summary": "the auth service is down"},
                       "startsAt": started.isoformat().replace("+00:00", "Z"), "status": {"state": "active"}}]
        self.alerts = JsonServer({"/api/v2/alerts": firing})
        await asyncio.gather(self.gateway.start(), self.alerts.start())

    async def stop_servers(self) -> None:
        for server in (self.gateway, self.alerts):
            if server is not None:
                await server.stop()

    # --- PostgreSQL ---------------------------------------------------------------------------

    def postgres_options(self) -> str:
        """Extra server options: TLS where the binaries have it (a certificate of the sandbox CA), WAL archiving,
        the client in the log prefix, and statements of 500 ms or more in the log."""
        assert self.workdir is not None
        assert self.certificates is not None
        archive = self.workdir / "archive"
        options = (f"-c archive_mode=on -c \"archive_command=cp %p {archive}/%f\" "
                   f"-c \"log_line_prefix=%m [%p] %h \" -c log_min_duration_statement=500")
        if self.postgres_tls:
            cert, key = self.certificates.issue("postgres")
            for path in (cert, key):
                _chown(path)
            options += f" -c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key}"
        return options

    def take_backups(self, dump: Any) -> None:
        """``dump(path)`` writes a real pg_dump; copies of it stand for the earlier nights."""
        assert self.workdir is not None
        folder = self.workdir / "backups"
        fault = self.backup_fault.name if self.backup_fault is not None else ""
        if fault == "missing":
            return
        newest = folder / f"acgs_production-{datetime.datetime.now(datetime.UTC):%Y%m%d}.dump"
        dump(newest)
        now = time.time()
        shift = 30 * 3600 if fault == "stale" else 0
        keep = 5 if self.retention_fault is not None else RETENTION_DAYS
        for day in range(1, keep):
            stamp = datetime.datetime.fromtimestamp(now - day * DAY, datetime.UTC)
            older = folder / f"acgs_production-{stamp:%Y%m%d}.dump"
            shutil.copyfile(newest, older)
            at = now - day * DAY - 600 - shift
            os.utime(older, (at, at))
        if shift:
            os.utime(newest, (now - shift, now - shift))
        if fault == "corrupt":
            with newest.open("r+b") as handle:
                handle.truncate(max(1, newest.stat().st_size // 2))

    def backup_dir(self) -> str:
        assert self.workdir is not None
        return str(self.workdir / "backups")

    def stop(self) -> None:
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    # --- the environment's sections -------------------------------------------------------------

    def mapping(self, *, host: str | None, database: str, cache: str) -> dict[str, Any]:
        assert self.workdir is not None
        assert self.certificates is not None
        sources: list[dict[str, Any]] = [{"name": "redis-acl", "title": "Redis ACL LOG (auth)", "cache": cache}]
        if host is not None:
            sources.append({"name": "postgres-log", "title": "PostgreSQL server log", "database": database,
                            "host": host, "path": str(self.postgres_log)})
        out: dict[str, Any] = {
            "tls_endpoints": [{"name": "gateway", "title": "ACGS gateway (TLS)",
                               "address": f"127.0.0.1:{self.gateway.port if self.gateway else 0}",
                               "server_name": SERVER_NAME, "ca_file": str(self.certificates.ca_file)}],
            "alertmanager": {"url": f"http://127.0.0.1:{self.alerts.port if self.alerts else 0}"},
            "security": {"failed_logins": sources},
            "backups": [{"name": "nightly", "title": "nightly pg_dump", "database": database,
                         "directory": self.backup_dir(), "timestamp_column": "acgs.policy_evaluations.evaluated_at"}],
            "dr": {"documents": self.documents()},
            "history": {"path": str(self.history_path)},
        }
        if host is not None and self.access_log is not None:
            out["security"]["access_logs"] = [{"host": host, "path": f"{self.access_log}*"}]
        return out
