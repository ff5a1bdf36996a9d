"""Run bergson 2.5.1 (EleutherAI) phase by phase: parity oracle, speed peer and ASTRA-CG reference.

Our engine never imports this module. bergson is driven through its own collectors on an in-memory
model (its CLI wants a checkpoint and a dataset on disk; the collectors are what the CLI runs).
Facts from bergson 2.5.1's source that matter for parity:

* Positions (``data.py::pad_and_tensor``): the collection mask marks every non-padding position BUT
  each sequence's last. Covariances A and S (``hessians/kfac.py::CovarianceCollector``) sum only those
  rows and are divided by their count (``num_positions``) in ``eigenvectors.py::eigendecompose_owned``.
  Ours counts every real token; the last token's g is zero, so S differs only by the count, but A
  differs by the last token's activation. EK-FAC scores depend on A only through its eigenvectors.
* Loss (``collector.py::fwd_bwd_hessian_factory``): ``logits[:, :-1]`` against ``y[:, 1:]``, summed
  over a sequence (``IndexConfig.loss_reduction="sum"``, the default); labels are the data's
  (``use_dataset_labels=True``) or ``torch.multinomial`` samples from the softmax. The model is
  called as ``model(x)`` without an attention mask (right padding, so real positions never see it).
* Λ (``eigenvectors.py::LambdaCollector``): Σ_documents (Q_Gᵀ G_n Q_A)² / num_documents, i.e. per
  sequence, as ours; the bias is an extra ones column of a when ``include_bias`` (ours: when the
  layer has a bias).
* Inverse (``preconditioner.py::FactoredPreconditioner.apply``, ``inversion.py::damped_inverse_eigfn``):
  rotate, divide by Λ + 0.1·mean(Λ) per module, rotate back, in FLOAT32 whatever the factors' dtype.
* Score (``score/scorer.py::Scorer``): preconditioned query gradient · candidate gradient, float32 by
  ``ScoreConfig.precision``; the query's loss is its summed cross-entropy over labelled positions,
  so the score is g_qᵀ(F+λI)⁻¹g_z with no sign change: positive = proponent, as ours.
* ASTRA (``hessians/astra.py``): each query is refined on its own by preconditioned CG over one random
  batch of ``AstraConfig.batch_size`` documents, each product a forward-mode JVP plus a backward pass
  (Gauss-Newton, ``GaussNewtonProduct``). ``Astra._read_row`` wraps read-only memmap rows with
  ``torch.from_numpy`` and CG then adds into them in place, which segfaults on CPU (the float32 ``.to``
  is a no-op, so no copy is made). ``_CloningAstra`` below clones the rows; the installed package is
  never patched.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from influence.engine.data import summed_loss

from benchmarks.memory import PeakRSS, release_free_heap

Batch = dict[str, torch.Tensor]


def _quiet_bergson() -> None:
    import logging

    for name in ("CollectorComputer", "Astra", "FactoredPreconditioner", "EkfacApplicator"):
        logging.getLogger(name).setLevel(logging.WARNING)


def to_dataset(batches: list[Batch]):
    """A datasets.Dataset of unpadded rows (input_ids, labels, length) and our batching as index lists."""
    from datasets import Dataset

    ids, labels, groups = [], [], []
    for batch in batches:
        rows = []
        for i, n in enumerate(batch["attention_mask"].sum(1).tolist()):
            rows.append(len(ids))
            ids.append(batch["input_ids"][i, :n].tolist())
            labels.append(batch["labels"][i, :n].tolist())
        groups.append(rows)
    data = Dataset.from_dict({"input_ids": ids, "labels": labels, "length": [len(s) for s in ids]})
    return data, groups


def without_last_token(batches: list[Batch]) -> list[Batch]:
    """`batches` with each sequence's last real token masked out: fitting our factors on these gives
    bergson's convention (A and S over every real position but the last, counted likewise). With
    right padding and causal attention the mask changes only that last position, which has no label."""
    out = []
    for batch in batches:
        mask = batch["attention_mask"].clone()
        lengths = mask.sum(1)
        rows = torch.nonzero(lengths > 0).squeeze(1)
        mask[rows, lengths[rows] - 1] = 0
        out.append({**batch, "attention_mask": mask})
    return out


def bergson_model(model: torch.nn.Module, module_names: list[str]):
    """A copy of `model` set up as bergson's ``setup_model_and_peft`` does (all weights frozen, the
    input embeddings trainable so its full backward hooks fire), and our module names -> bergson's,
    which are relative to ``model.base_model``."""
    model = copy.deepcopy(model).eval()
    model.requires_grad_(False)
    model.get_input_embeddings().requires_grad_(True)
    ids = {id(m): n for n, m in model.base_model.named_modules()}
    names = {n: ids[id(model.get_submodule(n))] for n in module_names}
    return model, names


def label_sampler(fisher: str, generator: torch.Generator | None) -> Callable:
    """bergson's ``forward_backward`` with OUR loss and label sampler (inverse CDF from one generator
    used batch after batch, as the kronfluence adapter does), so all engines draw labels alike."""

    def forward_backward(model, x, y, batch):
        logits = model(x).logits
        summed_loss(logits, y, fisher, generator).backward()
        model.zero_grad()
        return torch.zeros(x.shape[0], device=x.device)

    return forward_backward


def run_collector(model, index_cfg, collector, data, groups: list[list[int]], forward_backward: Callable):
    """One pass of bergson's CollectorComputer over `data` in our batches, with `forward_backward`."""
    from bergson.collector.collector import CollectorComputer

    computer = CollectorComputer(model=model, data=data, collector=collector, batches=groups, cfg=index_cfg)
    computer.forward_backward = forward_backward
    computer.run_with_collector_hooks(desc="bergson")
    return collector


