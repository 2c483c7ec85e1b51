"""Infrastructure metrics and log maintenance, per host (runbook: Infrastructure Metrics, Log Rotation).

Each host is read once per run: directly (testinfra: local, ssh, docker, kubectl, ansible) or,
for CPU, memory, disk and network, from node_exporter through Prometheus when the host has a
``prometheus_selector``. Every message names its source. A host that cannot be reached fails
``test_host_reachable`` and its other cases are skipped as blocked.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from acgs_checks.environment import Environment
from acgs_checks.verdict import (
    blocked_by,
    breached,
    fail,
    judge,
    measure,
    no_data,
    not_applicable,
    require_answer,
)

if TYPE_CHECKING:  # the probe module loads only when such checks run
    from acgs_checks.probes.host import HostSnapshot

pytestmark = [pytest.mark.daily, pytest.mark.infra]

MIB = 1024 * 1024


def _source_down(seen: HostSnapshot) -> None:
    """A host read through Prometheus while Prometheus did not answer: blocked by the metrics source's own case."""
    if "prometheus" in seen.errors:
        blocked_by("metrics_source", "prometheus", f"has no data ({seen.errors['prometheus']})", subject=seen.target)


def _value(seen: HostSnapshot, key: str, label: str) -> float:
    value = getattr(seen, key)
    if value is None:
        _source_down(seen)
        no_data(f"{seen.target}: no {label} ({seen.errors.get(key) or 'the source gave none'}; source: {seen.source})")
    if not 0 <= value <= 100:
        fail(f"{seen.target}: unit: {label} {value:g} % cannot be right (a share lies in 0..100; "
             f"source: {seen.source})")
    return float(value)


def _disks(seen: HostSnapshot, mounts: tuple[str, ...], field: str) -> list[tuple[str, float]]:
    """(mount, percent) of the configured mounts (any type; a folder stands for the filesystem holding it), or
    of every disk filesystem (pseudo ones such as tmpfs and overlay left out); missing ones are no data."""
    found = {d["mount"]: d.get(field) for d in seen.disks}
    wanted = list(mounts) or sorted(d["mount"] for d in seen.disks if not d.get("pseudo"))
    if not seen.disks:
        _source_down(seen)
    if not wanted:
        no_data(f"{seen.target}: no disk filesystem listed ({seen.errors.get('disk') or 'df gave none'}; "
                f"source: {seen.source})")
    missing = [m for m in wanted if found.get(m) is None]
    if missing:
        no_data(f"{seen.target}: no {field.replace('_', ' ')} for {', '.join(missing)} (not a mounted disk "
                f"filesystem, or not read; source: {seen.source})")
    return [(m, float(found[m])) for m in wanted]  # type: ignore[arg-type]


@pytest.mark.p0
@pytest.mark.runbook("monitoring.infra.host-reachable")
@pytest.mark.reachability
def test_host_reachable(host_probe: HostSnapshot) -> None:
    """The host answers: the read-only script ran (testinfra), within its bound."""
    seen = host_probe
    require_answer(seen, seen.spec)
    measure(f"{seen.target}: {seen.spec} answered", "the host to answer")


@pytest.mark.p1
@pytest.mark.runbook("monitoring.infra.cpu", "alerts.warning.cpu")
@pytest.mark.trended(promql="cpu")
def test_host_cpu(host_facts: HostSnapshot, acgs_environment: Environment) -> None:
    """CPU utilisation over the window stays at or below {cpu_max_percent:g} % (above: warning alert)."""
    limit = acgs_environment.thresholds.cpu_max_percent
    value = _value(host_facts, "cpu_percent", "CPU utilisation")
    judge(value > limit, f"{host_facts.target}: CPU {value:.1f} % busy over a {host_facts.window_seconds:g} s window "
          f"(source: {host_facts.source})", f"≤ {limit:g} %", value=value, threshold=limit)


@pytest.mark.p1
@pytest.mark.runbook("monitoring.infra.memory", "alerts.warning.memory")
@pytest.mark.trended(promql="memory")
def test_host_memory(host_facts: HostSnapshot, acgs_environment: Environment) -> None:
    """Memory used, (MemTotal - MemAvailable) / MemTotal, stays at or below {memory_max_percent:g} % (above:
    warning alert)."""
    limit = acgs_environment.thresholds.memory_max_percent
    value = _value(host_facts, "memory_percent", "memory utilisation")
    total = host_facts.memory.get("MemTotal")
    of = f" of {total / MIB / 1024:.1f} GiB" if total else ""
    judge(value > limit, f"{host_facts.target}: memory {value:.1f} % used{of} (source: {host_facts.source})",
          f"≤ {limit:g} %", value=value, threshold=limit)


