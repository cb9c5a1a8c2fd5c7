"""The reference backend's model: a base model plus named PEFT adapters, and its generation (transformers, CPU)."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.model_build import BUILDING
from engine.serving.reference_errors import HttpError

# A temperature this small is greedy decoding (vLLM's _SAMPLING_EPS): dividing the logits by less overflows them to
# inf, and sampling from that fails
GREEDY_BELOW = 1e-5


@dataclass(frozen=True)
class Generation:
    text: str
    tokens: tuple[str, ...]
    token_logprobs: tuple[float, ...]
    prompt_tokens: int
    finish_reason: str = "length"  # "stop" when the model ended its answer (EOS) or wrote a stop sequence


class ReferenceModel:
    """A base model plus named PEFT adapters; every method is thread-safe and blocking."""

    def __init__(self, model_dir: Path, served_name: str) -> None:
        from transformers import AutoTokenizer  # noqa: PLC0415 - heavy

        self.model_dir = model_dir
        self.served_name = served_name
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self._base = self._load_base()
        self._peft: Any = None
        self._paths: dict[str, str] = {}  # lora_name -> lora_path
        self._keys: dict[str, str] = {}  # lora_name -> PEFT adapter key (no dots allowed there)
        self._counter = 0
        self._lock = threading.Lock()
        # The longest sequence (prompt + answer) the model takes; None if its config does not say.
        self.context: int | None = getattr(self._base.config, "max_position_embeddings", None)

    def _load_base(self) -> Any:
        from transformers import AutoModelForCausalLM  # noqa: PLC0415 - heavy

        # transformers leaves PreTrainedModel.eval unannotated
        with BUILDING:
            return AutoModelForCausalLM.from_pretrained(self.model_dir).eval()  # type: ignore[no-untyped-call]

    def adapters(self) -> dict[str, str]:
        with self._lock:
            return dict(self._paths)

    def load(self, name: str, path: str) -> bool:
        """Load ``path`` as ``name``; False if that exact pair is already loaded (no file is read)."""
        with self._lock:
            if name in self._paths:
                if self._paths[name] == path:
                    return False
                raise HttpError(409, f"adapter {name!r} is already loaded from {self._paths[name]!r}")
            if not (Path(path) / "adapter_config.json").is_file():
                raise HttpError(400, f"{path!r} is not a PEFT adapter directory (no adapter_config.json)")
            self._counter += 1
            key = f"adapter{self._counter}"
            try:
                self._add(path, key)
            except Exception as exc:  # noqa: BLE001 - any load failure is the adapter's fault: 400
                raise HttpError(400, f"cannot load adapter {name!r} from {path!r}: {exc}") from exc
            self._paths[name], self._keys[name] = path, key
            return True

    def _add(self, path: str, key: str) -> None:
        """Add the adapter at ``path`` as ``key``; if that fails, what PEFT had injected for it is removed again, so
        a refused load leaves what is served exactly as it was."""
        from peft import PeftConfig, get_peft_model  # noqa: PLC0415

        if self._peft is not None:
            try:
                self._peft.load_adapter(path, adapter_name=key)
            except Exception:
                if key in self._peft.peft_config:
                    self._peft.delete_adapter(key)
                raise
            return
        # Not PeftModel.from_pretrained: it injects the LoRA layers into the base model before it reads the weights,
        # and when reading them fails keeps those layers, with no PeftModel to unload them from.
        config = PeftConfig.from_pretrained(path)
        config.inference_mode = True
        try:
            peft = get_peft_model(self._base, config, adapter_name=key)
        except Exception:
            self._base = self._load_base()  # injecting failed part-way (e.g. an unsupported target module)
            raise
        try:
            peft.load_adapter(path, adapter_name=key)
        except Exception:
            self._base = peft.unload()  # strips the LoRA layers: the plain base model again
            raise
        self._peft = peft.eval()

    def unload(self, name: str) -> None:
        with self._lock:
            if name not in self._paths:
                raise HttpError(404, f"adapter {name!r} is not loaded")
            key = self._keys.pop(name)
            del self._paths[name]
            if self._keys:
                self._peft.delete_adapter(key)
            else:  # PEFT cannot run with zero adapters: strip the LoRA layers instead
                self._base, self._peft = self._peft.unload(), None

    def resolve(self, model: str) -> str | None:
        """The lora_name for ``model``, None for the base model; HttpError(404) if unknown."""
        if model in (self.served_name, str(self.model_dir)):
            return None
        if model in self._paths:
            return model
        raise HttpError(404, f"model {model!r} does not exist")

    def room(self, prompt_tokens: int) -> int | None:
        """How many tokens the model can still write after a prompt of ``prompt_tokens`` (None: no known limit);
        HttpError(400) if the prompt alone fills its context (vLLM's words)."""
        if self.context is None:
            return None
        if prompt_tokens >= self.context:
            raise HttpError(400, f"This model's maximum context length is {self.context} tokens. However, your "
                                 f"request has {prompt_tokens} input tokens, leaving no room for an answer. Please "
                                 "reduce the length of the input.")
        return self.context - prompt_tokens

    def generate(self, model: str, prompt_ids: list[int], max_tokens: int, streamer: Any = None, *,
                 stop: tuple[str, ...] = (), cancel: threading.Event | None = None,
                 temperature: float | None = None, top_p: float | None = None,
                 seed: int | None = None) -> Generation:
        """Greedy generation when ``temperature`` is None or below GREEDY_BELOW, else sampling with ``temperature``
        and ``top_p`` (reproducible for a ``seed``), ending at the model's context, at the first of ``stop`` (left out
        of the text, as OpenAI does) or once ``cancel`` is set; ``streamer`` (transformers' TextIteratorStreamer) hears
        the text as it comes."""
        import torch  # noqa: PLC0415
        from transformers import StoppingCriteriaList  # noqa: PLC0415

        room = self.room(len(prompt_ids))
        # top_k=0: no top-k cut (OpenAI has none; a model's generation config may set one)
        sampling = dict(do_sample=True, temperature=temperature, top_p=1.0 if top_p is None else top_p,
                        top_k=0) if temperature is not None and temperature >= GREEDY_BELOW else dict(do_sample=False)
        with self._lock:
            lora = self.resolve(model)
            ids = torch.tensor([prompt_ids])
            kwargs = dict(max_new_tokens=max_tokens if room is None else min(max_tokens, room), output_logits=True,
                          return_dict_in_generate=True, attention_mask=torch.ones_like(ids),
                          pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                          streamer=streamer, stop_strings=list(stop) or None, tokenizer=self.tokenizer,
                          stopping_criteria=StoppingCriteriaList([_until(cancel)] if cancel is not None else []),
                          **sampling)
            # transformers samples with torch's global generator (generate takes none of its own): a seeded
            # request forks it, seeds the fork and restores it after; the lock keeps other generations out.
            seeded = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
            with torch.inference_mode(), seeded:
                if seed is not None:
                    torch.manual_seed(seed)
                if lora is None and self._peft is not None:
                    with self._peft.disable_adapter():
                        out = self._peft.generate(input_ids=ids, **kwargs)
                elif lora is None:
                    out = self._base.generate(input_ids=ids, **kwargs)
                else:
                    self._peft.set_adapter(self._keys[lora])
                    out = self._peft.generate(input_ids=ids, **kwargs)
        new = out.sequences[0, len(prompt_ids):].tolist()
        # the model's own log-probabilities (its logits, not those that temperature and top_p reshaped), as vLLM's
        logprobs = [
            float(torch.log_softmax(logit[0].float(), dim=-1)[tok]) for logit, tok in zip(out.logits, new, strict=False)
        ]
        eos = self.tokenizer.eos_token_id
        text_ids = [t for t in new if t != eos]
        # One sequence decodes to one str; transformers types the batch case's list[str] in too.
        text, stopped = until_stop(self.tokenizer.decode(text_ids, skip_special_tokens=True), stop)  # type: ignore[arg-type]
        return Generation(
            text=text,
            tokens=tuple(self.tokenizer.convert_ids_to_tokens(new)),
            token_logprobs=tuple(logprobs),
            prompt_tokens=len(prompt_ids),
            finish_reason="stop" if stopped or eos in new else "length",
        )


def _until(cancel: threading.Event) -> Any:
    """A stopping criterion for generate, true once ``cancel`` is set."""
    import torch  # noqa: PLC0415
    from transformers import StoppingCriteria  # noqa: PLC0415

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool,  # type: ignore[return-value]
                              device=input_ids.device)

    return Cancelled()


def until_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """``text`` up to the first stop sequence in it, and whether there was one."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)