def query_gradients(model, index_cfg, targets: set[str], query_batches: list[Batch]) -> dict[str, torch.Tensor]:
    """bergson's per-query gradients of the summed completion loss: {bergson name: (Q, out·(in+1))}."""
    from bergson.collector.collector import fwd_bwd_factory
    from bergson.collector.in_memory_collector import InMemoryCollector
    from bergson.gradients import GradientProcessor

    query, groups = to_dataset(query_batches)
    collector = InMemoryCollector(
        model=model.base_model,
        target_modules=targets,
        attention_cfgs={},
        processor=GradientProcessor(include_bias=True),
        data=query,
        cfg=index_cfg,
    )
    run_collector(model, index_cfg, collector, query, groups, fwd_bwd_factory(index_cfg))
    return {n: collector.gradients[n].float() for n in targets}


@dataclass
class BergsonResult:
    scores: torch.Tensor | None  # (n_queries, n_candidates) float64, our sign convention; None if score=False
    phase_seconds: dict[str, float]
    phase_peak_rss_mb: dict[str, float]
    damping: dict[str, float]  # our module name -> 0.1·mean(Λ)
    hessian_path: str  # bergson's factor store (for ASTRA)
    names: dict[str, str]  # our module name -> bergson's


def run_bergson(
    model: torch.nn.Module,
    module_names: list[str],
    fit_batches: list[Batch],
    candidate_batches: list[Batch],
    query_batches: list[Batch],
    *,
    fisher: str,
    output_dir: str,
    generator: torch.Generator | None = None,
    native_sampler: bool = False,
    hessian_dtype: str = "fp32",
    score: bool = True,
) -> BergsonResult:
    """EK-FAC scores from bergson for queries x candidates, timing covariance, eigendecomposition,
    eigenvalue correction and scoring (query gradients + preconditioning + candidate sweep).

    fisher="empirical" uses bergson's own loss (``use_dataset_labels=True``); fisher="true" uses our
    label sampler unless `native_sampler` (then bergson's ``torch.multinomial`` over the softmax).
    """
    from bergson.collector.collector import fwd_bwd_factory, fwd_bwd_hessian_factory
    from bergson.collector.gradient_collectors import GradientCollector
    from bergson.config.config import HessianConfig, IndexConfig, InversionConfig
    from bergson.gradients import GradientProcessor
    from bergson.hessians.eigenvectors import LambdaCollector, eigendecompose_owned, save_uncorrected_eigenvalues
    from bergson.hessians.kfac import CovarianceCollector
    from bergson.hessians.preconditioner import FactoredPreconditioner
    from bergson.score.score_writer import InMemorySequenceScoreWriter
    from bergson.score.scorer import Scorer
    from bergson.utils.utils import convert_precision_to_torch

    _quiet_bergson()
    model, names = bergson_model(model, module_names)
    targets = set(names.values())
    path = Path(output_dir) / "hessian"
    index_cfg = IndexConfig(run_path=str(path), include_bias=True)
    index_cfg.partial_run_path.mkdir(parents=True, exist_ok=True)
    hessian_cfg = HessianConfig(
        method="kfac", ev_correction=True, hessian_dtype=hessian_dtype, use_dataset_labels=fisher == "empirical"
    )
    dtype = convert_precision_to_torch(hessian_dtype)
    fit, fit_groups = to_dataset(fit_batches)
    cand, cand_groups = to_dataset(candidate_batches)
    query, query_groups = to_dataset(query_batches)
    processor = GradientProcessor(include_bias=True)
    if fisher == "empirical" or native_sampler:
        forward_backward = fwd_bwd_hessian_factory(index_cfg, hessian_cfg)
    else:
        forward_backward = label_sampler(fisher, generator)

    def collect(collector, data, groups, fwd_bwd=None):
        # gradients (fwd_bwd given): bergson's own summed CE over the labelled positions
        return run_collector(model, index_cfg, collector, data, groups, fwd_bwd or forward_backward)

    common = dict(
        model=model.base_model, target_modules=targets, attention_cfgs={}, path=str(index_cfg.partial_run_path)
    )
    seconds: dict[str, float] = {}
    peaks: dict[str, float] = {}
    out: dict[str, object] = {}

    def phase(label, fn):
        release_free_heap()
        with PeakRSS() as rss:
            start = time.perf_counter()
            out[label] = fn()
            seconds[label] = time.perf_counter() - start
        peaks[label] = rss.peak_mb

    phase(
        "covariance", lambda: collect(CovarianceCollector(**common, processor=processor, dtype=dtype), fit, fit_groups)
    )

    def eigen():
        cov = out["covariance"]
        total = torch.load(index_cfg.partial_run_path / "total_processed.pt", weights_only=False)
        vectors, values = {}, {}
        for side, sums, shapes in (
            ("activation", cov.A_cov_dict, cov.A_shapes),
            ("gradient", cov.S_cov_dict, cov.S_shapes),
        ):
            vectors[side], values[side] = eigendecompose_owned(
                sums,
                shapes,
                None,
                total,
                str(path.with_suffix(".part") / f"eigen_{side}_sharded"),
                dtype,
                num_positions=cov.num_positions,
            )
        save_uncorrected_eigenvalues(
            index_cfg.partial_run_path,
            values["activation"],
            values["gradient"],
            total,
            0,
            1,
            num_documents=len(fit),
            num_positions=cov.num_positions,
        )
        return vectors["activation"], vectors["gradient"]

    phase("eigendecomposition", eigen)
    phase(
        "eigenvalue_correction",
        lambda: collect(
            LambdaCollector(
                **common,
                processor=processor,
                dtype=dtype,
                num_documents=len(fit),
                eigenvectors=out["eigendecomposition"],
            ),
            fit,
            fit_groups,
        ),
    )
    del out["covariance"], out["eigendecomposition"]

    def scores():
        # As score_dataset: query gradients, preconditioned once, then one sweep over the candidates.
        grads = query_gradients(model, index_cfg, targets, query_batches)
        pre = FactoredPreconditioner.from_path(
            index_cfg.partial_run_path, inversion_cfg=InversionConfig(), ev_correction=True
        )
        query_grads = pre.apply(grads)
        writer = InMemorySequenceScoreWriter(len(cand), len(query))
        scorer = Scorer(query_grads, sorted(targets), writer, torch.device("cpu"), torch.float32)
        collect(
            GradientCollector(
                model=model.base_model,
                cfg=index_cfg,
                processor=processor,
                target_modules=targets,
                data=cand,
                scorer=scorer,
                attention_cfgs={},
            ),
            cand,
            cand_groups,
            fwd_bwd_factory(index_cfg),
        )
        return writer.scores.T.double(), pre

    if not score:  # factors only (ASTRA): the damping is read from the saved Λ
        pre = FactoredPreconditioner.from_path(
            index_cfg.partial_run_path, inversion_cfg=InversionConfig(), ev_correction=True
        )
        out["scores_full"] = None, pre
    else:
        phase("scores_full", scores)
    score_matrix, pre = out["scores_full"]
    damping = {ours: float(0.1 * pre.lambdas[theirs].double().mean()) for ours, theirs in names.items()}
    return BergsonResult(score_matrix, seconds, peaks, damping, str(index_cfg.partial_run_path), names)
