"""Attention paths that keep the examples packed into one row apart, chosen per model and verified.

A packed row holds several examples end to end, with position ids restarting at 0 for each. Three paths
make every token attend only to the earlier tokens of its own example:

* ``VARLEN`` (CUDA): transformers' flash-attention 2 path, which reads the example boundaries from the
  position ids (``cu_seqlens``) and runs the variable-length kernel. Needs the ``flash-attn`` package, a
  half-precision autocast and a model that supports it.
* ``SEGMENTS``: this module's attention function (registered with transformers' ``AttentionInterface``):
  one causal SDPA call per example, boundaries read from the position ids. Exact, and no work on pairs of
  tokens from different examples. For models whose attention is plain causal (no sliding window, no
  logit soft-capping). The default on CPU (bench/train_throughput.py measures the recipe with it).
* ``MASK``: transformers' own packed-sequence detection: with position ids and no padding mask, the model
  builds a block-diagonal causal mask (also for sliding windows). Exact, but each row costs the full
  row-length-squared attention; the fallback.

Whichever path is chosen is verified before training: a few short probes packed into one row must give the
per-example losses they give alone (:func:`isolates`). A model that fails every path trains on padded,
length-grouped batches instead.
"""

from __future__ import annotations

import contextlib
import enum
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from engine.training.datasets import EncodedExample
from engine.training.models import DevicePlan
from engine.training.packing import PackedForward, PaddedForward

SEGMENTS_IMPLEMENTATION = "packed_segments"
PROBE_TOKENS = 16
PROBES = 3
PROBE_SCAN = 256  # examples :func:`probes` looks through for distinct windows
# How far packed per-example losses may be from padded ones (relative; see :func:`tolerance`)
FP32_TOLERANCE = 1e-4
HALF_PRECISION_TOLERANCE = 2e-2
NOISE_MARGIN = 4.0


class PackedAttention(enum.StrEnum):
    VARLEN = "flash_attention_2"
    SEGMENTS = SEGMENTS_IMPLEMENTATION
    MASK = "mask"  # the model's own implementation (sdpa or eager), with transformers' block-diagonal mask


# ---- the per-example segments path ------------------------------------------------------------------


