"""Pattern 7: embedding batches with a native (``malloc``) activation buffer per chunk.

LEAKY (seed 004 before the fix: ``Promise.all`` over the batch, ONNX tensors never
disposed): every chunk's native buffer is allocated up front, all at once, and neither the
native buffers (never ``free``d) nor the numpy outputs are released: they stay in
:attr:`Embedder.kept`. FIXED (seed 004's ``EmbeddingOptimizer``): chunks are processed one
after the other and each native buffer is ``free``d right after use ("tensor.dispose()").

Native memory is real: ``malloc``/``free`` from the C library through :mod:`ctypes`, and the
buffer is written in full so its pages are resident (RSS shows it; tracemalloc does not).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import zlib
from collections.abc import Callable, Sequence

import numpy as np


def _libc() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(None)
        lib.malloc  # noqa: B018 - probe that the symbol is there
    except (OSError, AttributeError):
        lib = ctypes.CDLL(ctypes.util.find_library("c"))
    lib.malloc.restype = ctypes.c_void_p
    lib.malloc.argtypes = [ctypes.c_size_t]
    lib.free.restype = None
    lib.free.argtypes = [ctypes.c_void_p]
    return lib


LIBC = _libc()


class NativeBuffer:
    """``size`` bytes from C ``malloc``; :meth:`free` gives them back (once)."""

    __slots__ = ("address", "size")

    def __init__(self, size: int) -> None:
        address = LIBC.malloc(size)
        if not address:
            raise MemoryError(f"malloc({size}) failed")
        self.address: int = address
        self.size = size

    def as_floats(self) -> np.ndarray:
        """A float32 view of the buffer (no copy: valid until :meth:`free`)."""
        raw = memoryview((ctypes.c_char * self.size).from_address(self.address))
        return np.frombuffer(raw, dtype=np.float32, count=self.size // 4)

    def free(self) -> None:
        if self.address:
            LIBC.free(self.address)
            self.address = 0

    @property
    def freed(self) -> bool:
        return not self.address


class Embedder:
    def __init__(
        self,
        *,
        dim: int = 384,
        native_bytes: int = 2048,
        sequential: bool,
        admit: Callable[[str], bool] | None = None,
    ) -> None:
        if dim <= 0 or native_bytes < 4:
            raise ValueError(
                f"dim must be > 0 and native_bytes >= 4, got {dim!r}, {native_bytes!r}"
            )
        self.dim = dim
        self.native_bytes = native_bytes
        self.sequential = sequential
        self._admit = admit
        self.kept: list[tuple[NativeBuffer, np.ndarray]] = []  # leaky: never disposed
        self.native_allocated = 0  # bytes ever malloc'ed
        self.native_freed = 0  # bytes ever freed
        self.batches = 0
        self.rejected = 0

    @property
    def native_live(self) -> int:
        return self.native_allocated - self.native_freed

    def embed_batch(self, texts: Sequence[str]) -> list[np.ndarray] | None:
        """One unit-length embedding per text; ``None`` when a memory manager refused the batch."""
        if not texts:
            return []
        if self._admit is not None and not self._admit("batch"):
            self.rejected += 1
            return None
        self.batches += 1
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if self.sequential:  # one chunk at a time, its native buffer disposed right after
            for i, text in enumerate(texts):
                buf = self._malloc()
                try:
                    self._run(buf, text, out[i])
                finally:
                    self._free(buf)
        else:  # all at once: every native buffer alive together (the Promise.all spike) ...
            buffers = [self._malloc() for _ in texts]
            for i, (buf, text) in enumerate(zip(buffers, texts, strict=True)):
                self._run(buf, text, out[i])
        out /= np.sqrt(np.einsum("ij,ij->i", out, out))[:, None]
        outputs = list(out)
        if not self.sequential:  # ... and nothing disposed afterwards
            self.kept.extend(zip(buffers, outputs, strict=True))
        return outputs

    def _malloc(self) -> NativeBuffer:
        buf = NativeBuffer(self.native_bytes)
        self.native_allocated += buf.size
        return buf

    def _free(self, buf: NativeBuffer) -> None:
        if not buf.freed:
            self.native_freed += buf.size
            buf.free()

    def _run(self, buf: NativeBuffer, text: str, out: np.ndarray) -> None:
        """Fill the activation buffer (every page touched), mean-pool it into ``out``."""
        crc = zlib.crc32(text.encode("utf-8", "surrogatepass"))
        # a byte 0x3C..0x3F repeated makes float32 activations between ~0.01 and ~0.75
        ctypes.memset(buf.address, 0x3C + crc % 4, buf.size)
        acts = buf.as_floats()
        tokens = acts.size // self.dim
        if tokens > 1:
            np.add.reduce(acts[: tokens * self.dim].reshape(tokens, self.dim), axis=0, out=out)
        elif tokens == 1:
            out[:] = acts[: self.dim]
        else:
            out[:] = np.resize(acts, self.dim)
        out[crc % self.dim] += 1.0  # make the direction depend on the text

    def release(self) -> int:
        """Free whatever was kept (what ``close()`` does); returns bytes freed."""
        before = self.native_freed
        for buf, _ in self.kept:
            self._free(buf)
        self.kept.clear()
        return self.native_freed - before

    def close(self) -> None:
        self.release()
