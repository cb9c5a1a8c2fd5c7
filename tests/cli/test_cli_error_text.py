"""An error's text is printed as the server wrote it: a field such as
``adapter_model.safetensors[base_model.model.layers.0.self_attn.q_proj.lora_A.weight]`` (the tensor an import refuses)
lost its ``[...]``, which Rich read as a style tag, so every violation named only the file."""

from __future__ import annotations

import grpc
import pytest
import typer

from learning_engine.cli.common import Options, fail

FIELD = "adapter_model.safetensors[base_model.model.layers.0.self_attn.q_proj.lora_A.weight]"


def test_brackets_in_an_error_are_printed_as_they_are(capsys) -> None:
    with pytest.raises(typer.Exit) as ended:
        fail(Options(target="", token=None, json=False, timeout=1.0, tls=None), grpc.StatusCode.INVALID_ARGUMENT,
             f"{FIELD}: is I32 [bold]", reason="INVALID_ADAPTER", violations=[(FIELD, "is I32, not a float [red]")])
    assert ended.value.exit_code == 3
    printed = capsys.readouterr().err
    assert f"{FIELD}: is I32 [bold]" in printed and f"  - {FIELD}: is I32, not a float [red]" in printed, printed
