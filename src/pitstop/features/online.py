from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pitstop.features.spec import FeatureSpec


@dataclass
class _MachineState:
    window: np.ndarray  # (<= max_window, n_sensors), oldest first
    count: int = 0
    last_seq: int = -1
    baseline_sum: np.ndarray = field(default_factory=lambda: np.zeros(0))
    baseline_n: int = 0


class OnlineFeatures:
    """Per-machine incremental state for a ``FeatureSpec``; equal to ``build_features`` at every step.

    ``update`` takes a machine's new readings in seq order; ``get`` returns the features at each
    machine's latest reading. Readings with a seq at or below the machine's last are duplicates
    (already counted) and are skipped: ``update`` returns how many it kept.
    """

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self._n = len(spec.sensors)
        self._machines: dict[str, _MachineState] = {}

    def __contains__(self, machine_id: str) -> bool:
        return machine_id in self._machines

    def last_seq(self, machine_id: str) -> int:
        state = self._machines.get(machine_id)
        return state.last_seq if state else -1

    def count(self, machine_id: str) -> int:
        state = self._machines.get(machine_id)
        return state.count if state else 0

    def fresh(self, machine_id: str, seqs: np.ndarray) -> np.ndarray:
        """Mask of the readings ``update`` would keep: seq above the last seen, increasing."""
        keep = seqs > self.last_seq(machine_id)
        if len(seqs) > 1:
            keep[1:] &= np.diff(seqs) > 0
        return keep

    def update(self, machine_id: str, seqs: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Add readings (``values`` shaped (n, sensors), in seq order). Returns the kept mask."""
        keep = self.fresh(machine_id, seqs)
        state = self._machines.get(machine_id)
        if state is None:
            state = _MachineState(window=np.empty((0, self._n)), baseline_sum=np.zeros(self._n))
            self._machines[machine_id] = state
        kept = values[keep]
        if len(kept) == 0:
            return keep
        k = self.spec.baseline_readings
        if state.baseline_n < k:
            take = kept[: k - state.baseline_n]
            state.baseline_sum = state.baseline_sum + take.sum(axis=0)
            state.baseline_n += len(take)
        state.window = np.concatenate([state.window, kept])[-self.spec.max_window :]
        state.count += len(kept)
        state.last_seq = int(seqs[keep][-1])
        return keep

    def skip_to(self, machine_id: str, seq: int) -> None:
        """Mark seqs up to ``seq`` as seen without adding values (e.g. quarantined readings)."""
        state = self._machines.get(machine_id)
        if state is None:
            state = _MachineState(window=np.empty((0, self._n)), baseline_sum=np.zeros(self._n))
            self._machines[machine_id] = state
        state.last_seq = max(state.last_seq, seq)

    def get(self, machine_ids: list[str]) -> np.ndarray:
        """Feature matrix (len(machine_ids), len(spec.names)) at each machine's latest reading."""
        spec = self.spec
        out = np.empty((len(machine_ids), len(spec.names)))
        for row, machine_id in enumerate(machine_ids):
            state = self._machines[machine_id]
            win = state.window
            baseline = state.baseline_sum / state.baseline_n
            cols = [np.array([float(state.count)])]
            last = win[-1]
            means = {w: win[-w:].mean(axis=0) for w in spec.mean_windows}
            stds = {w: win[-w:].std(axis=0) for w in spec.std_windows}
            drift = win[-spec.drift_window :].mean(axis=0) - baseline
            per_sensor = [last, *means.values(), *stds.values(), drift]
            cols.append(np.stack(per_sensor, axis=1).reshape(-1))
            out[row] = np.concatenate(cols)
        return out
