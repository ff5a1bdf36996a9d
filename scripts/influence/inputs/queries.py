"""Query files: a YAML list of {id, prompt, completion, tags} or, for a chat model, {id, messages, tags}.

A `messages` query is a conversation (chat.py) whose final assistant turn is scored, rendered by the model's
own chat template; its `prompt` and `completion` hold the turns as plain text for what reads text (TF-IDF,
reports), and `token_ids` is the one place either kind becomes token ids and labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..engine.data import encode_query
from .chat import check_messages, plain_text, render_reply


@dataclass(frozen=True)
class Query:
    """One measurement: log p(completion | prompt). Tags (lang, group, order, ...) pair variants."""

    id: str
    prompt: str
    completion: str
    tags: dict = field(default_factory=dict)
    messages: tuple[tuple[str, str], ...] | None = None  # (role, content) turns of a chat query

    @property
    def text(self) -> str:
        return self.prompt + self.completion

    def token_ids(self, tokenizer) -> tuple[list[int], list[int]]:
        """Token ids and labels (-100 outside the completion, or outside the final assistant turn)."""
        if self.messages is None:
            return encode_query(tokenizer, self.id, self.prompt, self.completion)
        prompt, reply = render_reply(tokenizer, self.messages, f"query {self.id!r}")
        return encode_query(tokenizer, self.id, prompt, reply, special_tokens=False)


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
        queries.append(_entry_query(entry, where, seen))
        seen.add(queries[-1].id)
    return queries


def english_originals_first(queries: list[Query], n: int) -> list[Query]:
    """The first `n` queries, English originals (tags lang en, order original) before the rest."""

    def is_original(q: Query) -> bool:
        return q.tags.get("lang", "en") == "en" and q.tags.get("order", "original") == "original"

    return sorted(queries, key=lambda q: not is_original(q))[:n]  # sorted is stable: file order kept


FIELDS = ("id", "prompt", "completion", "tags", "messages")


def _entry_query(entry: dict, where: str, seen: set[str]) -> Query:
    """One validated entry: prompt + completion, or messages."""
    unknown = set(entry) - set(FIELDS)
    if unknown:
        raise ValueError(f"{where} has unknown fields {sorted(unknown)}; allowed: {', '.join(FIELDS)}.")
    chat = "messages" in entry
    if chat and ({"prompt", "completion"} & set(entry)):
        raise ValueError(f"{where} ({entry.get('id', '?')}): give either messages or prompt + completion, not both.")
    for key in ("id",) if chat else ("id", "prompt", "completion"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise ValueError(f"{where} ({entry.get('id', '?')}): field {key!r} must be a non-empty string.")
    if entry["id"] in seen:
        raise ValueError(f"{where}: duplicate id {entry['id']!r}.")
    tags = entry.get("tags", {}) or {}
    if not isinstance(tags, dict):
        raise ValueError(f"{where} ({entry['id']}): 'tags' must be a mapping such as {{lang: en, group: capitals}}.")
    tags = {k: str(v) for k, v in tags.items()}
    if not chat:
        return Query(entry["id"], entry["prompt"], entry["completion"], tags)
    turns = check_messages(entry["messages"], f"{where} ({entry['id']})")
    return Query(entry["id"], plain_text(turns[:-1]) + "\n", turns[-1][1], tags, turns)
