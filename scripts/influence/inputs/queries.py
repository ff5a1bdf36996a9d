"""Query files: a YAML list of {id, prompt, completion, tags}."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Query:
    """One measurement: log p(completion | prompt). Tags (lang, group, order, ...) pair variants."""

    id: str
    prompt: str
    completion: str
    tags: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.prompt + self.completion


def load_queries(path: str | Path) -> list[Query]:
    """Parse and validate a query file; errors name the file, the entry and the field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"query file {path} does not exist.")
    try:  # always UTF-8, whatever the locale (a C locale would otherwise refuse emoji and accents)
        entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: byte offset {error.start} is not UTF-8; save the query file as UTF-8.") from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error)
        raise ValueError(f"{where}: not valid YAML ({problem}); expected a list of queries.") from None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty YAML list of queries with id, prompt, completion.")
    queries, seen = [], set()
    for index, entry in enumerate(entries):
        where = f"{path}: query #{index + 1}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is not a mapping.")
        unknown = set(entry) - {"id", "prompt", "completion", "tags"}
        if unknown:
            raise ValueError(f"{where} has unknown fields {sorted(unknown)}; allowed: id, prompt, completion, tags.")
        for key in ("id", "prompt", "completion"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise ValueError(f"{where} ({entry.get('id', '?')}): field {key!r} must be a non-empty string.")
        if entry["id"] in seen:
            raise ValueError(f"{where}: duplicate id {entry['id']!r}.")
        tags = entry.get("tags", {}) or {}
        if not isinstance(tags, dict):
            raise ValueError(
                f"{where} ({entry['id']}): 'tags' must be a mapping such as {{lang: en, group: capitals}}."
            )
        seen.add(entry["id"])
        queries.append(Query(entry["id"], entry["prompt"], entry["completion"], {k: str(v) for k, v in tags.items()}))
    return queries


def english_originals_first(queries: list[Query], n: int) -> list[Query]:
    """The first `n` queries, English originals (tags lang en, order original) before the rest."""

    def is_original(q: Query) -> bool:
        return q.tags.get("lang", "en") == "en" and q.tags.get("order", "original") == "original"

    return sorted(queries, key=lambda q: not is_original(q))[:n]  # sorted is stable: file order kept
