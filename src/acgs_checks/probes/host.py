"""Hosts: CPU, memory, disk, inodes, network, log directories and services, read-only and bounded.

Two sources, one record:

* **the host itself**, through pytest-testinfra's connection backends (``local://``, ``ssh://``,
  ``docker://``, ``kubectl://``, ``ansible://``): one read-only POSIX shell script per host and
  run, so one connection (an ``ssh`` run opens one session, with no control master left behind),
  bounded by ``timeout`` on the host and by the probe's own bound here;
* **node_exporter through Prometheus** (PromQL) for CPU, memory, disk, inodes and network when the
  environment has ``[prometheus]`` and the host a ``prometheus_selector``. Log directories and
  services are always read on the host.

Every value names its source; a value neither source gave is missing, never zero.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from acgs_checks import kinds, redaction, verdict
from acgs_checks.environment import Environment, Target
from acgs_checks.environment.base import problem
from acgs_checks.environment.model import context_of
from acgs_checks.probes import aio
from acgs_checks.probes import prometheus as prom
from acgs_checks.records import JsonRecord

# Filesystems that are not disks (df lists them; node_exporter exports several of them).
PSEUDO_FS = ("tmpfs", "devtmpfs", "overlay", "squashfs", "proc", "sysfs", "cgroup", "cgroup2", "devpts",
             "mqueue", "nsfs", "autofs", "tracefs", "securityfs", "pstore", "bpf", "configfs", "debugfs",
             "fusectl", "hugetlbfs", "ramfs", "rpc_pipefs", "binfmt_misc", "efivarfs", "fuse.lxcfs", "nfsd")
SPEC_RE = re.compile(r"^(local|ssh|paramiko|docker|podman|kubectl|ansible|openshift|winrm|lxc|salt)://")
MIB = 1024 * 1024


class Host(Target):
    """A host checked directly (testinfra) or through node_exporter (PromQL), or both."""

    spec: str = Field(description="a testinfra host spec: local://, ssh://user@host[:port], docker://container, "
                      "kubectl://pod?namespace=...&container=..., ansible://group")
    ssh_config: str = Field("", description="ssh: an ssh_config file (passed to testinfra)")
    ssh_identity_file: str = Field("", description="ssh: the private key (passed to testinfra)")
    ansible_inventory: str = Field("", description="ansible: the inventory (passed to testinfra)")
    prometheus_selector: str = Field("", description='node_exporter series of this host, e.g. '
                                     'instance="db1:9100" (then CPU, memory, disk and network come from PromQL)')
    mounts: tuple[str, ...] = Field((), description="mount points to check (default: every disk filesystem)")
    log_dirs: tuple[str, ...] = Field(("/var/log/acgs",), description="log directories to check")
    logrotate_config: str = Field("/etc/logrotate.d/acgs", description="the logrotate file meant to cover them "
                                  '("": no logrotate check for this host)')
    services: tuple[str, ...] = Field((), description="systemd units (or, without systemd, process names: "
                                      "their first 15 characters, as /proc/PID/comm has them) that must be running")
    interfaces: tuple[str, ...] = Field((), description="network interfaces to check (default: all but lo)")
    window_seconds: float = Field(3.0, gt=0, le=60, description="CPU and network are measured over this window")

    @field_validator("spec")
    @classmethod
    def _spec(cls, value: str, info: ValidationInfo) -> str:
        context_of(info).setdefault("secrets", set()).update(redaction.secrets_in(value))  # ssh://user:pw@host
        if not SPEC_RE.match(value):
            raise problem(f"{redaction.display(value)!r} is not a testinfra host spec",
                          "write local://, ssh://user@host, docker://name, kubectl://pod or ansible://group")
        return value

    def testinfra_options(self) -> dict[str, str]:
        """What testinfra's backend takes, as it names it (only the ones set)."""
        options = {"ssh_config": self.ssh_config, "ssh_identity_file": self.ssh_identity_file,
                   "ansible_inventory": self.ansible_inventory}
        return {k: v for k, v in options.items() if v}


