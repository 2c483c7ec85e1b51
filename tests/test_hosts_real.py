"""[[hosts]] against real hosts: this machine (local://), a real sshd on loopback (ssh://), and a real
node_exporter scraped by a real Prometheus (the PromQL path), which must agree with the direct path."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import servers
from acgs_checks import environment
from acgs_checks.probes.host_logs import read_log
from conftest import RunSuite
from servers import free_port

HEALTHY_LOGS = """
log_dirs = ["{logs}"]
logrotate_config = "{conf}"
services = ["redis-server"]
window_seconds = 1
"""
# The machine's CPU is busy with the other self-tests: the CPU path is judged by the agreement test.
THRESHOLDS = "[thresholds]\ncpu_max_percent = 100\n"


def summary(run_dir: Path) -> dict[str, dict[str, object]]:
    return {c["name"]: c for c in json.loads(Path(f"{run_dir}-summary.json").read_text())["checks"]}


@pytest.fixture
def log_dir(tmp_path: Path) -> tuple[Path, Path]:
    """A log directory with a current and a freshly rotated file, and a logrotate file naming it."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_bytes(b"x" * 4096)
    (logs / "app.log.1").write_bytes(b"y" * 4096)
    conf = tmp_path / "acgs.logrotate"
    conf.write_text(f"{logs}/*.log {{\n  daily\n  rotate 7\n  missingok\n}}\n")
    return logs, conf


def host(name: str, spec: str, logs: Path, conf: Path, extra: str = "") -> str:
    return (f'[[hosts]]\nname = "{name}"\nspec = "{spec}"\n' + HEALTHY_LOGS.format(logs=logs, conf=conf) + extra)


def test_local_host_passes_every_case(run_suite: RunSuite, write_env: Callable[[str], Path],
                                      log_dir: tuple[Path, Path]) -> None:
    env = write_env('name = "hosts"\n' + host("self", "local://", *log_dir) + THRESHOLDS)
    run = run_suite("-m", "daily and (infra or health)", "--env", str(env))
    assert run.returncode == 0, run.output
    checks = summary(run.allure_dir)
    assert len(checks) == 11
    memory = str(checks["test_host_memory[self]"]["measurement"])
    assert memory.startswith("self: memory "), memory
    assert "(source: the host (local://, testinfra))" in memory, memory
    assert checks["test_host_services[self]"]["measurement"].startswith("self: redis-server active")  # type: ignore[union-attr]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root (CI runs as root)")
