"""Secrets out of every output: what a configured value hides, and how to show it safely.

Values arrive in every shape production uses: URLs with raw (unencoded) passwords, libpq
keyword DSNs, query parameters such as ``?password=``. The functions here never need the
value to parse: a value that does not parse is exactly the one an error message echoes.

* :func:`display` shows a URL or DSN with its secrets replaced by ``***``.
* :func:`secrets_in` lists the secret strings inside a value (as written and decoded),
  so that :class:`Redactor` can remove them from any later text: messages, evidence, logs.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus, unquote

MASK = "***"
# Query and keyword parameters whose values are secrets (case-insensitive).
SECRET_PARAMS = ("password", "passwd", "pwd", "sslpassword", "token", "access_token", "auth_token", "api_key",
                 "apikey", "secret", "client_secret")
# Shorter strings are not replaced everywhere: they would shred unrelated text, and nobody uses them.
MIN_SECRET_LENGTH = 4

_PARAM_NAMES = "|".join(SECRET_PARAMS)
# In a URL's query: the value runs to the next '&' or '#'.
_QUERY_SECRET = re.compile(rf"(?i)([?&;](?:{_PARAM_NAMES})=)([^&#]*)")
# In a keyword DSN: a quoted value with backslash escapes, or everything up to the next ``key=``
# (an unquoted value with a space is still all secret, even though libpq would reject it).
_KEYWORD_SECRET = re.compile(
    rf"(?i)(?<![\w.])((?:{_PARAM_NAMES})\s*=\s*)('(?:[^'\\]|\\.)*'?|.*?)(?=\s+[A-Za-z_][A-Za-z0-9_]*\s*=|\s*$)")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Credentials inside free text (a driver's message, a log line): ?token=secret (in text a value ends at
# white space too, so the rest of the message stays readable), and HTTP credentials as a header carries them.
# Each pattern is linear: no part of it can match the text another part matched.
_TEXT_QUERY_SECRET = re.compile(rf"(?i)([?&;](?:{_PARAM_NAMES})=)([^&#\s]*)")
_TEXT_AUTH_SCHEME = re.compile(r"(?i)\b(Basic|Bearer|Token|Digest)(\s+)([A-Za-z0-9+/=._~-]{6,})")
# scheme://user:secret@ in text: bounded pieces matched around each '://' (see _mask_userinfo); a longer user
# or password is not sought by pattern (a known secret is still removed wherever it stands).
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
_USER_PART = re.compile(r"[^\s/:@]{0,256}:")
_SPACE = re.compile(r"\s")
_PASSWORD_LIMIT = 1024


def _userinfo_end(rest: str) -> int:
    """Where the userinfo of ``scheme://REST`` ends (the index of its '@'), or -1.

    A well-formed authority ends at the first '/', '?' or '#'. When an '@' stands after that,
    the password itself probably holds one of those characters unencoded: then everything up
    to the last '@' is taken as userinfo, so the secret is masked whole (at worst, too much is).
    """
    ends = [i for i in (rest.find(c) for c in "/?#") if i >= 0]
    authority_end = min(ends) if ends else len(rest)
    last = rest.rfind("@")
    if last < 0:
        return -1
    in_authority = rest.rfind("@", 0, authority_end)
    if last == in_authority:
        return last
    candidate = rest[:last]
    # Without a ':' there is no password in it: a username alone, and '@' belongs to the query.
    return last if ":" in candidate else in_authority


def split_userinfo(text: str) -> tuple[str, str, str, str] | None:
    """(scheme://, user, password, after '@') for a URL with a password in it; None otherwise."""
    match = _SCHEME.match(text)
    if match is None:
        return None
    head, rest = text[:match.end()], text[match.end():]
    end = _userinfo_end(rest)
    if end < 0:
        return None
    user, sep, password = rest[:end].partition(":")
    if not sep:
        return None
    return head, user, password, rest[end + 1:]


def _unquote_keyword(value: str) -> str:
    if value.startswith("'"):
        body = value[1:-1] if value.endswith("'") and len(value) > 1 else value[1:]
        return re.sub(r"\\(.)", r"\1", body)
    return value


def secrets_in(value: str) -> set[str]:
    """Every secret string inside ``value``: URL passwords, secret query and keyword parameters.

    Both the text as written and its decoded form are returned (percent-decoding for URLs,
    quote removal for keyword DSNs), since either may show up in a later message.
    """
    found: set[str] = set()
    parts = split_userinfo(value)
    if parts is not None:
        found.update({parts[2], unquote(parts[2])})
        # The Authorization: Basic header an HTTP client builds from user:password@ (as written and decoded).
        found.update(basic_credentials(user, password) for user, password in
                     ((parts[1], parts[2]), (unquote(parts[1]), unquote(parts[2]))) if password)
    for match in _QUERY_SECRET.finditer(value):
        found.update({match.group(2), unquote(match.group(2))})
    if _SCHEME.match(value) is None:
        for match in _KEYWORD_SECRET.finditer(value):
            found.update({match.group(2), _unquote_keyword(match.group(2))})
    # Shorter ones are still masked in place by display(); they are just not hunted in other text.
    return {s for s in found if len(s) >= MIN_SECRET_LENGTH}


def display(value: str) -> str:
    """``value`` as it may be shown: passwords and secret parameters replaced with ``***``."""
    parts = split_userinfo(value)
    text = value if parts is None else f"{parts[0]}{parts[1]}:{MASK}@{parts[3]}"
    text = _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, text)
    if _SCHEME.match(value) is None:
        text = _KEYWORD_SECRET.sub(lambda m: m.group(1) + MASK, text)
    return text


