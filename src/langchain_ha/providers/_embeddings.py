"""Deterministic embeddings: hashed content words and character trigrams, L2-normalised.

Similar texts share words and trigrams, so their vectors are close; the same text always gets
the same vector, in every process (crc32, not Python's salted ``hash``).
"""

from __future__ import annotations

import math
import zlib

from langchain_ha.providers._answers import STOP_WORDS, words


def _slot(token: str, dim: int) -> tuple[int, float]:
    h = zlib.crc32(token.encode())
    return h % dim, (1.0 if (h >> 31) & 1 else -1.0)


def embed(text: str, dim: int = 256) -> list[float]:
    """The vector of ``text`` (length ``dim``, unit norm; a zero-free fallback for empty text)."""
    vec = [0.0] * dim
    for w in words(text):
        if w in STOP_WORDS:  # function words carry no meaning (real models learn this)
            continue
        i, sign = _slot("w:" + w, dim)
        vec[i] += sign
        padded = f"#{w}#"
        for k in range(len(padded) - 2):
            j, s = _slot("g:" + padded[k:k + 3], dim)
            vec[j] += 0.5 * s
    norm = math.sqrt(sum(v * v for v in vec))
    if norm == 0.0:
        vec[0] = 1.0
        return vec
    return [v / norm for v in vec]


def embed_tokens(tokens: list[int], dim: int = 256) -> list[float]:
    """Vector for a pre-tokenised input (token ids hashed as words)."""
    return embed(" ".join(f"t{t}" for t in tokens), dim)
