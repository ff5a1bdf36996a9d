"""The two settings for models larger than one GPU: bf16 weights, and layers spread by a device_map."""

import torch
from helpers import batches_of, query_batch, random_sequences, tiny_llama
from influence.engine.eigen import eigendecompose
from influence.engine.factors import fit_covariance, fit_eigenvalue_correction
from influence.engine.model import layer_devices, load_model, select_layers
from influence.engine.precondition import Damping, precondition_queries
from influence.engine.scores import score_candidates

FIT = dict(fisher="empirical", progress=False)


def ekfac_chain(model, batches, queries, rank=None):
    """Factors, eigenbasis, Λ and preconditioned queries on one model: (layers, covariance, correction, pre)."""
    layers = select_layers(model)
    covariance = fit_covariance(model, layers, batches, **FIT)
    eigen = eigendecompose(covariance, progress=False)
    correction = fit_eigenvalue_correction(model, layers, eigen, batches, **FIT)
    pre = precondition_queries(
        model,
        layers,
        ["q0", "q1"],
        [queries],
        estimator="ekfac",
        eigen=eigen,
        correction=correction,
        damping=Damping(),
        rank=rank,
        progress=False,
    )
    return layers, covariance, correction, pre


def ekfac_scores(model, batches, queries):
    """The whole chain on one model: factors, eigenbasis, Λ, preconditioned queries, scores."""
    layers, covariance, _, pre = ekfac_chain(model, batches, queries)
    return covariance, score_candidates(model, layers, pre, batches, progress=False).total


def test_bf16_weights_accumulate_float32_factors_close_to_a_float32_model():
    batches = batches_of(random_sequences(12, seed=1), 4)
    queries = query_batch(2, seed=2)
    full = tiny_llama(dtype=torch.float32)
    half = tiny_llama(dtype=torch.float32).to(torch.bfloat16)
    (cov32, scores32), (cov16, scores16) = ekfac_scores(full, batches, queries), ekfac_scores(half, batches, queries)
    for name, sums in cov16.sums.items():
        for factor, tensor in sums.items():
            assert tensor.dtype == torch.float32, (name, factor)
            reference = cov32.sums[name][factor]
            assert (tensor - reference).norm() / reference.norm() < 0.05, (name, factor)  # bf16 keeps ~3 digits
    assert torch.corrcoef(torch.stack([scores16.flatten(), scores32.flatten()]))[0, 1] > 0.95


def test_a_device_map_checkpoint_scores_like_a_plain_load(tmp_path):
    """device_map="auto" loads through from_pretrained's device map. On this GPU-less machine every layer lands
    on the CPU, so this checks the loading path and the per-layer device plumbing with one device only."""
    tiny_llama(dtype=torch.float32).save_pretrained(tmp_path)
    plain, spread = load_model(tmp_path, device="cpu"), load_model(tmp_path, device_map="auto")
    assert set(layer_devices(select_layers(spread)).values()) == {torch.device("cpu")}
    batches = batches_of(random_sequences(8, seed=3), 4)
    queries = query_batch(2, seed=4)
    torch.testing.assert_close(ekfac_scores(spread, batches, queries)[1], ekfac_scores(plain, batches, queries)[1])


def test_memory_plan_counts_the_bytes_the_engine_stores(tmp_path):
    """The sizing arithmetic (influence.engine.memory) against the factors and queries the engine really holds."""
    from influence.engine.memory import gpus_needed, meta_model, plan

    model = tiny_llama(dtype=torch.float32)
    model.config.save_pretrained(tmp_path)
    batches = batches_of(random_sequences(8, seed=5), 4)
    layers, covariance, correction, pre = ekfac_chain(model, batches, query_batch(2, seed=6), rank=4)
    table = (
        plan(meta_model(tmp_path), dtype="float32", queries=2, rank=4).set_index(["rule", "component"])["gb"] * 1e9
    ).round()

    def nbytes(sums):
        return sum(t.numel() * 4 for parts in sums.values() for t in parts.values())

    assert table["fit_covariance", "A and S sums"] == nbytes(covariance.sums)
    assert table["fit_eigenvalue_correction", "Λ sums"] == nbytes(correction.sums)
    assert table["score_shard", "preconditioned queries"] == nbytes(pre.layers)
    # ekfac_cg: about six full-rank vectors (the size of Λ) per query solved at once
    assert table["precondition_queries (ekfac_cg)", "CG state (6 full-rank vectors x 2 queries)"] == 12 * nbytes(
        correction.sums
    )
    assert table["fit_covariance", "weights"] == sum(p.numel() * 4 for p in model.parameters())
    needed = gpus_needed(table.rename("gb").reset_index().assign(gb=lambda t: t["gb"] / 1e9), gpu_gb=1e-4)
    assert (needed["gpus"] >= 1).all() and needed["gpus"].max() > 1