@dataclass(frozen=True)
class HostSnapshot(JsonRecord):
    """What a host gave: each metric with its source, log files, services. Missing means not read."""

    target: str
    spec: str
    answered: bool
    error: str = ""
    source: str = ""                     # where CPU, memory, disk and network came from
    window_seconds: float = 0.0
    cpu_percent: float | None = None
    memory_percent: float | None = None
    memory: dict[str, float] = field(default_factory=dict)     # MemTotal, MemAvailable (bytes)
    disks: list[dict[str, Any]] = field(default_factory=list)  # mount, fstype, used_percent, inodes_percent
    network: list[dict[str, Any]] = field(default_factory=list)  # interface, errors, drops, rx/tx bytes/s
    logs: dict[str, dict[str, Any]] = field(default_factory=dict)  # dir -> exists, files [(size, mtime, path)]
    logrotate: dict[str, Any] = field(default_factory=dict)    # config, exists, covers, accepted, output
    services: dict[str, str] = field(default_factory=dict)     # name -> active / inactive / unknown
    errors: dict[str, str] = field(default_factory=dict)       # what could not be read, by part
    checked_at: float = 0.0
    denied: str = ""  # the target refused the suite: the credential or grant to check


# --- the host itself (one script, one connection) ----------------------------------------------

def script(host: Host, *, sample: bool) -> str:
    """The read-only POSIX shell script run on the host; sections start with ``==acgs== name``."""
    q = shlex.quote
    parts = ["export LC_ALL=C"]
    if sample:
        parts += ["echo '==acgs== stat1'; head -n 1 /proc/stat", "echo '==acgs== net1'; cat /proc/net/dev",
                  f"sleep {host.window_seconds:g}",
                  "echo '==acgs== stat2'; head -n 1 /proc/stat", "echo '==acgs== net2'; cat /proc/net/dev"]
    parts += ["echo '==acgs== meminfo'; cat /proc/meminfo",
              "echo '==acgs== df'; df -P -k -T", "echo '==acgs== dfi'; df -P -i -T"]
    for mount in host.mounts:
        # A configured folder that is not itself a mount point: the filesystem that holds it.
        parts.append(f"echo '==acgs== dfpath {mount}'; df -P -k -T {q(mount)} 2>/dev/null | tail -n 1; "
                     f"df -P -i -T {q(mount)} 2>/dev/null | tail -n 1")
    for directory in host.log_dirs:
        parts.append(f"echo '==acgs== logs {directory}'; if [ -d {q(directory)} ]; then "
                     f"find {q(directory)} -maxdepth 2 -type f -printf '%s %T@ %p\\n' 2>/dev/null | "
                     "sort -rn | head -n 200; else echo '!missing'; fi")
    conf = q(host.logrotate_config)
    if host.logrotate_config:
        parts.append(f"echo '==acgs== logrotate'; if [ -f {conf} ]; then echo '!exists'; cat {conf}; "
                     "if command -v logrotate >/dev/null 2>&1 || [ -x /usr/sbin/logrotate ]; then "
                     "PATH=$PATH:/usr/sbin; "
                     f"logrotate -d -s /dev/null {conf} >/dev/null 2>&1; echo \"!debug $?\"; else "
                     "echo '!no-logrotate'; fi; else echo '!missing'; fi")
    for service in host.services:
        # A systemd unit when systemd knows one by that name; otherwise a process of that name.
        parts.append(f"echo '==acgs== service {service}'; if [ -d /run/systemd/system ] && "
                     f"[ \"$(systemctl show -p LoadState --value {q(service)} 2>/dev/null)\" = loaded ]; then "
                     f"systemctl is-active {q(service)} 2>/dev/null || true; "
                     f"elif grep -qsx {q(service[:15])} /proc/[0-9]*/comm; then echo active; else echo inactive; fi")
    return "; ".join(parts)


