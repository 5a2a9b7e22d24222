"""The package's import graph keeps the architecture's arrows (docs/ARCHITECTURE.md).

Every module's imports are read from its source (`ast`, nothing is imported):
at module level, inside functions, and under `if TYPE_CHECKING:` alike, since
a type-only import is still a dependency a reader has to follow. The layers:

    errors, _version, shapes         import nothing of wsserver (the leaves)
    config/                          the leaves only
    protocol/                        the leaves
    core/                            protocol and the leaves (config only for types)
    storage/                         the leaves
    ops/                             protocol, config and the leaves
    tokens                           core's Identity, protocol, config, the leaves
    net/                             protocol, core, storage, ops, tokens, config, the leaves
    api/                             core's commands and values, net.http, ops,
                                     protocol, config, the leaves
    entry points                     anything (wsserver/__init__, __main__, embed)
    client/                          nothing of the server

and, besides: no import circle between modules of the package; only the hub
actor (`wsserver.net.actor`) imports `wsserver.core.hub`; the sans-IO layers
(core/, protocol/, and the shapes they structure inputs with) import neither
trio nor any WebSocket or HTTP I/O library.

`shapes` is a leaf because the scalar rules it says once are the
configuration's as well as the wire format's and the HTTP API's, and
`config` may import nothing but leaves.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "wsserver"


@attrs.frozen
class Import:
    """One import in one module: what it names, and where it stands."""

    source: str  # the importing module
    target: str  # the wsserver module imported, or the top-level name of another package
    type_only: bool  # under `if TYPE_CHECKING:`
    line: int


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str:
    """The package module a dotted name lives in (`wsserver.core.hub.Hub` -> `wsserver.core.hub`)."""
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str) -> Iterator[Import]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))

    def walk(node: ast.AST, type_only: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from walk_stmt(stmt, True)
                for stmt in child.orelse:
                    yield from walk_stmt(stmt, type_only)
            else:
                yield from walk_stmt(child, type_only)

    def walk_stmt(node: ast.AST, type_only: bool) -> Iterator[Import]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield _import(alias.name, type_only, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{module}: relative import"
            base = node.module or ""
            if base == "wsserver" or base.startswith("wsserver."):
                for alias in node.names:  # `from wsserver.api import seed001` names a module
                    yield _import(f"{base}.{alias.name}", type_only, node.lineno)
            else:
                yield _import(base, type_only, node.lineno)
        else:
            yield from walk(node, type_only)

    def _import(name: str, type_only: bool, line: int) -> Import:
        if name == "wsserver" or name.startswith("wsserver."):
            return Import(module, _resolve(name), type_only, line)
        return Import(module, name.partition(".")[0], type_only, line)

    yield from walk(tree, False)


IMPORTS = [imp for module in MODULES for imp in _imports(module)]
INTERNAL = [imp for imp in IMPORTS if imp.target.startswith("wsserver")]


def layer(module: str) -> str:
    """The layer a package module belongs to."""
    if module in ("wsserver", "wsserver.__main__", "wsserver.embed"):
        return "entry"
    if module == "wsserver.shapes" or module.startswith("wsserver.shapes."):
        return "shapes"
    if module in ("wsserver.errors", "wsserver._version", "wsserver.tokens"):
        return module.removeprefix("wsserver.").lstrip("_")
    name = module.split(".")[1]
    assert name in ("config", "protocol", "core", "storage", "ops", "net", "api", "client"), module
    return name


LEAVES = {"errors", "version", "shapes"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "version": set(),
    "shapes": {"shapes"},
    "config": LEAVES | {"config"},
    "protocol": LEAVES | {"protocol"},
    "core": LEAVES | {"protocol", "core"},
    "storage": LEAVES | {"storage"},
    "ops": LEAVES | {"config", "protocol", "ops"},
    "tokens": LEAVES | {"config", "protocol", "core"},
    "net": LEAVES | {"config", "protocol", "core", "storage", "ops", "tokens", "net"},
    "api": LEAVES | {"config", "protocol", "core", "ops", "net", "api"},
    "client": {"version", "client"},
}
"""Which layers each layer may import (the narrower rules below come on top)."""

API_MAY_USE = {
    "wsserver.core.commands",
    "wsserver.core.admin_commands",
    "wsserver.core.webhook_commands",
    "wsserver.core.identity",
    "wsserver.net.http",
}
"""What the HTTP API may import of the core and the network layer: the commands
and the values they carry, and the HTTP plumbing it is served by."""

TOKENS_MAY_USE = {"wsserver.core.identity"}


def _where(imp: Import) -> str:
    return f"{imp.source} -> {imp.target} (line {imp.line}{', for types' if imp.type_only else ''})"


def test_every_module_is_in_a_layer_and_the_walk_sees_its_imports() -> None:
    for module in MODULES:
        layer(module)
    seen = {(imp.source, imp.target) for imp in INTERNAL}
    assert ("wsserver.net.actor", "wsserver.core.hub") in seen
    assert ("wsserver.core.commands", "wsserver.config") in seen  # under TYPE_CHECKING
    assert ("wsserver.embed", "wsserver.net.server") in seen
    assert ("wsserver.config", "wsserver.config.loading") in seen  # the package's re-exports
    assert ("wsserver.net.server", "wsserver.ops.process") in seen  # the process runs the server


def test_imports_follow_the_layer_arrows() -> None:
    wrong = []
    for imp in INTERNAL:
        source, target = layer(imp.source), layer(imp.target)
        allowed = ALLOWED.get(source)
        if allowed is None:  # an entry point
            continue
        if source == "core" and target == "config" and imp.type_only:
            continue  # the core reads a Config it is given; it never loads one
        if target not in allowed:
            wrong.append(_where(imp))
    assert wrong == []


def test_the_api_uses_only_the_cores_commands_and_values_and_net_http() -> None:
    wrong = [
        _where(imp)
        for imp in INTERNAL
        if layer(imp.source) == "api"
        and layer(imp.target) in ("core", "net")
        and imp.target not in API_MAY_USE
    ]
    assert wrong == []


def test_tokens_use_only_the_cores_identity() -> None:
    wrong = [
        _where(imp)
        for imp in INTERNAL
        if imp.source == "wsserver.tokens" and layer(imp.target) == "core" and imp.target not in TOKENS_MAY_USE
    ]
    assert wrong == []


def test_only_the_hub_actor_holds_the_hub() -> None:
    holders = sorted({imp.source for imp in INTERNAL if imp.target == "wsserver.core.hub"})
    assert holders == ["wsserver.net.actor"]


def test_no_import_circle_between_modules_of_the_package() -> None:
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for imp in INTERNAL:
        if imp.target != imp.source:
            graph[imp.source].add(imp.target)
    circles = []
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(module: str) -> None:
        path.append(module)
        on_path.add(module)
        for target in sorted(graph[module]):
            if target in on_path:
                circles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in done:
                visit(target)
        on_path.discard(module)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module)
    assert circles == []


@pytest.mark.parametrize("package", ["wsserver.core", "wsserver.protocol", "wsserver.shapes"])
def test_the_sans_io_layers_import_no_io_library(package: str) -> None:
    io_libraries = {"trio", "trio_websocket", "h11", "wsproto", "socket", "asyncio", "selectors"}
    wrong = [
        _where(imp)
        for imp in IMPORTS
        if (imp.source == package or imp.source.startswith(package + "."))
        and imp.target in io_libraries
    ]
    assert wrong == []
