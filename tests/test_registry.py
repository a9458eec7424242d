from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from pitstop.errors import ArtifactIntegrityError, ModelError
from pitstop.platform import Platform
from pitstop.registry import ModelBundle


def test_champion_has_lineage(trained: Platform) -> None:
    [version] = trained.registry.versions()
    assert version["aliases"] == ["champion"]
    tags = version["tags"]
    assert tags["pitstop.lake_version"].isdigit()
    assert tags["pitstop.feature_spec_hash"] == trained.scorer.model.bundle.spec.hash
    assert tags["pitstop.code_revision"]
    assert len(tags["pitstop.model_sha256"]) == 64
    run = trained.registry.client.get_run(version["run_id"])
    assert run.data.metrics["cv_rmse"] < 20
    assert run.data.tags["pitstop.lake_version"] == tags["pitstop.lake_version"]
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {
        f"telemetry@v{tags['pitstop.lake_version']}",
        f"events@v{tags['pitstop.events_version']}",
    }
    telemetry = inputs[f"telemetry@v{tags['pitstop.lake_version']}"]
    assert json.loads(telemetry.dataset.source)["version"] == int(tags["pitstop.lake_version"])
    assert json.loads(telemetry.dataset.profile)["num_rows"] > 0
    assert [t.value for t in telemetry.tags if t.key == "mlflow.data.context"] == ["training"]
    card = trained.registry.client.get_model_version(
        trained.registry.model_name, version["version"]
    ).description
    for section in ("## Data", "## Metrics", "## Interval", "## Limits", tags["pitstop.feature_spec_hash"]):
        assert section in card
    artifacts = {a.path for a in trained.registry.client.list_artifacts(version["run_id"])}
    assert "model_card.md" in artifacts


def test_bundle_round_trip(trained: Platform, tmp_path: Path) -> None:
    bundle = trained.scorer.model.bundle
    bundle.save(tmp_path / "m")
    again = ModelBundle.load(tmp_path / "m")
    x = np.random.default_rng(1).normal(size=(4, len(bundle.feature_names)))
    for a, b in zip(bundle.predict(x), again.predict(x), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("artifact", ["model.txt", "model_fold2.txt", "model_meta.json"])
def test_tampered_artifact_is_refused(trained: Platform, tmp_path: Path, artifact: str) -> None:
    bundle = trained.scorer.model.bundle
    bundle.save(tmp_path / "m")
    model = tmp_path / "m" / artifact
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01  # flip one bit
    model.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match="altered"):
        ModelBundle.load(tmp_path / "m")


def test_pickled_artifacts_are_refused(trained: Platform, tmp_path: Path) -> None:
    trained.scorer.model.bundle.save(tmp_path / "m")
    (tmp_path / "m" / "extra.pkl").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(ArtifactIntegrityError, match="pickled"):
        ModelBundle.load(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    members = {f"model_fold{k}.txt" for k in range(1, len(trained.scorer.model.bundle.boosters))}
    assert (
        set(manifest)
        == {"model.txt", "feature_spec.json", "model_meta.json", "reference_stats.json"} | members
    )
    assert members  # the fold models are members too


def test_no_champion_is_a_clear_error(platform: Platform) -> None:
    with pytest.raises(ModelError, match="pitstop train"):
        platform.registry.load("champion")