def test_each_host_fault_fails_exactly_its_case(run_suite: RunSuite, write_env: Callable[[str], Path],
                                                tmp_path: Path, log_dir: tuple[Path, Path]) -> None:
    """A real 4 MiB tmpfs filled to 97 % with 95 of its 100 inodes used, a 101 MiB log file, a rotation
    three days old, a logrotate file that does not name the directory, a service that is not running."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,nr_inodes=100", "acgs-selftest", str(disk)], check=True)
    try:
        for n in range(93):
            (disk / f"f{n}").touch()
        (disk / "fill").write_bytes(b"\0" * int(3.9 * 1024 * 1024))
        logs = tmp_path / "faulty-logs"
        logs.mkdir()
        with (logs / "big.log").open("wb") as handle:
            handle.truncate(101 * 1024 * 1024)  # sparse: the size is real, the disk is spared
        (logs / "big.log.1").write_bytes(b"old")
        three_days = time.time() - 3 * 86400
        os.utime(logs / "big.log.1", (three_days, three_days))
        _, conf = log_dir  # names the healthy directory only
        faulty = (f'[[hosts]]\nname = "faulty"\nspec = "local://"\nmounts = ["{disk}"]\nlog_dirs = ["{logs}"]\n'
                  f'logrotate_config = "{conf}"\nservices = ["acgs-no-such-daemon"]\nwindow_seconds = 1\n')
        env = write_env('name = "hosts"\n' + host("self", "local://", *log_dir, 'mounts = ["/"]\n') + faulty
                        + THRESHOLDS)
        run = run_suite("-m", "daily and (infra or health)", "--env", str(env))
    finally:
        subprocess.run(["umount", str(disk)], check=False)
    assert run.returncode == 1, run.output
    assert run.failed() == {
        "test_host_disk_usage[faulty]", "test_host_disk_critical[faulty]", "test_host_inodes[faulty]",
        "test_log_sizes[faulty]", "test_logs_rotated_recently[faulty]", "test_log_rotation_configured[faulty]",
        "test_host_services[faulty]"}, run.output
    results = run.results()
    critical = results["test_host_disk_critical[faulty]"]["statusDetails"]["message"]
    assert f"faulty: disk used {disk} 9" in critical, critical
    assert "(expected ≤ 95 % on every mount)" in critical, critical
    assert "big.log 101 MiB" in results["test_log_sizes[faulty]"]["statusDetails"]["message"]
    assert "acgs-no-such-daemon is inactive" in results["test_host_services[faulty]"]["statusDetails"]["message"]
    assert "does not name" in results["test_log_rotation_configured[faulty]"]["statusDetails"]["message"]
    assert "newest rotated log file is 7" in results["test_logs_rotated_recently[faulty]"]["statusDetails"]["message"]


def test_an_unreachable_host_is_one_p0_failure_and_blocked_cases(
        run_suite: RunSuite, write_env: Callable[[str], Path], log_dir: tuple[Path, Path], tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host *\n  BatchMode yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n")
    env = write_env('name = "hosts"\n' + host("gone", f"ssh://nobody@127.0.0.1:{free_port()}", *log_dir,
                                               f'ssh_config = "{config}"\n'))
    run = run_suite("-m", "daily and (infra or health)", "--env", str(env))
    assert run.returncode == 1
    assert run.failed() == {"test_host_reachable[gone]"}
    message = run.results()["test_host_reachable[gone]"]["statusDetails"]["message"]
    assert "Connection refused" in message, message
    assert "(target unreachable)" in message, message
    statuses = run.statuses()
    assert all(s == "skipped" for n, s in statuses.items() if n != "test_host_reachable[gone]"), statuses


SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[int, Path, Path]]:
    """A real OpenSSH server on a loopback port, root by a throwaway key only: (port, key, ssh_config)."""
    if SSHD is None or os.geteuid() != 0:
        pytest.skip("needs openssh-server and root (.ci/run installs it; CI runs as root)")
    folder = tmp_path / "sshd"
    folder.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "host_key")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "client_key")], check=True)
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    os.chmod(folder / "authorized_keys", 0o600)
    port = free_port()
    (folder / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {folder / 'host_key'}\nPidFile {folder / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "LogLevel VERBOSE\n")
    made_run_dir = not Path("/run/sshd").exists()  # privilege separation needs it
    if made_run_dir:
        Path("/run/sshd").mkdir(mode=0o755)
    log = folder / "sshd.log"
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(folder / "sshd_config")], stdout=subprocess.DEVNULL,
                               stderr=log.open("w"))
    config = folder / "ssh_config"
    config.write_text("Host *\n  BatchMode yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
                      "  LogLevel ERROR\n")
    try:
        deadline = time.monotonic() + 20
        while b"Server listening" not in log.read_bytes() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            time.sleep(0.1)
        yield port, folder / "client_key", config
    finally:
        process.terminate()
        process.wait(timeout=20)
        if made_run_dir:
            with contextlib.suppress(OSError):
                Path("/run/sshd").rmdir()


def test_ssh_host_through_a_real_sshd_in_one_session(
        run_suite: RunSuite, write_env: Callable[[str], Path], log_dir: tuple[Path, Path],
        sshd: tuple[int, Path, Path]) -> None:
    port, key, config = sshd
    extra = f'ssh_identity_file = "{key}"\nssh_config = "{config}"\n'
    env = write_env('name = "hosts"\n' + host("remote", f"ssh://root@127.0.0.1:{port}", *log_dir, extra)
                    + THRESHOLDS)
    run = run_suite("-m", "daily and (infra or health)", "--env", str(env))
    assert run.returncode == 0, run.output
    checks = summary(run.allure_dir)
    assert f"(source: the host (ssh://root@127.0.0.1:{port}, testinfra))" in str(
        checks["test_host_memory[remote]"]["measurement"])
    log = (key.parent / "sshd.log").read_text()
    assert log.count("Accepted publickey for root") == 1, log  # one session for every case of the host


@pytest.fixture
def node_exporter_in_prometheus(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A real node_exporter scraped every second by a real Prometheus: (Prometheus URL, instance label)."""
    if servers.NODE_EXPORTER is None or servers.PROMETHEUS is None:
        pytest.skip("needs prometheus-node-exporter and prometheus (.ci/run installs them)")
    with servers.node_exporter_in_prometheus(tmp_path) as found:
        yield found


