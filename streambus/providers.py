"""Which provider to talk to and how: configuration, request bodies, error bodies. No I/O.

Follows the official SDKs' conventions so existing environments just work:
``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` (the base includes ``/v1``) and ``ANTHROPIC_API_KEY`` /
``ANTHROPIC_BASE_URL`` (no ``/v1``; header ``anthropic-version``). ``sim`` is the built-in
simulator, which speaks the OpenAI format.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from typing import Any, Final, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

import msgspec

from streambus.errors import ConfigError, ProviderError
from streambus.normalizers import AnthropicNormalizer, Normalizer, OpenAINormalizer

__all__ = [
    "DEFAULT_MODELS",
    "PROVIDERS",
    "REDACTED",
    "ProviderConfig",
    "Request",
    "looks_like_credential",
    "parse_error_body",
    "redact",
    "redact_url",
    "resolve_provider",
    "scrub",
]

PROVIDERS: Final = ("sim", "openai", "anthropic")
DEFAULT_MODELS: Final = {"sim": "sim-1", "openai": "gpt-4o-mini", "anthropic": "claude-sonnet-5-5"}
_DEFAULT_BASE: Final = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}
ANTHROPIC_VERSION: Final = "2023-06-01"
ANTHROPIC_DEFAULT_MAX_TOKENS: Final = 1024


class Request(msgspec.Struct, kw_only=True):
    """What to ask: provider-neutral. ``messages`` are ``{"role", "content"}`` mappings."""

    messages: list[dict[str, Any]]
    system: str | None = None
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    extra: dict[str, Any] = msgspec.field(default_factory=dict)
    """Merged into the provider's JSON body as is (``top_p``, ``stop``, the simulator's knobs)."""

    @classmethod
    def from_prompt(cls, prompt: str, **kwargs: Any) -> Request:
        return cls(messages=[{"role": "user", "content": prompt}], **kwargs)


@dataclass(frozen=True)
class ProviderConfig:
    """A resolved provider: where to send, with which key, in which wire format."""

    name: str
    """What ``start.provider`` will say: ``sim``, ``openai`` or ``anthropic``."""
    format: Literal["openai", "anthropic"]
    base_url: str | None
    """``None`` only for ``sim`` before its server is started."""
    model: str
    api_key: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # the base URL may hold a password or a key: never print it
        base_url = None if self.base_url is None else redact_url(self.base_url)
        return (
            f"ProviderConfig(name={self.name!r}, format={self.format!r}, "
            f"base_url={base_url!r}, model={self.model!r})"
        )

    def with_base_url(self, base_url: str) -> ProviderConfig:
        return replace(self, base_url=base_url)

    @property
    def host(self) -> str:
        """``host[:port]`` of the base URL, never its user:password part."""
        parts = urlsplit(self.base_url or "")
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{parts.port}" if parts.port else host

    @property
    def url(self) -> str:
        """The endpoint: the base URL's path extended, its query (``?api-version=…``) kept."""
        endpoint = "/chat/completions" if self.format == "openai" else "/v1/messages"
        parts = urlsplit(self.base_url or "")
        return urlunsplit(parts._replace(path=parts.path.rstrip("/") + endpoint))

    def headers(self) -> dict[str, str]:
        headers = {"accept": "text/event-stream", "content-type": "application/json"}
        if self.format == "anthropic":
            headers["anthropic-version"] = ANTHROPIC_VERSION
            if self.api_key:
                headers["x-api-key"] = self.api_key
        elif self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers

    def body(self, request: Request) -> dict[str, Any]:
        """The JSON body of a streaming request in this provider's format."""
        model = request.model or self.model
        if self.format == "anthropic":
            body: dict[str, Any] = {
                "model": model,
                "max_tokens": request.max_tokens or ANTHROPIC_DEFAULT_MAX_TOKENS,
                "messages": request.messages,
                "stream": True,
            }
            if request.system:
                body["system"] = request.system
        else:
            messages = list(request.messages)
            if request.system:
                messages.insert(0, {"role": "system", "content": request.system})
            body = {
                "model": model,
                "messages": messages,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            if request.max_tokens is not None:
                # api.openai.com's reasoning models refuse max_tokens; compatible servers
                # (vLLM, older gateways) may not know max_completion_tokens.
                key = "max_completion_tokens" if self._is_openai_proper else "max_tokens"
                body[key] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        body.update(request.extra)
        return body

    @property
    def _is_openai_proper(self) -> bool:
        return self.name == "openai" and "api.openai.com" in (self.base_url or "")

    def normalizer(self, session: str, model: str | None = None) -> Normalizer:
        cls = AnthropicNormalizer if self.format == "anthropic" else OpenAINormalizer
        return cls(session=session, provider=self.name, model=model or self.model)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Everything that must never be shown: the key; in the base URL, the password (or the
        user part when it has none: ``https://TOKEN@host``) and credential-looking query
        values, each as written and decoded."""
        found = [self.api_key]
        try:
            parts = urlsplit(self.base_url or "")
            userinfo = parts.password or parts.username
        except ValueError:  # not a URL we could send to; redact_url() still hides its parts
            return tuple(s for s in found if s)
        found += [userinfo, unquote(userinfo or "")]
        for pair in re.split(r"[&;]", parts.query):
            name, _, value = pair.partition("=")
            if looks_like_credential(unquote(name)):
                found += [value, unquote(value.replace("+", " "))]
        return tuple(dict.fromkeys(s for s in found if s))


def resolve_provider(
    name: str = "auto",
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    env: Mapping[str, str] | None = None,
) -> ProviderConfig:
    """Resolve a provider from arguments, then the SDKs' environment variables.

    ``auto`` picks ``openai`` when ``OPENAI_API_KEY`` is set, else ``anthropic`` when
    ``ANTHROPIC_API_KEY`` is set, else the simulator.
    """
    env = os.environ if env is None else env
    if name == "auto":
        name = _auto_provider(api_key, base_url, env)
    if name not in PROVIDERS:
        raise ConfigError(f"unknown provider {name!r}: choose one of {', '.join(PROVIDERS)}")
    model = model or DEFAULT_MODELS[name]
    if name == "sim":
        return ProviderConfig("sim", "openai", base_url, model, api_key or "sim")
    prefix = name.upper()
    base_url = base_url or env.get(f"{prefix}_BASE_URL") or _DEFAULT_BASE[name]
    _check_base_url(base_url)
    api_key = (api_key or env.get(f"{prefix}_API_KEY") or "").strip() or None
    if api_key is not None and not _HEADER_SAFE.fullmatch(api_key):
        raise ConfigError("the API key has characters an HTTP header cannot carry")
    if api_key is None and base_url == _DEFAULT_BASE[name]:
        raise ConfigError(
            f"{prefix}_API_KEY is not set: export it or pass --api-key "
            "(or use --provider sim for the built-in simulator)"
        )
    fmt: Literal["openai", "anthropic"] = "anthropic" if name == "anthropic" else "openai"
    return ProviderConfig(name, fmt, base_url, model, api_key)


_HEADER_SAFE: Final = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what keys are made of


def _auto_provider(api_key: str | None, base_url: str | None, env: Mapping[str, str]) -> str:
    """``auto``: as the environment says; a key or URL given alone means an OpenAI-style
    server, unless the key is an Anthropic one. Never sends one provider's key to another."""
    if api_key:
        return "anthropic" if api_key.startswith("sk-ant-") else "openai"
    if base_url:
        return "openai"
    if env.get("OPENAI_API_KEY"):
        return "openai"
    if env.get("ANTHROPIC_API_KEY"):
        return "anthropic"
    return "sim"


def _check_base_url(base_url: str) -> None:
    shown = redact_url(base_url)  # the message must not show what the URL carries
    try:
        parts = urlsplit(base_url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(f"invalid base URL {shown!r}: {redact_url(str(exc))}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"base URL must look like https://host/…, got {shown!r}")


class _OpenAIErrorDetail(msgspec.Struct):
    message: str | None = None
    type: str | None = None
    code: str | int | None = None


class _ErrorBody(msgspec.Struct):
    """Both providers' error bodies: OpenAI ``{"error": {...}}``, Anthropic adds ``type``."""

    error: _OpenAIErrorDetail | str | None = None
    message: str | None = None


def parse_error_body(
    provider: str, status: int, body: bytes, headers: Mapping[str, str]
) -> ProviderError:
    """Turn an HTTP error response into one clear :class:`ProviderError`."""
    message: str | None = None
    error_type: str | None = None
    try:
        parsed = msgspec.json.decode(body, type=_ErrorBody)
    except (msgspec.DecodeError, msgspec.ValidationError):
        parsed = None
    if parsed is not None:
        if isinstance(parsed.error, _OpenAIErrorDetail):
            message = parsed.error.message
            error_type = parsed.error.type or (
                str(parsed.error.code) if parsed.error.code is not None else None
            )
        elif isinstance(parsed.error, str):
            message = parsed.error
        message = message or parsed.message
    if not message:
        text = body.decode("utf-8", "replace").strip()
        message = " ".join(text.split())[:200] or _REASONS.get(status, "no error message")
    return ProviderError(
        provider, status, message, error_type=error_type, retry_after=retry_after(headers)
    )


_REASONS: Final = {401: "unauthorized", 403: "forbidden", 404: "not found", 429: "rate limited"}


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, ``retry-after`` (secs or date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, says RFC 5322, but parsed as naive
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())


REDACTED: Final = "[redacted]"
"""What a secret is replaced with, wherever it would have shown."""

_CREDENTIAL_NAME: Final = re.compile(
    r"^(?:key|sig|auth|pwd)$"  # ?key= (Google), ?sig= (signed URLs)
    r"|(?:api|access|secret|private|subscription)[-_]?key$"  # x-api-key, x-goog-api-key
    r"|(?:token|secret|password|passwd|authorization|credentials?)$",  # access_token
    re.IGNORECASE,
)
_REDACT_WINDOW: Final = 8
"""A secret of this many characters or more is hidden also where only a piece of it shows."""


def looks_like_credential(name: str) -> bool:
    """Whether a header, query parameter or JSON field of this name carries a credential:
    ``authorization``, ``x-api-key``, ``api_key``, ``key``, ``access_token``, ``password``,
    ``client_secret``… Token *counts* (``max_tokens``) and cache keys are not credentials."""
    name = name.strip()
    return bool(_CREDENTIAL_NAME.search(name)) and not name.lower().startswith(("max_", "max-"))


_USERINFO: Final = re.compile(r"(?<=://)[^/?#@\s]*@")
_PARAMETER: Final = re.compile(r"(?<=[?&;#])([^=&;#\s]+)=([^&;#\s]*)")
_BEARER: Final = re.compile(r"\bBearer\s+[\w.~+/=-]{8,}", re.IGNORECASE)


def redact_url(text: str) -> str:
    """``text`` with the credentials any URL in it carries replaced: the user part
    (``https://[redacted]@host``) and credential-looking query values (``?key=[redacted]``)."""
    text = _USERINFO.sub(REDACTED + "@", text)
    return _PARAMETER.sub(
        lambda m: f"{m[1]}={REDACTED}" if looks_like_credential(unquote(m[1])) else m[0], text
    )


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret replaced by ``[redacted]``; also any word that holds 8 or
    more characters of one in a row (servers echo keys partly: ``sk-abc1***wxyz``), and the
    credentials of URLs and ``Bearer`` tokens, known or not."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= _REDACT_WINDOW:
            text = _redact_pieces(text.replace(secret, REDACTED), secret)
        elif len(secret) >= 4:  # too short to hunt for pieces: only where it stands alone
            text = re.sub(rf"(?<![\w-]){re.escape(secret)}(?![\w-])", REDACTED, text)
    return _BEARER.sub(f"Bearer {REDACTED}", redact_url(text))


def _redact_pieces(text: str, secret: str) -> str:
    """Replace every whitespace-delimited word holding a window of ``secret``."""
    windows = {secret[i : i + _REDACT_WINDOW] for i in range(len(secret) - _REDACT_WINDOW + 1)}
    if not any(window in text for window in windows):
        return text
    pattern = re.compile("|".join(re.escape(w) for w in sorted(windows)))
    out: list[str] = []
    done = 0  # text[:done] is settled
    for match in pattern.finditer(text):
        if match.start() < done:
            continue
        start = match.start()
        while start > done and not text[start - 1].isspace():
            start -= 1
        end = match.end()
        while end < len(text) and not text[end].isspace():
            end += 1
        out += [text[done:start], REDACTED]
        done = end
    out.append(text[done:])
    return "".join(out)


def scrub(body: dict[str, Any]) -> dict[str, Any]:
    """A copy of a request body safe to record: credential-looking keys are replaced.

    Keys travel in headers, never in bodies we build; this guards what callers put in
    ``Request.extra``. Token *counts* (``max_tokens``) are not credentials and stay.
    """

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: REDACTED if looks_like_credential(k) else clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    result: dict[str, Any] = clean(body)
    return result
