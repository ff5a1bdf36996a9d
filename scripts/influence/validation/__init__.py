"""`snakemake validate`: does attribution work on this model and corpus? A further-training ground truth.

From the run's own checkpoint, train further on each method's top sequences for a query (proponents), on its most
negative ones (opponents), on random k-sets of the pool (controls) and on random halves of the pool (LDS), and
measure log p(completion | prompt) after each; then say which method's rankings predict those effects, with
intervals over queries and the noise floor next to every effect.

- `plan.py`: the settings' checks, the queries, the candidates every method ranks, the pool, the trainings;
- `scoring.py`: every method's scores over the candidates (engine estimators, baselines, a random control);
- `measures.py`: effects against the controls, further-training LDS, the noise floor, `validation.parquet`;
- `verdict.py`: the verdict (markdown and the report's HTML section) and the figure.

The further-training itself is the evaluation's (`evaluation.training.further_trainer`, cached and resumable
by `evaluation.retrain.cached_retrains`): one code path for the planted corpus and the user's own.
"""
