"""A compiled copy of a bundle's LightGBM trees, for serving: the same sums, several times faster.

``Booster.predict`` walks our small trees (7 leaves, 600 per member) at about 90 ns a tree and row,
and adds some 70 µs of Python-side checks per call; it is the largest part of a prediction
request. ``Forest`` flattens every member's trees into a few arrays (read from the model text,
which holds every threshold and leaf value at full precision) and walks them in one Numba kernel.
For several rows of a model whose splits all have missing type None (ours, trained without
missing values) it walks them without branches: each leaf is also a node that leads to itself, so
every row takes its tree's depth in steps, and eight rows step side by side, their memory loads
overlapping (about twice as fast as one row after the other with a branch at each split).
It decides each split as LightGBM's ``Tree::NumericalDecision`` does (a value within
``kZeroThreshold`` of zero is zero, as LightGBM's dense-matrix input makes it; missing-value types
None, Zero and NaN with their default direction) and adds the leaf values in LightGBM's order
(tree by tree from 0.0, then member after member), so its sums are the same doubles:
``tests/test_forest.py`` holds them equal (tolerance 0) on real, tied and missing values.

Models it does not reproduce (categorical or linear trees, several outputs, an objective whose
output is transformed, averaged random forests) get no forest: ``ModelBundle.predict`` serves them.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
from numba import njit

log = logging.getLogger(__name__)

K_ZERO = float(np.float32(1e-35))  # LightGBM's kZeroThreshold: the float literal 1e-35f as a double
DEFAULT_LEFT = 2  # decision_type bit: missing values go left
# objectives whose prediction is the raw score (no exp, no square, no sigmoid)
IDENTITY_OBJECTIVES = frozenset({"regression", "regression_l1", "huber", "fair", "quantile", "mape"})


@njit(cache=True, nogil=True, inline="always")
def _add_member(out: np.ndarray, acc: np.ndarray, first: bool) -> None:
    """A member's sums into ``out``: the first as they are, the next added (LightGBM's order)."""
    if first:
        out[:] = acc
    else:
        for i in range(out.shape[0]):
            out[i] = out[i] + acc[i]


@njit(cache=True, nogil=True)
def _sums(
    x: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    decision: np.ndarray,
    child: np.ndarray,
    leaf_value: np.ndarray,
    node_start: np.ndarray,
    leaf_start: np.ndarray,
    member_end: np.ndarray,
    simple: bool,
    out: np.ndarray,
) -> None:
    """``out[i]``: the sum over members of each member's sum of tree outputs for row ``x[i]``.

    Tree by tree over all rows (a tree's nodes stay in cache). Node ``j``'s children are
    ``child[2j]`` (left) and ``child[2j + 1]``; a negative child ``~k`` is leaf ``k``. ``simple``:
    every split's missing type is None, so a value is NaN or tiny → 0, then ``<= threshold``."""
    n, k = x.shape
    flat = x.ravel()
    acc = np.zeros(n)
    t = 0
    for m in range(member_end.shape[0]):
        acc[:] = 0.0
        while t < member_end[m]:
            base, leaves = node_start[t], leaf_start[t]
            stump = node_start[t + 1] == base  # a tree of one leaf
            for i in range(n):
                row = i * k
                node = -1 if stump else 0
                while node >= 0:
                    j = base + node
                    v = flat[row + feature[j]]
                    if simple:
                        v = v if abs(v) > K_ZERO else 0.0  # NaN too: LightGBM makes it 0
                        node = child[2 * j + (1 if v > threshold[j] else 0)]
                        continue
                    missing = (decision[j] >> 2) & 3  # 0 None, 1 Zero, 2 NaN
                    if v != v:
                        v = v if missing == 2 else 0.0
                    elif not abs(v) > K_ZERO:
                        v = 0.0  # LightGBM's dense rows drop these: they are 0
                    if (missing == 1 and v == 0.0) or (missing == 2 and v != v):
                        right = 0 if decision[j] & DEFAULT_LEFT else 1
                    else:
                        right = 1 if v > threshold[j] else 0
                    node = child[2 * j + right]
                acc[i] += leaf_value[leaves + ~node]
            t += 1
        _add_member(out, acc, m == 0)


BLOCK = 8  # rows walked side by side
WALK_FROM = 8  # fewer rows than this: the kernel with branches (no depth padding, no copy)


@njit(cache=True, nogil=True)
def _walk_sums(
    x: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    child: np.ndarray,
    value: np.ndarray,
    root: np.ndarray,
    depth: np.ndarray,
    member_end: np.ndarray,
    out: np.ndarray,
) -> None:
    """``_sums`` for a forest whose splits are all of missing type None, without branches.

    Node ``j``'s children are ``child[2j]`` and ``child[2j + 1]`` (absolute); a leaf is a node with
    threshold +inf whose children are itself, and ``value`` holds its output, so ``depth[t]``
    steps from ``root[t]`` end on the row's leaf of tree ``t``, whatever the path. Values are
    made 0 first where LightGBM's dense rows make them 0 (NaN, or within ``K_ZERO`` of zero);
    the sums are added in ``_sums``'s order, so they are the same doubles."""
    n, k = x.shape
    src = x.ravel()
    flat = np.empty(n * k)
    for q in range(n * k):
        v = src[q]
        flat[q] = v if abs(v) > K_ZERO else 0.0
    acc = np.zeros(n)
    nodes = np.empty(BLOCK, np.int64)
    t = 0
    for m in range(member_end.shape[0]):
        acc[:] = 0.0
        while t < member_end[m]:
            start, steps = root[t], depth[t]
            for i in range(0, n, BLOCK):
                rows = min(BLOCK, n - i)
                nodes[:] = start
                for _ in range(steps):
                    for r in range(rows):
                        j = nodes[r]
                        right = 1 if flat[(i + r) * k + feature[j]] > threshold[j] else 0
                        nodes[r] = child[2 * j + right]
                for r in range(rows):
                    acc[i + r] += value[nodes[r]]
            t += 1
        _add_member(out, acc, m == 0)


def _walk_arrays(arrays: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """``_walk_sums``'s arrays from ``_sums``'s: each tree's internal nodes, then its leaves as
    nodes leading to themselves; each tree's root and depth."""
    feature, threshold, _, child, leaf_value, node_start, leaf_start, member_end = arrays
    trees = len(leaf_start)
    leaf_end = np.append(leaf_start[1:], len(leaf_value))
    splits = np.diff(node_start)
    leaves = leaf_end - leaf_start
    offset = np.concatenate([[0], np.cumsum(splits + leaves)]).astype(np.int64)
    total = int(offset[-1])
    walk_feature = np.zeros(total, np.int32)
    walk_threshold = np.full(total, np.inf)
    walk_child = np.empty(2 * total, np.int32)
    walk_value = np.zeros(total)
    depth = np.zeros(trees, np.int32)
    for t in range(trees):
        base, first, count = int(node_start[t]), int(offset[t]), int(splits[t])
        inner = slice(first, first + count)
        walk_feature[inner] = feature[base : base + count]
        walk_threshold[inner] = threshold[base : base + count]
        kids = child[2 * base : 2 * (base + count)].astype(np.int64)
        walk_child[2 * first : 2 * (first + count)] = np.where(kids >= 0, first + kids, first + count + ~kids)
        leaf_nodes = np.arange(first + count, first + count + int(leaves[t]))
        walk_child[2 * leaf_nodes] = walk_child[2 * leaf_nodes + 1] = leaf_nodes
        walk_value[leaf_nodes] = leaf_value[leaf_start[t] : leaf_end[t]]
        depth[t] = _depth(kids) if count else 0
    return walk_feature, walk_threshold, walk_child, walk_value, offset[:-1], depth, member_end


def _depth(kids: np.ndarray) -> int:
    """The depth of a tree from its nodes' children (pairs, relative; a negative child is a leaf)."""
    level, frontier = 0, [0]
    while frontier:
        level += 1
        frontier = [int(c) for node in frontier for c in kids[2 * node : 2 * node + 2] if c >= 0]
    return level


@dataclass(frozen=True)
class Forest:
    """Every member's trees, flattened; ``raw`` is what ``ModelBundle.predict`` sums before it
    averages."""

    ncol: int
    arrays: tuple[np.ndarray, ...]  # feature, threshold, decision, child, leaf_value, starts, ends
    simple: bool  # every split's missing type is None
    walk: tuple[np.ndarray, ...] | None = None  # _walk_sums's arrays (simple forests)

    @classmethod
    def from_model_texts(cls, texts: list[str], ncol: int) -> Forest | None:
        """The forest of these members' model texts, or None when it would not reproduce them."""
        columns: dict[str, list[Any]] = {k: [] for k in ("feature", "threshold", "decision", "left", "right")}
        leaves: list[float] = []
        node_start, leaf_start, member_end = [0], [], []
        for text in texts:
            header, *trees = text.split("\nTree=")
            fields = _fields(header)
            objective = fields.get("objective", "").split()
            if (
                not objective
                or objective[0] not in IDENTITY_OBJECTIVES
                or "sqrt" in objective[1:]
                or fields.get("num_tree_per_iteration") != "1"
                or "average_output" in header.split("\n")
                or fields.get("max_feature_idx") != str(ncol - 1)
                or not trees
            ):
                return None
            trees[-1] = trees[-1].partition("\nend of trees")[0]
            for block in trees:
                tree = _fields(block)
                if tree.get("num_cat", "0") != "0" or tree.get("is_linear", "0") != "0":
                    return None
                n_leaves = int(tree["num_leaves"])
                leaf_values = [float(v) for v in tree["leaf_value"].split()]
                if len(leaf_values) != n_leaves:
                    return None
                leaf_start.append(len(leaves))
                leaves.extend(leaf_values)
                if n_leaves > 1:
                    for name, key, kind in (
                        ("feature", "split_feature", int),
                        ("threshold", "threshold", float),
                        ("decision", "decision_type", int),
                        ("left", "left_child", int),
                        ("right", "right_child", int),
                    ):
                        values = [kind(v) for v in tree[key].split()]
                        if len(values) != n_leaves - 1:
                            return None
                        columns[name].extend(values)
                node_start.append(len(columns["feature"]))
            member_end.append(len(leaf_start))
        if any(d & 1 for d in columns["decision"]):  # a categorical split
            return None
        child = np.empty(2 * len(columns["left"]), np.int32)
        child[0::2], child[1::2] = columns["left"], columns["right"]
        decision = np.array(columns["decision"], np.uint8)
        arrays = (
            np.array(columns["feature"], np.int32),
            np.array(columns["threshold"], np.float64),
            decision,
            child,
            np.array(leaves, np.float64),
            np.array(node_start, np.int64),
            np.array(leaf_start, np.int64),
            np.array(member_end, np.int64),
        )
        simple = bool(((decision >> 2) & 3 == 0).all())
        return cls(ncol, arrays, simple, _walk_arrays(arrays) if simple else None)

    def raw(self, features: np.ndarray) -> np.ndarray:
        """The members' summed raw predictions for each row of ``features`` (n × ncol)."""
        x = np.ascontiguousarray(features, np.float64)
        if x.ndim != 2 or x.shape[1] != self.ncol:
            raise ValueError(f"expected rows of {self.ncol} values, got shape {features.shape}")
        out = np.empty(x.shape[0], np.float64)
        kernel: Any
        if self.walk is not None and x.shape[0] >= WALK_FROM:
            kernel = _walk_sums
            kernel(x, *self.walk, out)
        else:
            kernel = _sums
            kernel(x, *self.arrays, self.simple, out)
        return out


def _fields(text: str) -> dict[str, str]:
    out = {}
    for line in text.split("\n"):
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


_BUILT: dict[int, Forest | None] = {}
_LOCK = threading.Lock()


def forest_for(bundle: Any) -> Forest | None:
    """The bundle's forest, built (and compiled, the first time in a process) on first use; None
    when the bundle's trees are not ones ``Forest`` reproduces. Kept while the bundle lives."""
    key = id(bundle)
    if key in _BUILT:
        return _BUILT[key]
    try:
        texts = [booster.model_to_string() for booster in bundle.boosters]
        forest = Forest.from_model_texts(texts, len(bundle.spec.names))
        if forest is not None:
            forest.raw(np.zeros((1, forest.ncol)))  # compile (or load the compiled kernels) now
            forest.raw(np.zeros((WALK_FROM, forest.ncol)))
    except Exception as exc:  # a model text we misread: LightGBM serves it, correctly
        log.warning("serving without the compiled forest: %s", exc)
        forest = None
    with _LOCK:
        if key not in _BUILT:
            _BUILT[key] = forest
            weakref.finalize(bundle, _BUILT.pop, key, None)
    return _BUILT[key]


def predict(bundle: Any, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``bundle.predict(features)``, through the bundle's forest when it has one."""
    forest = forest_for(bundle)
    if forest is None:
        by_lightgbm: tuple[np.ndarray, np.ndarray, np.ndarray] = bundle.predict(features)
        return by_lightgbm
    compiled: tuple[np.ndarray, np.ndarray, np.ndarray] = bundle.from_raw(forest.raw(features))
    return compiled