def basic_credentials(user: str, password: str) -> str:
    """The value of ``Authorization: Basic`` for ``user:password`` (what to hunt for in echoed headers)."""
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _mask_userinfo(text: str) -> str:
    """``scheme://user:secret@`` in free text, with the secret masked; linear in the text's length.

    Each ``://`` is looked at once. The user part stops at ``/``, ``:`` or ``@``, so user scans never
    overlap; the password is the text up to the next ``@``, when no white space comes first and it is at
    most _PASSWORD_LIMIT long, found through the next ``@`` and the next white space, which only move forward.
    """
    if "@" not in text:
        return text
    out: list[str] = []
    done = 0
    next_at, next_space = text.find("@"), -1
    at = text.find("://")
    while at >= 0:
        nxt = at + 3
        user = _USER_PART.match(text, at + 3) if at > 0 and text[at - 1] in _SCHEME_CHARS else None
        if user is not None:
            begin = user.end()
            if next_at < begin:
                next_at = text.find("@", begin)
            if next_space < begin:
                space = _SPACE.search(text, begin)
                next_space = space.start() if space else len(text)
            if begin < next_at < next_space and next_at - begin <= _PASSWORD_LIMIT:
                out += [text[done:begin], MASK]
                done = nxt = next_at
        if next_at < 0:
            break  # no '@' left: no more credentials to find
        at = text.find("://", nxt)
    out.append(text[done:])
    return "".join(out)


def mask_text(text: str) -> str:
    """Pattern-based masking for free text whose secrets are not known in advance; linear in its length."""
    text = _mask_userinfo(text)
    text = _TEXT_AUTH_SCHEME.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
    return _TEXT_QUERY_SECRET.sub(lambda m: m.group(1) + MASK, text)


def derived_forms(secret: str) -> set[str]:
    """Every form ``secret`` takes on the wire or in a file: as is, percent-encoded, JSON-, XML/HTML- and
    Python-escaped, base64 (alone and as the ``:password`` of a Basic header with no user)."""
    forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret),
             json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
             html.escape(secret), html.escape(secret, quote=False), repr(secret)[1:-1],
             secret.replace("\\", "\\\\"),
             base64.b64encode(secret.encode()).decode().rstrip("="), basic_credentials("", secret)}
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


