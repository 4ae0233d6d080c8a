"""The layout holds: packages depend downward only, no import cycles, none hidden, small modules.

Read from the source (every `import` statement, wherever it is), so an import moved into a
function to dodge a cycle is still seen, and then refused on its own.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: What each package may import. The domain imports none of them (see tests/domain/test_purity.py
#: for what else it may not import); `bootstrap` assembles everything below the command line.
MAY_IMPORT: dict[str, set[str]] = {
    "domain": set(),
    "adapters": {"domain"},
    "application": {"domain", "adapters"},
    "projections": {"domain", "adapters", "application"},
    "workers": {"domain", "adapters", "application", "projections"},
    "api": {"domain", "adapters", "application", "projections"},
    "bootstrap": {"domain", "adapters", "application", "projections", "workers", "api"},
    "cli": {"domain", "adapters", "application", "projections", "workers", "api", "bootstrap"},
}
#: Lines a module may have (generated code aside: there is none under src/).
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> Iterator[tuple[ast.stmt, str, bool]]:
    """Each import of a module of ours: (statement, module, whether inside a function)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            inside.update(id(child) for child in ast.walk(node) if child is not node)
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from a import b` imports `a`, and `a.b` when b is a module of its own.
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        for name in names:
            if name in MODULES:
                yield node, name, id(node) in inside


def _graph() -> dict[str, set[str]]:
    # A module's own packages are imported before it anyway (`from api.dashboard import
    # views` inside api.dashboard.* names its package, not a cycle).
    return {
        module: {
            target
            for _, target, _ in _imports(path)
            if target != module and not module.startswith(f"{target}.")
        }
        for module, path in MODULES.items()
    }


def _cycle_from(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    state: dict[str, str] = {}
    trail: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        trail.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return [*trail[trail.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        state[module] = "done"
        trail.pop()
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_no_module_imports_one_that_imports_it_back() -> None:
    cycle = _cycle_from(_graph())
    assert cycle is None, " → ".join(cycle or [])


def test_each_package_imports_only_the_packages_below_it() -> None:
    upward = []
    for module, path in MODULES.items():
        package = module.split(".")[0]
        for node, target, _ in _imports(path):
            other = target.split(".")[0]
            if other != package and other not in MAY_IMPORT[package]:
                upward.append(f"{path.relative_to(SRC)}:{node.lineno} imports {target}")
    assert upward == []


def test_every_package_has_its_place_in_the_layering() -> None:
    packages = {module.split(".")[0] for module in MODULES}
    assert packages == set(MAY_IMPORT)


def test_imports_are_at_the_top_of_a_module_not_hidden_in_functions() -> None:
    hidden = [
        f"{path.relative_to(SRC)}:{node.lineno} imports {target}"
        for path in MODULES.values()
        for node, target, in_function in _imports(path)
        if in_function
    ]
    assert hidden == []


#: The read models' pure parts: folds, the audit chain, row shapes, queries. What they import
#: of ours, all the way down, does no I/O either. (The generation follower and the rebuild
#: sequence are handed their stores; persistence and messaging live beside them.)
PURE_READ_MODEL_MODULES = (
    "projections.key_lookup",
    "projections.key_listing",
    "projections.key_lookup_compact",
    "projections.key_lookup_rows",
    "projections.audit_chain",
    "projections.request_audit",
    "projections.request_audit_query",
    "projections.usage",
    "projections.usage_retention",
    "projections.usage_events",
    "projections.usage_org",
    "projections.usage_query",
    "projections.webhook_deliveries",
    "projections.webhook_delivery_views",
)
#: What does I/O: databases, messaging, HTTP, the library's recorders, our adapters (but the
#: request events' wire structs, which the audit fold decodes, and settings).
IO_IMPORTS = ("sqlite3", "psycopg", "psycopg_pool", "nats", "redis", "litestar", "granian")
IO_IMPORTS_OF_OURS_ALLOWED = {"adapters.request_events"}


def _third_party_imports(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def _reached_from(module: str, graph: dict[str, set[str]]) -> set[str]:
    """`module` and every module of ours it imports, directly or not (not past an allowed one)."""
    reached, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current not in reached:
            reached.add(current)
            if current not in IO_IMPORTS_OF_OURS_ALLOWED:
                todo.extend(graph[current])
    return reached


def test_the_read_models_pure_parts_do_no_io() -> None:
    graph = _graph()
    impure = set()
    for pure in PURE_READ_MODEL_MODULES:
        for module in _reached_from(pure, graph) - IO_IMPORTS_OF_OURS_ALLOWED:
            for line, name in _third_party_imports(MODULES[module]):
                root = name.split(".")[0]
                library_io = root in IO_IMPORTS or name.startswith(
                    ("eventsourcing.sqlite", "eventsourcing.postgres", "eventsourcing.persistence")
                )
                ours_io = root == "adapters" and name not in IO_IMPORTS_OF_OURS_ALLOWED
                if library_io or ours_io:
                    impure.add(f"{module}:{line} imports {name} (reached from {pure})")
    assert sorted(impure) == []


#: The packages that are handed their stores, never open one: the composition root
#: (`bootstrap`) opens them from settings.
HANDED_THEIR_STORES = ("workers",)
#: The modules that open stores from settings.
STORE_OPENERS = (
    "application.stores",
    "projections.generation_store",
    "projections.key_lookup_view",
    "projections.live_key_lookup",
    "projections.request_audit_live",
    "projections.request_audit_store",
)


#: What opens a store when called or built, besides the `open_*` functions.
OPENING_NAMES = {"LiveKeyLookupView", "LiveRequestAuditStore", "live_audit_follower"}


def _opens_stores(name: str) -> bool:
    return name.startswith("open_") or name in OPENING_NAMES


def test_workers_and_projections_operations_open_no_store_of_their_own() -> None:
    handed = [
        module
        for module in MODULES
        if module.startswith(tuple(f"{p}." for p in HANDED_THEIR_STORES))
        or module.endswith("_projection")
    ]
    opening = sorted(
        f"{MODULES[module].relative_to(SRC)}:{node.lineno} imports {target}"
        for module in handed
        for node, target, _ in _imports(MODULES[module])
        if target in STORE_OPENERS
        and not (
            isinstance(node, ast.ImportFrom)
            and all(not _opens_stores(alias.name) for alias in node.names)
        )
    )
    assert opening == []


def test_no_module_is_longer_than_one_sitting() -> None:
    long = {
        str(path.relative_to(SRC)): lines
        for path in MODULES.values()
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_checks_see_a_cycle_when_there_is_one() -> None:
    assert _cycle_from({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle_from({"a": {"b"}, "b": set()}) is None
