"""Find, by parsing the source with ``ast``, every error reason the code raises.

A *sink* is a callable whose argument is an error reason: the error classes (``EngineError`` and
the client's ``LearningEngineError`` with their subclasses), ``JobFailure`` (a job's stored error),
``status_proto`` (a status built by hand), ``ViolationCollector.raise_if_any`` and the CLI's
``fail``. A function that passes one of its own parameters on as a sink's reason becomes a sink
too (found to a fixed point), so helpers such as ``check_same_shapes(..., reason=...)`` are
followed to their callers instead of being mistaken for dynamic reasons.

At each call of a sink the reason is one of:
- a string literal (or a conditional of literals, a local or module name bound only to literals,
  or a catalogue value such as ``ERROR_REASON_USAGE``, which the client uses): a *raised* reason;
- a parameter of the enclosing function that is itself forwarded: nothing to record here;
- anything else: a *dynamic* site, reported with its function and expression so that the test
  can list each one with why it is not a new reason.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE_PREFIX = "ERROR_REASON_"

# (module, qualified name) of a callable -> where its reason goes: (position, keyword).
# Positions count call arguments (without ``self``); None: keyword only.
Key = tuple[str, str]
SEEDS: dict[Key, tuple[int | None, str]] = {
    ("engine.errors", "EngineError"): (0, "reason"),
    ("engine.jobs.core", "JobFailure"): (1, "reason"),
    ("server.errors", "status_proto"): (None, "reason"),
    ("learning_engine.errors", "LearningEngineError"): (None, "reason"),
    ("learning_engine.cli.common", "fail"): (None, "reason"),
}


@dataclass(frozen=True)
class Site:
    path: str
    line: int
    function: str  # qualified name of the enclosing function ("" at module level)
    expression: str  # the reason argument as written (for a dynamic site)


@dataclass
class Scan:
    raised: dict[str, list[Site]] = field(default_factory=dict)
    dynamic: list[Site] = field(default_factory=list)
    sinks: set[Key] = field(default_factory=set)
    missing_seeds: list[Key] = field(default_factory=list)  # seeds not defined in the scanned code


@dataclass
class _Module:
    name: str
    path: str
    tree: ast.Module
    imports: dict[str, Key] = field(default_factory=dict)  # local name -> (module, name)
    module_aliases: dict[str, str] = field(default_factory=dict)  # local name -> module
    constants: dict[str, set[str]] = field(default_factory=dict)  # module-level NAME = "literal"


def _module_name(path: Path, source_root: Path) -> str:
    return ".".join(path.relative_to(source_root).with_suffix("").parts).removesuffix(".__init__")


def _load(source_roots: dict[Path, list[str]], root: Path) -> dict[str, _Module]:
    modules: dict[str, _Module] = {}
    for source_root, packages in source_roots.items():
        for package in packages:
            for path in sorted((source_root / package).rglob("*.py")):
                name = _module_name(path, source_root)
                if ".v1." in f"{name}." and name.startswith("learning."):
                    continue  # generated code raises nothing
                tree = ast.parse(path.read_text(), filename=str(path))
                modules[name] = _Module(name, str(path.relative_to(root)), tree)
    for module in modules.values():
        package = module.name if module.path.endswith("__init__.py") else module.name.rpartition(".")[0]
        for node in ast.walk(module.tree):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                for alias in node.names:
                    local = alias.asname or alias.name
                    if f"{base}.{alias.name}" in modules:
                        module.module_aliases[local] = f"{base}.{alias.name}"
                    else:
                        module.imports[local] = (base, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    module.module_aliases[alias.asname or alias.name] = alias.name
        for node in module.tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                literals = _literals(node.value)
                if literals:
                    module.constants[node.targets[0].id] = literals
    return modules


def _literals(node: ast.expr | None) -> set[str] | None:
    """The strings an expression can only be, or None if it is not made of literals alone."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    if name.startswith(CATALOGUE_PREFIX):
        return {name.removeprefix(CATALOGUE_PREFIX)}
    if isinstance(node, ast.IfExp):
        body, orelse = _literals(node.body), _literals(node.orelse)
        return body | orelse if body is not None and orelse is not None else None
    return None


