"""The dependency direction, enforced: every import in our packages is checked against the layer table
(the README's layout table says the same in prose). `infra` is at the bottom, `workflows` is pure,
`vision` is a leaf of image and model code, `activities` and `api` sit on top, `workers` and `cli` use
all of those (nothing imports `cli` but `bench` and `tests`), and `bench` and `tests` use everything."""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = ("infra", "workflows", "vision", "serving", "activities", "api", "workers", "cli", "edge", "bench",
               "tests")


@dataclass(frozen=True)
class Layer:
    may_import: frozenset[str]  # first-party packages or modules (a module names exactly that module)
    never: frozenset[str] = frozenset()  # third-party packages it must not import
    only_stdlib_and: frozenset[str] | None = None  # when set: no third-party package but these
    passed_through: frozenset[str] = field(default_factory=frozenset)  # inside imports_passed_through()


LAYERS: dict[str, Layer] = {
    "infra": Layer(frozenset({"infra"}),
                   never=frozenset({"ray", "fastapi", "starlette", "torch", "torchvision", "onnxruntime"})),
    # vision.boxes (pure standard library) is the one shape of a box: review consensus matches box sets by it.
    "workflows": Layer(frozenset({"workflows", "vision.boxes"}), only_stdlib_and=frozenset({"temporalio"}),
                       passed_through=frozenset({"activities"})),
    "vision": Layer(frozenset({"infra", "vision"}), never=frozenset({"ray", "temporalio", "fastapi", "starlette"})),
    "serving": Layer(frozenset({"infra", "vision", "serving"}), never=frozenset({"temporalio"})),
    "activities": Layer(frozenset({"infra", "vision", "workflows", "activities", "serving.client", "serving.schema"}),
                        never=frozenset({"fastapi", "starlette"})),
    "api": Layer(frozenset({"infra", "vision", "workflows", "api"}), never=frozenset({"ray", "torch", "onnxruntime"})),
    # The edge agent runs beside the cameras, away from the stack: image and model code, the bottom layer
    # and an HTTP client, never Temporal, Ray, the API's web framework or torch.
    "edge": Layer(frozenset({"infra", "vision", "edge"}),
                  never=frozenset({"temporalio", "ray", "fastapi", "starlette", "torch", "torchvision"})),
    "workers": Layer(frozenset(FIRST_PARTY) - {"cli"}),
    # The command line and the demo: on top of every layer that runs in production, under bench and tests.
    "cli": Layer(frozenset(FIRST_PARTY) - {"bench", "tests"}),
    "bench": Layer(frozenset(FIRST_PARTY)),
    "tests": Layer(frozenset(FIRST_PARTY)),
}


def _is_passthrough(node: ast.With) -> bool:
    return any("imports_passed_through" in ast.unparse(item.context_expr) for item in node.items)


def imported_modules(source: str, package: str) -> list[tuple[int, str, bool]]:
    """(line, absolute module name, inside imports_passed_through) of every import in a module."""
    found: list[tuple[int, str, bool]] = []

    def visit(node: ast.AST, passthrough: bool) -> None:
        if isinstance(node, ast.With):
            passthrough = passthrough or _is_passthrough(node)
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, passthrough) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((node.lineno, module, passthrough))
        for child in ast.iter_child_nodes(node):
            visit(child, passthrough)

    visit(ast.parse(source), False)
    return found


def violations(layer_name: str, source: str, package: str, where: str) -> list[str]:
    layer = LAYERS[layer_name]
    problems = []
    for line, module, passthrough in imported_modules(source, package):
        top = module.split(".")[0]
        if top == "__future__":
            continue
        if top in FIRST_PARTY:
            allowed = layer.may_import | (layer.passed_through if passthrough else frozenset())
            if not any(module == a or module.startswith(a + ".") for a in allowed):
                problems.append(f"{where}:{line}: {layer_name} imports {module}")
        elif top in layer.never:
            problems.append(f"{where}:{line}: {layer_name} imports {top}, which it must never use")
        elif layer.only_stdlib_and is not None and top not in sys.stdlib_module_names \
                and top not in layer.only_stdlib_and:
            problems.append(f"{where}:{line}: {layer_name} imports {top}; it may use only the standard library "
                            f"and {', '.join(sorted(layer.only_stdlib_and))}")
    return problems


def _modules() -> list[tuple[str, Path]]:
    return [(layer, path) for layer in LAYERS for path in sorted((ROOT / layer).rglob("*.py"))]


@pytest.mark.parametrize("layer, path", _modules(), ids=[str(p.relative_to(ROOT)) for _, p in _modules()])
def test_imports_follow_the_layers(layer: str, path: Path) -> None:
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    assert violations(layer, path.read_text(), package, str(path.relative_to(ROOT))) == []


def test_every_package_has_a_layer() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages <= set(LAYERS), f"packages without a row in LAYERS: {packages - set(LAYERS)}"


@pytest.mark.parametrize("layer, source, expected", [
    ("infra", "from api.deps import DbDep", "infra imports api.deps"),
    ("vision", "import ray", "vision imports ray"),
    ("workflows", "import httpx", "workflows imports httpx"),
    ("workflows", "from activities.reviews import ReviewActivities", "workflows imports activities.reviews"),
    ("activities", "from serving.classifier import Classifier", "activities imports serving.classifier"),
    ("api", "def f():\n    from workers.main import run_worker", "api imports workers.main"),
    ("api", "from cli.loop_story import make_keys", "api imports cli.loop_story"),
    ("infra", "def f():\n    from cli.main import app", "infra imports cli.main"),
    ("workers", "from cli.demo import demo_command", "workers imports cli.demo"),
    ("cli", "from bench.ingest import main", "cli imports bench.ingest"),
    ("cli", "from tests.polling import wait_until", "cli imports tests.polling"),
    ("edge", "from temporalio.client import Client", "edge imports temporalio"),
    ("edge", "from serving.backends.onnx import OnnxRuntimeBackend", "edge imports serving.backends.onnx"),
    ("edge", "from api.main import create_app", "edge imports api.main"),
    ("edge", "import torch", "edge imports torch"),
])
def test_the_check_catches_a_wrong_import(layer: str, source: str, expected: str) -> None:
    assert any(expected in v for v in violations(layer, source, layer, "x.py"))


def test_passed_through_activities_are_allowed_in_workflows() -> None:
    source = ("from temporalio import workflow\nwith workflow.unsafe.imports_passed_through():\n"
              "    from activities.reviews import ReviewActivities\n")
    assert violations("workflows", source, "workflows", "x.py") == []


def test_only_bench_and_tests_may_import_the_command_line() -> None:
    for name, layer in LAYERS.items():
        if name not in ("cli", "bench", "tests"):
            assert not any(a == "cli" or a.startswith("cli.") for a in layer.may_import), name
