"""``acgs-checks init``: a first environment file from what the deployment already knows, read-only.

Sources, in this order:

* ACGS-2's own variables (``DATABASE_URL``, ``REDIS_URL``, ``PGBOUNCER_URL``, ``PROMETHEUS_URL``, and any named
  with ``--from-env``): written as ``${VAR}`` references, never their values, so no secret lands in the file;
* Prometheus's active scrape targets (``/api/v1/targets``, one bounded GET): the four core services by their job
  or ``service``/``app`` label, with an ``instance`` selector; node_exporter hosts with their
  ``prometheus_selector``;
* ``--service NAME=URL``.

The file carries ``#:schema``, a ``review:`` comment wherever a person must decide, and the runbook's thresholds
as commented defaults. It is validated as a run would load it before it is written.
"""

from __future__ import annotations

import json
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from acgs_checks import redaction
from acgs_checks.environment.model import NAME_RE, Prometheus
from acgs_checks.onboarding import learn
from acgs_checks.policy.thresholds import SPECS, Thresholds
from acgs_checks.probes import aio, dialects
from acgs_checks.probes import prometheus as prom

# The runbook's four core services: their names here, titles, and the names deployments give them (job names,
# service or app labels; compared after lower-casing, "_" to "-", and without an "acgs-" prefix or a "-service" or
# "-svc" suffix).
CORE_SERVICES: dict[str, tuple[str, frozenset[str]]] = {
    "auth": ("Auth Service", frozenset({"auth", "authentication"})),
    "constitutional-ai": ("Constitutional AI Service", frozenset({"constitutional-ai", "constitutional", "ac"})),
    "policy-governance": ("Policy Governance Service",
                          frozenset({"policy-governance", "policy-governance-compiler", "pgc", "pg"})),
    "governance-synthesis": ("Governance Synthesis Service", frozenset({"governance-synthesis", "gs"})),
}
# The runbook's own ports (its morning health check curls them), for Prometheus jobs whose names say nothing.
RUNBOOK_PORTS = {8000: "auth", 8001: "constitutional-ai", 8005: "policy-governance", 8004: "governance-synthesis"}
NODE_JOBS = frozenset({"node", "node-exporter", "nodeexporter", "node-exporters", "nodes"})
# What each ACGS-2 variable is, when its name says so.
KNOWN_VARIABLES = ("DATABASE_URL", "PGBOUNCER_URL", "REDIS_URL", "PROMETHEUS_URL")
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
# Prometheus's answer is read up to this many targets (a fleet's worth); the rest are counted, not used.
TARGET_LIMIT = 5000
# An instance label init will write into the file: host:port, a bare host, or [v6]:port. Anything else came from a
# relabelling init cannot interpret (or a hostile answer), and is named as skipped instead.
PLAUSIBLE_INSTANCE = re.compile(r"(?:[A-Za-z0-9_.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?")


def normalised(name: str) -> str:
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    text = text.removeprefix("acgs-")
    for suffix in ("-service", "-svc"):
        text = text.removesuffix(suffix)
    return text


def core_service(*names: str) -> str:
    """The core service one of ``names`` (job, service or app label) stands for, or ""."""
    for name in names:
        if not name:
            continue
        key = normalised(name)
        for service, (_title, aliases) in CORE_SERVICES.items():
            if key in aliases:
                return service
    return ""


@dataclass
class Found:
    """What init found, and what it says about it."""

    services: list[dict[str, Any]] = field(default_factory=list)  # name, title, url, selector, source, metrics
    databases: list[dict[str, str]] = field(default_factory=list)  # name, dsn, source
    poolers: list[dict[str, str]] = field(default_factory=list)
    caches: list[dict[str, str]] = field(default_factory=list)
    hosts: list[dict[str, str]] = field(default_factory=list)      # name, spec, selector, source
    prometheus: str = ""                                          # the url as written (a ${VAR} reference)
    business: dict[str, str] = field(default_factory=dict)        # [prometheus.metrics]: the business names
    notes: list[str] = field(default_factory=list)               # one line each, for the terminal


def _unique(name: str, taken: set[str]) -> str:
    base, n = name, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


