"""Models are trusted through the registry, not through the folder they sit in: the manifest's
sha256 recorded at registration (optionally signed with a deployment key), and model files parsed
in a child process before the serving process loads them."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from sqlalchemy import select

from pitstop.errors import ArtifactIntegrityError
from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.registry import ModelBundle, Registry
from pitstop.serving.deploy import promote
from pitstop.store import AuditEntry
from tests.test_deploy import live, predictions, second_version  # noqa: F401  (live is a fixture)
from tests.test_processor import publish


def _artifacts(registry: Registry, version: str) -> Path:
    source = registry.client.get_model_version(registry.model_name, version).source
    return Path(unquote(urlparse(source).path))


def _rewrite_manifest(folder: Path) -> None:
    """What an attacker with write access to the artifact store does after editing a file."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for name in manifest:
        manifest[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))


def _zero_leaves(folder: Path) -> None:
    """Every leaf of every member predicts 0.0: a valid model that says every machine is failing
    (``tree_sizes`` goes, as it would no longer match; LightGBM parses without it)."""

    def zeros(match: re.Match[str]) -> str:
        return "leaf_value=" + " ".join("0" for _ in match.group(1).split())

    for path in folder.glob("model*.txt"):
        text = re.sub(r"^tree_sizes=.*\n", "", path.read_text(), flags=re.M)
        path.write_text(re.sub(r"^leaf_value=(.*)$", zeros, text, flags=re.M))


def test_a_model_edited_with_its_manifest_is_refused_and_the_champion_keeps_serving(
    live: Platform,  # noqa: F811
) -> None:
    v1 = live.registry.alias_version("champion")
    v2 = second_version(live)
    folder = _artifacts(live.registry, v2)
    _zero_leaves(folder)
    _rewrite_manifest(folder)
    edited = ModelBundle.load(folder)  # consistent on its own: the folder cannot vouch for itself
    assert edited.predict(np.zeros((1, len(edited.feature_names))))[0][0] == 0.0

    with pytest.raises(ArtifactIntegrityError, match="registry recorded"):
        promote(live.registry, live.db.audit)
    assert live.registry.alias_version("champion") == v1

    # moved behind our back: the processor refuses it, keeps serving v1, and audits it once
    proc = Processor(live)
    proc.bootstrap()
    live.registry.set_alias("champion", v2)
    for n in range(2):
        publish(live, "eng-003", 3, n * 5, 5)
        proc.run_once()
    assert set(predictions(live)["version"].to_list()) == {v1}
    with live.db.session() as s:
        refused = s.scalars(select(AuditEntry.detail).where(AuditEntry.action == "model_refused")).all()
    assert len(refused) == 1 and "registry recorded" in refused[0]


def test_a_malformed_model_file_whose_hash_matches_is_refused_and_the_process_lives(
    trained: Platform, tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    trained.scorer.model.bundle.save(folder)
    model = folder / "model_fold1.txt"
    # a split on a feature the model does not have: LightGBM's parser aborts the process
    model.write_text(
        re.sub(r"^split_feature=\d+", "split_feature=999999", model.read_text(), count=1, flags=re.M)
    )
    _rewrite_manifest(folder)
    with pytest.raises(ArtifactIntegrityError, match=r"malformed.*SIGABRT"):
        ModelBundle.load(folder)
    bundle = trained.scorer.model.bundle
    bundle.save(tmp_path / "good")
    assert ModelBundle.load(tmp_path / "good").feature_names == bundle.feature_names  # still alive


def test_with_a_deployment_key_only_versions_it_signed_are_loaded(trained: Platform) -> None:
    r = trained.registry
    unsigned = r.alias_version("champion")
    assert unsigned is not None
    keyed = Registry(r.tracking_uri, r.artifacts_dir, r.model_name, signing_key="key-one")
    signed = keyed.log_and_register(trained.scorer.model.bundle, lineage={"lake_version": "test"})
    assert keyed.load_version(signed).version == signed
    assert r.load_version(signed).version == signed  # without a key the manifest hash still holds
    with pytest.raises(ArtifactIntegrityError) as unsigned_error:
        keyed.load_version(unsigned)
    assert unsigned_error.value.code == "model_unsigned"
    other = Registry(r.tracking_uri, r.artifacts_dir, r.model_name, signing_key="key-two")
    with pytest.raises(ArtifactIntegrityError) as forged:
        other.load_version(signed)
    assert forged.value.code == "model_signature_invalid"
    # whoever can write registry tags but has no key cannot re-anchor an edited model
    folder = _artifacts(r, signed)
    _zero_leaves(folder)
    _rewrite_manifest(folder)
    digest = hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()
    r.client.set_model_version_tag(r.model_name, signed, "pitstop.manifest_sha256", digest)
    with pytest.raises(ArtifactIntegrityError) as reanchored:
        keyed.load_version(signed)
    assert reanchored.value.code == "model_signature_invalid"


def test_the_deployment_key_comes_from_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import make_settings

    monkeypatch.setenv("PITSTOP_MODEL_SIGNING_KEY", "from-env-0123456789abcdef")
    platform = Platform.open(make_settings(tmp_path / "data"))
    try:
        assert {d.registry.signing_key for d in platform.deployments.values()} == {
            "from-env-0123456789abcdef"
        }
    finally:
        platform.close()