def _per_mount(seen: HostSnapshot, env: Environment, field: str, label: str, limit: float) -> None:
    """Fail when any checked mount is above ``limit``; the worst mount is the measured value."""
    host = next(h for h in env.section("hosts") if h.name == seen.target)
    disks = _disks(seen, host.mounts, field)
    over = [(m, v) for m, v in disks if v > limit]
    mount, worst = max(disks, key=lambda d: d[1])
    shown = ", ".join(f"{m} {v:.1f} %" for m, v in over or [(mount, worst)])
    judge(bool(over), f"{seen.target}: {label} {shown} (source: {seen.source})", f"≤ {limit:g} % on every mount",
          value=worst, threshold=limit)


@pytest.mark.p1
@pytest.mark.runbook("monitoring.infra.disk")
@pytest.mark.capacity("disk full")
def test_host_disk_usage(host_facts: HostSnapshot, acgs_environment: Environment) -> None:
    """Every checked filesystem stays at or below {disk_warning_percent:g} % used (df's Use%)."""
    _per_mount(host_facts, acgs_environment, "used_percent", "disk used",
               acgs_environment.thresholds.disk_warning_percent)


@pytest.mark.p0
@pytest.mark.runbook("alerts.critical.disk")
def test_host_disk_critical(host_facts: HostSnapshot, acgs_environment: Environment) -> None:
    """No filesystem is above {disk_critical_percent:g} % used (critical alert)."""
    _per_mount(host_facts, acgs_environment, "used_percent", "disk used",
               acgs_environment.thresholds.disk_critical_percent)


@pytest.mark.p1
@pytest.mark.runbook("monitoring.infra.disk")
def test_host_inodes(host_facts: HostSnapshot, acgs_environment: Environment) -> None:
    """Every checked filesystem has inodes left: at most {inodes_max_percent:g} % used."""
    _per_mount(host_facts, acgs_environment, "inodes_percent", "inodes used",
               acgs_environment.thresholds.inodes_max_percent)


@pytest.mark.p3
@pytest.mark.runbook("monitoring.infra.network")
def test_host_network_errors(host_facts: HostSnapshot) -> None:
    """No interface counted errors or drops in the window (throughput is evidence)."""
    seen = host_facts
    if not seen.network:
        _source_down(seen)
    if "network" in seen.errors and not seen.network:
        no_data(f"{seen.target}: no network counters ({seen.errors['network']}; source: {seen.source})")
    bad = [n for n in seen.network if (n.get("errors") or 0) > 0 or (n.get("drops") or 0) > 0]
    rate = ", ".join(f"{n['interface']} rx {n.get('rx_bytes_per_second', 0) / 1024:.0f} KiB/s tx "
                     f"{n.get('tx_bytes_per_second', 0) / 1024:.0f} KiB/s" for n in seen.network
                     if "rx_bytes_per_second" in n)
    shown = "; ".join(f"{n['interface']}: {n['errors']:.0f} error(s), {n['drops']:.0f} drop(s)" for n in bad)
    judge(bool(bad), f"{seen.target}: {shown or 'no errors or drops'} over a {seen.window_seconds:g} s window"
          f"{f' ({rate})' if rate else ''} (source: {seen.source})", "0 errors and 0 drops",
          value=sum((n.get("errors") or 0) + (n.get("drops") or 0) for n in seen.network), threshold=0)


def _log_files(seen: HostSnapshot, env: Environment) -> list[tuple[str, list[list[float | str]]]]:
    host = next(h for h in env.section("hosts") if h.name == seen.target)
    if not host.log_dirs:
        not_applicable(f"{seen.target} sets log_dirs = [] (no log check)")
    missing = [d for d, found in seen.logs.items() if not found.get("exists")]
    if missing:
        no_data(f"{seen.target}: log directory {', '.join(missing)} does not exist (set log_dirs for the host)")
    for key, error in seen.errors.items():
        if key.startswith("logs "):
            no_data(f"{seen.target}: {key}: {error}")
    return [(d, found.get("files") or []) for d, found in seen.logs.items()]


