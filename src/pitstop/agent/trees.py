"""LightGBM's plain-text models evaluated in numpy, so the agent scores without LightGBM.

``parse_model`` reads ``Booster.model_to_string()`` text; ``TreeEnsemble.predict`` gives what
``Booster.predict`` gives for one row. The semantics are LightGBM's ``Tree::NumericalDecision``:

- a node sends a value left when ``value <= threshold``;
- ``decision_type`` bit 1 is *default left*, bits 2-3 the missing type: None (a NaN is taken as
  0.0), Zero (NaN, and |value| <= 1e-35f, are missing) or NaN (NaN is missing); a missing value
  goes the default way;
- children below 0 are leaves (``~child``); a tree of one leaf has no split lines;
- leaf values already include the shrinkage; a member's output is the sum of its trees (their
  mean with ``average_output``), then the objective's transform.

Categorical splits and linear trees are refused (Pitstop trains neither); so are objectives whose
transform is not written here. Every node of every tree sits in one flat array, so a row costs one
vectorised decision over all nodes and one gather per level of depth, whatever the tree count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pitstop.errors import ModelError

_ZERO = float(np.float32(1e-35))  # LightGBM's kZeroThreshold: 1e-35f, as a double
_DEFAULT_LEFT = 2
_CATEGORICAL = 1
_MISSING_ZERO, _MISSING_NAN = 1, 2

_IDENTITY = (
    "regression",
    "regression_l2",
    "regression_l1",
    "l1",
    "l2",
    "mse",
    "mae",
    "huber",
    "fair",
    "quantile",
    "mape",
)
_EXP = ("poisson", "gamma", "tweedie")


def _transform(objective: str) -> Callable[[float], float]:
    """The objective's output transform (``objective=`` line: a name, then ``key:value`` options)."""
    name, *options = objective.split()
    if name in _IDENTITY:
        if "sqrt" in options:
            return lambda raw: float(np.sign(raw) * raw * raw)
        return lambda raw: raw
    if name in _EXP:
        return lambda raw: float(np.exp(raw))
    if name in ("binary", "cross_entropy", "xentropy"):
        sigmoid = 1.0
        for option in options:
            if option.startswith("sigmoid:"):
                sigmoid = float(option.split(":", 1)[1])
        return lambda raw: float(1.0 / (1.0 + np.exp(-sigmoid * raw)))
    raise ModelError(
        f"the model's objective {objective!r} is not supported on the edge: train a regression model",
        code="model_unsupported",
    )


@dataclass
class _Tree:
    features: list[int]
    thresholds: list[float]
    decisions: list[int]
    left: list[int]
    right: list[int]
    leaves: list[float]


@dataclass(frozen=True)
class TextModel:
    """One parsed LightGBM model: its trees, feature names and output transform."""

    feature_names: list[str]
    trees: list[_Tree]
    transform: Callable[[float], float]
    average: bool


def parse_model(text: str) -> TextModel:
    """A ``model_to_string()`` text; a ``ModelError`` for what the evaluator does not do."""
    header, _, body = text.partition("\nTree=")
    if not header.startswith("tree") or not body:
        raise ModelError("not a LightGBM text model (no 'tree' header or no trees)", code="model_unsupported")
    head = _fields(header)
    if int(head.get("num_tree_per_iteration", "1")) != 1 or int(head.get("num_class", "1")) != 1:
        raise ModelError("multiclass models are not supported on the edge", code="model_unsupported")
    names = head.get("feature_names", "").split()
    transform = _transform(head.get("objective", "regression"))
    trees = []
    body = body.split("\nend of trees", 1)[0]
    for block in body.split("\nTree="):
        trees.append(_tree(_fields(block), len(names)))
    return TextModel(names, trees, transform, "average_output" in head)


def _fields(block: str) -> dict[str, str]:
    out = {}
    for line in block.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
        elif line.strip():
            out[line.strip()] = ""
    return out


