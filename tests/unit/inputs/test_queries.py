"""Query files: the shipped queries and the errors bad files get."""

import pandas as pd
import pytest
from influence.inputs.queries import load_queries

SHIPPED = "scripts/influence/inputs/resources/queries.yaml"


def test_shipped_queries_pair_every_fact_with_translations_and_a_flip():
    queries = load_queries(SHIPPED)
    groups = pd.DataFrame([{**q.tags, "id": q.id} for q in queries])
    per_group = groups.groupby("group").apply(lambda g: sorted(zip(g["lang"], g["order"])), include_groups=False)
    expected = sorted(
        [("de", "original"), ("en", "flipped"), ("en", "original"), ("es", "original"), ("fr", "original")]
    )
    assert len(per_group) == 10 and all(v == expected for v in per_group)


@pytest.mark.parametrize(
    "text,message",
    [
        ("- {id: a, prompt: x}", "'completion'"),
        ("- {id: a, prompt: x, completion: y}\n- {id: a, prompt: x, completion: z}", "duplicate id 'a'"),
        ("- {id: a, prompt: x, completion: y, tag: {}}", "unknown fields"),
        ("{}", "non-empty YAML list"),
    ],
)
def test_bad_query_files_name_the_entry_and_field(tmp_path, text, message):
    path = tmp_path / "queries.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as error:
        load_queries(path)
    assert "queries.yaml" in str(error.value)
