"""What a health or API body says, read by what it declares: its charset, JSON's own detection, a status field.

Pure functions over bytes (no I/O): the HTTP exchange (:mod:`acgs_checks.probes.http`) reads a bounded body and
hands it here.
"""

from __future__ import annotations

import json

from acgs_checks import redaction

BODY_LIMIT = 64 * 1024  # what a health body may be; over it, the status is not read

# Health statuses services report in their body, normalised.
HEALTHY = "healthy"
DEGRADED = "degraded"
UNHEALTHY = "unhealthy"
UNRECOGNISED = "unrecognised"
NOT_REPORTED = "not-reported"
UNREAD = "unread"            # the body should say a status, but could not be read: over the cap, or undecodable

_HEALTHY_WORDS = frozenset({"healthy", "ok", "up", "pass", "passing", "green"})
_DEGRADED_WORDS = frozenset({"warn", "warning", "degraded", "yellow"})
_UNHEALTHY_WORDS = frozenset({"fail", "failed", "failing", "down", "unhealthy", "error",
                              "critical", "out_of_service", "red"})


def _charset(content_type: str) -> str:
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return ""


def decode_body(body: bytes, content_type: str) -> tuple[str | None, str]:
    """``body`` as text, by what it declares: the ``charset`` of its Content-Type, else (for JSON) RFC 8259's
    own detection (UTF-8, or UTF-16/32 by their byte patterns and BOM), else UTF-8. (text, "") or (None, why)."""
    declared = _charset(content_type)
    encoding = declared or (json.detect_encoding(body) if "json" in content_type.lower() or
                            body.lstrip()[:1] in (b"{", b"[") or body[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8")
    try:
        text = body.decode(encoding)
    except LookupError:
        return None, f"unknown charset {declared[:40]!r}"
    except UnicodeDecodeError as exc:
        return None, f"not valid {encoding}{' (declared)' if declared else ''} at byte {exc.start}"
    return text.removeprefix("\ufeff"), ""


def _looks_json(text: str, content_type: str) -> bool:
    return "json" in content_type.lower() or text.lstrip().startswith("{")


def classify_health(body: bytes, content_type: str, *, truncated: bool = False,
                    limit: int = BODY_LIMIT) -> tuple[str, str, str]:
    """Read a conventional status field from a JSON body: (health, field, raw value).

    Understood: ``{"status": "healthy|ok|up|pass"}``, Spring Boot's ``UP``/``DOWN``,
    and the IETF health-check draft's ``pass``/``warn``/``fail``. A JSON body that cannot be read whole
    (over ``limit``, or not decodable as it declares) is UNREAD, with why as its value: never a pass on a prefix.
    """
    text, why = decode_body(body, content_type)
    if text is None:
        if "json" in content_type.lower() or body.lstrip()[:1] == b"{" or truncated:
            return UNREAD, "", f"body {why}; status not read"
        return NOT_REPORTED, "", ""
    if not _looks_json(text, content_type):
        return NOT_REPORTED, "", ""
    if truncated:
        return UNREAD, "", f"health body over {limit // 1024} KiB; status not read"
    try:
        document = json.loads(text)
    except ValueError:
        if "json" in content_type.lower():
            return UNREAD, "", "body declared JSON is not JSON; status not read"
        return NOT_REPORTED, "", ""
    except RecursionError:
        return UNREAD, "", "body nested too deeply to read; status not read"
    if not isinstance(document, dict) or "status" not in document:
        return NOT_REPORTED, "", ""
    raw = document["status"]
    if not isinstance(raw, str):
        return UNRECOGNISED, "status", json.dumps(raw)[:80]
    raw = redaction.clip(raw, 80)
    word = raw.strip().lower().replace(" ", "_")
    if word in _HEALTHY_WORDS:
        return HEALTHY, "status", raw
    if word in _DEGRADED_WORDS:
        return DEGRADED, "status", raw
    if word in _UNHEALTHY_WORDS:
        return UNHEALTHY, "status", raw
    return UNRECOGNISED, "status", raw


def escaped(data: bytes) -> str:
    """The first bytes of a target's answer as they may be shown: printable ASCII, the rest escaped."""
    return repr(data)[1:] if data else "nothing"
