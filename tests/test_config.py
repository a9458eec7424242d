from __future__ import annotations

from pathlib import Path

import pytest

from pitstop.config import describe_settings, load_settings
from pitstop.errors import ConfigError


def test_defaults() -> None:
    s = load_settings()
    assert s.port == 8000
    assert s.data_dir == Path("pitstop-data")


def test_file_then_env_then_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "pitstop.toml"
    cfg.write_text('port = 9001\nhost = "0.0.0.0"\nwork_order_rul_threshold = 40\n')
    monkeypatch.setenv("PITSTOP_PORT", "9002")
    s = load_settings(cfg, host=None)
    assert s.port == 9002  # env beats file
    assert s.host == "0.0.0.0"  # file beats default
    assert s.work_order_rul_threshold == 40
    assert load_settings(cfg, port=9003).port == 9003  # command line beats env


def test_errors_name_the_setting_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, port=70000)
    assert "port" in err.value.message and "PITSTOP_PORT" in err.value.message
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("port = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="prot"):
        load_settings(unknown)


def test_every_setting_is_documented() -> None:
    rows = describe_settings()
    assert rows and all(help_text for *_, help_text in rows)
