"""Provider resolution: the SDKs' environment conventions, refusing bad configuration before
anything is sent, and keeping credentials out of everything shown."""

from __future__ import annotations

import time
import typing

import pytest

from streambus import ConfigError, resolve_provider
from streambus.providers import (
    DEFAULT_MODELS,
    ProviderConfig,
    looks_like_credential,
    redact,
    redact_url,
    scrub,
)

OPENAI = {"OPENAI_API_KEY": "sk-openai-0123456789"}
ANTHROPIC = {"ANTHROPIC_API_KEY": "sk-ant-api03-0123456789"}


@pytest.mark.parametrize(
    ("env", "kwargs", "expected"),
    [
        ({}, {}, "sim"),
        (OPENAI, {}, "openai"),
        (ANTHROPIC, {}, "anthropic"),
        ({**OPENAI, **ANTHROPIC}, {}, "openai"),
        (ANTHROPIC, {"api_key": "sk-ant-api03-other-key"}, "anthropic"),
        (ANTHROPIC, {"api_key": "sk-other-openai-key"}, "openai"),
        ({}, {"base_url": "http://localhost:8000/v1"}, "openai"),
    ],
)
def test_auto_picks_the_provider_the_key_belongs_to(
    env: dict[str, str], kwargs: dict[str, str], expected: str
) -> None:
    assert resolve_provider("auto", env=env, **kwargs).name == expected