def _sections(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("==acgs== "):
            current = found.setdefault(line[len("==acgs== "):].strip(), [])
        elif current is not None:
            current.append(line)
    return found


def _cpu(first: list[str], second: list[str]) -> float | None:
    """Busy share between two /proc/stat ``cpu`` lines: 1 - (idle + iowait) / total."""
    try:
        a = [float(x) for x in first[0].split()[1:]]
        b = [float(x) for x in second[0].split()[1:]]
    except (IndexError, ValueError):
        return None
    total = sum(b) - sum(a)
    idle = (b[3] + b[4]) - (a[3] + a[4])
    return None if total <= 0 else 100.0 * (1 - idle / total)


def _net(lines: list[str]) -> dict[str, list[float]]:
    found = {}
    for line in lines[2:]:
        if ":" in line:
            name, rest = line.split(":", 1)
            found[name.strip()] = [float(x) for x in rest.split()]
    return found


def _network(first: list[str], second: list[str], seconds: float, interfaces: tuple[str, ...]) -> list[dict[str, Any]]:
    a, b = _net(first), _net(second)
    rows = []
    for name in sorted(b):
        if name not in a or (name not in interfaces if interfaces else name == "lo"):
            continue
        d = [y - x for x, y in zip(a[name], b[name], strict=False)]
        # /proc/net/dev: rx bytes packets errs drop ... (8 fields), then tx bytes packets errs drop ...
        rows.append({"interface": name, "errors": d[2] + d[10], "drops": d[3] + d[11],
                     "rx_bytes_per_second": d[0] / seconds, "tx_bytes_per_second": d[8] / seconds})
    return rows


def _df(lines: list[str], inode_lines: list[str]) -> list[dict[str, Any]]:
    inodes: dict[str, float | None] = {}
    for line in inode_lines[1:]:
        cols = line.split()
        if len(cols) >= 7:
            # IUsed / Inodes, exactly: df's IUse% is rounded up to a whole percent, which put the direct path up
            # to a point above node_exporter's 1 - files_free / files for the same filesystem.
            files, taken = cols[2], cols[3]
            inodes[cols[6]] = 100.0 * float(taken) / float(files) if files.isdigit() and taken.isdigit() \
                and int(files) > 0 else None
    disks = []
    for line in lines[1:]:
        cols = line.split()
        if len(cols) < 7:
            continue
        used, avail = float(cols[3]), float(cols[4])
        share = 100.0 * used / (used + avail) if used + avail > 0 else None
        disks.append({"mount": cols[6], "fstype": cols[1], "used_percent": share, "size_bytes": float(cols[2]) * 1024,
                      "inodes_percent": inodes.get(cols[6]), "pseudo": cols[1] in PSEUDO_FS})
    return disks


def parse(host: Host, text: str, *, sampled: bool) -> dict[str, Any]:
    """The script's output as the record's fields (the host path)."""
    s = _sections(text)
    out: dict[str, Any] = {"errors": {}}
    if sampled:
        out["cpu_percent"] = _cpu(s.get("stat1", []), s.get("stat2", []))
        out["network"] = _network(s.get("net1", []), s.get("net2", []), host.window_seconds, host.interfaces)
    mem = {}
    for line in s.get("meminfo", []):
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable") and rest.split():
            mem[key] = float(rest.split()[0]) * 1024
    out["memory"] = mem
    if mem.get("MemTotal"):
        out["memory_percent"] = 100.0 * (mem["MemTotal"] - mem.get("MemAvailable", 0.0)) / mem["MemTotal"]
    out["disks"] = _df(s.get("df", []), s.get("dfi", []))
    listed = {d["mount"] for d in out["disks"]}
    for mount in host.mounts:
        held = s.get(f"dfpath {mount}", [])
        if mount in listed or len(held) != 2:
            continue
        for disk in _df(["", held[0]], ["", held[1]]):  # the filesystem holding the folder, shown by the folder
            out["disks"].append({**disk, "mount": mount, "on": disk["mount"]})
    logs = {}
    for directory in host.log_dirs:
        lines = s.get(f"logs {directory}")
        if lines is None:
            out["errors"][f"logs {directory}"] = "not read (the script stopped before it)"
            continue
        files = []
        for line in lines:
            size, _, rest = line.partition(" ")
            mtime, _, path = rest.partition(" ")
            if size.isdigit():
                files.append([float(size), float(mtime), path])
        logs[directory] = {"exists": lines != ["!missing"], "files": files}
    out["logs"] = logs
    rotate = s.get("logrotate")
    if rotate is not None:
        body = [line for line in rotate if not line.startswith("!")]
        debug = next((line.split()[1] for line in rotate if line.startswith("!debug")), None)
        out["logrotate"] = {"config": host.logrotate_config, "exists": "!exists" in rotate,
                            "covers": [d for d in host.log_dirs if any(d in line for line in body)],
                            "accepted": None if debug is None else debug == "0",
                            "available": "!no-logrotate" not in rotate}
    out["services"] = {name: (s.get(f"service {name}") or ["unknown"])[0].strip() or "unknown"
                       for name in host.services}
    return out


def why_failed(rc: int, stderr: str) -> str:
    """What a failed command on a host said: timeout's own status (124, or 137 once killed), else stderr's last line."""
    if rc in (124, 137):
        return "timed out on the host"
    return (stderr.strip().splitlines() or [f"exit status {rc}"])[-1]


def run_on_host(host: Host, command: str, bound: float) -> tuple[int, str, str]:
    import testinfra  # noqa: PLC0415 - only environments with hosts need it

    options: dict[str, Any] = dict(host.testinfra_options())
    if host.spec.startswith("ssh://"):
        # One session per run and nothing left behind: no control master; the connect timeout bounded.
        options.update(controlpersist=0, timeout=max(1, int(host.timeout_seconds)))
    backend = testinfra.get_host(host.spec, **options)
    wrapped = f"timeout -k 1 {bound:g} sh -c {shlex.quote(command)}"
    result = backend.run(wrapped)
    return int(result.rc), str(result.stdout), str(result.stderr)


async def read_on_host(env: Environment, name: str, command: str, *, timeouts: float = 1.0,
                       quiet_codes: tuple[int, ...] = (0,)) -> tuple[str, str]:
    """``command`` (sh) on the ``[[hosts]]`` entry ``name``, in a thread of its own, bounded by ``timeouts`` times
    the host's timeout: (its stdout, "") or ("", why not). An exit status in ``quiet_codes`` with nothing on
    stderr is success (grep's 1: no such line)."""
    host = next((h for h in env.section("hosts") if h.name == name), None)
    if host is None:
        return "", f"no [[hosts]] entry named {name!r}"
    bound = host.timeout_seconds * timeouts
    try:
        rc, stdout, stderr = await asyncio.wait_for(aio.in_thread(run_on_host, host, command, bound),
                                                    timeout=bound + 2)
    except Exception as exc:  # noqa: BLE001 - unreachable host, a backend that cannot start, a timeout: the reason
        return "", env.redact(f"{type(exc).__name__}: {exc}".splitlines()[0])
    if rc == 0 or (rc in quiet_codes and not stderr.strip()):
        return stdout, ""
    return "", env.redact(why_failed(rc, stderr))


# --- node_exporter through Prometheus ---------------------------------------------------------

def promql(host: Host, window: str) -> dict[str, str]:
    """The PromQL for each value, scoped to the host's series."""
    sel = host.prometheus_selector
    fs = f'{sel},fstype!~"{"|".join(PSEUDO_FS)}"'  # pseudo filesystems are not disks, as on the host path
    devices = f'device=~"{"|".join(host.interfaces)}"' if host.interfaces else 'device!="lo"'
    return {
        # busy share: 1 - (idle + iowait) / all modes, as from /proc/stat
        "cpu_percent": f'100 * (1 - sum(rate(node_cpu_seconds_total{{{sel},mode=~"idle|iowait"}}[{window}])) '
                       f'/ sum(rate(node_cpu_seconds_total{{{sel}}}[{window}])))',
        "memory_percent": f"100 * (1 - sum(node_memory_MemAvailable_bytes{{{sel}}}) "
                          f"/ sum(node_memory_MemTotal_bytes{{{sel}}}))",
        # df's Use%: used / (used + available to unprivileged users)
        "disk": f"100 * (node_filesystem_size_bytes{{{fs}}} - node_filesystem_free_bytes{{{fs}}}) / "
                f"(node_filesystem_size_bytes{{{fs}}} - node_filesystem_free_bytes{{{fs}}} "
                f"+ node_filesystem_avail_bytes{{{fs}}})",
        "inodes": f"100 * (1 - node_filesystem_files_free{{{fs}}} / node_filesystem_files{{{fs}}})",
        "network": f'sum by (device) (increase(node_network_receive_errs_total{{{sel},{devices}}}[{window}]) '
                   f'+ increase(node_network_transmit_errs_total{{{sel},{devices}}}[{window}]))',
        "drops": f'sum by (device) (increase(node_network_receive_drop_total{{{sel},{devices}}}[{window}]) '
                 f'+ increase(node_network_transmit_drop_total{{{sel},{devices}}}[{window}]))',
    }


async def _from_prometheus(host: Host, env: Environment, job: kinds.Job) -> dict[str, Any]:
    assert env.prometheus is not None
    window = f"{max(15, int(host.window_seconds * 5))}s"  # rate() needs several scrapes in the window
    queries = promql(host, window)
    out: dict[str, Any] = {"errors": {}, "source": f"node_exporter via PromQL ({host.prometheus_selector})"}
    down, _denied = await prom.reachable_once(job, env.prometheus)
    if down:
        out["errors"]["prometheus"] = down
        return out
    for key in ("cpu_percent", "memory_percent"):
        value, error = await prom.query(env.prometheus, queries[key])
        out[key] = value
        if error:
            out["errors"][key] = f"{error} (query: {queries[key]})"
    disks: dict[str, dict[str, Any]] = {}
    for key, field_name in (("disk", "used_percent"), ("inodes", "inodes_percent")):
        series, error = await prom.vector(env.prometheus, queries[key])
        if error:
            out["errors"][key] = f"{error} (query: {queries[key]})"
        for labels, value in series:
            mount, fstype = labels.get("mountpoint", "?"), labels.get("fstype", "")
            disks.setdefault(mount, {"mount": mount, "fstype": fstype, "pseudo": fstype in PSEUDO_FS})[
                field_name] = value
    out["disks"] = [disks[m] for m in sorted(disks)]
    errors, error = await prom.vector(env.prometheus, queries["network"])
    drops, drop_error = await prom.vector(env.prometheus, queries["drops"])
    if error or drop_error:
        out["errors"]["network"] = error or drop_error
    dropped = {labels.get("device", "?"): value for labels, value in drops}
    out["network"] = [{"interface": labels.get("device", "?"), "errors": value,
                       "drops": dropped.get(labels.get("device", "?"), 0.0)} for labels, value in errors]
    out["window_seconds"] = float(window[:-1])
    return out


# --- the probe ---------------------------------------------------------------------------------

async def probe_host(host: Host, job: kinds.Job) -> HostSnapshot:
    env = job.env
    via_prometheus = env.prometheus is not None and bool(host.prometheus_selector)
    bound = host.timeout_seconds + (0 if via_prometheus else host.window_seconds)
    command = script(host, sample=not via_prometheus)
    try:
        rc, stdout, stderr = await asyncio.wait_for(
            aio.in_thread(run_on_host, host, command, bound), timeout=bound + 2)
    except TimeoutError:
        return HostSnapshot(target=host.name, spec=host.spec, answered=False,
                            error=f"no answer within {bound + 2:g} s", checked_at=time.time())
    except Exception as exc:  # noqa: BLE001 - a backend that cannot start (no such container, bad spec)
        return HostSnapshot(target=host.name, spec=host.spec, answered=False,
                            error=f"{type(exc).__name__}: {exc}".splitlines()[0], checked_at=time.time())
    if "==acgs== meminfo" not in stdout:
        return HostSnapshot(target=host.name, spec=host.spec, answered=False,
                            error=verdict.clean(why_failed(rc, stderr)), checked_at=time.time())
    fields = parse(host, stdout, sampled=not via_prometheus)
    fields["source"] = f"the host ({host.spec.split('?')[0]}, testinfra)"
    fields["window_seconds"] = host.window_seconds
    if via_prometheus:
        # No silent fallback: with a prometheus_selector, CPU, memory, disks and network come from PromQL or not at
        # all (a value read from /proc under a "node_exporter via PromQL" label would say where it did not come from).
        for key in ("cpu_percent", "memory_percent", "disks", "network"):
            fields.pop(key, None)
        metrics = await _from_prometheus(host, env, job)
        errors = {**fields.pop("errors"), **metrics.pop("errors")}
        fields.update(metrics)
        fields["errors"] = errors
    return HostSnapshot(target=host.name, spec=host.spec, answered=True, checked_at=time.time(), **fields)



HOSTS = kinds.register(kinds.ProbeKind(
    name="host", section="hosts", record=HostSnapshot, param="machine", fixture="host_probe",
    probe=probe_host, entry=Host,
    targets=lambda env: env.section("hosts"),
    gate=kinds.Gate(fixture="host_facts", doc="the snapshot; blocked when the host cannot be reached"),
    grant=("an unprivileged ssh account that may read /proc, run df, read the log directories and the logrotate "
           "file (often group adm) and run systemctl is-active, no sudo; or read access to the Prometheus API with "
           "node_exporter"),
    doc="one read-only script on a host (testinfra), or node_exporter through PromQL",
))
