"""The shipped support corpus: well-formed, and every known question finds its one document.

No processes: the retrieval paths are run in-process with the same deterministic functions the
simulator and the local model use, so a corpus edit that makes a question ambiguous fails here
in milliseconds (the simulator-backed check is tests/integration/test_support_bot.py).
"""

from __future__ import annotations

import re

import pytest
from langchain_core.embeddings import Embeddings
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.vectorstores import InMemoryVectorStore

from langchain_ha.demo.corpus import KeywordRetriever, load_corpus, load_questions
from langchain_ha.demo.local_model import LocalExtractiveModel
from langchain_ha.providers._answers import ORDER_ID, expected_answer
from langchain_ha.providers._embeddings import embed

_SENTENCE_END = re.compile(r"[.!?](\s|$)")


class SimulatorEmbeddings(Embeddings):
    """The simulator's embedding function, in process (what /v1/embeddings returns)."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [embed(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return embed(text)


def _context(docs) -> str:
    return "\n".join(f"[doc:{d.id}] {d.page_content}" for d in docs)


def test_documents_are_well_formed() -> None:
    docs = load_corpus()
    ids = [d.id for d in docs]
    assert len(docs) >= 100
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"faq-\d{3}", str(i)) for i in ids)
    assert len({d.metadata["title"] for d in docs}) == len(docs)
    for d in docs:
        sentences = len(_SENTENCE_END.findall(d.page_content))
        assert 2 <= sentences <= 4, d.id
        assert "[doc:" not in d.page_content, d.id
    # distinctive facts: most documents carry a number a question can be checked against
    assert sum(bool(re.search(r"\d", d.page_content)) for d in docs) >= 0.75 * len(docs)


def test_questions_point_at_distinct_real_documents() -> None:
    ids = {d.id for d in load_corpus()}
    questions = load_questions()
    assert len(questions) >= 40
    assert {doc for _, doc in questions} <= ids
    assert len({q for q, _ in questions}) == len(questions)
    assert not any(ORDER_ID.search(q) for q, _ in questions)  # RAG questions, not tool ones


@pytest.fixture(scope="module")
def vectors() -> InMemoryVectorStore:
    store = InMemoryVectorStore(SimulatorEmbeddings())
    store.add_documents(list(load_corpus()))
    return store


@pytest.mark.parametrize("path", ["vector", "keyword"])
def test_every_question_is_answered_from_its_document(path: str, vectors) -> None:
    keyword = KeywordRetriever(docs=load_corpus(), k=3)
    wrong = []
    for question, doc_id in load_questions():
        docs = (vectors.similarity_search(question, k=3) if path == "vector"
                else keyword.invoke(question))
        # what the simulator answers when given these documents as context
        answer = expected_answer([("system", _context(docs)), ("user", question)])
        if not answer.startswith(f"According to [doc:{doc_id}]:"):
            wrong.append((question, doc_id, [d.id for d in docs], answer[:40]))
    assert wrong == []


def test_local_model_answers_like_the_simulator() -> None:
    keyword = KeywordRetriever(docs=load_corpus(), k=3)
    model = LocalExtractiveModel()
    for question, doc_id in load_questions()[:10]:
        messages = [SystemMessage(_context(keyword.invoke(question))), HumanMessage(question)]
        answer = model.invoke(messages).text
        assert answer == expected_answer(messages)
        assert answer.startswith(f"According to [doc:{doc_id}]: ")


def test_keyword_retriever_finds_nothing_for_unrelated_words() -> None:
    assert KeywordRetriever(docs=load_corpus()).invoke("zzyzx qwerty") == []
