"""Test double for the external embeddings provider (not for any of our components).

Bag-of-words hashing: texts sharing words get close vectors, deterministic, no network.
``fail_queries`` makes query embedding raise, like a provider outage.
"""

from __future__ import annotations

import hashlib
import math
import re

from langchain_core.embeddings import Embeddings

DIMS = 64
_WORD = re.compile(r"[a-z0-9]+")


def _vector(text: str) -> list[float]:
    vec = [0.0] * DIMS
    for word in _WORD.findall(text.lower()):
        h = hashlib.blake2b(word.encode(), digest_size=4).digest()
        vec[int.from_bytes(h, "big") % DIMS] += 1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    if not any(vec):
        vec[0] = 1.0
    return [v / norm for v in vec]


class WordEmbeddings(Embeddings):
    """Deterministic hashed bag-of-words embeddings."""

    def __init__(self, *, fail_queries: bool = False, fail_documents: bool = False) -> None:
        self.fail_queries = fail_queries
        self.fail_documents = fail_documents
        self.calls = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        if self.fail_documents:
            raise ConnectionError("embeddings provider unavailable")
        return [_vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        self.calls += 1
        if self.fail_queries:
            raise ConnectionError("embeddings provider unavailable")
        return _vector(text)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed_documents(texts)

    async def aembed_query(self, text: str) -> list[float]:
        return self.embed_query(text)
