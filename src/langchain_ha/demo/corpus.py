"""The support bot's shipped corpus (package data), and a keyword retriever over it.

The keyword retriever is what retrieval falls back to when the embedding provider is down:
plain word overlap, no network.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

from langchain_ha.providers._answers import keywords, words


@cache
def load_corpus() -> tuple[Document, ...]:
    """The FAQ documents shipped with the package (id, title, text)."""
    raw = resources.files("langchain_ha.demo").joinpath("corpus/faq.jsonl").read_text()
    docs = []
    for line in raw.splitlines():
        if line.strip():
            item = json.loads(line)
            docs.append(Document(id=item["id"], page_content=item["text"],
                                 metadata={"title": item["title"], "doc_id": item["id"]}))
    return tuple(docs)


@cache
def load_questions() -> tuple[tuple[str, str], ...]:
    """``(question, doc_id)`` pairs whose right source is known (for drills and tests)."""
    raw = resources.files("langchain_ha.demo").joinpath("corpus/questions.jsonl").read_text()
    return tuple((q["question"], q["doc_id"]) for q in map(json.loads, filter(None, (
        line.strip() for line in raw.splitlines()))))


class KeywordRetriever(BaseRetriever):
    """Documents ranked by shared words with the query (ties: corpus order)."""

    docs: tuple[Document, ...]
    k: int = 3

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        wanted = set(keywords(query))
        scored = [(len(wanted & set(words(d.page_content))), -i, d)
                  for i, d in enumerate(self.docs)]
        scored.sort(key=lambda t: (t[0], t[1]), reverse=True)
        return [d for score, _, d in scored[: self.k] if score > 0]
