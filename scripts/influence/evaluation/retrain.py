"""Retraining the evaluation's model on parts of its corpus (LDS subsets, QLD removals), resumable.

Each retrain's measured outcome is saved under a cache directory as soon as it finishes, named by a
digest of the kept documents and the training settings, so a run that stops (a diverging retrain,
a killed job) keeps its finished retrains and the next run starts where it stopped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm


def retrain_digest(keep: np.ndarray, settings: dict) -> str:
    """A short digest of the kept document indices and the settings that shape a retrain."""
    text = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(np.asarray(keep, np.int64).tobytes() + text).hexdigest()[:20]


def cached_retrains(
    keeps: Sequence[np.ndarray],
    measure: Callable[[np.ndarray], np.ndarray],
    cache_dir: str | Path,
    settings: dict,
    names: Sequence[str],
    seed: int,
    desc: str = "retrains",
    hint: str = "lower evaluation.tiny.lr or change the seed and rerun",
) -> list[np.ndarray]:
    """`measure(keep)` (the retrained model's per-query outcomes) for every kept index array, cached.

    A non-finite loss during training (`training.train` raises FloatingPointError) or a non-finite
    outcome stops with the retrain's name (`names[i]`) and seed; finished retrains stay in `cache_dir`.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for i, keep in enumerate(tqdm(keeps, desc=desc, unit="retrain")):
        path = cache / f"{retrain_digest(keep, settings)}.npy"
        if path.exists():
            out.append(np.load(path))
            continue
        finished = len(list(cache.glob("*.npy")))
        try:
            values = np.asarray(measure(np.asarray(keep)), float)
            if not np.isfinite(values).all():
                raise FloatingPointError("the retrained model gives non-finite query log-probabilities")
        except FloatingPointError as err:
            raise FloatingPointError(
                f"retrain {names[i]} (seed {seed}) diverged: {err}. The {finished} finished retrains are kept "
                f"in {cache}; {hint}."
            ) from err
        np.save(path, values)
        out.append(values)
    return out
