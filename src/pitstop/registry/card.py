"""The model card logged with every version, and the lake table versions a run read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pitstop.registry.bundle import ModelBundle


def model_card(bundle: ModelBundle, lineage: dict[str, str]) -> str:
    """The model card (Markdown): data, training, metrics, interval and limits."""
    m, p, iv = bundle.metrics, bundle.params, bundle.interval
    bands: list[float] = list(iv.get("edges", []))
    edges = ["0", *(f"{e:.0f}" for e in bands), "∞"]
    lower, upper = list(np.atleast_1d(iv["lower"])), list(np.atleast_1d(iv["upper"]))
    interval_rows = [
        f"| {edges[i]}–{edges[i + 1]} | {lower[i]:+.1f} | {upper[i]:+.1f} |" for i in range(len(lower))
    ]

    def metric(name: str, fmt: str = ".2f") -> str:
        return format(m[name], fmt) if name in m else "–"

    return "\n".join(
        [
            "# Pitstop RUL model",
            "",
            "LightGBM regressor of remaining useful life (readings to the next failure) on rolling "
            f"features, an average of {len(bundle.boosters)} members (the model fit on every row and "
            "the grouped cross-validation fold models).",
            "",
            "## Data",
            f"- Lake table `{lineage.get('lake_table', 'telemetry')}` version "
            f"{lineage.get('lake_version')}, events version {lineage.get('events_version')}.",
            f"- {metric('train_rows', '.0f')} labelled readings of {metric('train_machines', '.0f')} "
            f"machines; {metric('censored_rows', '.0f')} of them censored (no failure seen yet, "
            "kept only where the machine ran past the cap).",
            f"- Feature spec `{bundle.spec.hash}`: {len(bundle.spec.names)} features over "
            f"{len(bundle.spec.sensors)} sensors; code revision `{lineage.get('code_revision')}`; "
            f"seed {lineage.get('seed')}.",
            "",
            "## Metrics (grouped cross-validation: no machine in both training and evaluation)",
            f"- RMSE {metric('cv_rmse')} and MAE {metric('cv_mae')} against the target capped at "
            f"{bundle.rul_cap}; RMSE {metric('cv_rmse_near_failure')} against the true RUL within "
            f"{iv.get('horizon', '–')} readings of a failure.",
            f"- Failure within {p.get('failure_horizon', '–')} readings (predicted RUL at or under it): "
            f"recall {metric('cv_fails_within_recall')}, precision {metric('cv_fails_within_precision')}.",
            "",
            f"## Interval (nominal {iv.get('coverage', 0):.0%}, {iv.get('method', 'residual quantiles')})",
            f"Held-out coverage {metric('cv_interval_coverage')}, "
            f"mean width {metric('cv_interval_width', '.1f')} readings. "
            "Offsets added to the prediction, by band of predicted RUL:",
            "",
            "| predicted RUL | lower | upper |",
            "|---|---|---|",
            *interval_rows,
            "",
            "## Limits",
            f"- The target is capped at {bundle.rul_cap}: a machine that looks healthy is predicted "
            "near the cap whatever its true life; the top band's interval says so.",
            f"- The interval is calibrated within {iv.get('horizon', '–')} readings of a failure.",
            "- Trained on the failure modes and operating conditions in the data; a new one is "
            "out of distribution (watch the drift monitor).",
        ]
    )


@dataclass(frozen=True)
class DatasetRef:
    """A lake table version a run read, logged to MLflow as a dataset input."""

    name: str
    uri: str
    version: int
    rows: int
    columns: list[str]
    context: str = "training"

    def to_mlflow(self) -> Any:
        import hashlib
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag

        source = json.dumps({"uri": self.uri, "version": self.version}, sort_keys=True)
        schema = json.dumps({"columns": self.columns})
        dataset = Dataset(
            name=f"{self.name}@v{self.version}",
            digest=hashlib.sha256(source.encode()).hexdigest()[:16],
            source_type="delta_table",
            source=source,
            schema=schema,
            profile=json.dumps({"num_rows": self.rows}),
        )
        return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", self.context)])
