"""Scores do not depend on batch composition, order or padding (issue 16), for every scoring estimator.

A peer library's gradients changed with padding and batch neighbours; here every candidate's and every
query's gradient is computed from its own tokens only, so regrouping must leave scores unchanged up to
float32 summation order.
"""

import pytest
import torch
from helpers import MODELS, random_sequences
from influence.engine.data import pad_batch
from influence.engine.eigen import eigendecompose
from influence.engine.estimators import ESTIMATORS, SCORING_ESTIMATORS
from influence.engine.factors import fit_covariance, fit_eigenvalue_correction
from influence.engine.model import select_layers
from influence.engine.precondition import precondition_queries
from influence.engine.refine import Refine, refine_queries
from influence.engine.scores import score_candidates

F32 = dict(dtype=torch.float32, progress=False)
N = 9


def padded(sequences, extra: int = 0, pad_id: int = 0) -> dict:
    """A batch right-padded to the longest sequence plus `extra` columns of padding."""
    batch = pad_batch(sequences, pad_id=pad_id)
    if extra:
        b = len(sequences)
        batch = {
            "input_ids": torch.cat([batch["input_ids"], torch.full((b, extra), pad_id)], 1),
            "attention_mask": torch.cat([batch["attention_mask"], torch.zeros(b, extra, dtype=torch.long)], 1),
            "labels": torch.cat([batch["labels"], torch.full((b, extra), -100)], 1),
        }
    return batch


def groupings(sequences):
    """(name, order of candidates, batches) for several batchings of the same candidates."""
    order = list(range(N))
    shuffled = torch.randperm(N, generator=torch.Generator().manual_seed(1)).tolist()
    reverse = order[::-1]
    return {
        "one_per_batch": (order, [padded([sequences[i]]) for i in order]),
        "batches_of_4": (order, [padded([sequences[i] for i in order[s : s + 4]]) for s in range(0, N, 4)]),
        "one_batch_reversed": (reverse, [padded([sequences[i] for i in reverse])]),
        "shuffled_pairs_extra_padding": (
            shuffled,
            [padded([sequences[i] for i in shuffled[s : s + 2]], extra=7, pad_id=3) for s in range(0, N, 2)],
        ),
    }


@pytest.fixture(scope="module", params=["llama_bias", "gpt2"])  # the bias column meets the padding
def fitted_float32(request):
    model = MODELS[request.param](dtype=torch.float32)
    layers = select_layers(model)
    fit = [pad_batch(random_sequences(16, seed=20)[i : i + 8]) for i in (0, 8)]
    covariance = fit_covariance(model, layers, fit, **F32)
    eigen = eigendecompose(covariance, progress=False)
    correction = fit_eigenvalue_correction(model, layers, eigen, fit, **F32)
    return model, layers, eigen, correction, fit


def _queries(sequences, extra=0):
    labels = [[-100] * (len(s) // 2) + s[len(s) // 2 :] for s in sequences]
    batch = pad_batch(sequences, labels)
    if extra:
        q = len(sequences)
        batch = {
            "input_ids": torch.cat([batch["input_ids"], torch.zeros(q, extra, dtype=torch.long)], 1),
            "attention_mask": torch.cat([batch["attention_mask"], torch.zeros(q, extra, dtype=torch.long)], 1),
            "labels": torch.cat([batch["labels"], torch.full((q, extra), -100)], 1),
        }
    return batch


@pytest.mark.parametrize("estimator", SCORING_ESTIMATORS)
def test_scores_do_not_depend_on_batching_order_or_padding(fitted_float32, estimator):
    model, layers, eigen, correction, fit = fitted_float32
    queries = random_sequences(3, seed=21, low=6, high=10)
    ids = ["q0", "q1", "q2"]

    def pre(batches):
        if ESTIMATORS[estimator].refines:  # CG on the fitting batches' Fisher, a fixed number of steps per query
            return refine_queries(
                model, layers, ids, batches, fit, eigen, correction, settings=Refine(steps=5, tolerance=0.0), **F32
            )
        return precondition_queries(
            model, layers, ids, batches, estimator=estimator, eigen=eigen, correction=correction, **F32
        )

    # queries preconditioned together, one at a time, and with extra padding give the same scores
    variants = {
        "queries_together": pre([_queries(queries)]),
        "queries_alone": pre([_queries([q]) for q in queries]),
        "queries_padded": pre([_queries(queries[:2], extra=5), _queries(queries[2:], extra=2)]),
    }
    candidates = random_sequences(N, seed=22)
    runs = [
        (name, variants["queries_together"], order, batches) for name, (order, batches) in groupings(candidates).items()
    ]
    order, batches = runs[0][2], runs[0][3]
    runs += [(name, p, order, batches) for name, p in variants.items() if name != "queries_together"]
    reference = None
    for name, preconditioned, order, batches in runs:
        total = score_candidates(model, layers, preconditioned, batches, **F32).total  # (N, Q) in `order`
        scores = torch.empty_like(total)
        scores[order] = total
        if reference is None:
            reference = scores
            assert reference.abs().max() > 0
            continue
        torch.testing.assert_close(scores, reference, rtol=1e-4, atol=1e-5 * reference.abs().max().item(), msg=name)


def test_micro_batching_does_not_change_scores(fitted_float32):
    """Batches split into micro-batches by the token budget score as the whole batch."""
    model, layers, eigen, correction, _ = fitted_float32
    preconditioned = precondition_queries(
        model,
        layers,
        ["q0"],
        [_queries(random_sequences(1, seed=23, low=6, high=10))],
        estimator="ekfac",
        eigen=eigen,
        correction=correction,
        **F32,
    )
    batch = [padded(random_sequences(N, seed=24))]
    whole = score_candidates(model, layers, preconditioned, batch, **F32).total
    split = score_candidates(model, layers, preconditioned, batch, max_tokens=12, **F32).total
    torch.testing.assert_close(split, whole, rtol=1e-4, atol=1e-5 * whole.abs().max().item())