def _tree(f: dict[str, str], n_features: int) -> _Tree:
    if f.get("is_linear", "0") != "0":
        raise ModelError("linear trees are not supported on the edge", code="model_unsupported")
    if int(f.get("num_cat", "0")) != 0:
        raise ModelError("categorical splits are not supported on the edge", code="model_unsupported")
    leaves = [float(v) for v in f["leaf_value"].split()]
    if int(f["num_leaves"]) != len(leaves):
        raise ModelError(
            "malformed LightGBM tree: num_leaves and leaf_value disagree", code="model_unsupported"
        )
    if len(leaves) == 1:
        return _Tree([], [], [], [], [], leaves)
    ints = lambda key: [int(v) for v in f[key].split()]  # noqa: E731
    tree = _Tree(
        ints("split_feature"),
        [float(v) for v in f["threshold"].split()],
        ints("decision_type"),
        ints("left_child"),
        ints("right_child"),
        leaves,
    )
    n = len(leaves) - 1
    if any(len(x) != n for x in (tree.features, tree.thresholds, tree.decisions, tree.left, tree.right)):
        raise ModelError("malformed LightGBM tree: its split lines disagree", code="model_unsupported")
    if any(d & _CATEGORICAL for d in tree.decisions):
        raise ModelError("categorical splits are not supported on the edge", code="model_unsupported")
    if any(not 0 <= i < n_features for i in tree.features):
        raise ModelError("malformed LightGBM tree: a split on an unknown feature", code="model_unsupported")
    return tree


class TreeEnsemble:
    """Several text models (an ensemble's members) in one flat node array; ``predict`` returns each
    member's prediction for a row, as ``Booster.predict`` would."""

    def __init__(self, models: list[TextModel]) -> None:
        if not models:
            raise ModelError("an ensemble needs at least one model", code="model_unsupported")
        self.models = models
        self.n_features = len(models[0].feature_names)
        feature: list[int] = []
        threshold: list[float] = []
        decision: list[int] = []
        nxt_left: list[int] = []
        nxt_right: list[int] = []
        value: list[float] = []
        roots: list[int] = []
        member: list[int] = []
        depth = 0
        for m, model in enumerate(models):
            for tree in model.trees:
                base = len(feature)
                internal = len(tree.features)
                leaf_base = base + internal
                feature += tree.features
                threshold += tree.thresholds
                decision += tree.decisions
                nxt_left += [base + c if c >= 0 else leaf_base + ~c for c in tree.left]
                nxt_right += [base + c if c >= 0 else leaf_base + ~c for c in tree.right]
                value += [0.0] * internal
                # leaves loop onto themselves, so every tree can take the same number of steps
                leaf_ids = list(range(leaf_base, leaf_base + len(tree.leaves)))
                feature += [0] * len(leaf_ids)
                threshold += [0.0] * len(leaf_ids)
                decision += [0] * len(leaf_ids)
                nxt_left += leaf_ids
                nxt_right += leaf_ids
                value += tree.leaves
                roots.append(base)
                member.append(m)
                depth = max(depth, _depth(tree))
        d = np.asarray(decision, np.int64)
        missing = (d >> 2) & 3
        self._feature = np.asarray(feature, np.int64)
        self._threshold = np.asarray(threshold, np.float64)
        self._default_left = (d & _DEFAULT_LEFT) != 0
        self._nan_as_zero = missing != _MISSING_NAN
        self._zero_missing = missing == _MISSING_ZERO
        self._nan_missing = missing == _MISSING_NAN
        self._left = np.asarray(nxt_left, np.int64)
        self._right = np.asarray(nxt_right, np.int64)
        self._value = np.asarray(value, np.float64)
        self._roots = np.asarray(roots, np.int64)
        self._member = np.asarray(member, np.int64)
        self._starts = np.flatnonzero(np.r_[True, self._member[1:] != self._member[:-1]])
        self._depth = depth

    def predict(self, row: np.ndarray) -> np.ndarray:
        """Each member's prediction for one row of ``n_features`` values."""
        x = np.asarray(row, np.float64)
        if x.shape != (self.n_features,):
            raise ValueError(f"expected one row of {self.n_features} values, got shape {x.shape}")
        v = x[self._feature]
        nan = np.isnan(v)
        v = np.where(nan & self._nan_as_zero, 0.0, v)
        missing = (self._zero_missing & (np.abs(v) <= _ZERO)) | (self._nan_missing & nan)
        go_left = np.where(missing, self._default_left, v <= self._threshold)
        step = np.where(go_left, self._left, self._right)
        at = self._roots
        for _ in range(self._depth):
            at = step[at]
        sums = np.add.reduceat(self._value[at], self._starts)
        out = np.empty(len(self.models))
        for m, model in enumerate(self.models):
            raw = float(sums[m])
            if model.average:
                raw /= len(model.trees)
            out[m] = model.transform(raw)
        return out


def _depth(tree: _Tree) -> int:
    """The longest path from the root to a leaf, in splits (0 for a single leaf)."""
    if not tree.features:
        return 0
    deepest, stack = 0, [(0, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        for child in (tree.left[node], tree.right[node]):
            if child >= 0:
                stack.append((child, d + 1))
    return deepest
