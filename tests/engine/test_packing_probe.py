"""The packing check (engine.training.attention) rejects attention across examples in every precision it runs in,
and accepts the correct paths."""

from __future__ import annotations

import pytest
import torch

from engine.training.attention import (
    FP32_TOLERANCE,
    HALF_PRECISION_TOLERANCE,
    NOISE_MARGIN,
    PROBE_TOKENS,
    PROBES,
    PackedAttention,
    choose_attention,
    isolates,
    packed_attention,
    probes,
    tolerance,
)
from engine.training.datasets import IGNORE_INDEX, EncodedExample
from engine.training.models import DevicePlan, cpu_supports_bf16
from engine.training.packing import PackedBatch, PackedForward, PaddedForward

DTYPES = pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])


def plan_for(model, dtype: torch.dtype | None) -> DevicePlan:
    """A plan on the device the fixture's model is on (CUDA where there is one), autocast to ``dtype``."""
    device = next(model.parameters()).device
    if dtype is not None:
        supported = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_supports_bf16()
        if not supported:
            pytest.skip(f"no bf16 autocast on {device.type}")
    return DevicePlan(device.type, dtype, f"{device.type}, {dtype}", device.index or 0)


class RowCausal(PackedForward):
    """Position ids restart per example, but the mask is plain causal over the whole row: every example attends
    to the examples packed before it (what an attention path that ignores the packed boundaries does)."""

    def _logits(self, model, batch: PackedBatch, keep: torch.Tensor) -> torch.Tensor:
        with self.plan.autocast():
            logits = model(input_ids=batch.input_ids, position_ids=batch.position_ids,
                           attention_mask=torch.ones_like(batch.input_ids), logits_to_keep=keep,
                           use_cache=False).logits
        return logits.reshape(-1, logits.shape[-1])


@DTYPES
def test_the_probe_rejects_attention_across_examples(lora_model, dtype) -> None:
    model, data, pad = lora_model
    plan = plan_for(model, dtype)
    samples = probes(data)
    reference = PaddedForward(pad, plan)
    with torch.no_grad():
        model.eval()
        leaked, _ = RowCausal(pad, plan)(model, samples)
        alone, _ = reference(model, samples)
        model.train()
    assert float((leaked - alone).abs().max()) > 1.0
    assert not isolates(model, RowCausal(pad, plan), samples, reference)


@DTYPES
def test_the_correct_paths_pass_the_probe_in_every_precision(lora_model, dtype) -> None:
    model, data, pad = lora_model
    plan = plan_for(model, dtype)
    assert choose_attention(model, data, pad, plan) is not None
    for attention in (PackedAttention.SEGMENTS, PackedAttention.MASK):
        with packed_attention(model, attention):
            assert isolates(model, PackedForward(pad, plan), probes(data), PaddedForward(pad, plan)), attention


def test_probes_are_distinct_windows_from_the_ends_of_the_examples(lora_model) -> None:
    _, data, _ = lora_model
    samples = probes(data)
    assert len(samples) == PROBES
    assert [s.input_ids for s in samples] == [e.input_ids[-PROBE_TOKENS:] for e in data[:PROBES]]
    assert all(s.labels == s.input_ids for s in samples)  # every position a target

    same_start = [EncodedExample([1, 2, 3, 4] + tail, [IGNORE_INDEX] * 4 + tail) for tail in ([5, 6], [5, 6], [7, 8])]
    assert [s.input_ids for s in probes(same_start)] == [[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 7, 8]]  # a repeat skipped
    assert probes([EncodedExample([9], [9]), same_start[0]]) == [EncodedExample([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6])]


class BatchDependent(PaddedForward):
    """A reference whose losses move by 3% with the batch they are computed in (as a bitsandbytes int8 model's do:
    its outlier columns are chosen per batch, whatever the autocast)."""

    def __call__(self, model, examples):
        sums, counts = super().__call__(model, examples)
        return sums * (1.03 if len(examples) > 1 else 1.0), counts


def test_the_tolerance_follows_the_precision_and_the_references_own_noise(lora_model) -> None:
    model, data, pad = lora_model
    samples = probes(data)
    model.eval()
    try:
        with torch.no_grad():
            fp32 = PaddedForward(pad, plan_for(model, None))
            assert tolerance(model, samples, fp32, fp32(model, samples)[0]) == FP32_TOLERANCE
            noisy = BatchDependent(pad, plan_for(model, None))
            assert tolerance(model, samples, noisy, noisy(model, samples)[0]) == pytest.approx(NOISE_MARGIN * 0.03)
            bf16 = PaddedForward(pad, plan_for(model, torch.bfloat16))
            assert tolerance(model, samples, bf16, bf16(model, samples)[0]) >= HALF_PRECISION_TOLERANCE
    finally:
        model.train()


def test_a_leak_is_caught_when_every_example_ends_with_the_same_sign_off(lora_model) -> None:
    """Examples that differ but end alike (a templated sign-off) still give distinct probes, from earlier windows."""
    model, data, pad = lora_model
    plan = plan_for(model, None)
    sign_off = [int(t) for t in data[0].input_ids[-PROBE_TOKENS:]]
    signed = [EncodedExample(list(e.input_ids) + sign_off, list(e.labels) + sign_off) for e in data]
    assert len({tuple(e.input_ids) for e in signed}) == len(signed)
    reference = PaddedForward(pad, plan)
    with torch.no_grad():
        model.eval()
        leaked, _ = RowCausal(pad, plan)(model, signed[:3])
        alone, _ = reference(model, signed[:3])
        model.train()
    assert float((leaked - alone).abs().max()) > 1.0
    samples = probes(signed)
    assert len(samples) == PROBES
    assert not isolates(model, RowCausal(pad, plan), samples, reference)


def test_examples_giving_fewer_than_two_probes_are_not_packed(lora_model) -> None:
    """Several short examples alike to the last token leave nothing to show a path keeps them apart: padded batches.
    (Longer ones alike still give windows at other offsets, which differ.)"""
    model, data, pad = lora_model
    short = EncodedExample(list(data[0].input_ids[:5]), list(data[0].input_ids[:5]))
    same = [short, short, short]
    assert len(probes(same)) == 1
    assert len(probes([data[0]] * 3)) == PROBES
    assert choose_attention(model, same, pad, plan_for(model, None)) is None
    assert choose_attention(model, data[:1], pad, plan_for(model, None)) is not None  # one example: nothing to leak
