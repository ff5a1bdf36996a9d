"""The README's code map stays true: every library module, rule file and rule script is named in it."""

import re

from helpers import ROOT

LIBRARY = ROOT / "scripts" / "influence"


def code_map() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Code map")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def section(title: str) -> str:
    text = code_map()
    start = text.index(f"**{title}**")
    end = text.find("\n**", start + 1)
    return text[start : end if end > 0 else None]


def room_blocks() -> dict[str, str]:
    """{room: its bullet block} of the library section; flat modules are named in the section itself."""
    blocks = re.split(r"\n(?=- `)", section("Library"))
    return {m.group(1): block for block in blocks if (m := re.match(r"- `(\w+)/`", block))}


def test_every_library_module_is_named_in_its_rooms_line():
    blocks, library = room_blocks(), section("Library")
    for path in sorted(LIBRARY.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        parts = path.relative_to(LIBRARY).parts
        if len(parts) == 1:
            assert f"`{path.name}`" in library, f"{path.name} is missing from the README's code map"
        else:
            assert parts[0] in blocks, f"room {parts[0]}/ is missing from the README's code map"
            assert f"`{path.name}`" in blocks[parts[0]] or f"`{'/'.join(parts[1:])}`" in blocks[parts[0]], (
                f"{'/'.join(parts)} is missing from the README's code map"
            )


def test_every_rule_file_and_rule_script_is_named():
    rules = section("Rules")
    for path in sorted((ROOT / "rules").rglob("*.smk")):
        assert f"`{path.relative_to(ROOT / 'rules')}`" in rules, (
            f"{path.relative_to(ROOT)} is missing from the code map"
        )
    scripts = section("Scripts")
    for path in sorted((ROOT / "scripts").glob("*.py")):
        assert f"`{path.stem}`" in scripts, f"scripts/{path.name} is missing from the README's code map"
