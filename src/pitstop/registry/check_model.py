"""Parse a model folder's LightGBM files in a child process before the serving process does.

LightGBM's parser aborts the whole process (``std::terminate``, SIGABRT) on some malformed model
files, e.g. a split on a feature index past the model's features. A file whose sha256 matches the
registered one can still be malformed (written by a buggy or hostile trainer), so every model
folder is parsed and asked for one prediction here first; the process that serves only loads it
when this child exited cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from pitstop.errors import ArtifactIntegrityError

CHECK_TIMEOUT_S = 120.0

# the child loads LightGBM's library through ctypes alone (importing the lightgbm package, or
# pitstop, takes over a second), parses each file and predicts one row of zeros
_CHILD = """
import ctypes, sys
import importlib.util
from pathlib import Path
pkg = Path(importlib.util.find_spec("lightgbm").submodule_search_locations[0])
lib = ctypes.cdll.LoadLibrary(str(next((pkg / "lib").glob("lib_lightgbm*"))))
folder = Path(sys.argv[1])
for name in sys.argv[2:]:
    handle, iters, ncol = ctypes.c_void_p(), ctypes.c_int(), ctypes.c_int()
    text = (folder / name).read_bytes()
    if lib.LGBM_BoosterLoadModelFromString(ctypes.c_char_p(text), ctypes.byref(iters), ctypes.byref(handle)):
        sys.exit(f"{name}: not a LightGBM model")
    if lib.LGBM_BoosterGetNumFeature(handle, ctypes.byref(ncol)):
        sys.exit(f"{name}: cannot read its feature count")
    out_len = ctypes.c_int64()
    classes = ctypes.c_int()
    lib.LGBM_BoosterGetNumClasses(handle, ctypes.byref(classes))
    row = (ctypes.c_double * max(1, ncol.value))()
    out = (ctypes.c_double * max(1, classes.value))()
    if lib.LGBM_BoosterPredictForMat(
        handle, row, 1, 1, ncol.value, 1, 0, 0, -1, ctypes.c_char_p(b"num_threads=1"),
        ctypes.byref(out_len), out,
    ):
        sys.exit(f"{name}: cannot predict one row")
"""
_checked: set[str] = set()  # manifest digests whose files parsed cleanly in a child
_lock = threading.Lock()


def check_in_child(folder: Path, files: list[str], digest: str) -> None:
    """Raise ``ArtifactIntegrityError`` unless every one of ``files`` under ``folder`` parses and
    predicts in a child process. A folder with the same manifest ``digest`` is checked once."""
    with _lock:
        if digest in _checked:
            return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(folder), *files],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=CHECK_TIMEOUT_S,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ArtifactIntegrityError(
            f"the model files in {folder} did not parse within {CHECK_TIMEOUT_S:.0f} s; refusing them"
        ) from exc
    if done.returncode != 0:
        if done.returncode < 0:
            how = f"LightGBM killed the checking process ({signal.Signals(-done.returncode).name})"
        else:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            how = lines[-1] if lines else f"exit status {done.returncode}"
        raise ArtifactIntegrityError(f"a model file in {folder} is malformed: {how}; refusing to load it")
    with _lock:
        _checked.add(digest)
