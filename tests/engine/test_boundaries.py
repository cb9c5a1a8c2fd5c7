"""The engine's shape, kept as tests: no gRPC or protobuf in engine/, no context importing a store, and the
contexts depending on each other in one direction only."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "engine"
FORBIDDEN = ("grpc", "google.protobuf", "google.rpc", "learning")

# The shared kernels every context may use, and the bounded contexts with those each may import.
# golden: the golden-case format, which evaluations (lora) score and golden dataset versions (training) store
# json_input: how every context reads JSON from outside the process (too deep nesting a ValueError)
# thresholds: how every context compares a measured rate with a documented "at most" / "at least" (the gate, canaries,
# auto-rollback, online learning's spikes), a rounding error counting as on it
KERNELS = {"errors", "names", "domain", "splits", "telemetry", "periodic", "golden", "model_build", "json_input",
           "thresholds"}
CONTEXTS = {
    "jobs": set(),
    "feedback": set(),
    "registry": set(),
    "serving": set(),
    "training": {"jobs", "feedback", "registry"},
    "continual": {"jobs", "feedback", "registry", "training"},
    "lora": {"jobs", "registry", "serving"},
    "pipelines": {"jobs", "training", "lora"},  # runs train and roll out; the data sources are domain kernels
    "drift": {"registry"},
    # sessions train like a continuation (its EWC and replay) and are served like versions
    "online": {"jobs", "feedback", "registry", "training", "continual", "lora", "serving"},
    # documents into pairs a served model writes, checked by the evaluations' grounding, stored as datasets
    "preparation": {"jobs", "registry", "serving", "lora", "training"},
    "stores": {"jobs", "feedback", "registry", "training", "continual", "lora", "serving", "drift", "pipelines",
               "online", "preparation"},
}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "engine":  # from engine import telemetry
                names.update(f"engine.{alias.name}" for alias in node.names)
    return names


def test_engine_imports_neither_grpc_nor_protobuf() -> None:
    offenders = {
        f"{path.relative_to(ENGINE.parent)}: {name}"
        for path in ENGINE.rglob("*.py")
        for name in imported_modules(path)
        if name.endswith("_pb2")
        or "_pb2." in name
        or any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    }
    assert not offenders, sorted(offenders)


def test_engine_is_contexts_and_a_few_shared_kernels() -> None:
    loose = {p.stem for p in ENGINE.glob("*.py")} - {"__init__"}
    packages = {p.name for p in ENGINE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert loose <= KERNELS, f"loose modules beyond the shared kernels: {sorted(loose - KERNELS)}"
    assert packages == set(CONTEXTS), f"contexts changed: {sorted(packages ^ set(CONTEXTS))}"


def test_contexts_depend_in_one_direction_and_none_imports_a_store() -> None:
    offenders = []
    for context, allowed in CONTEXTS.items():
        for path in (ENGINE / context).rglob("*.py"):
            for name in imported_modules(path):
                parts = name.split(".")
                if parts[0] != "engine" or len(parts) < 2:
                    continue
                target = parts[1]
                if target in KERNELS or target == context or target in allowed:
                    continue
                offenders.append(f"{path.relative_to(ENGINE.parent)} imports {name}")
    assert not offenders, offenders
