"""The library's rooms: the engine stands alone, and no module reaches into another's private names."""

import ast

from helpers import ROOT

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


# The rooms from the bottom up: a room imports only rooms on a lower floor (or itself), so no import runs back up.
FLOORS = {
    "engine": 0,
    "stats": 1,
    "plotting": 1,
    "inputs": 2,
    "run": 3,
    "candidates": 4,
    "analysis": 5,
    "scale": 5,
    "evaluation": 6,
    "validation": 7,
}


def _room(path):
    parts = path.relative_to(LIBRARY).parts
    return parts[0].removesuffix(".py")


def test_every_room_has_a_floor_and_a_face():
    for path in LIBRARY.iterdir():
        if path.is_dir() and (path / "__init__.py").exists():
            assert path.name in FLOORS, f"room {path.name}/ has no floor in FLOORS"
            assert ast.get_docstring(ast.parse((path / "__init__.py").read_text())), (
                f"{path.name}/__init__.py says nothing"
            )
        elif path.suffix == ".py" and path.name != "__init__.py":
            assert path.stem in FLOORS, f"flat module {path.name} has no floor in FLOORS"


def test_no_import_runs_back_up():
    for path in LIBRARY.rglob("*.py"):
        if path.parent == LIBRARY and path.name == "__init__.py":
            continue
        here = _room(path)
        package = list(path.relative_to(LIBRARY).parent.parts)
        for level, module, names in _imports(path):
            if level:
                target = (package[: len(package) - (level - 1)] + (module.split(".") if module else []))[:1]
                rooms = target or names
            elif module.startswith("influence."):
                rooms = [module.split(".")[1]]
            else:
                continue
            for room in rooms:
                if room != here and room in FLOORS:
                    assert FLOORS[room] < FLOORS[here], (
                        f"{path.relative_to(LIBRARY)} imports {room} from a higher floor"
                    )
