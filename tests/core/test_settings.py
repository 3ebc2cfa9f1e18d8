"""Settings: defaults, environment names, secrets, and one clear line per bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import Settings, load_settings


def test_defaults_run_on_the_embedded_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    settings = load_settings(_env_file=None)
    assert settings.redis_url is None
    assert (settings.key_prefix, settings.max_messages, settings.thread_ttl_seconds) == ("chat", 50, 604800)
    assert settings.log_format == "text"


def test_environment_names_are_plain_capitals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "rediss://user:pw@redis.example:6380/2")
    monkeypatch.setenv("MAX_MESSAGES", "0")
    monkeypatch.setenv("THREAD_TTL_SECONDS", "0")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    settings = load_settings(_env_file=None)
    assert settings.redis_dsn == "rediss://user:pw@redis.example:6380/2"
    assert settings.store_max_messages is None and settings.store_ttl_seconds is None
    assert settings.log_level == "DEBUG"


def test_secrets_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-very-secret")
    settings = load_settings(_env_file=None)
    assert "very-secret" not in repr(settings) and "very-secret" not in str(settings.model_dump())
    assert settings.openai_api_key is not None and settings.openai_api_key.get_secret_value() == "sk-very-secret"


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("KEY_PREFIX=fromfile\nMAX_MESSAGES=7\n")
    assert load_settings(_env_file=env).key_prefix == "fromfile"


@pytest.mark.parametrize(
    "name,value,expected",
    [
        ("THREAD_TTL_SECONDS", "-5", "THREAD_TTL_SECONDS: Input should be greater than or equal to 0"),
        ("MAX_MESSAGES", "lots", "MAX_MESSAGES: Input should be a valid integer"),
        ("REDIS_URL", "localhost:6379", "REDIS_URL: Value error, must be a URL starting with one of redis://"),
        ("REDIS_URL", "redis://host:port", "REDIS_URL: Value error, has a port that is not a number"),
        ("OPENAI_BASE_URL", "ftp://x", "OPENAI_BASE_URL: Value error, must be a URL starting with one of http://"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL: Input should be 'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL'"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT: Input should be 'text' or 'json'"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    message = str(caught.value)
    assert message.startswith(expected)
    assert "\n" not in message and value not in message.replace(expected, "")


def test_settings_are_frozen() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        settings.max_messages = 3  # type: ignore[misc]
