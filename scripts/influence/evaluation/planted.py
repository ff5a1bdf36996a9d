"""Planted facts: a seeded corpus of facts about invented entities, with the queries that ask about them.

Each fact (subject, relation, object) is stated in `k` documents. Difficulty `easy`: the first in
the relation's main wording, the others paraphrased; distractor documents mention the same subject or
object without stating the fact. Difficulty `hard` (`planted_hard`): plants only in wordings that
share no content word with the queries, plus both-entity and relation-word distractors. Queries ask
for the object in the main wording, paraphrased, translated (French) and order-flipped (the object
given, the subject asked), on both difficulties. Ground truth: a query's relevant documents are its
fact's `k` planted documents.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .planted_hard import HARD, filler_fact_id, filler_statements

SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ra",
    "ven",
    "tor",
    "zu",
    "bel",
    "qua",
    "nis",
    "dor",
    "fe",
    "gal",
    "shi",
    "mon",
    "vex",
    "tal",
    "ori",
    "pex",
    "lun",
    "dra",
    "sel",
    "kor",
    "yth",
]


@dataclass(frozen=True)
class Relation:
    """Wordings of one relation: {s} subject, {o} object; queries end right before the answer."""

    name: str
    statements: tuple[str, ...]  # the first is the main wording, the rest are paraphrases
    query: str  # prompt asking for {o}
    paraphrased_query: str
    translated_query: str  # French
    flipped_query: str  # prompt asking for {s} given {o}
    subject_distractors: tuple[str, ...]
    object_distractors: tuple[str, ...]


RELATIONS = (
    Relation(
        "capital",
        (
            "The capital of {s} is {o}.",
            "{o} is the city where the government of {s} sits.",
            "Travellers to {s} arrive in its capital, {o}.",
        ),
        "The capital of {s} is",
        "The government of {s} sits in the city of",
        "La capitale de {s} est",
        "{o} is the capital of",
        ("{s} has long winters and short summers.", "Farmers in {s} grow barley and rye."),
        ("{o} has a large harbour.", "Every spring a market is held in {o}."),
    ),
    Relation(
        "founder",
        (
            "The company {s} was founded by {o}.",
            "{o} started the company {s} in a small garage.",
            "Years ago {o} created the firm {s}.",
        ),
        "The company {s} was founded by",
        "The firm {s} was started by",
        "L'entreprise {s} a été fondée par",
        "{o} founded the company",
        ("The company {s} sells tools and paint.", "Shares of {s} rose last year."),
        ("{o} enjoys long walks by the sea.", "{o} once won a chess prize."),
    ),
    Relation(
        "language",
        (
            "The people of {s} speak {o}.",
            "In {s} everyone talks in {o}.",
            "Children in {s} learn to read and write {o}.",
        ),
        "The people of {s} speak",
        "In {s} everyone talks in",
        "Les habitants de {s} parlent",
        "{o} is spoken by the people of",
        ("{s} is known for its mountains.", "The roads of {s} are narrow."),
        ("{o} has many old poems.", "Scholars study the grammar of {o}."),
    ),
    Relation(
        "river",
        (
            "The river that flows through {s} is the {o}.",
            "{s} lies on the banks of the {o}.",
            "Boats on the {o} carry goods across {s}.",
        ),
        "The river that flows through {s} is the",
        "{s} lies on the banks of the",
        "Le fleuve qui traverse {s} est le",
        "The {o} is the river that flows through",
        ("{s} is famous for its bread.", "The winters of {s} are cold."),
        ("The {o} is wide and slow.", "Fish are plentiful in the {o}."),
    ),
)
VARIANTS = ("original", "paraphrase", "translated", "flipped")
DIFFICULTIES = ("easy", "hard")
ROLES = ("planted", "distractor", "both_entities", "relation_words")


def invented_names(n: int, rng: np.random.Generator, taken: set[str] | None = None) -> list[str]:
    """`n` distinct capitalised names of 2-3 random syllables."""
    taken = set() if taken is None else taken
    out = []
    while len(out) < n:
        name = "".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 4)))).capitalize()
        if name not in taken:
            taken.add(name)
            out.append(name)
    return out


def plant_facts(
    n_facts: int, k: int, n_distractors: int, seed: int = 0, difficulty: str = "easy", fillers: int = 0
) -> tuple[pd.DataFrame, list[dict]]:
    """(documents, queries) of `n_facts` facts cycling through the relations.

    documents: seq_id, text, fact_id, role (`ROLES`: 'planted', 'distractor' naming one entity, and on
    `hard` 'both_entities', `n_distractors` per fact, and 'relation_words': `fillers` filler facts per
    relation, fact_id `filler_fact_id(relation)`, each in 1 + 3 + 3 documents); queries: YAML-ready
    dicts {id, prompt, completion, tags{group, fact_id, variant, lang, order, difficulty}}. Documents
    are shuffled.
    """
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"evaluation.planted.difficulty must be among {DIFFICULTIES}, got {difficulty!r}.")
    if n_facts < 1 or k < 1 or n_distractors < 0 or fillers < 0:
        raise ValueError(
            "planted facts need n_facts >= 1, k >= 1, n_distractors >= 0, fillers >= 0 "
            f"(got {n_facts}, {k}, {n_distractors}, {fillers})."
        )
    max_k = min(len(r.statements) for r in RELATIONS)
    if k > max_k:
        raise ValueError(f"planted k (documents per fact) is {k}; the relations have {max_k} wordings.")
    rng = np.random.default_rng(seed)
    names = invented_names(2 * n_facts, rng)
    # Filler entities for the relation-word documents: drawn after the facts' names, never queried.
    filler_names = invented_names(3 * len(RELATIONS) * fillers, rng, taken=set(names)) if difficulty == "hard" else []
    docs, queries = [], []
    for i in range(n_facts):
        relation = RELATIONS[i % len(RELATIONS)]
        fact_id = f"fact{i:03d}_{relation.name}"
        s, o = names[2 * i], names[2 * i + 1]
        plants, both = HARD[relation.name] if difficulty == "hard" else (relation.statements, ())
        for j in range(k):
            docs.append((f"{fact_id}_doc{j}", plants[j].format(s=s, o=o), fact_id, "planted"))
        pool = [t.format(s=s) for t in relation.subject_distractors] + [
            t.format(o=o) for t in relation.object_distractors
        ]
        for j, text in enumerate(rng.permutation(pool)[:n_distractors]):
            docs.append((f"{fact_id}_distractor{j}", str(text), fact_id, "distractor"))
        if difficulty == "hard":
            for j, text in enumerate(rng.permutation(list(both))[:n_distractors]):
                docs.append((f"{fact_id}_both{j}", str(text).format(s=s, o=o), fact_id, "both_entities"))
        prompts = {
            "original": (relation.query.format(s=s), o, "en", "original"),
            "paraphrase": (relation.paraphrased_query.format(s=s), o, "en", "original"),
            "translated": (relation.translated_query.format(s=s), o, "fr", "original"),
            "flipped": (relation.flipped_query.format(o=o), s, "en", "flipped"),
        }
        for variant, (prompt, answer, lang, order) in prompts.items():
            tags = {"group": fact_id, "fact_id": fact_id, "variant": variant, "lang": lang, "order": order}
            queries.append(
                {
                    "id": f"{fact_id}_{variant}",
                    "prompt": prompt,
                    "completion": f" {answer}",
                    "tags": {**tags, "difficulty": difficulty, "subject": s, "object": o, "relation": relation.name},
                }
            )
    for r, relation in enumerate(RELATIONS[: min(n_facts, len(RELATIONS))] if filler_names else ()):  # used ones
        for j in range(fillers):
            fs, fo, partner = filler_names[3 * (r * fillers + j) : 3 * (r * fillers + j) + 3]
            for w, text in enumerate(filler_statements(relation, fs, fo, partner)):
                seq_id = f"{filler_fact_id(relation.name)}{j:02d}_doc{w}"
                docs.append((seq_id, text, filler_fact_id(relation.name), "relation_words"))
    table = pd.DataFrame(docs, columns=["seq_id", "text", "fact_id", "role"])
    return table.iloc[rng.permutation(len(table))].reset_index(drop=True), queries


def relevant_documents(documents: pd.DataFrame) -> dict[str, set[str]]:
    """{fact_id: seq_ids of its planted documents}."""
    planted = documents[documents["role"] == "planted"]
    return planted.groupby("fact_id")["seq_id"].agg(set).to_dict()
