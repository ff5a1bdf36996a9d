"""The library's rooms: the engine stands alone, and no module reaches into another's private names."""

import ast

from tiny import ROOT

LIBRARY = ROOT / "scripts" / "influence"


def _imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            yield node.level, node.module or "", [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield 0, alias.name, []


def test_the_engine_imports_nothing_outside_the_engine():
    for path in (LIBRARY / "engine").glob("*.py"):
        for level, module, _ in _imports(path):
            assert level <= 1, f"{path.name} imports from outside engine/: {'.' * level}{module}"
            assert not module.startswith("influence"), f"{path.name} imports {module}"


def test_no_module_imports_another_modules_private_names():
    for path in LIBRARY.rglob("*.py"):
        for _, module, names in _imports(path):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not private, f"{path.relative_to(LIBRARY)} imports {private} from {module}"


def test_the_library_never_imports_snakemake():
    for path in LIBRARY.rglob("*.py"):
        assert all(not module.startswith("snakemake") for _, module, _ in _imports(path)), path
