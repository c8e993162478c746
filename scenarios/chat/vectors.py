"""Pattern 5: the retrieval vector store, a real file of raw float32 rows on disk.

LEAKY (seed 001's ``loadOrCreateVectorStore()`` on every API request): every :meth:`get`
reads the file again and the loaded array is kept in a list. FIXED: loaded once and cached at
module (here: instance) level.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import numpy as np


def create_vector_file(path: str | os.PathLike[str], rows: int, dim: int, seed: int = 0) -> None:
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors.tofile(os.fspath(path))


def load_vector_file(path: str, dim: int) -> np.ndarray:
    return np.fromfile(path, dtype=np.float32).reshape(-1, dim)


def query_vector(text: str, dim: int) -> np.ndarray:
    """A cheap deterministic stand-in for a query embedding."""
    digest = hashlib.blake2b(
        text.encode("utf-8", "surrogatepass"), digest_size=min(dim, 64)
    ).digest()
    return np.frombuffer(digest * -(-dim // len(digest)), dtype=np.int8, count=dim).astype(
        np.float32
    )


class VectorStore:
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        rows: int,
        dim: int,
        cache: bool,
        admit: Callable[[str], bool] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            create_vector_file(self.path, rows, dim)
        self.dim = dim
        self.cache = cache
        self._admit = admit
        self._cached: np.ndarray | None = None
        self.loaded: list[np.ndarray] = []  # leaky: every reload kept here
        self.loads = 0
        self.rejected = 0

    def get(self) -> np.ndarray | None:
        """The vectors; ``None`` only when a memory manager refused the very first load."""
        if self.cache and self._cached is not None:
            return self._cached
        if self._admit is not None and not self._admit("model"):
            self.rejected += 1
            return self._cached  # keep serving the last load, if any
        vectors = load_vector_file(self.path, self.dim)
        self.loads += 1
        self._cached = vectors
        if not self.cache:
            self.loaded.append(vectors)
        return vectors

    def search(self, text: str, k: int = 3) -> tuple[int, ...]:
        vectors = self.get()
        if vectors is None:
            return ()
        scores = vectors @ query_vector(text, vectors.shape[1])
        return tuple(np.argsort(scores)[: -k - 1 : -1].tolist())

    def retained_bytes(self) -> int:
        arrays = (
            self.loaded if not self.cache else ([self._cached] if self._cached is not None else [])
        )
        return sum(a.nbytes for a in arrays)

    def close(self) -> None:
        self.loaded.clear()
        self._cached = None
