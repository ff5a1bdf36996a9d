"""From further-training outcomes to the validation table: effects beyond random k-sets, further-training LDS, and
the noise floor next to each. Pure numpy/pandas.

Inputs: the plan and trainings (`plan.plan_trainings`), outcomes (training_id, query_id, log_prob after the training), the
checkpoint's own log-probabilities (query_id, log_prob) and every method's scores (method, query_id, seq_id, score).

- proponents / opponents: per query, the rise of log p(completion | prompt) after training on the method's top-k
  (bottom-k) minus the mean rise over the random control k-sets; nats.
- lds: per query, Spearman over the pool's random subsets between Σ_{z∈S} score(q, z) and the measured log p.
- control_sd: per query, the standard deviation of the controls' rises (what one random k-set moves);
  seed_sd: one training's spread under another recipe seed, from the same k-sets and subsets trained twice.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..evaluation.measures import lds
from ..stats import bootstrap
from .plan import RANDOM

MEASURES = ("proponents", "opponents", "lds")
TABLE_COLUMNS = ["measure", "method", "versus", "value", "ci_low", "ci_high", "n", "control_sd", "seed_sd", "interval"]
PER_QUERY_COLUMNS = ["measure", "method", "query_id", "value"]
INTERVAL = "bootstrap over queries"


def rises(outcomes: pd.DataFrame, base: pd.DataFrame) -> pd.DataFrame:
    """(training_id × query_id) rise of log p over the checkpoint's own."""
    wide = outcomes.pivot(index="training_id", columns="query_id", values="log_prob")
    return wide - base.set_index("query_id")["log_prob"].reindex(wide.columns)


def per_query(plan, trainings, outcomes, base, scores, pool_ids) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-query values: measure, method, query_id, value; the noise floor per query: query_id, control_sd,
    seed_sd, lds_spread, lds_seed_sd)."""
    rise = rises(outcomes, base)
    queries = list(rise.columns)
    controls = rise.loc[plan.loc[plan["kind"] == "control", "training_id"]]
    baseline = controls.mean()  # (Q,) the rise a random k-set of the pool gives
    rows = []
    for row in plan[plan["kind"].isin(["proponents", "opponents"])].itertuples():
        rows.append(
            (row.kind, row.method, row.query_id, rise.at[row.training_id, row.query_id] - baseline[row.query_id])
        )
    subsets = plan[plan["kind"] == "lds"].sort_values("index")
    lds_outcomes = outcomes.pivot(index="training_id", columns="query_id", values="log_prob")
    if len(subsets):
        members = _members(trainings, subsets, pool_ids)
        actual = lds_outcomes.loc[subsets["training_id"], queries].to_numpy()  # (M, Q)
        for method, table in scores.groupby("method", sort=False):
            wide = table.pivot(index="query_id", columns="seq_id", values="score").loc[queries, list(pool_ids)]
            for query_id, value in zip(queries, lds(wide.to_numpy(), members, actual)):
                rows.append(("lds", method, query_id, value))
    values = pd.DataFrame(rows, columns=PER_QUERY_COLUMNS)
    noise = pd.DataFrame({"query_id": queries, "control_sd": controls.std(ddof=1).to_numpy()})
    noise["seed_sd"] = _seed_sd(plan, rise, "control").reindex(queries).to_numpy()
    if len(subsets):
        noise["lds_spread"] = lds_outcomes.loc[subsets["training_id"], queries].std(ddof=1).to_numpy()
        noise["lds_seed_sd"] = _seed_sd(plan, lds_outcomes, "lds").reindex(queries).to_numpy()
    return values, noise


def _members(trainings, subsets, pool_ids) -> np.ndarray:
    """(M, N) 0/1 membership of the pool's sequences in each LDS subset, from the trainings' sequence lists."""
    seqs = trainings.groupby("training_id")["seq_id"].agg(list)
    index = {s: i for i, s in enumerate(pool_ids)}
    masks = np.zeros((len(subsets), len(pool_ids)))
    for m, training_id in enumerate(subsets["training_id"]):
        masks[m, [index[s] for s in seqs[training_id]]] = 1.0
    return masks


def _seed_sd(plan, values: pd.DataFrame, of: str) -> pd.Series:
    """Per query, one training's standard deviation under another seed: the RMS over the trainings repeated with
    the next seed of (first − second) / √2."""
    repeats = plan[(plan["kind"] == "repeat") & (plan["method"] == of)]
    firsts = plan[plan["kind"] == of].set_index("index")["training_id"]
    if repeats.empty:
        return pd.Series(np.nan, index=values.columns)
    diffs = np.stack([values.loc[firsts[r.index]] - values.loc[r.training_id] for r in repeats.itertuples()])
    return pd.Series(np.sqrt((diffs**2).mean(0) / 2), index=values.columns)


def summary(values: pd.DataFrame, noise: pd.DataFrame, run_method: str, seed: int = 0) -> pd.DataFrame:
    """validation.parquet: per measure and method the mean over queries with a bootstrap interval, the noise floor
    next to it, and the run's method paired against every other (measure `<measure>_difference`, `versus`)."""
    rows, order = [], list(dict.fromkeys(values["method"]))  # the plan's order: estimators, baselines, random
    control_sd, seed_sd = float(noise["control_sd"].mean()), float(noise["seed_sd"].mean())
    lds_noise = float(noise["lds_seed_sd"].mean()) if "lds_seed_sd" in noise else np.nan
    for measure in MEASURES:
        wide = values[values["measure"] == measure].pivot(index="query_id", columns="method", values="value")
        floor = (control_sd, seed_sd) if measure != "lds" else (np.nan, lds_noise)
        for method in _ordered(order, wide.columns, run_method):
            rows.append((measure, method, "", *_mean_interval(wide[method].to_numpy(), seed), *floor, INTERVAL))
        if run_method not in wide:
            continue
        for other in _ordered(order, wide.columns, run_method):
            if other != run_method:
                diff = (wide[run_method] - wide[other]).to_numpy()
                rows.append((f"{measure}_difference", run_method, other, *_mean_interval(diff, seed), *floor, INTERVAL))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _ordered(order: list[str], present, run_method: str) -> list[str]:
    """The methods present, the run's first and `random` last, the rest in `order`."""
    rest = [m for m in order if m not in (run_method, RANDOM)]
    return [m for m in (run_method, *rest, RANDOM) if m in set(present)]


def _mean_interval(values: np.ndarray, seed: int) -> tuple[float, float, float, int]:
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if not len(values):
        return np.nan, np.nan, np.nan, 0
    low, high = bootstrap(lambda i: float(values[i].mean()), len(values), n_boot=2000, seed=seed)
    return float(values.mean()), low, high, len(values)