def _functions(tree: ast.Module) -> Iterator[tuple[str, str | None, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """(qualified name, enclosing class, node) of every function, nested ones included."""

    def walk(node: ast.AST, prefix: str, cls: str | None) -> Iterator:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.", child.name)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                yield f"{prefix}{child.name}", cls, child
                yield from walk(child, f"{prefix}{child.name}.", cls)

    yield from walk(tree, "", None)


class _Resolver:
    def __init__(self, modules: dict[str, _Module]) -> None:
        self.modules = modules
        self.defined: dict[str, set[str]] = {}  # module -> top-level and Class.method names
        self.methods: dict[str, set[Key]] = {}  # method name -> every (module, Class.method)
        self.bases: dict[Key, list[ast.expr]] = {}
        for module in modules.values():
            names = self.defined.setdefault(module.name, set())
            for node in module.tree.body:
                if isinstance(node, ast.ClassDef):
                    names.add(node.name)
                    self.bases[(module.name, node.name)] = node.bases
                elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    names.add(node.name)
            for qualname, cls, _node in _functions(module.tree):
                names.add(qualname)
                if cls is not None and qualname.count(".") == 1:
                    self.methods.setdefault(qualname.split(".")[1], set()).add((module.name, qualname))

    def _follow(self, key: Key, depth: int = 0) -> Key:
        module = self.modules.get(key[0])
        if module is None or key[1] in self.defined.get(key[0], set()) or depth > 5:
            return key
        if key[1] in module.imports:
            return self._follow(module.imports[key[1]], depth + 1)
        return key

    def resolve(self, module: _Module, func: ast.expr, cls: str | None, scope: str = "") -> set[Key]:
        if isinstance(func, ast.Name):
            parts = scope.split(".") if scope else []
            for depth in range(len(parts), 0, -1):  # a function nested in the caller's scopes
                nested = ".".join([*parts[:depth], func.id])
                if nested in self.defined.get(module.name, set()):
                    return {(module.name, nested)}
            if func.id in self.defined.get(module.name, set()):
                return {(module.name, func.id)}
            if func.id in module.imports:
                return {self._follow(module.imports[func.id])}
            return set()
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            owner = func.value.id
            if owner in module.module_aliases:
                return {self._follow((module.module_aliases[owner], func.attr))}
            if owner in ("self", "cls") and cls is not None:
                return {(module.name, f"{cls}.{func.attr}")}
        if isinstance(func, ast.Attribute):
            return self.methods.get(func.attr, set())
        return set()

    def class_chain(self, key: Key) -> Iterator[Key]:
        seen: set[Key] = set()
        todo = [key]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            yield current
            module = self.modules.get(current[0])
            for base in self.bases.get(current, []):
                if module is not None:
                    todo.extend(self.resolve(module, base, None))


def _argument(call: ast.Call, slot: tuple[int | None, str]) -> ast.expr | None:
    position, keyword = slot
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    if position is not None and position < len(call.args):
        arg = call.args[position]
        return None if isinstance(arg, ast.Starred) else arg
    return None


def _parameter_slot(node: ast.FunctionDef | ast.AsyncFunctionDef, name: str, method: bool) -> tuple[int | None, str]:
    positional = [a.arg for a in (*node.args.posonlyargs, *node.args.args)]
    if method and positional and positional[0] in ("self", "cls"):
        positional = positional[1:]
    return (positional.index(name) if name in positional else None, name)


def _parameter_owner(functions: dict[str, tuple[str | None, ast.AST]], scope: str, name: str) -> str | None:
    """The innermost function around ``scope`` (itself included) that has a parameter ``name``."""
    parts = scope.split(".") if scope else []
    for depth in range(len(parts), 0, -1):
        qualname = ".".join(parts[:depth])
        if qualname in functions:
            node = functions[qualname][1]
            if any(isinstance(a, ast.arg) and a.arg == name for a in ast.walk(node.args)):
                return qualname
            if _local_literals(node, name) is not None:
                return None  # bound locally, not a parameter
    return None


def _local_literals(function: ast.AST, name: str) -> set[str] | None:
    """The literals a local name is bound to in a function, if every binding is a literal."""
    values: set[str] = set()
    simple: set[int] = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            literals = _literals(node.value)
            if literals is None:
                return None
            values |= literals
            simple.update(id(t) for t in node.targets)
    others = [
        node
        for node in ast.walk(function)
        if isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Store) and id(node) not in simple
    ]
    return values if values and not others else None


def scan(source_roots: dict[Path, list[str]], root: Path = ROOT) -> Scan:
    """Every reason raised in ``source_roots`` ({directory: [top-level packages]}); paths relative to root."""
    modules = _load(source_roots, root)
    resolver = _Resolver(modules)
    slots: dict[Key, tuple[int | None, str]] = dict(SEEDS)
    for key in list(resolver.bases):  # subclasses of the error classes take the reason where their base does
        for base in resolver.class_chain(key):
            if base in SEEDS:
                slots[key] = SEEDS[base]
                break
    functions = {m.name: {q: (c, f) for q, c, f in _functions(m.tree)} for m in modules.values()}
    result = Scan()
    changed = True
    while changed:  # a parameter forwarded as a sink's reason makes its function a sink
        changed = False
        result = Scan(sinks=set(slots))
        for module in modules.values():
            calls = _calls_by_function(module)
            for qualname, cls, function, call in calls:
                for target in resolver.resolve(module, call.func, cls, qualname):
                    if target not in slots:
                        continue
                    arg = _argument(call, slots[target])
                    if arg is None:
                        continue
                    site = Site(module.path, call.lineno, qualname, ast.unparse(arg))
                    literals = _literals(arg)
                    if literals is None and isinstance(arg, ast.Name):
                        owner = _parameter_owner(functions[module.name], qualname, arg.id)
                        if owner is not None:  # a parameter (of this function or one it is nested in)
                            key = (module.name, owner)
                            if key not in slots:
                                owner_cls, owner_node = functions[module.name][owner]
                                slots[key] = _parameter_slot(owner_node, arg.id, owner_cls is not None)
                                changed = True
                            continue
                        literals = (_local_literals(function, arg.id) if function else None) or module.constants.get(
                            arg.id
                        )
                    if literals is None:
                        result.dynamic.append(site)
                    else:
                        for reason in literals:
                            result.raised.setdefault(reason, []).append(site)
                    break
    # A seed of a scanned package that is not defined there any more has moved: the scan would miss its sites.
    packages = {name.split(".")[0] for name in modules}
    result.missing_seeds = [
        key for key in SEEDS if key[0].split(".")[0] in packages and key[1] not in resolver.defined.get(key[0], set())
    ]
    return result


def _calls_by_function(module: _Module) -> list[tuple[str, str | None, ast.FunctionDef | None, ast.Call]]:
    """Every call with its innermost enclosing function (None at module or class level)."""
    owner: dict[int, tuple[str, str | None, ast.FunctionDef]] = {}
    for qualname, cls, function in _functions(module.tree):
        for node in ast.walk(function):
            if isinstance(node, ast.Call):
                owner[id(node)] = (qualname, cls, function)  # inner functions come later and win
    calls = []
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Call):
            qualname, cls, function = owner.get(id(node), ("", None, None))
            calls.append((qualname, cls, function, node))
    return calls
