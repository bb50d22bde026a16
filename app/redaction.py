"""What no log line may show: a secret, whether configured or put by a client in the wrong place.

Both log formatters (`app.logs`) pass the whole rendered record through `Redactor.text`: the
message, the traceback, and every field of a JSON line. So it covers every logger of both
processes (the service's, uvicorn's access and error loggers, aiokafka's, SQLAlchemy's). Each
secret becomes `***`:

1. every configured secret (`ADMIN__TOKEN`, `SMTP__PASSWORD`, `KAFKA__SECURITY__SASL_PASSWORD`
   and `__SSL_KEY_PASSWORD`, the password in `STORE__URL`), wherever it appears, also
   percent-encoded or base64-encoded (as SMTP AUTH sends it). Values under 4 characters are left
   alone: hiding them would garble every line, and no such secret is worth much;
2. the value of a query parameter whose name looks secret (`secret_query_name`: token,
   password, passwd, pwd, secret, key, api_key, apikey, auth, authorization, cookie, session,
   credential, signature...), the name percent-decoded first: `?to%6Ben=...` is `token`;
3. the password in a URL's user info: `scheme://user:***@host`;
4. the value of a header whose name looks secret, in `Name: value` form and in the
   `('name', 'value')` or `{'name': 'value'}` form of a repr, and any `Bearer`/`Basic`
   credential.

uvicorn's access line is redacted before it is rendered (`request_target`), since its JSON form
carries the path as a field of its own; there the whole user info of an absolute-form request
target (`GET http://user:pass@host/ HTTP/1.1`, which uvicorn writes percent-encoded) goes.

Written here rather than taken from a library: the log-redaction packages on PyPI
(`logredactor` 0.0.2, `log-redactor` 0.1.1) apply regular expressions of values given to them,
and are little kept; none knows query strings, headers or the encodings of a configured value.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import quote, quote_plus, unquote, unquote_plus

MASK: Final = "***"
SHORTEST_SECRET: Final = 4

# Names of query parameters that look secret (any part of the name; `key` as a word or a suffix).
_QUERY_NAME = re.compile(
    r"token|passw|pwd|secret|auth|cookie|session|credential|signature|apikey|api_key|api-key"
    r"|key$|key[-_.]|(^|[-_.])sig$|^code$",
    re.IGNORECASE,
)
# Header and field names in free text: narrower (a Kafka record's `key` is no secret).
_TEXT_NAME = re.compile(
    r"token|passw|pwd|secret|authorization|cookie|credential|api[-_]?key|private[-_]?key"
    r"|access[-_]?key",
    re.IGNORECASE,
)
_QUERY_PAIR = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&;\s\"'#<>]+)=(?P<value>[^&;\s\"'#<>]*)")
_USERINFO_PASSWORD = re.compile(
    r"(?P<lead>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/?#@:]*):(?P<password>[^\s/?#@]*)@"
)
_HEADER_LINE = re.compile(
    r"(?P<lead>(?<![\w-])(?P<name>[A-Za-z][A-Za-z0-9_-]*)\s*:[ \t]*)(?P<value>[^\r\n\"']+)"
)
_PAIR_REPR = re.compile(
    r"(?P<lead>(?P<q1>['\"])(?P<name>[A-Za-z][A-Za-z0-9_.-]{0,63})(?P=q1)\s*[:,]\s*b?"
    r"(?P<q2>['\"]))(?P<value>(?:(?!(?P=q2)).)*)"
)
_CREDENTIAL = re.compile(r"(?P<scheme>\b(?:Bearer|Basic))\s+[A-Za-z0-9._~+/=-]{4,}", re.I)


def secret_query_name(name: str) -> bool:
    """A query parameter called `name` (already percent-decoded) holds a secret, by its name."""
    return _QUERY_NAME.search(name) is not None


def secret_text_name(name: str) -> bool:
    """A header or field called `name` in free text holds a secret, by its name. An environment
    variable's name (`ADMIN__TOKEN: use at least 16 characters`) introduces no value."""
    return "__" not in name and _TEXT_NAME.search(name) is not None


def query(text: str) -> str:
    """A query string (without `?`) with the values of secret-looking parameters masked."""
    pairs = []
    for pair in re.split(r"([&;])", text):
        name, equals, _ = pair.partition("=")
        secret = equals and secret_query_name(unquote_plus(name))
        pairs.append(f"{name}={MASK}" if secret else pair)
    return "".join(pairs)


def request_target(target: str) -> str:
    """uvicorn's logged request target (path percent-encoded, raw query) with no user info and
    the values of secret-looking query parameters masked."""
    path, question, query_string = target.partition("?")
    decoded = unquote(path)
    scheme, separator, rest = decoded.partition("://")
    if separator and "@" in rest.partition("/")[0]:
        authority, slash, remainder = rest.partition("/")
        host = authority.rpartition("@")[2]
        path = f"{quote(scheme)}%3A//{MASK}@{quote(f'{host}{slash}{remainder}')}"
    return f"{path}{question}{query(query_string)}" if question else path


class Redactor:
    """Masks the secrets in a rendered log line (see the module docstring)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms = {form for secret in secrets for form in _encodings(secret)}
        # longest first, so that a secret containing another is masked whole
        self.secrets = sorted((f for f in forms if len(f) >= SHORTEST_SECRET), key=len)[::-1]
        self._configured = (
            re.compile("|".join(re.escape(form) for form in self.secrets)) if self.secrets else None
        )

    def text(self, text: str) -> str:
        if self._configured is not None:
            text = self._configured.sub(MASK, text)
        if "://" in text:
            text = _USERINFO_PASSWORD.sub(rf"\g<lead>:{MASK}@", text)
        if "=" in text:
            text = _QUERY_PAIR.sub(_masked_pair, text)
        if ":" in text:
            text = _HEADER_LINE.sub(_masked_header_line, text)
        if "'" in text or '"' in text:
            text = _PAIR_REPR.sub(_masked_pair_repr, text)
        return _CREDENTIAL.sub(rf"\g<scheme> {MASK}", text)


def _masked_pair(found: re.Match[str]) -> str:
    if not secret_query_name(unquote_plus(found["name"])):
        return found[0]
    return f"{found['lead']}{found['name']}={MASK}"


def _masked_header_line(found: re.Match[str]) -> str:
    if secret_text_name(found["name"]):
        return f"{found['lead']}{MASK}"
    # `logger: Cookie: ...`: the value may hold the next header
    return f"{found['lead']}{_HEADER_LINE.sub(_masked_header_line, found['value'])}"


def _masked_pair_repr(found: re.Match[str]) -> str:
    if not secret_text_name(found["name"]) or found["value"] in ("", MASK):
        return found[0]
    return f"{found['lead']}{MASK}"


def _encodings(secret: str) -> set[str]:
    """`secret` as it may be written: itself, percent-encoded, base64."""
    raw = secret.encode()
    return {
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
    }