def test_promql_and_testinfra_agree_on_the_same_host(
        run_suite: RunSuite, write_env: Callable[[str], Path], log_dir: tuple[Path, Path],
        node_exporter_in_prometheus: tuple[str, str]) -> None:
    """The same machine read both ways. Tolerances: memory 3 points (both read /proc/meminfo seconds apart
    while other self-tests allocate), disk and inodes on / 1 point (both are df's formula). CPU is not
    compared: two windows of a quantity the other self-tests keep moving."""
    base, instance = node_exporter_in_prometheus
    env = write_env(f'name = "hosts"\n[prometheus]\nurl = "{base}"\n'
                    + host("direct", "local://", *log_dir, 'mounts = ["/"]\n')
                    + host("exporter", "local://", *log_dir, f'mounts = ["/"]\nprometheus_selector = '
                           f"'instance=\"{instance}\"'\n") + THRESHOLDS)
    run = run_suite("-m", "daily and infra", "--env", str(env))
    assert run.returncode == 0, run.output
    checks = summary(run.allure_dir)
    via = str(checks["test_host_memory[exporter]"]["measurement"])
    assert f'(source: node_exporter via PromQL (instance="{instance}"))' in via, via
    for case, tolerance in (("test_host_memory", 3.0), ("test_host_disk_usage", 1.0), ("test_host_inodes", 1.0)):
        direct = float(checks[f"{case}[direct]"]["measured"])  # type: ignore[arg-type]
        exporter = float(checks[f"{case}[exporter]"]["measured"])  # type: ignore[arg-type]
        assert abs(direct - exporter) <= tolerance, (case, direct, exporter)
    cpu = float(checks["test_host_cpu[exporter]"]["measured"])  # type: ignore[arg-type]
    assert 0 <= cpu <= 100


def test_host_logs_are_read_bounded_and_redacted(tmp_path: Path) -> None:
    """The helper the weekly reviews use to read a log on a host: the tail, secrets out, a hang cut off."""
    env = environment.from_mapping({
        "name": "logs",
        "caches": [{"name": "main", "url": "redis://monitor:Pa55-w0rd-xyz@127.0.0.1:6379/0"}],
        "hosts": [{"name": "self", "spec": "local://", "timeout_seconds": 1}],
    }, source="test", environ={})
    machine = env.section("hosts")[0]
    log = tmp_path / "postgresql.log"
    log.write_text("".join(f"line {n}\n" for n in range(500))
                   + 'FATAL:  password authentication failed for user "app" (tried Pa55-w0rd-xyz)\n')
    excerpt = read_log(machine, env, path=str(log), lines=3)
    assert excerpt.error == ""
    assert excerpt.text.splitlines() == ["line 498", "line 499",
                                         'FATAL:  password authentication failed for user "app" (tried ***)']
    assert excerpt.source == f"tail -n 3 {log}"
    missing = read_log(machine, env, path=str(tmp_path / "nope.log"))
    assert "No such file" in missing.error
    fifo = tmp_path / "never-written"
    os.mkfifo(fifo)
    started = time.monotonic()
    hung = read_log(machine, env, path=str(fifo))
    assert hung.error == "timed out on the host"
    assert time.monotonic() - started < 30  # bounded (1 s on a quiet machine), never waits for the writer


ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox mounts its host's filesystem as root only")