def from_variables(environ: dict[str, str], extra: list[str], found: Found) -> list[str]:
    """Targets from ACGS-2's variables, as ${VAR} references; returns the problems (unset or unknown variables)."""
    problems: list[str] = []
    taken: set[str] = set()
    for var in [*KNOWN_VARIABLES, *extra]:
        value = environ.get(var, "")
        if not value:
            if var in extra:
                problems.append(f"--from-env {var}: the variable is not set; fix: export {var} or leave it out")
            continue
        scheme = urlsplit(value).scheme.lower()
        ref = f"${{{var}}}"
        shown = f"{var} ({redaction.display(value)})"
        stem = normalised(re.sub(r"_?(URL|DSN|URI)$", "", var)) or "primary"
        if scheme in ("postgresql", "postgres"):
            pooler = var == "PGBOUNCER_URL" or urlsplit(value).path.strip("/") == "pgbouncer"
            kind, default = (found.poolers, "pgbouncer") if pooler else (found.databases, "primary")
            name = default if var in ("DATABASE_URL", "PGBOUNCER_URL") else stem
            kind.append({"name": _unique(name, taken), "dsn": ref, "source": shown})
        elif scheme in ("redis", "rediss", "unix"):
            name = "main" if var == "REDIS_URL" else stem
            found.caches.append({"name": _unique(name, taken), "url": ref, "source": shown})
        elif scheme in ("http", "https") and "PROMETHEUS" in var:
            found.prometheus = found.prometheus or ref
        elif scheme in ("http", "https") and core_service(stem):
            service = core_service(stem)
            found.services.append({"name": _unique(service, taken), "title": CORE_SERVICES[service][0], "url": ref,
                                   "selector": "", "source": shown})
        else:
            problems.append(f"--from-env {var}: {redaction.display(value)!r} is not a postgresql://, redis:// or "
                            "Prometheus/core-service http(s):// URL; fix: name a variable that holds one")
    return problems


def _instance_host(instance: str) -> str:
    """The host of a Prometheus ``instance`` label (host:port, [v6]:port or a bare host)."""
    try:
        return urlsplit("//" + instance).hostname or instance
    except ValueError:
        return instance


def _is_local(host: str) -> bool:
    return host in LOCAL_HOSTS or host in {socket.gethostname(), socket.getfqdn()}


def _host_name(host: str, taken: set[str]) -> str:
    name = re.sub(r"[^a-z0-9_.-]+", "-", host.lower()).strip("-.") or "host"
    name = name if NAME_RE.match(name) else f"host-{name}"[:60]
    return _unique(name, taken)


def from_targets(targets: list[dict[str, Any]], found: Found,
                 redact: redaction.Redactor | None = None) -> None:
    """The core services and node_exporter hosts among Prometheus's active targets (a service already given by
    --service or a variable keeps that URL). Every string a target sends is redacted first (``redact``: the secrets
    of the variables init read), so a Prometheus that echoes a password cannot put it in the file or the output."""
    redact = redact or redaction.Redactor()
    given = {s["name"] for s in found.services}
    taken = set(given)
    hosts_taken: set[str] = set()
    unused: dict[str, int] = {}
    odd = 0
    for sent in targets[:TARGET_LIMIT]:
        target = redact.tree(sent)
        labels = _mapping(target.get("labels"))
        discovered = _mapping(target.get("discoveredLabels"))
        job = str(labels.get("job", ""))[:200]
        instance = str(labels.get("instance", ""))[:200]
        scrape = str(target.get("scrapeUrl", ""))[:2000]
        parts = urlsplit(scrape)
        if not instance or parts.scheme not in ("http", "https"):
            continue
        if not PLAUSIBLE_INSTANCE.fullmatch(instance) or not PLAUSIBLE_INSTANCE.fullmatch(parts.netloc.rsplit("@")[-1]):
            odd += 1
            continue
        service = core_service(job, str(labels.get("service", "")), str(labels.get("app", "")),
                               str(labels.get("app_kubernetes_io_name", "")),
                               str(discovered.get("__meta_kubernetes_service_name", "")))
        if not service and normalised(job) not in NODE_JOBS:
            service = RUNBOOK_PORTS.get(parts.port or 0, "")  # a generic job name: the runbook's port decides
        selector = f'job="{prom.label_value(job)}",instance="{prom.label_value(instance)}"'
        if service in given:
            found.notes.append(f"Prometheus target job={job!r} instance={instance!r} is {service}, already given")
        elif service:
            found.services.append({
                "name": _unique(service, taken), "title": CORE_SERVICES[service][0],
                "url": f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}", "selector": selector,
                "source": f"Prometheus target job={job!r} instance={instance!r}"})
        elif normalised(job) in NODE_JOBS or parts.port == 9100:
            host = _instance_host(instance)
            local = _is_local(host)
            found.hosts.append({
                "name": _host_name("localhost" if local else host, hosts_taken),
                "spec": "local://" if local else f"ssh://acgs-monitor@{host}",
                "selector": f'instance="{prom.label_value(instance)}"', "local": "yes" if local else "",
                "source": f"Prometheus target job={job!r} instance={instance!r}"})
        else:
            unused[job] = unused.get(job, 0) + 1
    if odd:
        found.notes.append(f"{odd} Prometheus target(s) skipped: their instance or scrape address is not host:port")
    if len(targets) > TARGET_LIMIT:
        found.notes.append(f"Prometheus listed {len(targets)} targets; the first {TARGET_LIMIT} were read")
    if unused:
        found.notes.append("Prometheus targets not used (not a core service or node_exporter): "
                           + ", ".join(f"job={redaction.clip(repr(job), 80)} ({n})"
                                       for job, n in sorted(unused.items())[:12]))


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _prometheus(url: str, timeout: float) -> Prometheus:
    return Prometheus.model_validate({"url": url, "timeout_seconds": timeout})