def _segments(position_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Per row, the (start, end) of each run of consecutive positions (an example, or a row's padding)."""
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
    width = position_ids.shape[1]
    rows = []
    for row in starts.tolist():
        bounds = [i for i, start in enumerate(row) if start] + [width]
        rows.append(list(zip(bounds[:-1], bounds[1:], strict=True)))
    return rows


def segments_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    position_ids: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal attention within each run of consecutive position ids; SDPA itself for anything else.

    ``query`` is [B, heads, T, D] and ``key``/``value`` [B, kv_heads, T, D]; returns [B, T, heads, D] as
    transformers' attention functions do. With a padding mask, or one example per row, this is exactly
    ``sdpa_attention_forward``.
    """
    rows = None
    if attention_mask is None and position_ids is not None and query.shape[2] == key.shape[2] > 1:
        rows = _segments(position_ids.expand(query.shape[0], -1))
    if rows is None or all(len(row) == 1 for row in rows):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    gqa = query.shape[1] != key.shape[1]
    out = []
    for b, row in enumerate(rows):
        out.append(torch.cat([
            F.scaled_dot_product_attention(
                query[b : b + 1, :, s:e], key[b : b + 1, :, s:e], value[b : b + 1, :, s:e],
                dropout_p=dropout, is_causal=True, scale=scaling, enable_gqa=gqa,
            )
            for s, e in row
        ], dim=2))
    return torch.cat(out, dim=0).transpose(1, 2).contiguous(), None


def _segments_mask(*args: Any, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor | None:
    """No mask without a padding mask (the segments are the mask); SDPA's mask with one."""
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None:
        return None
    # transformers' mask functions take their arguments by keyword, attention_mask among them
    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)  # type: ignore[misc]


@functools.cache
def register_segments() -> None:
    """Make ``attn_implementation="packed_segments"`` known to transformers (once per process)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(SEGMENTS_IMPLEMENTATION, segments_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(SEGMENTS_IMPLEMENTATION, _segments_mask)


# ---- choosing and verifying a path ----------------------------------------------------------------------


def _language_model(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _plain_causal(config: Any) -> bool:
    """Whether every layer's attention is causal over the whole sequence, with nothing but a softmax."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(text, "attn_logit_softcapping", None):
        return False
    layer_types = getattr(text, "layer_types", None)
    if layer_types and any(kind != "full_attention" for kind in layer_types):
        return False
    return not (getattr(text, "sliding_window", None) and getattr(text, "use_sliding_window", True))


def candidates(model: Any, plan: DevicePlan) -> list[PackedAttention]:
    """The paths worth trying for ``model`` on ``plan``, best first (see the module docstring)."""
    from transformers.utils.import_utils import is_flash_attn_2_available

    base = _language_model(model)
    order: list[PackedAttention] = []
    if (plan.device == "cuda" and plan.autocast_dtype in (torch.float16, torch.bfloat16)
            and is_flash_attn_2_available() and getattr(base, "_supports_flash_attn", False)):
        order.append(PackedAttention.VARLEN)
    if getattr(base, "_supports_attention_backend", False) and _plain_causal(base.config):
        order.append(PackedAttention.SEGMENTS)
    order.append(PackedAttention.MASK)
    return order


@contextlib.contextmanager
def packed_attention(model: Any, attention: PackedAttention) -> Iterator[None]:
    """Switch the model to ``attention`` for the duration, then back to what it was."""
    register_segments()
    base = _language_model(model)
    previous = base.config._attn_implementation
    wanted = previous if attention is PackedAttention.MASK else attention.value
    if wanted != previous:
        base.set_attn_implementation(wanted)
        if base.config._attn_implementation != wanted:
            raise RuntimeError(f"{type(base).__name__} cannot switch its attention to {wanted}")
    try:
        yield
    finally:
        if base.config._attn_implementation != previous:
            base.set_attn_implementation(previous)


def probes(data: Sequence[EncodedExample]) -> list[EncodedExample]:
    """Up to PROBES distinct short sequences cut from the data, every position a target.

    Each is a window of PROBE_TOKENS tokens from the end of an example, where examples differ (their answers): chat
    data's examples all begin with the same system turn, and identical probes are the case in which attending to the
    example packed before changes a loss least. Examples may end alike too (a templated sign-off), so a window equal
    to one already taken gives way to the one half a window earlier in the same example, and so on back to its
    start; an example with no new window is skipped. At most PROBE_SCAN examples are looked at, so a large data set
    costs no more than a small one.
    """
    taken: list[list[int]] = []
    for example in data[:PROBE_SCAN]:
        window = _new_window(list(example.input_ids), taken)
        if window is not None:
            taken.append(window)
            if len(taken) == PROBES:
                break
    return [EncodedExample(ids, list(ids)) for ids in taken]


def _new_window(ids: list[int], taken: list[list[int]]) -> list[int] | None:
    """The last window of ``ids`` (PROBE_TOKENS long, or all of a shorter one; at least 2 tokens) that is not in
    ``taken``, stepping back half a window at a time; None if every one is."""
    end = len(ids)
    while end >= 2:
        window = ids[max(0, end - PROBE_TOKENS):end]
        if window not in taken:
            return window
        end -= PROBE_TOKENS // 2
    return None


def _relative_difference(got: torch.Tensor, want: torch.Tensor) -> float:
    """The largest difference between two [n] loss vectors, relative to ``want``'s (1 as the smallest scale)."""
    got, want = got.detach().float().cpu(), want.detach().float().cpu()
    return float(((got - want).abs() / want.abs().clamp(min=1.0)).max())


def tolerance(model: Any, samples: Sequence[EncodedExample], reference: PaddedForward,
              together: torch.Tensor) -> float:
    """How far (relative) correct packed losses may be from ``reference``'s on ``samples`` (``together``: its
    per-example losses over them all), in this precision.

    Two parts, the larger wins:

    * a floor per precision: FP32_TOLERANCE in fp32 (packed and padded differ by ~1e-7 there), and
      HALF_PRECISION_TOLERANCE under a half-precision autocast. Measured on the tiny Llama and SmolLM2-135M
      (CPU, bf16 autocast, the probes of chat data): the segments and mask paths gave the padded losses
      exactly (0 difference; CPU kernels round each token alike in every layout), while switching the
      attention kernel itself (sdpa -> eager, as CUDA's flash and varlen kernels differ from SDPA's) moved them
      by up to 1.8e-3 and 7.8e-3 (fp16: 4.7e-5, 8.7e-4). A plain causal mask over the packed row (every example
      attending to the ones before) moved them by 5.5e-2 and 0.40 (fp32 alike). 2e-2 sits ~2.5x from both.
    * the reference's own noise, NOISE_MARGIN times the difference between ``together`` and ``samples`` run
      each alone: what rounding alone does to these losses in the precision the model really computes in, which
      the plan does not always say (a bitsandbytes model on CUDA computes in its own dtype, or in int8 with
      outlier columns chosen per batch, whatever the autocast).
    """
    floor = HALF_PRECISION_TOLERANCE if reference.plan.autocast_dtype is not None else FP32_TOLERANCE
    alone = torch.cat([reference(model, [sample])[0] for sample in samples])
    return max(floor, NOISE_MARGIN * _relative_difference(together, alone))


@torch.no_grad()
def isolates(model: Any, packed: PackedForward, samples: Sequence[EncodedExample], reference: PaddedForward) -> bool:
    """Whether ``samples`` packed into one row give the per-example losses they give padded, one per row.

    Run in eval mode (no dropout), within :func:`tolerance`; attending across examples moves these losses
    far more.
    """
    if len(samples) < 2:
        return True
    training = model.training
    model.eval()
    try:
        got, counts = packed(model, samples)
        want, want_counts = reference(model, samples)
        allowed = tolerance(model, samples, reference, want)
    except (RuntimeError, ValueError, TypeError):
        return False
    finally:
        model.train(training)
    return bool(torch.equal(counts.cpu(), want_counts.cpu()) and _relative_difference(got, want) <= allowed)


def choose_attention(
    model: Any, data: Sequence[EncodedExample], pad_id: int, plan: DevicePlan, row_tokens: int | None = None,
) -> PackedAttention | None:
    """The first path of :func:`candidates` that :func:`isolates` probes cut from ``data``; None if none does, or
    if ``data`` holds several examples but not two distinct probes (nothing would show a path keeps them apart)."""
    samples = probes(data)
    if len(samples) < 2 <= len(data):
        return None
    reference = PaddedForward(pad_id, plan)
    for attention in candidates(model, plan):
        try:
            with packed_attention(model, attention):
                if isolates(model, PackedForward(pad_id, plan, row_tokens), samples, reference):
                    return attention
        except (RuntimeError, ValueError, ImportError):
            continue
    return None