@pytest.mark.parametrize(("fault", "failing"), [
    pytest.param("host:disk=92", {"test_host_disk_usage[sandbox-host]"}, marks=ROOT_ONLY),
    pytest.param("host:disk=96", {"test_host_disk_usage[sandbox-host]", "test_host_disk_critical[sandbox-host]"},
                 marks=ROOT_ONLY),
    pytest.param("host:inodes", {"test_host_inodes[sandbox-host]"}, marks=ROOT_ONLY),
    ("host:cpu", {"test_host_cpu[sandbox-host]"}),
    ("logs:oversize", {"test_log_sizes[sandbox-host]"}),
    ("logs:no-rotation", {"test_logs_rotated_recently[sandbox-host]"}),
    ("service:stopped", {"test_host_services[sandbox-host]"}),
])
def test_each_sandbox_host_fault_fails_exactly_its_case(run_suite: RunSuite, fault: str, failing: set[str]) -> None:
    run = run_suite("-m", "daily and (infra or health)", "--env", "sandbox", "--sandbox-fault", fault)
    assert run.returncode == 1, run.output
    assert run.failed() == failing, run.output


def test_the_sandbox_host_is_healthy_and_leaves_nothing_mounted(run_suite: RunSuite) -> None:
    run = run_suite("-m", "daily and (infra or health)", "--env", "sandbox")
    assert run.returncode == 0, run.output
    assert {n for n in run.statuses() if n.endswith("[sandbox-host]")} == {
        f"{check}[sandbox-host]" for check in (
            "test_host_reachable", "test_host_cpu", "test_host_memory", "test_host_disk_usage",
            "test_host_disk_critical", "test_host_inodes", "test_host_network_errors", "test_log_sizes",
            "test_log_rotation_configured", "test_logs_rotated_recently", "test_host_services")}
    # Its own filesystem (named in the disk case's measurement) is unmounted and its folder gone.
    measurement = str(summary(run.allure_dir)["test_host_disk_usage[sandbox-host]"]["measurement"])
    mount = measurement.split("disk used ", 1)[1].split(" ", 1)[0]
    assert "acgs-sandbox-host-" in mount, measurement
    assert f" {mount} " not in Path("/proc/mounts").read_text()
    # The host's own folder is gone: as root the measured mount is a filesystem inside it (<folder>/...), without
    # root it is the folder itself (the filesystem that holds it is measured); either way the folder must go.
    parts = Path(mount).parts
    folder = Path(*parts[: next(i for i, p in enumerate(parts) if p.startswith("acgs-sandbox-host-")) + 1])
    assert not folder.exists(), folder


def test_a_host_read_through_an_unreachable_prometheus_is_blocked_never_relabelled(
        run_suite: RunSuite, write_env: Callable[[str], Path], log_dir: tuple[Path, Path]) -> None:
    """The metrics source is down: CPU, memory, disk, inodes and network are blocked by its failing case, never read
    from /proc under the PromQL label (no silent fallback); the host's own checks (logs, services) still run."""
    env = write_env(f'name = "hosts"\n[prometheus]\nurl = "http://127.0.0.1:{free_port()}"\n'
                    + host("exporter", "local://", *log_dir, 'mounts = ["/"]\nprometheus_selector = '
                           "'instance=\"127.0.0.1:9100\"'\n") + THRESHOLDS)
    run = run_suite("-m", "daily and (infra or slo)", "--env", str(env))
    assert run.failed() == {"test_metrics_source_reachable"}, run.output
    results = run.results()
    for case in ("test_host_cpu", "test_host_memory", "test_host_disk_usage", "test_host_disk_critical",
                 "test_host_inodes", "test_host_network_errors"):
        result = results[f"{case}[exporter]"]
        assert result["status"] == "skipped", (case, result)
        assert "see test_metrics_source_reachable" in result["statusDetails"]["message"], result
