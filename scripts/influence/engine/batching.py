"""How the engine cuts work into passes: tokens per forward/backward pass, per-sequence gradient buffers,
and the label-sampling seed of each fitting batch. Every pass over the model (fitting, scoring, refinement,
the index) reads its batching settings here.
"""

from __future__ import annotations

import numpy as np

# Per-sequence gradients are formed this many elements at a time into one
# reused buffer. On CPU a small buffer that stays in cache is 2-3x faster than
# one large batched matmul; on GPUs large launches win.
CHUNK_ELEMENTS = {"cpu": 2**21, "cuda": 2**27}
# Tokens per forward/backward pass (see split_batch): "auto" sizes micro-batches so that the
# activations of one pass, about vocab + 12·hidden·layers floats per token (logits and their
# gradient, each block's saved tensors), stay near ACTIVATION_BUDGET elements (512 MB in float32).
MAX_TOKENS = "auto"
ACTIVATION_BUDGET = 2**27


def micro_batch_tokens(model, max_tokens: int | str | None = MAX_TOKENS) -> int | None:
    """`max_tokens` resolved for this model: "auto" follows ACTIVATION_BUDGET (at least 256 tokens)."""
    if max_tokens != "auto":
        return max_tokens
    config = model.config.get_text_config()
    per_token = config.vocab_size + 12 * config.hidden_size * config.num_hidden_layers
    return max(256, ACTIVATION_BUDGET // per_token)


def batch_seed(seed: int, batch_index: int) -> int:
    """The label-sampling seed of one fitting batch: a job fitting batches i..j of a shard draws
    the same labels as one job fitting them all, so sharded factors equal unsharded ones."""
    return int(np.random.SeedSequence([seed, batch_index]).generate_state(1)[0])
