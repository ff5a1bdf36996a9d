"""Tables behind the paper's figures (Grosse et al. 2023), computed from `scores.parquet`.

Pure pandas/numpy/scipy: no snakemake, no torch, no plotting (`analysis/figures.py` draws them).
Every function returns a long DataFrame with the columns named in its docstring, so each
figure's data can be saved as parquet next to the figure.

Conventions: influence > 0 means the candidate makes the query's completion more likely
(conventions.md). A query's "top-k" are its k largest influences, ties broken by seq_id so
that results never depend on row order. Queries are reported in sorted query_id order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from ..engine.names import LAYER_PREFIX
from ..stats import ranked, spearman, top_k

KEYS = ["query_id", "seq_id"]
PAIR_COLUMNS = ["group", "lang", "query_id", "reference_id", "relative_influence", "topk_overlap"]


# --- Sparsity ---------------------------------------------------------------------------------


def sorted_influences(scores: pd.DataFrame) -> pd.DataFrame:
    """Each query's influences, descending: columns query_id, rank (1 = largest), influence."""
    return ranked(scores)[["query_id", "rank", "influence"]]


def power_law_tail(
    values: Iterable[float],
    tail_fraction: float = 0.5,
    x_min: float | None = None,
    n_boot: int = 0,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Continuous power-law MLE for the tail of the positive values (Clauset et al. 2009, eq. 3.1).

    `exponent` is α of the *density* p(x) ∝ x^-α for x ≥ x_min: α = 1 + n / Σ ln(x_i / x_min).
    On a rank-size plot (value against rank, log-log) the same tail is a line of slope -1/(α-1),
    since rank(x) ≈ N·P(X ≥ x) ∝ x^-(α-1); `rank_exponent` = 1/(α-1) reports that slope's size.
    x_min defaults to the smallest of the largest `tail_fraction` of the positive values.
    Interval at `level`: asymptotic α ± z·(α-1)/√n, or percentile bootstrap of the tail if n_boot > 0.
    Returns exponent, ci_low, ci_high, x_min, n_tail, rank_exponent (NaN when the fit is undefined).
    """
    x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    x = np.sort(x[np.isfinite(x) & (x > 0)])[::-1]
    if x_min is None:
        n_top = math.ceil(tail_fraction * len(x))
        x_min = float(x[n_top - 1]) if n_top > 0 else float("nan")
    logs = np.log(x[x >= x_min] / x_min) if np.isfinite(x_min) and x_min > 0 else np.zeros(0)
    n, total = len(logs), float(logs.sum())
    result = {
        "exponent": float("nan"),
        "ci_low": float("nan"),
        "ci_high": float("nan"),
        "x_min": float(x_min),
        "n_tail": int(n),
        "rank_exponent": float("nan"),
    }
    if n < 2 or total <= 0:  # every tail value equal to x_min: no slope to fit
        return result
    alpha = 1.0 + n / total
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        boot = [1.0 + n / logs[rng.integers(0, n, n)].sum() for _ in range(n_boot)]
        low, high = np.nanpercentile(np.asarray(boot), [50 * (1 - level), 50 * (1 + level)])
    else:
        half = stats.norm.ppf(0.5 + level / 2) * (alpha - 1.0) / math.sqrt(n)
        low, high = alpha - half, alpha + half
    result.update(exponent=alpha, ci_low=float(low), ci_high=float(high), rank_exponent=1.0 / (alpha - 1.0))
    return result


def power_law_fits(scores: pd.DataFrame, tail_fraction: float = 0.5, **options) -> pd.DataFrame:
    """`power_law_tail` per query: columns query_id, exponent, ci_low, ci_high, x_min, n_tail, rank_exponent."""
    rows = [
        {"query_id": q, **power_law_tail(g["influence"].to_numpy(), tail_fraction, **options)}
        for q, g in scores.groupby("query_id", sort=True)
    ]
    return pd.DataFrame(rows, columns=["query_id", "exponent", "ci_low", "ci_high", "x_min", "n_tail", "rank_exponent"])


def top_share(scores: pd.DataFrame, ks: Iterable[int] = (1, 10, 100)) -> pd.DataFrame:
    """Share of each query's total positive influence held by its k most influential sequences.

    Positive parts only, so shares lie in [0, 1] and grow with k (opponents would otherwise push
    the total below the top's sum). k beyond the number of candidates takes them all.
    Columns query_id, k, share (NaN when the query has no positive influence).
    """
    rows = []
    for query_id, group in scores.groupby("query_id", sort=True):
        held = np.cumsum(np.sort(np.clip(group["influence"].to_numpy(float), 0, None))[::-1])
        total = held[-1] if len(held) else 0.0
        for k in ks:
            top = held[min(int(k), len(held)) - 1] if k > 0 and len(held) else 0.0
            rows.append((query_id, int(k), top / total if total > 0 else float("nan")))
    return pd.DataFrame(rows, columns=["query_id", "k", "share"])


def max_influence_table(
    scores: pd.DataFrame,
    n_tokens_by_seq: Mapping[str, int] | pd.Series,
    completion_tokens_by_query: Mapping[str, int] | pd.Series,
) -> pd.DataFrame:
    """The largest influence of each query, raw and normalised.

    L_q sums the completion's cross-entropy and L_z the candidate's, so influence grows with both
    lengths. `per_completion_token` = influence / completion tokens (the change in the completion's
    mean per-token log-probability); `per_token_pair` also divides by the candidate's tokens.
    Columns query_id, seq_id, influence, n_tokens, completion_tokens, per_completion_token, per_token_pair.
    """
    best = ranked(scores[KEYS + ["influence"]])
    best = best[best["rank"] == 1].drop(columns="rank").reset_index(drop=True)
    best["n_tokens"] = best["seq_id"].map(pd.Series(n_tokens_by_seq, dtype=float))
    best["completion_tokens"] = best["query_id"].map(pd.Series(completion_tokens_by_query, dtype=float))
    best["per_completion_token"] = best["influence"] / best["completion_tokens"]
    best["per_token_pair"] = best["per_completion_token"] / best["n_tokens"]
    return best


# --- Layers -----------------------------------------------------------------------------------

_BLOCK = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")  # first integer path component: layers.3, h.3, blocks.3


def block_index(module: str) -> int | None:
    """Transformer block of a module name ('model.layers.3.mlp.down_proj' -> 3), None if it has none."""
    match = _BLOCK.search(module)
    return int(match.group(1)) if match else None


def depth_order(modules: Iterable[str]) -> list[str]:
    """Modules in depth order: by block, keeping the given (forward) order inside a block.

    Modules without a block go first if they look like embeddings, else last (lm_head, final norm).
    """

    def key(item: tuple[int, str]) -> tuple[float, int]:
        position, name = item
        block = block_index(name)
        if block is None:
            block = -1 if re.search(r"embed|wte|wpe", name) else math.inf
        return block, position

    return [name for _, name in sorted(enumerate(modules), key=key)]


def layer_columns(scores: pd.DataFrame) -> list[str]:
    """The `layer:<module>` columns of a scores table."""
    return [c for c in scores.columns if c.startswith(LAYER_PREFIX)]


def layer_shares(scores: pd.DataFrame, top_n: int = 10, mode: str = "abs") -> pd.DataFrame:
    """Each layer's share of the influence of a query's top_n sequences; shares sum to 1 per query.

    mode 'abs' sums |per-layer influence| over those sequences: a layer that pushes against the
    total still carries influence, and signed sums could cancel to shares outside [0, 1].
    mode 'positive' sums positive parts only. Columns query_id, layer (module name, depth order),
    block (Int64, <NA> if none), share.
    """
    if mode not in ("abs", "positive"):
        raise ValueError(f"mode must be 'abs' or 'positive', not {mode!r}")
    columns = layer_columns(scores)
    if not columns:
        raise ValueError(f"scores have no '{LAYER_PREFIX}<module>' columns")
    order = ranked(scores)
    top = order[order["rank"] <= top_n]
    values = top[columns].to_numpy(float)
    values = np.abs(values) if mode == "abs" else np.clip(values, 0, None)
    layers = [c[len(LAYER_PREFIX) :] for c in columns]
    per_query = pd.DataFrame(values, columns=layers).groupby(top["query_id"].to_numpy(), sort=True).sum()
    totals = per_query.sum(axis=1)
    shares = per_query.div(totals.where(totals > 0), axis=0)[depth_order(layers)]
    long = shares.rename_axis("query_id").reset_index().melt("query_id", var_name="layer", value_name="share")
    order = {name: i for i, name in enumerate(shares.columns)}
    long = long.sort_values(
        ["query_id", "layer"], key=lambda s: s.map(order) if s.name == "layer" else s, ignore_index=True
    )
    long.insert(2, "block", pd.array([block_index(m) for m in long["layer"]], dtype="Int64"))
    return long


# --- Variants of one fact: translations and flipped phrase order ------------------------------


def tags_table(queries_tags) -> pd.DataFrame:
    """Columns query_id, group, lang, order from {query_id: tags}, Query objects, or a DataFrame.

    A query without an `order` tag counts as 'original'; missing group or lang stay <NA>.
    """
    if isinstance(queries_tags, pd.DataFrame):
        table = queries_tags.copy()
    else:
        items = queries_tags.items() if isinstance(queries_tags, Mapping) else ((q.id, q.tags) for q in queries_tags)
        table = pd.DataFrame([{"query_id": qid, **dict(tags)} for qid, tags in items])
    for column in ("group", "lang", "order"):
        if column not in table:
            table[column] = pd.NA
    table["order"] = table["order"].fillna("original")
    return table[["query_id", "group", "lang", "order"]].reset_index(drop=True)


def _relative_to_reference(scores: pd.DataFrame, pairs: list[tuple], k: int) -> pd.DataFrame:
    """For (group, lang, query, reference) pairs: the reference's top-k summed on the query, relative to
    their sum on the reference, and the fraction of the reference's top-k in the query's top-k."""
    influence = scores.set_index(KEYS)["influence"]
    top = top_k(scores, k)
    rows = []
    for group, lang, query_id, reference_id in pairs:
        chosen = top.get(reference_id, [])
        on_query = influence.reindex([(query_id, s) for s in chosen])
        if on_query.isna().any():
            raise ValueError(f"{query_id} lacks scores for the top-{k} sequences of {reference_id}")
        on_reference = influence.loc[[(reference_id, s) for s in chosen]].sum()
        relative = on_query.sum() / on_reference if on_reference != 0 else float("nan")
        overlap = len(set(chosen) & set(top.get(query_id, []))) / len(chosen) if chosen else float("nan")
        rows.append((group, lang, query_id, reference_id, float(relative), overlap))
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def cross_lingual(scores: pd.DataFrame, queries_tags, k: int = 10) -> pd.DataFrame:
    """The paper's cross-lingual measure, one row per translation of an English original query.

    relative_influence = Σ over the English query's top-k sequences of their influence on the
    translation / the same sum on the English query (1 = transfers fully, 0 = not at all).
    topk_overlap = fraction of the English top-k also in the translation's top-k.
    Only `order: original` queries take part; groups without exactly one English one are skipped.
    Columns group, lang, query_id, reference_id (the English query), relative_influence, topk_overlap.
    """
    tags = tags_table(queries_tags)
    tags = tags[tags["query_id"].isin(set(scores["query_id"])) & (tags["order"] == "original")]
    pairs = []
    for group, members in tags.dropna(subset=["group", "lang"]).groupby("group", sort=True):
        english = members.loc[members["lang"] == "en", "query_id"]
        if len(english) != 1:
            continue
        pairs += [(group, r.lang, r.query_id, english.iloc[0]) for r in members.itertuples() if r.lang != "en"]
    return _relative_to_reference(scores, pairs, k)


def flip_comparison(scores: pd.DataFrame, queries_tags, k: int = 10) -> pd.DataFrame:
    """The cross-lingual measure for `order: flipped` queries against the `original` of the same group
    and lang (a query without lang pairs with one without). Columns as `cross_lingual`, with
    reference_id the original query."""
    tags = tags_table(queries_tags)
    tags = tags[tags["query_id"].isin(set(scores["query_id"]))].dropna(subset=["group"])
    tags = tags.assign(lang=tags["lang"].astype(object).where(tags["lang"].notna(), None))
    pairs = []
    for (group, lang), members in tags.groupby(["group", "lang"], sort=True, dropna=False):
        original = members.loc[members["order"] == "original", "query_id"]
        if len(original) != 1:
            continue
        flipped = members.loc[members["order"] == "flipped", "query_id"]
        pairs += [(group, lang, query_id, original.iloc[0]) for query_id in flipped]
    return _relative_to_reference(scores, pairs, k)


def why_no_translations(queries_tags) -> str:
    """Why `cross_lingual` has no rows: the tags the queries lack ('' if some group pairs a translation)."""
    tags = tags_table(queries_tags).dropna(subset=["group"])
    if tags.empty:
        return "no query has a `group` tag (a translation shares its English query's group)"
    tags = tags[tags["order"] == "original"]
    if tags.empty:
        return "no query with a `group` has `order: original` (only original-order queries are translations)"
    tags = tags.dropna(subset=["lang"])
    if tags.empty:
        return "no query with a `group` has a `lang` tag"
    if not any((g["lang"] == "en").sum() == 1 and (g["lang"] != "en").any() for _, g in tags.groupby("group")):
        return "no `group` holds one English query (`lang: en`) and a translation of it (another `lang`)"
    return ""


def why_no_flips(queries_tags) -> str:
    """Why `flip_comparison` has no rows (ask only when it has none): the tags the queries lack."""
    tags = tags_table(queries_tags)
    if tags["group"].isna().all():
        return "no query has a `group` tag (a flipped query shares its original's group)"
    if not (tags["order"] == "flipped").any():
        return "no query has the tag `order: flipped` (a query stating its group's fact in the other phrase order)"
    if not (tags.dropna(subset=["group"])["order"] == "flipped").any():
        return "no query with `order: flipped` has a `group` tag"
    return "no `order: flipped` query has one `order: original` query in its `group` and `lang`"


# --- Agreement between approximations ---------------------------------------------------------


def rank_agreement(full: pd.DataFrame, low_rank: pd.DataFrame) -> pd.DataFrame:
    """Per query, how well low-rank query scores reproduce full-rank ones on the same pairs.

    Columns query_id, spearman (ρ of the two influences over candidates), relative_l2
    (‖low − full‖ / ‖full‖ over candidates).
    """
    merged = full[KEYS + ["influence"]].merge(
        low_rank[KEYS + ["influence"]], on=KEYS, suffixes=("_full", "_low"), validate="one_to_one"
    )
    if not len(merged) == len(full) == len(low_rank):
        raise ValueError("the two score tables must hold the same (query_id, seq_id) pairs")
    rows = []
    for query_id, g in merged.groupby("query_id", sort=True):
        a, b = g["influence_full"].to_numpy(float), g["influence_low"].to_numpy(float)
        norm = np.linalg.norm(a)
        rows.append((query_id, spearman(a, b), np.linalg.norm(b - a) / norm if norm > 0 else float("nan")))
    return pd.DataFrame(rows, columns=["query_id", "spearman", "relative_l2"])


def rank_agreement_sweep(full: pd.DataFrame, by_rank: Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    """`rank_agreement` for each approximation rank: columns approx_rank, query_id, spearman, relative_l2."""
    tables = [rank_agreement(full, table).assign(approx_rank=int(r)) for r, table in sorted(by_rank.items())]
    return pd.concat(tables, ignore_index=True)[["approx_rank", "query_id", "spearman", "relative_l2"]]


def estimator_correlations(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Spearman ρ between every two estimators' influences, per query over their shared candidates.

    One row per unordered pair (in the mapping's order). Columns estimator_a, estimator_b,
    spearman_mean, spearman_min (over queries), n_queries.
    """
    names, rows = list(tables), []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            merged = tables[a][KEYS + ["influence"]].merge(tables[b][KEYS + ["influence"]], on=KEYS)
            rho = pd.Series(
                [
                    spearman(g["influence_x"].to_numpy(float), g["influence_y"].to_numpy(float))
                    for _, g in merged.groupby("query_id")
                ],
                dtype=float,
            )
            rows.append((a, b, rho.mean(), rho.min(), int(rho.notna().sum())))
    return pd.DataFrame(rows, columns=["estimator_a", "estimator_b", "spearman_mean", "spearman_min", "n_queries"])


def tfidf_recall(
    exhaustive_scores: pd.DataFrame, tfidf_ranks: pd.DataFrame, true_k: int, k_primes: Iterable[int]
) -> pd.DataFrame:
    """Of each query's true top-`true_k` sequences (influence scored on the whole corpus), the fraction
    whose TF-IDF rank is ≤ k′.

    `tfidf_ranks` has query_id, seq_id, tfidf_rank (1 = most similar); give the full ranking
    (tfidf top_k 0): a sequence without a rank counts as never retrieved.
    Columns query_id, k_prime, recall, true_k.
    """
    order = ranked(exhaustive_scores[KEYS + ["influence"]])
    true = order.loc[order["rank"] <= true_k, KEYS].merge(tfidf_ranks[KEYS + ["tfidf_rank"]], on=KEYS, how="left")
    retrieved_at = true["tfidf_rank"].astype(float).fillna(np.inf)
    tables = [
        (retrieved_at <= k)
        .groupby(true["query_id"], sort=True)
        .mean()
        .rename("recall")
        .reset_index()
        .assign(k_prime=int(k))
        for k in k_primes
    ]
    out = pd.concat(tables, ignore_index=True).assign(true_k=int(true_k))
    return out.sort_values(["query_id", "k_prime"], ignore_index=True)[["query_id", "k_prime", "recall", "true_k"]]
