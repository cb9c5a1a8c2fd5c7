"""The base model's embeddings of prompts: the mean of its last hidden states over a prompt's tokens, unit length.

The model (the base model alone, no adapter: the same space for the incoming and the reference prompts, whatever
version is served) is loaded once per base model and kept (one at a time); embeddings of texts already seen are
kept too (up to ``cache_size``), so a report on unchanged reference data embeds only what is new. Runs on CPU in
the thread that calls it, with the process's torch threads (setting torch_threads); ``embed`` is blocking and
serialised.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from engine.model_build import BUILDING


class BaseModelEmbedder:
    def __init__(self, model_dir: Callable[[str], Path], *, max_tokens: int = 128, batch_size: int = 16,
                 cache_size: int = 20_000) -> None:
        self._model_dir = model_dir
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], npt.NDArray[np.float64]] = OrderedDict()
        self._loaded: tuple[str, Any, Any] | None = None
        self._lock = threading.Lock()

    def embed(self, base_model: str, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if (base_model, t) not in self._cache))
            if missing:
                model, tokenizer = self._model(base_model)
                for start in range(0, len(missing), self.batch_size):
                    batch = missing[start:start + self.batch_size]
                    for text, row in zip(batch, self._forward(model, tokenizer, batch), strict=True):
                        self._cache[(base_model, text)] = row
            rows = []
            for text in texts:
                self._cache.move_to_end((base_model, text))
                rows.append(self._cache[(base_model, text)])
            while len(self._cache) > max(self._cache_size, len(texts)):
                self._cache.popitem(last=False)
            width = rows[0].shape[0] if rows else 0
            return np.stack(rows) if rows else np.zeros((0, width))

    def _model(self, base_model: str) -> tuple[Any, Any]:
        if self._loaded is not None and self._loaded[0] == base_model:
            return self._loaded[1], self._loaded[2]
        from transformers import AutoModel, AutoTokenizer  # noqa: PLC0415 - heavy, only when a report runs

        self._loaded = None  # one model at a time: let the previous one go first
        path = self._model_dir(base_model)
        tokenizer = AutoTokenizer.from_pretrained(path)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
        with BUILDING:
            model = AutoModel.from_pretrained(path, dtype=torch.float32)
        model.eval()
        self._loaded = (base_model, model, tokenizer)
        return model, tokenizer

    def _forward(self, model: Any, tokenizer: Any, texts: list[str]) -> npt.NDArray[np.float64]:
        encoded = tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        pooled = torch.nn.functional.normalize(pooled.double(), dim=-1)
        out: npt.NDArray[np.float64] = pooled.cpu().numpy()
        return out
