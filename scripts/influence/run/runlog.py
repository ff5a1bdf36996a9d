"""What every rule script writes to its log: settings, device, dtype, work done, time, memory."""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch


@contextmanager
def rule_log(path: str | Path, rule: str, **settings):
    """Log to `path` (and stderr) for the duration of a rule; yields (logger, stats).

    Put counts such as tokens processed into `stats`; they are logged at the end
    with the wall time and peak memory, also when the rule fails.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"influence.{rule}")
    logger.setLevel(logging.INFO)
    handlers = [logging.FileHandler(path, mode="w", encoding="utf-8"), logging.StreamHandler(sys.stderr)]
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    logger.info("rule %s, settings %s", rule, json.dumps(settings, default=str, sort_keys=True))
    logger.info("torch %s, %d threads, CUDA %s", torch.__version__, torch.get_num_threads(), torch.cuda.is_available())
    stats: dict = {}
    start = time.perf_counter()
    try:
        yield logger, stats
    except Exception:
        logger.exception("rule %s failed", rule)
        raise
    finally:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        cuda = f", CUDA peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MB" if torch.cuda.is_available() else ""
        logger.info("stats %s", json.dumps(stats, default=str))
        logger.info("wall time %.1f s, peak RSS %.0f MB%s", time.perf_counter() - start, peak_mb, cuda)
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()


def describe_model(model, layers: dict) -> dict:
    """Device, dtype and tracked layers of a loaded model, for the log."""
    parameter = next(model.parameters())
    return {"device": str(parameter.device), "dtype": str(parameter.dtype), "tracked_layers": len(layers)}