class Redactor:
    """Removes known secrets in every derived form, then anything that looks like credentials, from any text.

    Linear in the text's length for a given environment: one ``str.replace`` per form, and patterns that
    never backtrack over what they matched.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = frozenset(s for s in secrets if len(s) >= MIN_SECRET_LENGTH)
        forms: set[str] = set()
        for secret in self.secrets:
            forms |= derived_forms(secret)
        self._ordered = sorted(forms, key=len, reverse=True)
        # Every proper start of every form, for a secret that a cut left in two (see _cut_secrets).
        self._starts = {form[:k] for form in forms for k in range(MIN_SECRET_LENGTH, len(form))}
        self._longest = max(map(len, forms), default=0)

    def __call__(self, text: str) -> str:
        for secret in self._ordered:
            if secret in text:
                text = text.replace(secret, MASK)
        if CUT_MARK in text:
            text = self._cut_secrets(text)
        return mask_text(text)

    def _cut_secrets(self, text: str) -> str:
        """A secret that :func:`clip` cut in two leaves its first part just before the cut's mark, where no
        whole form matches: mask the longest start of any form (of at least MIN_SECRET_LENGTH) found there."""
        out: list[str] = []
        done = 0
        for mark in _CUT_RE.finditer(text):
            before = text[done:mark.start()]
            # At most one look-up per length of a form's start: a constant per mark, whatever the text.
            longest = next((k for k in range(min(self._longest, len(before)), MIN_SECRET_LENGTH - 1, -1)
                            if before[-k:] in self._starts), 0)
            out += [before[:len(before) - longest], MASK if longest else "", mark.group(0)]
            done = mark.end()
        out.append(text[done:])
        return "".join(out)

    def tree(self, value: Any) -> Any:
        """``value`` (JSON-shaped: dicts, lists, strings, numbers) with every string and key redacted, for
        redaction before serialisation: an escaped form of a secret cannot slip past it."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self(str(k)) if isinstance(k, str) else k: self.tree(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.tree(v) for v in value]
        return value


CUT_MARK = "… ("
_CUT_RE = re.compile(r"… \(\d+ more characters\)")


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out (for text a target controls).

    Text may be cut before it is redacted (a probe does not know the secrets): the mark tells the
    :class:`Redactor` where a secret may have been cut in two.
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


_SQL_TOKENS = re.compile(r"""
    (?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z0-9_]*)?\$.*?\$(?P=tag)?\$)   # $$...$$ or $tag$...$tag$
  | (?P<string>(?:[EeBbXxNn]|[Uu]&)?'(?:[^'\\]|\\.|'')*'?)          # '...', E'...', B'...', X'...', U&'...'
  | (?P<ident>"(?:[^"]|"")*"?)                                    # "quoted identifier": kept
  | (?P<comment>--[^\n]*|/\*.*?(?:\*/|$))                          # comments: kept
  | (?P<param>\$\d+)                                               # $1 parameters: kept
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)                              # identifiers and keywords: kept
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)               # numeric literals
""", re.VERBOSE | re.DOTALL)


def mask_sql_literals(sql: str) -> str:
    """SQL text with its string and numeric literals masked (``'…'``, ``…``), as pg_stat_statements
    normalises queries: what a statement does stays readable, the values it carries do not.

    Identifiers (quoted or not), comments and ``$n`` parameters are kept; a literal cut off by
    ``pg_stat_activity``'s length limit is masked to its end.
    """
    def replace(match: re.Match[str]) -> str:
        if match.group("dollar") is not None:
            return "$$…$$"
        if match.group("string") is not None:
            return "'…'"
        if match.group("number") is not None:
            return "…"
        return match.group(0)

    return _SQL_TOKENS.sub(replace, sql)