async def _learn(found: Found, url: str, targets: list[dict[str, Any]], timeout: float) -> list[str]:
    """Each service's selector and metric dialect, and the business metrics' names, from Prometheus."""
    prometheus, said = _prometheus(url, timeout), []
    for service in found.services[:TARGET_LIMIT]:
        said += await learn.learn_service(prometheus, service, targets, timeout)
    found.business, more = await learn.business_names(prometheus)
    return said + more


def discover(environ: dict[str, str], *, extra: list[str], services: list[str], prometheus: str,
             timeout: float) -> tuple[Found, list[str]]:
    """Everything init can learn, read-only; and the problems that stop it (usage errors)."""
    found = Found()
    problems = from_variables(environ, extra, found)
    for spec in services:
        name, _, url = spec.partition("=")
        name = name.strip().lower()
        if not NAME_RE.match(name) or urlsplit(url).scheme not in ("http", "https"):
            problems.append(f"--service {spec!r}: not NAME=http(s)://host:port; fix: write e.g. "
                            "--service auth=http://auth.internal:8000")
            continue
        if redaction.split_userinfo(url) is not None:
            problems.append(f"--service {name}: the URL carries credentials; fix: give them as headers with ${{VAR}} "
                            "in the file instead")
            continue
        core = core_service(name)
        found.services = [s for s in found.services if s["name"] != (core or name)]
        found.services.append({"name": core or name, "title": CORE_SERVICES[core][0] if core else name, "url": url,
                               "selector": "", "source": "--service"})
    if prometheus:
        if redaction.split_userinfo(prometheus) is not None:
            problems.append("--prometheus: the URL carries credentials; fix: export PROMETHEUS_URL with them and "
                            "leave --prometheus out (the file then says ${PROMETHEUS_URL})")
        else:
            found.prometheus = prometheus
    if problems:
        return found, problems
    url = prometheus or environ.get("PROMETHEUS_URL", "")
    if found.prometheus and url:
        read = [environ.get(var, "") for var in (*KNOWN_VARIABLES, *extra)] + [url]
        redact = redaction.Redactor(set().union(*(redaction.secrets_in(value) for value in read)))
        targets, error = aio.run(lambda: prom.scrape_targets(_prometheus(url, timeout)))
        if error:
            found.notes.append(redact(f"Prometheus {redaction.display(url)}: {error}; no target was read from it "
                                      "(the file still names it: doctor will say what is wrong)"))
        else:
            from_targets(targets, found, redact)
            found.notes += [redact(line) for line in aio.run(lambda: _learn(found, url, targets, timeout))]
    found.services.sort(key=_runbook_order)
    missing = _missing_core(found)
    if missing:
        found.notes.append(f"not found: {', '.join(missing)}: the morning health check does not cover them until "
                           "each is a [[services]] entry (init --service NAME=URL, or by hand)")
    return found, problems


def _missing_core(found: Found) -> list[str]:
    """The titles of the runbook's core services init found no entry for."""
    return [CORE_SERVICES[s][0] for s in CORE_SERVICES if all(x["name"] != s for x in found.services)]


def _runbook_order(service: dict[str, str]) -> tuple[int, str]:
    """The runbook's order of the core services (a second replica, auth-2, beside its first), then the rest."""
    order, name = list(CORE_SERVICES), service["name"]
    base = name if name in order else name.rsplit("-", 1)[0]
    return (order.index(base) if base in order else len(order)), name


