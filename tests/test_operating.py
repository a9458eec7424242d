"""Operating it safely: a private data dir, webhook URLs that cannot be turned against the host,
and secrets kept out of the logs."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from pitstop.cli import cli
from pitstop.config import load_settings
from pitstop.errors import ConfigError
from pitstop.maintenance import Notifier
from pitstop.platform import Platform
from pitstop.store import Database
from tests.conftest import make_settings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_dir_and_its_databases_are_the_owners_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    platform = Platform.open(make_settings(data))
    try:
        platform.admin_token(), platform.webhook_secret()  # the secret files exist
    finally:
        platform.close()
    (data / "ops.db").chmod(0o644)  # loosened by hand: the next open tightens it again
    Platform.open(make_settings(data)).close()
    assert _mode(data) == 0o700
    files = [p for p in data.iterdir() if p.is_file()]
    assert {p.name for p in files} >= {"ops.db", "bus.db"}
    assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}


def test_the_cli_writes_private_files(tmp_path: Path) -> None:
    import os

    before = os.umask(0o022)
    try:
        result = CliRunner().invoke(cli, ["users", "list", "--data-dir", str(tmp_path / "d")])
        assert result.exit_code == 0, result.output
        probe = tmp_path / "probe"
        probe.write_text("x")  # made under the umask the CLI set
        assert _mode(probe) == 0o600
    finally:
        os.umask(before)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://receiver.example/hook", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("https://user:pass@receiver.example/hook", "credentials"),
        ("http://169.254.169.254/latest/meta-data/", "link-local or cloud metadata"),
        ("http://[fe80::1]:8080/hook", "link-local or cloud metadata"),
        ("http://metadata.google.internal/computeMetadata/v1/", "link-local or cloud metadata"),
        ("http:///nohost", "names no host"),
    ],
)
def test_a_webhook_url_that_could_be_turned_against_the_host_is_refused(url: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as refused:
        load_settings(None, webhook_urls=[url])
    assert "pass@" not in str(refused.value) and "meta-data" not in str(refused.value)


def test_link_local_receivers_only_when_the_setting_allows_them() -> None:
    url = "http://169.254.10.20/hook"
    assert load_settings(None, webhook_urls=[url], webhook_allow_link_local=True).webhook_urls == [url]
    assert load_settings(None, webhook_urls=["http://127.0.0.1:9/hook"]).webhook_urls  # local is fine


def test_a_failing_webhook_is_logged_without_its_secret_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'ops.db'}")
    db.migrate()
    secret_url = "http://127.0.0.1:9/services/T000/B000/XXXXSECRETXXXX?token=abc"
    notifier = Notifier(db, [secret_url], "s", base_backoff_s=0.01, timeout_s=0.5)
    with db.session() as s:
        notifier.enqueue(s, "work_order.opened", {"id": 1})
    with caplog.at_level(logging.WARNING), httpx.Client() as client:
        assert notifier.deliver_due(client) == 0
    assert "failed (attempt 1)" in caplog.text and "http://127.0.0.1:9/…" in caplog.text
    assert "SECRET" not in caplog.text and "token=abc" not in caplog.text
    db.close()


def test_a_name_that_resolves_to_a_metadata_address_is_refused_at_delivery(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'ops.db'}")
    db.migrate()
    # allowed when configured (the literal check is the settings'), refused when sent
    notifier = Notifier(db, ["http://169.254.169.254/latest"], "s", base_backoff_s=0.01)
    with db.session() as s:
        notifier.enqueue(s, "work_order.opened", {"id": 1})
    with httpx.Client() as client:
        assert notifier.deliver_due(client) == 0
    from pitstop.store import WebhookDelivery

    with db.session() as s:
        (row,) = s.query(WebhookDelivery).all()
        assert row.last_error is not None and "link-local" in row.last_error
    db.close()


def _damage(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[:100] = b"\x00" * 100  # the SQLite header gone: "file is not a database"
    path.write_bytes(bytes(data))


def test_a_damaged_mlflow_db_is_one_clear_line_and_the_server_keeps_serving(trained: Platform) -> None:
    import shutil
    import subprocess
    import sys

    from fastapi.testclient import TestClient

    from pitstop.processor import Processor
    from pitstop.web import create_app
    from tests.conftest import admin_headers

    trained.scorer.reload()  # serving, and kept in the model cache
    version = trained.scorer.model.version
    trained.close()
    # a copy under a new path: MLflow keeps one store per URI per process, which would hide the damage
    data_dir = trained.settings.data_dir.parent / "damaged"
    shutil.copytree(trained.settings.data_dir, data_dir)
    _damage(data_dir / "mlflow.db")

    run = subprocess.run(
        [sys.executable, "-m", "pitstop", "promote", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    (line,) = [x for x in run.stderr.splitlines() if x.strip()]
    assert line.startswith("error [registry_unavailable]") and "file is not a database" in line

    platform = Platform.open(make_settings(data_dir, serving_poll_s=0.05))
    try:
        assert platform.scorer.reload().version == version and platform.scorer.from_cache
        proc = Processor(platform)
        proc.bootstrap()
        with TestClient(create_app(platform, proc), headers=admin_headers(platform)) as client:
            models = client.get("/api/v1/models")
            assert models.status_code == 200, models.text
            turbofan = models.json()["machine_types"]["turbofan"]
            assert turbofan["registry"]["available"] is False
            assert "file is not a database" in turbofan["registry"]["problem"]
            assert turbofan["serving"]["version"] == version
            row = dict.fromkeys(platform.scorer.feature_names, 1.0)
            assert client.post("/api/v1/predict", json={"rows": [row]}).status_code == 200
    finally:
        platform.close()


def test_a_data_dir_that_cannot_be_written_is_one_clear_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    Platform.open(make_settings(data)).close()
    _damage(data / "ops.db")
    for command in (["audit"], ["users", "list"]):
        run = CliRunner().invoke(cli, [*command, "--data-dir", str(data)])
        assert run.exit_code == 2 and "Traceback" not in run.output, command
        assert run.output.startswith("error [storage_unavailable]: cannot use the data dir")
        assert "restore the data dir from a backup" in run.output


def test_a_url_the_http_client_cannot_parse_is_refused_and_never_blocks_other_deliveries(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="not a valid URL"):
        load_settings(None, webhook_urls=["http://0251.0376.0251.0376/hook"])
    db = Database(f"sqlite:///{tmp_path / 'ops.db'}")
    db.migrate()
    # an outbox row from before the check: it fails alone, the next URL is still tried
    notifier = Notifier(
        db, ["http://0251.0376.0251.0376/hook", "http://127.0.0.1:9/hook"], "s", timeout_s=0.5
    )
    with db.session() as s:
        notifier.enqueue(s, "work_order.opened", {"id": 1})
    with httpx.Client() as client:
        assert notifier.deliver_due(client) == 0
    from pitstop.store import WebhookDelivery

    with db.session() as s:
        rows = s.query(WebhookDelivery).order_by(WebhookDelivery.id).all()
        assert [r.attempts for r in rows] == [1, 1] and "not a URL" in (rows[0].last_error or "")
    db.close()


def test_a_short_or_empty_signing_key_is_refused() -> None:
    for key in ("", "short"):
        with pytest.raises(ConfigError, match="at least 16 characters"):
            load_settings(None, model_signing_key=key)