@pytest.mark.p2
@pytest.mark.runbook("maintenance.log-rotation")
def test_log_sizes(host_facts: HostSnapshot, acgs_environment: Environment) -> None:
    """No log file above {log_file_max_mib:g} MiB, and each log directory within {log_dir_max_mib:g} MiB (what `du
    -sh` shows)."""
    t = acgs_environment.thresholds
    problems, largest = [], []
    logs = _log_files(host_facts, acgs_environment)
    for directory, files in logs:
        total = sum(float(f[0]) for f in files)
        big = [f for f in files if float(f[0]) > t.log_file_max_mib * MIB]
        problems += [f"{f[2]} {float(f[0]) / MIB:.0f} MiB" for f in big[:3]]
        if total > t.log_dir_max_mib * MIB:
            problems.append(f"{directory} {total / MIB:.0f} MiB in all")
        largest += [f"{f[2]} {float(f[0]) / MIB:.1f} MiB" for f in files[:1]]
    judge(bool(problems), f"{host_facts.target}: {'; '.join(problems) or 'largest ' + (', '.join(largest) or 'none')}",
          f"files ≤ {t.log_file_max_mib:g} MiB, directories ≤ {t.log_dir_max_mib:g} MiB",
          value=max((float(f[0]) / MIB for _, fs in logs for f in fs), default=0.0),
          threshold=t.log_file_max_mib)


@pytest.mark.p2
@pytest.mark.runbook("maintenance.log-rotation")
def test_log_rotation_configured(host_facts: HostSnapshot, acgs_environment: Environment) -> None:
    """A logrotate file names every log directory, and `logrotate -d` accepts it."""
    seen = host_facts
    host = next(h for h in acgs_environment.section("hosts") if h.name == seen.target)
    if not host.logrotate_config:
        not_applicable(f"{seen.target} sets logrotate_config = \"\" (no logrotate check)")
    rotate = seen.logrotate
    if not rotate:
        no_data(f"{seen.target}: the logrotate part of the script did not run")
    if not rotate.get("exists"):
        breached(f"{seen.target}: {rotate.get('config')} does not exist", "a logrotate configuration for the logs")
    uncovered = [d for d in seen.logs if d not in rotate.get("covers", [])]
    if uncovered:
        breached(f"{seen.target}: {rotate.get('config')} does not name {', '.join(uncovered)}",
                 "every log directory covered")
    if rotate.get("accepted") is None:
        no_data(f"{seen.target}: logrotate is not installed on the host, so {rotate.get('config')} cannot be checked")
    judge(not rotate.get("accepted"), f"{seen.target}: logrotate -d {rotate.get('config')} "
          f"{'accepts' if rotate.get('accepted') else 'rejects'} it (covers {', '.join(rotate.get('covers', []))})",
          "logrotate -d to accept the configuration")


@pytest.mark.p3
@pytest.mark.runbook("maintenance.log-rotation")
def test_logs_rotated_recently(host_facts: HostSnapshot, acgs_environment: Environment) -> None:
    """The newest rotated file (name.1, name-DATE, .gz) is younger than {log_rotation_max_age_hours:g} h."""
    limit = acgs_environment.thresholds.log_rotation_max_age_hours
    rotated = [float(f[1]) for _, files in _log_files(host_facts, acgs_environment) for f in files
               if str(f[2]).endswith((".1", ".gz", ".xz", ".bz2", ".zst")) or "-20" in str(f[2]).rsplit("/", 1)[-1]]
    if not rotated:
        breached(f"{host_facts.target}: no rotated log file in {', '.join(host_facts.logs)}",
                 f"a rotation within {limit:g} h")
    age = ((host_facts.checked_at or time.time()) - max(rotated)) / 3600
    judge(age > limit, f"{host_facts.target}: newest rotated log file is {age:.1f} h old", f"< {limit:g} h",
          value=age, threshold=limit)


@pytest.mark.p0
@pytest.mark.health
@pytest.mark.runbook("daily.host-services")
def test_host_services(host_facts: HostSnapshot) -> None:
    """Each configured service (systemd unit, or process without systemd) is running."""
    seen = host_facts
    if not seen.services:
        not_applicable(f"{seen.target} lists no services")
    down = {name: state for name, state in seen.services.items() if state != "active"}
    judge(bool(down), f"{seen.target}: " + (", ".join(f"{n} is {s}" for n, s in down.items()) if down else
                                           ", ".join(f"{n} active" for n in seen.services)),
          "every listed service active")