def _q(value: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, control characters included (a target's labels are
    untrusted: nothing they hold can end the string or the line)."""
    return json.dumps(value, ensure_ascii=False)


def _comment(text: str) -> str:
    """Untrusted text as one comment line: no line break or control character, clipped."""
    return redaction.clip("".join(c if c.isprintable() else " " for c in text), 400)


def _literal(value: str) -> str:
    """A TOML literal string when it can be one (selectors read better without escapes)."""
    return f"'{value}'" if value.isprintable() and "'" not in value else _q(value)


def render(found: Found, *, name: str, sources: list[str], output: str) -> str:
    """The starter file: every section with what it came from, ``review:`` where a person must decide."""
    t = Thresholds()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "#:schema ./env.schema.json",
        f"# Written by `acgs-checks init` on {when} from: {', '.join(sources) or 'no source'}.",
        "# Secrets stay in the process environment: ${VAR} is expanded when a run loads this file and redacted from",
        "# every output. Review each line marked `review:`, then run:",
        f"#   acgs-checks doctor --env {output}",
        f"#   pytest -m daily --env {output}",
        f"name = {_q(name)}",
        "",
        "[defaults]",
        "timeout_seconds = 2.0  # the bound on every probe; review: raise it for slow links",
        "",
    ]
    if found.prometheus:
        lines += ["[prometheus]", f"url = {_q(found.prometheus)}",
                  "# review: a bearer token or basic auth comes from a variable: bearer_token = \"${PROM_TOKEN}\""]
        if found.business:
            lines += ["# the business metrics' names, learned from Prometheus's metadata",
                      f"metrics = {dialects.inline(found.business)}"]
        lines.append("")
    for service in found.services:
        lines += ["[[services]]", f"name = {_q(service['name'])}", f"title = {_q(service['title'])}",
                  f"url = {_q(service['url'])}  # from {service['source']}"]
        if service["selector"]:
            lines.append(f"prometheus_selector = {_literal(service['selector'])}")
        if service.get("metrics"):
            lines += [f"# metric dialect, learned from Prometheus: {_comment(service.get('dialect', ''))}",
                      f"metrics = {dialects.inline(service['metrics'])}"]
        lines += ['health_path = "/health"  # review: the path that answers 200 when the service is healthy', ""]
    missing = _missing_core(found)
    if missing:
        lines += [f"# review: not found: {', '.join(missing)}. Add each as a [[services]] entry (or run init again",
                  "# with --service NAME=URL).", ""]
    for section, items, key, note in (
            ("databases", found.databases, "dsn", "review: a read-only monitoring role (GRANT pg_monitor), not the "
                                                  "application's own"),
            ("poolers", found.poolers, "dsn", "review: a user listed in PgBouncer's stats_users"),
            ("caches", found.caches, "url", "review: an ACL user with -@all +ping +info (see doctor)")):
        for item in items:
            lines += [f"[[{section}]]", f"name = {_q(item['name'])}",
                      f"{key} = {_q(item[key])}  # from {item['source']}", f"# {note}", ""]
    for host in found.hosts:
        lines += ["[[hosts]]", f"name = {_q(host['name'])}",
                  f"spec = {_q(host['spec'])}" + ("  # this machine" if host["local"] else
                                                  "  # review: the ssh account that may read /proc, df and the logs"),
                  f"prometheus_selector = {_literal(host['selector'])}  # from {host['source']}",
                  "log_dirs = []  # review: ACGS-2's log folders on this host, e.g. [\"/var/log/acgs\"]",
                  'logrotate_config = ""  # review: the logrotate file that covers them, e.g. "/etc/logrotate.d/acgs"',
                  ""]
    lines += ["[thresholds]", "# The runbook's values, in force unless set here. Uncomment a line to override it."]
    for spec in SPECS:
        lines.append(f"# {spec.key} = {getattr(t, spec.key):g}  # {spec.unit}: {spec.meaning}")
    return "\n".join(lines) + "\n"


def summary(found: Found, output: Path) -> list[str]:
    """What init says it found, one line each (no secret: variables are shown redacted)."""
    piped = str(output) == "-"
    lines = ["standard output: written" if piped else f"{output}: written"]
    for what, items in (("service", found.services), ("database", found.databases), ("pooler", found.poolers),
                        ("cache", found.caches), ("host", found.hosts)):
        for item in items:
            lines.append(f"  {what} {item['name']}: from {item['source']}")
    if found.prometheus:
        lines.append(f"  prometheus: {redaction.display(found.prometheus)}")
    lines += [f"  note: {note}" for note in found.notes]
    then = "save it to a file, review" if piped else "review"
    named = "FILE" if piped else output
    lines.append(f"next: {then} the lines marked `review:`, then acgs-checks doctor --env {named}")
    return lines
