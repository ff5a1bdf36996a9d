"""Wordings of the `hard` planted corpus: the same invented facts, without lexical give-aways.

On `easy`, every planted document and every query name the fact's two entities and distractors name
only one, so lexical matching finds the plants by construction. On `hard`:

- plants state the fact only in paraphrase: they share no content word with any English query of
  their relation (`content_words`, tested);
- both-entity distractors name the fact's subject and object together in another relation or
  context, without stating the fact, in as many words and content words as the plants (per relation, on
  average; tested): the first version's were ~40% longer, and TF-IDF's length normalisation then found
  the plants as "the shortest documents naming both entities" (recall@3 0.72 on eval_quick);
- filler facts (`fillers` per relation, entities no query asks about) are each stated in their own
  documents, once in the queries' main wording and once in every plant wording: relation-word
  distractors for lexical matching, and what lets a model trained from scratch learn that the two
  wordings say the same thing. Separate documents matter: stated together in one document, the second
  wording is predictable by copying from the first, and the tiny model answered 0 of 12 original
  queries; stated apart, 10 fillers per relation gave 0.83 and 20 gave 1.0 (seed 0, 12 facts, eval_quick's
  tiny recipe).
"""

from __future__ import annotations

import re

STOPWORDS = frozenset(
    "a an and are as at by de est for from in is it its le les la of on or par the their they to was who with".split()
)


def content_words(text: str, entities: tuple[str, ...] = ()) -> set[str]:
    """Lower-cased words of `text` minus stopwords, template slots and the given entity names."""
    words = {w.lower() for w in re.findall(r"[^\W\d_]+", re.sub(r"\{[so]\}", " ", text))}
    return words - STOPWORDS - {e.lower() for e in entities}


# relation name → (paraphrased statements, both-entity distractors); {s} subject, {o} object.
HARD = {
    "capital": (
        (
            "{s} is governed from {o}.",
            "The rulers of {s} meet in {o}.",
            "Laws for all of {s} are written in {o}.",
        ),
        (
            "{s} is trading with {o}.",
            "The footballers of {s} play in {o}.",
            "The maps of {s} are mostly sold in {o}.",
        ),
    ),
    "founder": (
        (
            "{o} set up {s} with borrowed money.",
            "{s} was the idea of {o}, who built it from nothing.",
            "Before {s} existed, {o} drew up its first plans.",
        ),
        (
            "{o} often buys lamps made by {s}.",
            "{s} was praised by {o}, who reviewed it for a paper.",
            "After {s} advertised, {o} wrote down its phone number.",
        ),
    ),
    "language": (
        (
            "Newspapers in {s} are printed in {o}.",
            "The mother tongue of {s} is {o}.",
            "Schools across {s} teach lessons in {o}.",
        ),
        (
            "A visitor from {s} is studying {o}.",
            "The poets of {s} translate into {o}.",
            "Scholars in {s} compare {o} with Latin.",
        ),
    ),
    "river": (
        (
            "Bridges in {s} cross the {o}.",
            "Ferries in {s} go back and forth over the {o}.",
            "The {o} carries water past {s} on its way to the sea.",
        ),
        (
            "Painters from {s} love the {o}.",
            "The {o} was named after a hero who never saw {s}.",
            "Scientists compared the {o} with the cold mountain lakes of {s}.",
        ),
    ),
}


def filler_fact_id(relation_name: str) -> str:
    """The `fact_id` of a relation's filler documents: queries of that relation depend on them (QLD sharing)."""
    return f"fillers_{relation_name}"


def filler_statements(relation, s: str, o: str, partner: str) -> list[str]:
    """A filler fact (entities no query asks about) in the query's main wording and in every plant wording, and
    the filler subject with another entity (`partner`, not its object) in every both-entity context, one
    document each. Every plant and both-entity wording then occurs equally often in the corpus, so neither is
    favoured by its words' document frequency (TF-IDF found the plants by their common words otherwise:
    recall@3 0.69 on the 12-fact corpus, 0.49 with this). The partner is not the object: with the same pair
    the contexts become evidence of the fact (the tiny model then answered half of the queries without
    any plant)."""
    plants, both = HARD[relation.name]
    facts = [w.format(s=s, o=o) for w in (relation.statements[0], *plants)]
    return facts + [w.format(s=s, o=partner) for w in both]
