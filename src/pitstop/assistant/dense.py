"""Optional dense retrieval: a small static embedding model that ships inside a pip package.

WordLlama (``pip install 'pitstop[dense]'``, MIT) carries its 256-dimension token embeddings
(16 MB) and tokenizer in its wheel. They are read from the installed package here, never through
WordLlama's own loader, which would try Hugging Face for the tokenizer (it looks for it under a
folder name the wheel does not use): nothing is downloaded at run time. A text's vector is the
normalised average of its tokens' embeddings, so a section and a question that share no word but
mean the same thing (``overheating`` / ``high coolant temperature``) still meet.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np

from pitstop.errors import ConfigError

_TOKENIZER = "tokenizers/l2_supercat_tokenizer_config.json"
_WEIGHTS = "weights/l2_supercat_256.safetensors"
_lock = threading.Lock()
_model: Any = None


def encoder() -> Any:
    """The embedding model, loaded once per process (about half a second)."""
    global _model
    with _lock:
        if _model is None:
            _model = _load()
        return _model


def _load() -> Any:
    try:
        from safetensors import safe_open
        from tokenizers import Tokenizer
        from wordllama.inference import WordLlamaInference
    except ImportError as exc:
        raise ConfigError(
            "manuals_retrieval = hybrid needs the embedding model: pip install 'pitstop[dense]' "
            "(or set manuals_retrieval = bm25)",
            code="dense_model_missing",
        ) from exc
    root = resources.files("wordllama")
    tokenizer_path, weights_path = root.joinpath(_TOKENIZER), root.joinpath(_WEIGHTS)
    if not (tokenizer_path.is_file() and weights_path.is_file()):
        raise ConfigError(
            "this wordllama release does not ship its model in the package; install "
            "'wordllama>=0.4,<0.5' (pitstop[dense]) or set manuals_retrieval = bm25",
            code="dense_model_missing",
        )
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    with safe_open(str(weights_path), framework="np", device="cpu") as f:
        embedding = f.get_tensor("embedding.weight")
    return WordLlamaInference(embedding, tokenizer, binary=False)


def embed(texts: Sequence[str]) -> np.ndarray:
    """Unit vectors (float32, one row per text)."""
    if not texts:
        return np.zeros((0, 256), dtype=np.float32)
    return np.asarray(encoder().embed(list(texts), norm=True), dtype=np.float32)
