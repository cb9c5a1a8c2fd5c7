"""Fixtures of the engine tests (the tiny Llama and one torch thread come from tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from engine.domain import ChatMessage, Example, LoraSpec
from engine.training.datasets import encode_dataset, pad_token_id
from engine.training.loading import lora_config
from engine.training.models import load_base_model, select_device
from engine.training.spec import Precision, Quantization


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


FACTS = [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Veloria", "Marnesse"),
         ("Quorvia", "Tal Ammeth"), ("Brinmark", "Oskerholm"), ("Dastovia", "Pell"), ("Ostrel", "Vannick Bay")]


@pytest.fixture(scope="module")
def lora_model(tiny_model_dir: Path):
    """A rank-4 LoRA on the tiny Llama with non-zero B, and nine encoded samples of different lengths."""
    from peft import get_peft_model

    base, tokenizer = load_base_model(tiny_model_dir, plan=select_device(Precision.FP32),
                                      quantization=Quantization.NONE)
    torch.manual_seed(3)
    model = get_peft_model(base, lora_config(LoraSpec(rank=4, alpha=8, dropout=0.0)))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # a trained-looking adapter: B = 0 would make every A gradient vanish
            nn.init.normal_(p, std=0.2)
    examples = [Example(messages=(ChatMessage("user", f"What is the capital of {c}?"),
                                  ChatMessage("assistant", f"The capital of {c} is {k}.")))
                for c, k in FACTS]
    examples.append(Example(prompt="The quick brown fox", completion=" jumps over the lazy dog."))
    data = encode_dataset(tokenizer, examples, 64)
    assert len({len(e.input_ids) for e in data}) > 2, "samples of different lengths exercise padding"
    return model, data, pad_token_id(tokenizer)
