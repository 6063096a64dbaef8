"""RAG retrieval data (issue 19, W9/W10): seeding, unique names, answers in their documents, the Zipf
question stream, and retrieval of the source document with the real all-MiniLM-L6-v2."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from infercloud.bench.workloads.rag import (MAX_WORDS, MIN_WORDS, Document, Question, rag_corpus, rag_questions,
                                            zipf_question_stream)
from infercloud.engine.embedding_engine import EmbeddingEngine
from infercloud.models.pull import pull

MINILM = "all-minilm-l6-v2"


@pytest.fixture(scope="module")
def corpus() -> list[Document]:
    return rag_corpus()


@pytest.fixture(scope="module")
def questions(corpus) -> list[Question]:
    return rag_questions(corpus)


def wordings(q: Question) -> tuple[str, ...]:
    return (q.text, *q.paraphrases)


def test_same_seed_same_data_other_seed_other_data(corpus, questions):
    assert rag_corpus(seed=0) == corpus
    assert rag_questions(rag_corpus(seed=0), seed=0) == questions
    assert zipf_question_stream(questions, 300, seed=4) == zipf_question_stream(questions, 300, seed=4)
    other = rag_corpus(seed=1)
    assert [d.text for d in other] != [d.text for d in corpus]
    assert rag_questions(corpus, seed=1) != questions
    assert zipf_question_stream(questions, 300, seed=5) != zipf_question_stream(questions, 300, seed=4)


def test_documents_are_short_alike_and_uniquely_named(corpus):
    assert len(corpus) == 240
    assert len({d.id for d in corpus}) == 240
    assert Counter(d.metadata["kind"] for d in corpus) == {kind: 24 for kind in {d.metadata["kind"] for d in corpus}}
    assert len({d.metadata["kind"] for d in corpus}) == 10
    assert all(MIN_WORDS <= len(d.text.split()) <= MAX_WORDS for d in corpus)
    names = [d.metadata["name"] for d in corpus]
    assert len(set(names)) == 240
    every_name = {w for d in corpus for w in re.findall(r"\b[A-Z][a-z]+\b", d.text)} - {"The", "Its", "It"}
    for doc in corpus:   # an entity's name is in its own document only, and no other name contains it
        name = doc.metadata["name"]
        assert name in doc.text
        assert [d.id for d in corpus if name.lower() in d.text.lower()] == [doc.id]
        assert [w for w in every_name if name.lower() in w.lower()] == [name]
    assert len(rag_corpus(num_documents=500, seed=2)) == 500   # more documents than first syllables still work
    with pytest.raises(ValueError):
        rag_corpus(num_documents=0)


def test_every_question_names_its_entity_and_its_answer_is_in_the_document(corpus, questions):
    by_id = {d.id: d for d in corpus}
    assert len(questions) == 50
    assert len({q.document_id for q in questions}) == 50
    for q in questions:
        doc = by_id[q.document_id]
        assert q.answer in doc.text
        assert (next(f for f, v in doc.facts if v == q.answer), q.answer) in doc.facts
        assert len(q.paraphrases) == 3 and len(set(wordings(q))) == 4
        for text in wordings(q):
            assert doc.metadata["name"] in text
            assert text.endswith(("?", "."))
            assert text.rstrip("?.") not in doc.text   # asked in other words than the document's
    assert len(rag_questions(corpus, num_questions=200)) == 200   # W10's size
    for bad in (0, 241):
        with pytest.raises(ValueError):
            rag_questions(corpus, num_questions=bad)


def test_zipf_stream_favours_low_ranks_and_uses_every_wording(corpus):
    questions = rag_questions(corpus, num_questions=200)
    stream = zipf_question_stream(questions, 5000, s=1.1, seed=0)
    assert len(stream) == 5000
    counts = Counter(i for i, _ in stream)
    assert counts.most_common(1)[0][0] == 0
    assert counts[0] > counts[1] > counts[9] and counts[0] > 5000 * 0.1
    assert len(counts) > 100   # the tail is drawn too
    assert all(text in wordings(questions[i]) for i, text in stream)
    top = Counter(text for i, text in stream if i == 0)
    assert set(top) == set(wordings(questions[0]))                      # the original and all 3 paraphrases
    assert min(top.values()) > counts[0] / 4 * 0.7                       # about uniformly
    assert sum(text != questions[i].text for i, text in stream) > 5000 * 0.65
    assert zipf_question_stream(questions, 0) == []
    with pytest.raises(ValueError):
        zipf_question_stream([], 10)


def test_source_document_is_retrieved_with_the_real_embedding_model(corpus, questions):
    """Whole-document embeddings (each one chunk) against the 50 questions and their 150 paraphrases: the
    source is in the top 5 by cosine for >= 90% (measured: 100%); paraphrases score clearly higher against
    their question than different questions of the same kind and fact do (what the semantic cache needs)."""
    engine = EmbeddingEngine(pull(MINILM, progress=False), device="cpu")
    assert max(len(ids) for ids in engine.tokenize([d.text for d in corpus])) <= engine.max_seq_length
    docs = engine.embed([d.text for d in corpus])[0].numpy()
    texts = [t for q in questions for t in wordings(q)]
    vecs = engine.embed(texts)[0].numpy().reshape(len(questions), 4, -1)   # [question, wording, dim], unit length
    source = np.array([[d.id for d in corpus].index(q.document_id) for q in questions])
    scores = vecs @ docs.T                                                   # [question, wording, document]
    rank = (scores > np.take_along_axis(scores, source[:, None, None], axis=2)).sum(axis=2)
    assert (rank[:, 0] < 5).mean() >= 0.9, rank[:, 0]
    assert (rank[:, 1:] < 5).mean() >= 0.9, rank[:, 1:]

    paraphrase = np.einsum("qd,qpd->qp", vecs[:, 0], vecs[:, 1:]).ravel()
    fact = [(c.metadata["kind"], f) for q in questions for c in corpus if c.id == q.document_id
            for f, v in c.facts if v == q.answer]
    different = np.array([vecs[i, 0] @ vecs[j, 0] for i in range(len(questions)) for j in range(i + 1, len(questions))
                          if fact[i] == fact[j]])
    assert (paraphrase >= 0.9).mean() >= 0.9 and (different >= 0.9).mean() <= 0.01
    assert np.median(paraphrase) > np.max(different, initial=0.0)
