"""Settings: defaults from DESIGN.md, a TOML file, and environment variables that win."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tidings.config import Settings


def test_defaults_match_the_operator_contract(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("TIDINGS_ENV", "TIDINGS_DATABASE_URL", "TIDINGS_DATA_DIR", "TIDINGS_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert (s.env, s.delivery_timeout, s.retry_base_delay) == ("production", 10.0, 10.0)
    assert (s.retry_max_attempts, s.retry_max_window, s.breaker_threshold) == (11, 86_400.0, 20)
    assert s.resolved_database_url == f"sqlite:///{(tmp_path / '.tidings' / 'tidings.db')}"


def test_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "custom.toml"
    config.write_text('breaker_threshold = 7\nretry_base_delay = 3.5\nenv = "development"\n')
    monkeypatch.setenv("TIDINGS_CONFIG", str(config))
    monkeypatch.delenv("TIDINGS_ENV", raising=False)
    assert (Settings().breaker_threshold, Settings().retry_base_delay) == (7, 3.5)
    assert Settings().development
    monkeypatch.setenv("TIDINGS_BREAKER_THRESHOLD", "9")
    assert Settings().breaker_threshold == 9


def test_the_old_crm_switch_still_turns_the_crm_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Upgrading must not expose the CRM where TIDINGS_CRM_ENABLED=false turned it off."""
    monkeypatch.setenv("TIDINGS_CRM_ENABLED", "false")
    monkeypatch.delenv("TIDINGS_APPS", raising=False)
    assert "crm" not in (Settings().apps or "").split(",")
    assert Settings(apps="crm").apps == ""
    monkeypatch.setenv("TIDINGS_CRM_ENABLED", "true")
    assert Settings().apps is None


@pytest.mark.parametrize(
    "value", ["ftp://proxy:21", "http://proxy", "http://proxy:port", "http://proxy:3128/x"]
)
def test_a_malformed_proxy_url_is_a_configuration_error(value: str) -> None:
    with pytest.raises(ValidationError, match="egress_proxy"):
        Settings(egress_proxy=value, env="development")


def test_the_proxy_needs_the_curl_sender() -> None:
    with pytest.raises(ValidationError, match="TIDINGS_SENDER=curl"):
        Settings(egress_proxy="http://proxy:3128", sender="aiohttp", env="development")


def test_a_refused_setting_does_not_echo_its_value() -> None:
    """A proxy or database URL can carry a password; the error names the setting only."""
    with pytest.raises(ValidationError) as caught:
        Settings(egress_proxy="ftp://user:hunter2@proxy:1")
    assert "egress_proxy" in str(caught.value)
    assert "hunter2" not in str(caught.value)
