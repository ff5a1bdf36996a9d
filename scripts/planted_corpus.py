"""Rule planted_corpus: documents stating invented facts (and distractors), and the queries about them."""

import yaml
from influence.engine import files
from influence.evaluation.planted import plant_facts
from influence.run.runlog import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(
    smk.log[0], "planted_corpus", seed=smk.wildcards.seed, difficulty=smk.wildcards.difficulty, **smk.params
) as (log, stats):
    p = smk.params.planted
    documents, queries = plant_facts(
        p["n_facts"], p["k"], p["n_distractors"], int(smk.wildcards.seed), smk.wildcards.difficulty, p["fillers"]
    )
    files.write_table(documents, smk.output.documents)
    with open(smk.output.queries, "w") as handle:
        yaml.safe_dump(queries, handle, allow_unicode=True, sort_keys=False)
    stats.update(documents=len(documents), queries=len(queries))