def test_environment_conventions_of_the_official_sdks() -> None:
    env = {**ANTHROPIC, "ANTHROPIC_BASE_URL": "https://proxy.example/anthropic"}
    config = resolve_provider("anthropic", env=env)
    assert config.url == "https://proxy.example/anthropic/v1/messages"
    assert config.headers()["x-api-key"] == ANTHROPIC["ANTHROPIC_API_KEY"]
    assert config.headers()["anthropic-version"] == "2023-06-01"
    openai = resolve_provider("openai", env=OPENAI)
    assert openai.url == "https://api.openai.com/v1/chat/completions"
    assert openai.headers()["authorization"] == f"Bearer {OPENAI['OPENAI_API_KEY']}"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_url": "http://[::1/v1"}, "invalid base URL"),
        ({"base_url": "http://"}, "base URL must look like"),
        ({"base_url": "ftp://host/v1"}, "base URL must look like"),
        ({"base_url": "http://host:99999/v1"}, "invalid base URL"),
        ({"api_key": "sk-naïve-SECRET123456"}, "characters an HTTP header cannot carry"),
        ({"api_key": "sk-with space"}, "characters an HTTP header cannot carry"),
    ],
)
def test_bad_configuration_is_refused_before_sending(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_provider("openai", env=OPENAI, **kwargs)


def test_a_missing_key_for_the_real_service_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        resolve_provider("openai", env={})
    # a compatible local server may need no key at all
    assert resolve_provider("openai", env={}, base_url="http://127.0.0.1:8000/v1").api_key is None


def test_host_never_includes_credentials() -> None:
    config = resolve_provider(
        "openai", env=OPENAI, base_url="https://u:pw-secret-123@h.example:8443/v1"
    )
    assert config.host == "h.example:8443"
    assert "pw-secret-123" in config.secrets


# -- secrets: never shown, wherever they travel (tests/test_secrets.py runs the CLI) -------


def test_a_key_is_hidden_whole_and_in_pieces() -> None:
    key = "sk-proj-SECRETSECRET1234567890"
    assert redact(f"Incorrect API key provided: {key}.", (key,)) == (
        "Incorrect API key provided: [redacted]."
    )
    # echoed partly: a prefix, or a middle without the prefix, hides the whole word
    assert redact("key sk-proj-SECR***7890 is wrong", (key,)) == "key [redacted] is wrong"
    assert redact("revoked (ref SECRETSECRET12) today", (key,)) == "revoked (ref [redacted] today"
    # the last four, as OpenAI shows them, say nothing; nor does text without the key
    assert redact("key ending in 7890: overloaded", (key,)) == "key ending in 7890: overloaded"
    # a short secret only where it stands alone; none shorter than four
    assert redact("hunter2 hunter2x", ("hunter2",)) == "[redacted] hunter2x"
    assert redact("sim said hi", ("sim",)) == "sim said hi"


def test_urls_and_bearer_tokens_are_hidden_in_any_text() -> None:
    text = (
        "POST http://u:pw@h.example/v1/chat/completions?api-version=2024&key=AIza123"
        " failed; sent Bearer sk-abcdefgh12345678"
    )
    assert redact(text, ()) == (
        "POST http://[redacted]@h.example/v1/chat/completions?api-version=2024&key=[redacted]"
        " failed; sent Bearer [redacted]"
    )
    assert redact_url("https://TOKEN@h/x#access_token=abc&state=1") == (
        "https://[redacted]@h/x#access_token=[redacted]&state=1"
    )


def test_redacting_a_long_text_stays_linear() -> None:
    key = "sk-proj-SECRETSECRET1234567890"
    text = ("SECRETSE" * 100_000) + " " + "x" * 1_000_000  # many pieces, in one huge word
    started = time.perf_counter()
    assert redact(text, (key,)) == "[redacted] " + "x" * 1_000_000
    assert time.perf_counter() - started < 10  # ~0.1 s; quadratic would take hours


@pytest.mark.parametrize(
    "name",
    [
        *("authorization", "Proxy-Authorization", "x-api-key", "x-goog-api-key", "api-key"),
        *("api_key", "apikey", "key", "token", "access_token", "X-Auth-Token", "password"),
        *("passwd", "secret", "client_secret", "sig", "Ocp-Apim-Subscription-Key"),
        *("aws_secret_access_key", "credentials"),
    ],
)
def test_what_looks_like_a_credential(name: str) -> None:
    assert looks_like_credential(name)


@pytest.mark.parametrize(
    "name",
    ["max_tokens", "max_token", "budget_tokens", "prompt_cache_key", "model", "api-version", "k"],
)
def test_what_does_not(name: str) -> None:
    assert not looks_like_credential(name)


def test_scrub_hides_credential_fields_and_keeps_the_rest() -> None:
    body = {
        "model": "m",
        "max_tokens": 5,
        "prompt_cache_key": "c1",
        "metadata": {"key": "s1", "access_token": "s2", "x-goog-api-key": "s3", "user": "u"},
    }
    assert scrub(body) == {
        "model": "m",
        "max_tokens": 5,
        "prompt_cache_key": "c1",
        "metadata": {
            **{"key": "[redacted]", "access_token": "[redacted]", "x-goog-api-key": "[redacted]"},
            "user": "u",
        },
    }


def test_the_secrets_of_a_base_url() -> None:
    config = ProviderConfig(
        "openai",
        "openai",
        "https://user:p%40ss-word@h.example/v1?api-version=2024-10-21&key=k%2B1234567&sig=abc",
        "m",
        "sk-the-api-key",
    )
    assert set(config.secrets) == {
        *("sk-the-api-key", "p%40ss-word", "p@ss-word", "k%2B1234567", "k+1234567", "abc")
    }
    for base_url in ("https://TOKEN1234@h.example/v1", "https://TOKEN1234:@h.example/v1"):
        # a user part without a password is the secret
        assert ProviderConfig("openai", "openai", base_url, "m").secrets == ("TOKEN1234",)


def test_the_endpoint_keeps_the_base_url_query() -> None:
    """It was appended after the query, sending the key to the wrong path (and the server's
    404 echoed the URL, key and all)."""
    openai = resolve_provider("openai", base_url="https://gw.example/v1/?api-version=1", env={})
    assert openai.url == "https://gw.example/v1/chat/completions?api-version=1"
    anthropic = resolve_provider(
        "anthropic", base_url="http://u:p@gw.example/anthropic?key=abc", env={}
    )
    assert anthropic.url == "http://u:p@gw.example/anthropic/v1/messages?key=abc"


@pytest.mark.parametrize(
    "base_url",
    [
        "http://user:pw-SECRET-1@host:99999/v1",
        "http://TOKEN-SECRET-1@[::1/v1",
        "ftp://host/v1?access_token=TOKEN-SECRET-1",
        "http://?key=TOKEN-SECRET-1",
    ],
)
def test_a_refused_base_url_is_shown_without_its_credentials(base_url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        resolve_provider("openai", base_url=base_url, api_key="k", env={})
    assert "SECRET" not in str(refused.value) and "[redacted]" in str(refused.value)


def test_a_provider_config_prints_no_secret() -> None:
    config = resolve_provider(
        "openai", base_url="http://u:pw-SECRET-1@h/v1?key=SECRET-2", api_key="SECRET-3", env={}
    )
    assert "SECRET" not in repr(config) and "h/v1" in repr(config)


def test_default_models_are_ones_the_official_sdks_know_and_do_not_retire() -> None:
    """A default the provider is retiring breaks ``streambus run`` for every user on that day;
    the anthropic SDK lists retiring models (with dates) and warns when one is used."""
    from anthropic.resources.messages.messages import DEPRECATED_MODELS
    from anthropic.types.model_param import ModelParam
    from openai.types.shared.chat_model import ChatModel

    assert DEFAULT_MODELS["anthropic"] not in DEPRECATED_MODELS
    assert DEFAULT_MODELS["anthropic"] in typing.get_args(typing.get_args(ModelParam)[0])
    assert DEFAULT_MODELS["openai"] in typing.get_args(ChatModel)
