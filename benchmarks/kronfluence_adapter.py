"""Run kronfluence 1.0.1 (reference EK-FAC) phase by phase: parity oracle and speed baseline.

Our engine never imports this module. Facts from kronfluence 1.0.1's source that matter for parity:

* A (activation covariance): ``module/linear.py::TrackedLinear.get_flattened_activation`` flattens
  (B,T,d_in) -> (B*T,d_in), multiplies rows by ``Task.get_attention_mask`` (padding rows -> 0), and,
  if the Linear has a bias, appends a ones column (also masked). ``module/tracker/factor.py::
  CovarianceTracker`` accumulates ``sum a a^T`` and a count ``attention_mask.sum()``: every real token,
  INCLUDING the last real one (its output gradient is 0, its activation is not).
* S (gradient covariance): ``TrackedLinear.get_flattened_gradient`` does NOT mask (padding gradients
  are 0 anyway), accumulates ``sum g g^T`` of dLoss_sum/d(output); count is again ``attention_mask.sum()``.
  No 1/B factor: gradients are of the summed loss. Both are divided by their count only in
  ``factor/eigen.py::perform_eigendecomposition`` (in ``eigendecomposition_dtype``), then symmetrised
  (C+C^T)/2, ``torch.linalg.eigh``; eigvals/eigvecs are cast back to the covariance dtype before saving.
* Lambda: ``LambdaTracker._update_lambda_matrix`` adds ``sum_n (Q_S^T G_n Q_A)**2`` with G_n the
  per-sequence gradient (out, in[+1 bias column]) in ``lambda_dtype``; ``num_lambda_processed`` counts
  SEQUENCES (``accelerate.find_batch_size`` = first dim of input_ids). It is divided by that count at
  score time in ``factor/config.py::Ekfac.prepare``, in float64 (hard-coded ``LAMBDA_DTYPE``).
* Damping (``Ekfac.prepare``): ``damping = 0.1 * mean(Lambda / N)`` per module (``HEURISTIC_DAMPING_SCALE``,
  mean over all out x (in+1) entries, bias column included) if ``damping_factor is None``, else the given
  value; then ``G~ = Q_S [(Q_S^T G Q_A) / (Lambda/N + damping)] Q_A^T``.
* Score: sum over modules of <G~_query, G_train> (Frobenius, bias column included); the query side uses
  ``Task.compute_measurement``, the train side ``compute_train_loss(sample=False)`` (score/dot_product.py).
* Low rank (``module/tracker/precondition.py::PreconditionTracker._compute_low_rank_preconditioned_gradient``):
  applied to the PRECONDITIONED query gradient, only if ``min(out, in+1) > rank``, after casting to
  ``query_gradient_svd_dtype``. Default ``torch.svd_lowrank(G~, q=rank)`` (randomised, niter=2, unseeded RNG);
  with ``use_full_svd=True`` ``torch.linalg.svd(full_matrices=False)`` truncated to the top `rank`.
  Factors: left = U diag(S), right = V^T, both cast to ``score_dtype``.
* True Fisher: ``compute_train_loss(sample=True)`` runs in BOTH the covariance and the lambda phase, so the
  sampler is called once per fitting batch in each phase (2 x n_batches calls, in batch order).
* Dtypes not settable: the Lambda/N + damping reciprocal is float64 (``LAMBDA_DTYPE``); eigenvectors are
  stored in ``activation/gradient_covariance_dtype`` whatever ``eigendecomposition_dtype`` is.
* Sign: kronfluence computes +grad(measurement)^T P grad(train loss) with no minus sign; with the
  measurement = completion cross-entropy this equals our g_q^T (F+lambda I)^-1 g_z, so NO negation.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from influence.engine.data import summed_loss
from kronfluence.analyzer import Analyzer, prepare_model
from kronfluence.arguments import FactorArguments, ScoreArguments
from kronfluence.task import Task
from kronfluence.utils.dataset import DataLoaderKwargs
from torch import nn
from torch.utils.data import Dataset
from transformers.pytorch_utils import Conv1D

from benchmarks.memory import PeakRSS

Batch = dict[str, torch.Tensor]
_PAD = {"input_ids": 0, "attention_mask": 0, "labels": -100}


def swap_conv1d_for_linear(model: nn.Module) -> nn.Module:
    """Deep copy of `model` with every HF Conv1D (y = x W + b, W (in,out)) replaced by an equal nn.Linear."""
    model = copy.deepcopy(model)
    for name, mod in list(model.named_modules()):
        if not isinstance(mod, Conv1D):
            continue
        w = mod.weight  # (in, out)
        lin = nn.Linear(w.shape[0], w.shape[1], bias=mod.bias is not None, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            lin.weight.copy_(w.t())
            if mod.bias is not None:
                lin.bias.copy_(mod.bias)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, lin)
    return model


def causal_lm_loss(model: nn.Module, batch: Batch, fisher: str, generator: torch.Generator | None) -> torch.Tensor:
    """The summed causal-LM loss of our engine (influence.engine.data.summed_loss), so both engines run
    the identical loss and label sampler (inverse CDF over the model's softmax when fisher="true")."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    return summed_loss(logits, batch["labels"], fisher, generator)


class _LMTask(Task):
    def __init__(self, module_names: list[str], generator: torch.Generator | None) -> None:
        self.module_names = list(module_names)
        self.generator = generator

    def compute_train_loss(self, batch: Batch, model: nn.Module, sample: bool = False) -> torch.Tensor:
        return causal_lm_loss(model, batch, "true" if sample else "empirical", self.generator)

    def compute_measurement(self, batch: Batch, model: nn.Module) -> torch.Tensor:
        # Query labels are -100 except on the completion, so this is sum_q -log p(completion | prompt).
        return causal_lm_loss(model, batch, "empirical", None)

    def get_influence_tracked_modules(self) -> list[str]:
        return self.module_names

    def get_attention_mask(self, batch: Batch) -> torch.Tensor:
        return batch["attention_mask"]


class _Examples(Dataset):
    """Un-batched examples in the given order (kronfluence uses a SequentialSampler and re-batches)."""

    def __init__(self, batches: list[Batch]) -> None:
        self.items = [{k: b[k][i] for k in _PAD} for b in batches for i in range(b["input_ids"].shape[0])]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Batch:
        return self.items[i]


def _collate(pad_to: int = 0) -> Callable[[list[Batch]], Batch]:
    """Stack examples, right-padding to max(len in group, pad_to); a plain stack when groups match our batches."""

    def collate(items: list[Batch]) -> Batch:
        T = max([pad_to] + [it["input_ids"].shape[0] for it in items])
        return {
            k: torch.stack([F.pad(it[k], (0, T - it[k].shape[0]), value=v) for it in items]) for k, v in _PAD.items()
        }

    return collate


def _batch_size(batches: list[Batch], override: int | None) -> int:
    """Per-device batch size that makes kronfluence rebuild exactly `batches` (all but the last must be full)."""
    if override is not None:
        return override
    sizes = [b["input_ids"].shape[0] for b in batches]
    if any(s != sizes[0] for s in sizes[:-1]) or sizes[-1] > sizes[0]:
        raise ValueError(f"batches must share one size (last may be smaller) to be re-batched identically: {sizes}")
    return sizes[0]


@dataclass
class KronfluenceResult:
    scores: torch.Tensor  # (n_queries, n_candidates) float64, our sign convention
    phase_seconds: dict[str, float]
    phase_peak_rss_mb: dict[str, float]
    lambda_damping: dict[str, float] | None  # per module, recomputed from the saved Lambda exactly as Ekfac.prepare
    rank_scores: torch.Tensor | None  # (n_queries, n_candidates) with query_gradient_low_rank=rank
    token_scores: torch.Tensor | None  # (n_queries, n_candidates, T_max): per candidate-token position, summed
    # over modules; candidates right-padded to the longest candidate batch, padding positions are 0.


def run_kronfluence(
    model: nn.Module,
    module_names: list[str],
    fit_batches: list[Batch],
    candidate_batches: list[Batch],
    query_batches: list[Batch],
    *,
    empirical_fisher: bool,
    damping: float | None,
    dtype: torch.dtype,
    output_dir: str,
    generator: torch.Generator | None = None,
    rank: int | None = None,
    token_scores: bool = False,
    batch_size: int | None = None,
    use_full_svd: bool = False,
) -> KronfluenceResult:
    """EK-FAC scores from kronfluence for `query_batches` x `candidate_batches`, timing each phase.

    `batch_size=None` re-batches every dataset exactly like the given batches (needed for parity);
    an int re-batches all three with that size (collate right-pads, which is numerically equivalent).
    The model is swapped (Conv1D -> Linear) into a copy; the caller's model is never mutated.
    """
    model = swap_conv1d_for_linear(model).eval()
    task = _LMTask(module_names, generator)
    model = prepare_model(model, task)  # wraps tracked Linears in place and freezes all parameters
    analyzer = Analyzer(
        "kronfluence",
        model,
        task,
        cpu=True,
        disable_tqdm=True,
        output_dir=output_dir,
        disable_model_save=True,
        log_level=logging.WARNING,
    )
    fit_ds, cand_ds, query_ds = _Examples(fit_batches), _Examples(candidate_batches), _Examples(query_batches)
    fit_bs = _batch_size(fit_batches, batch_size)
    cand_bs = _batch_size(candidate_batches, batch_size)
    query_bs = _batch_size(query_batches, batch_size)
    loader_kw = DataLoaderKwargs(num_workers=0, collate_fn=_collate())

    factor_args = FactorArguments(
        strategy="ekfac",
        use_empirical_fisher=empirical_fisher,
        covariance_max_examples=None,
        lambda_max_examples=None,  # defaults (100k) would silently subsample
        activation_covariance_dtype=dtype,
        gradient_covariance_dtype=dtype,
        eigendecomposition_dtype=torch.float64,  # kronfluence's default, and ours
        per_sample_gradient_dtype=dtype,
        lambda_dtype=dtype,
    )

    def score_args(**kw: object) -> ScoreArguments:
        # Accumulate all query batches first, so candidates are swept once (like our engine does).
        return ScoreArguments(
            damping_factor=damping,
            query_gradient_svd_dtype=dtype,
            per_sample_gradient_dtype=dtype,
            precondition_dtype=dtype,
            score_dtype=dtype,
            use_full_svd=use_full_svd,
            query_gradient_accumulation_steps=math.ceil(len(query_ds) / query_bs),
            **kw,
        )

    seconds: dict[str, float] = {}
    peaks: dict[str, float] = {}

    def phase(name: str, fn: Callable[[], object]) -> None:
        with PeakRSS() as rss:
            t0 = time.perf_counter()
            fn()
            seconds[name] = time.perf_counter() - t0
        peaks[name] = rss.peak_mb

    fit_kw = dict(
        factors_name="ekfac",
        dataset=fit_ds,
        per_device_batch_size=fit_bs,
        dataloader_kwargs=loader_kw,
        factor_args=factor_args,
        overwrite_output_dir=True,
    )
    phase("covariance", lambda: analyzer.fit_covariance_matrices(**fit_kw))
    phase(
        "eigendecomposition",
        lambda: analyzer.perform_eigendecomposition(
            factors_name="ekfac", factor_args=factor_args, overwrite_output_dir=True
        ),
    )
    phase("eigenvalue_correction", lambda: analyzer.fit_lambda_matrices(**fit_kw))

    def scores(name: str, args: ScoreArguments, loader: DataLoaderKwargs = loader_kw) -> torch.Tensor:
        phase(
            name,
            lambda: analyzer.compute_pairwise_scores(
                scores_name=name,
                factors_name="ekfac",
                query_dataset=query_ds,
                train_dataset=cand_ds,
                per_device_query_batch_size=query_bs,
                per_device_train_batch_size=cand_bs,
                dataloader_kwargs=loader,
                score_args=args,
                overwrite_output_dir=True,
            ),
        )
        # compute_pairwise_scores returns None after computing; the result is read back from disk.
        return analyzer.load_pairwise_scores(name)["all_modules"].to(torch.float64)

    full = scores("scores_full", score_args())
    low = scores("scores_rank", score_args(query_gradient_low_rank=rank)) if rank is not None else None
    tok = None
    if token_scores:
        # dot_product.py concatenates per-batch (q, b, T) chunks along dim 1, so every candidate batch
        # must share one T: pad all to the longest candidate batch.
        t_max = max(b["input_ids"].shape[1] for b in candidate_batches)
        tok = scores(
            "token_scores",
            score_args(compute_per_token_scores=True),
            DataLoaderKwargs(num_workers=0, collate_fn=_collate(t_max)),
        )

    lam = analyzer.load_lambda_matrices("ekfac")
    damp = {
        m: float(0.1 * (lam["lambda_matrix"][m].double() / lam["num_lambda_processed"][m].double()).mean())
        if damping is None
        else float(damping)
        for m in lam["lambda_matrix"]
    }
    return KronfluenceResult(full, seconds, peaks, damp, low, tok)
