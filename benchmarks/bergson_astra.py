"""bergson 2.5.1's ASTRA (one query at a time) next to our batched refiners: its CG solver against ekfac_cg, its
SGD solver (ASTRA proper) against ekfac_astra.

    python -m benchmarks.bergson_astra                       # CG: tiny GPT-2, 4 queries, 20 steps, 96 documents
    python -m benchmarks.bergson_astra --solver sgd --steps 300 --queries 8   # ASTRA's SGD at its defaults
    python -m benchmarks.bergson_astra --steps 5 --documents 32 --queries 2

SGD: ``AstraConfig(solver="sgd", num_steps=steps, lr=0.1, momentum=0.0, batch_size=16, lr_decay=0.9,
lr_decay_interval=100)`` (bergson's example but μ, 0.9 there, 0 our default) against ``Astra`` with the same values
(ours caps the step at 1/λ_max of the preconditioned curvature): every step a random batch of 16 documents and the
exact Gauss-Newton product over it. bergson draws its batches per query
and forms each query's product alone (a dual-number forward, its primal included, then a backward); ours draws
one batch per step for all queries, shares the primal pass and vmaps the Q tangents and cotangents. Same start
(the EK-FAC solution), same damping rule (0.1 × each layer's mean eigenvalue).

bergson: factors fitted by its own collectors on the refinement documents (true Fisher, our label
sampler, float32), query gradients and the EK-FAC start by its collector and preconditioner, then
``Astra.run`` over memmaps exactly as ``hessians/pipeline.py::_run_astra`` lays them out, with
``AstraConfig(solver="cg", num_steps=steps, batch_size=documents)``: every query draws a random batch
of `documents` documents (all of them when the set has exactly that many) and runs `steps` CG steps,
each one Gauss-Newton product over that batch (forward-mode JVP + backward per micro-batch of 16).

Ours (when ``influence.engine.refine`` is importable, i.e. issue 13's ekfac_cg is merged): the same
model, documents, queries and damping rule, our factors (true Fisher), ``refine_queries`` with
``Refine(steps=steps, tolerance=0)`` for all queries at once. Both times exclude factor fitting.

The tiny GPT-2: GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab 50257 [GPT-2's], n_positions=128),
random init (seed 0), MLPs tracked (c_fc, c_proj: 4 modules, 66k parameters), documents of 64 random
tokens, queries of 32 prompt + 16 completion tokens. Only the ratio at equal steps and set size is meant
to carry over; absolute seconds depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from influence.engine.data import IGNORE, pad_batch  # noqa: E402

from benchmarks.bergson_adapter import bergson_model, query_gradients, run_bergson, to_dataset  # noqa: E402
from benchmarks.peers import require  # noqa: E402


def tiny_gpt2_workload(n_documents: int, n_queries: int, seed: int = 0):
    """(model, tracked module names, document batches of 16, one query batch)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=50257, n_positions=128)
    model = GPT2LMHeadModel(config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    docs = torch.randint(0, config.vocab_size, (n_documents, 64), generator=gen).tolist()
    queries = torch.randint(0, config.vocab_size, (n_queries, 48), generator=gen).tolist()
    batches = [pad_batch(docs[i : i + 16]) for i in range(0, n_documents, 16)]
    query = [pad_batch(queries, [[IGNORE] * 32 + q[32:] for q in queries])]
    names = [n for n, _ in model.named_modules() if n.endswith(("mlp.c_fc", "mlp.c_proj"))]
    return model, names, batches, query


def _cloning_astra():
    """bergson's Astra with its read-only-memmap rows cloned (the in-place CG update otherwise writes into
    a read-only mapping and segfaults on CPU) and the model and documents passed in memory rather than
    loaded from ``IndexConfig.model`` / ``.data``. Nothing in the installed package is modified."""
    from bergson.hessians.astra import Astra, GaussNewtonProduct
    from bergson.hessians.preconditioner import FactoredPreconditioner
    from bergson.utils.logger import get_logger
    from bergson.utils.utils import numpy_to_tensor

    class CloningAstra(Astra):
        def __init__(self, paths, index_cfg, inversion_cfg, astra_cfg, model, data):
            # Astra.__init__ minus setup_model_and_peft / setup_data_pipeline (same fields, same order).
            self.paths, self.cfg, self.logger, self.device = paths, astra_cfg, get_logger("Astra"), "cpu"
            self.preconditioner = FactoredPreconditioner.from_path(
                paths.hessian_path, inversion_cfg=inversion_cfg, ev_correction=True, device=self.device
            )
            self.names = list(self.preconditioner.lambdas)
            self.damping = {
                n: inversion_cfg.damping_factor * lam.mean() for n, lam in self.preconditioner.lambdas.items()
            }
            self.hvp = GaussNewtonProduct(
                model, data, index_cfg, self.names, astra_cfg.loss_reduction, astra_cfg.micro_batch_size
            )
            self.num_docs = len(data)

        def _read_row(self, mmap, offsets, row):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                return {
                    n: numpy_to_tensor(mmap[row, slice(*offsets[n])]).to(self.device, torch.float32).clone()
                    for n in self.names
                }

    return CloningAstra


# bergson's example (ASTRA's) but μ 0, our default: at 0.9 ours grows without bound on the evaluation's tiny model
SGD = dict(lr=0.1, momentum=0.0, batch_size=16, lr_decay=0.9, lr_decay_interval=100)


def run_astra_cg(
    model, module_names, document_batches, query_batches, *, steps: int, output_dir: str, solver: str = "cg"
) -> dict:
    """bergson's ASTRA (`solver` cg or sgd) for every query: seconds (factors, start, refinement), per-query
    seconds, and the refined solutions {our module name: (Q, d_out, d_in + 1)} in float32."""
    from bergson.config.config import AstraConfig, IndexConfig, InversionConfig
    from bergson.data import create_index
    from bergson.hessians.astra import AstraPaths
    from bergson.hessians.preconditioner import FactoredPreconditioner

    out = Path(output_dir)
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    fitted = run_bergson(
        model,
        module_names,
        document_batches,
        [],
        query_batches,
        fisher="true",
        output_dir=str(out),
        generator=gen,
        score=False,
    )
    factors = time.perf_counter() - start
    bmodel, names = bergson_model(model, module_names)
    bmodel.set_attn_implementation("eager")  # as Astra loads it: SDPA has no forward-mode AD on CPU
    index_cfg = IndexConfig(run_path=str(out / "astra"), include_bias=True)
    index_cfg.partial_run_path.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    grads = query_gradients(bmodel, index_cfg, set(names.values()), query_batches)
    inversion = InversionConfig()
    pre = FactoredPreconditioner.from_path(fitted.hessian_path, inversion_cfg=inversion, ev_correction=True)
    order = list(pre.lambdas)  # bergson's module order, as its apply step writes it
    init = pre.apply({n: grads[n] for n in order})
    sizes = {n: grads[n].shape[1] for n in order}
    n_queries = grads[order[0]].shape[0]
    for label, rows in (("query", grads), ("init", init)):
        mmap = create_index(out / label, n_queries, sizes, np.float32)
        mmap[:] = np.concatenate([rows[n].numpy() for n in order], axis=1)
        mmap.flush()
    create_index(out / "refined", n_queries, sizes, np.float32)
    initial = time.perf_counter() - start
    paths = AstraPaths(str(out / "query"), str(out / "init"), fitted.hessian_path, str(out / "refined"))
    data, _ = to_dataset(document_batches)
    if solver == "cg":
        astra_cfg = AstraConfig(num_steps=steps, solver="cg", batch_size=len(data))
    else:
        astra_cfg = AstraConfig(num_steps=steps, solver="sgd", **SGD)
    astra = _cloning_astra()(paths, index_cfg, inversion, astra_cfg, bmodel, data)
    start, cpu = time.perf_counter(), time.process_time()
    astra.run(range(n_queries))
    refine, refine_cpu = time.perf_counter() - start, time.process_time() - cpu
    from bergson.data import column_offsets, load_gradients

    refined = load_gradients(out / "refined")
    offsets = column_offsets(sizes)
    ours_of = {theirs: ours for ours, theirs in names.items()}
    solutions = {}
    for n in order:
        layer = model.get_submodule(ours_of[n])
        d_out = layer.weight.shape[1] if type(layer).__name__ == "Conv1D" else layer.weight.shape[0]
        solutions[ours_of[n]] = torch.from_numpy(np.array(refined[:, slice(*offsets[n])])).view(n_queries, d_out, -1)
    shutil.rmtree(out / "hessian.part", ignore_errors=True)
    return dict(
        factors_s=factors,
        start_s=initial,
        refine_s=refine,
        refine_cpu_s=refine_cpu,  # CPU seconds of this process (all threads): less sensitive to a shared machine
        per_query_s=refine / n_queries,
        queries=n_queries,
        steps=steps,
        documents=len(data),
        solutions=solutions,
    )


def run_ours(model, module_names, document_batches, query_batches, *, steps: int, solver: str = "cg") -> dict:
    """Our batched ekfac_cg (solver cg) or ekfac_astra (sgd) at equal steps and documents."""
    from influence.engine.astra import Astra, astra_queries
    from influence.engine.eigen import eigendecompose
    from influence.engine.factors import fit_covariance, fit_eigenvalue_correction
    from influence.engine.model import select_layers
    from influence.engine.refine import Refine, refine_queries

    layers = select_layers(model, "(" + "|".join(n.replace(".", r"\.") for n in module_names) + ")$")
    start = time.perf_counter()
    covariance = fit_covariance(model, layers, document_batches, "true", seed=0, progress=False)
    eigen = eigendecompose(covariance, progress=False)
    correction = fit_eigenvalue_correction(model, layers, eigen, document_batches, "true", seed=0, progress=False)
    factors = time.perf_counter() - start
    ids = [f"q{i}" for i in range(query_batches[0]["input_ids"].shape[0])]
    start, cpu = time.perf_counter(), time.process_time()
    args = (model, layers, ids, query_batches, document_batches, eigen, correction)
    if solver == "cg":
        pre = refine_queries(*args, settings=Refine(steps=steps, tolerance=0.0), fisher="true", seed=0, progress=False)
    else:
        pre = astra_queries(*args, settings=Astra(steps=steps, **SGD), progress=False)
    refine, refine_cpu = time.perf_counter() - start, time.process_time() - cpu
    return dict(
        factors_s=factors, refine_s=refine, refine_cpu_s=refine_cpu, per_query_s=refine / len(ids), preconditioned=pre
    )


def solution_cosines(theirs: dict[str, torch.Tensor], ours) -> list[float]:
    """Cosine between bergson's and our refined (G + λI)⁻¹ g_q per query, over all tracked modules. Both are
    stochastic iterations on different minibatch draws (and our factors are ours), so they agree only
    approximately; a cosine near 1 says both solve the same system."""
    from influence.engine.names import PRECONDITIONED

    a = torch.cat([theirs[n].flatten(1).double() for n in theirs], dim=1)
    b = torch.cat([ours.layers[n][PRECONDITIONED].flatten(1).double() for n in theirs], dim=1)
    return torch.nn.functional.cosine_similarity(a, b, dim=1).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--documents", type=int, default=96)
    parser.add_argument("--queries", type=int, default=4)
    parser.add_argument(
        "--solver", choices=("cg", "sgd"), default="cg", help="bergson's ASTRA solver (sgd: ASTRA's own)"
    )
    parser.add_argument("--out", help="write the timings as JSON here")
    args = parser.parse_args()
    require("bergson")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    model, names, docs, queries = tiny_gpt2_workload(args.documents, args.queries)
    with tempfile.TemporaryDirectory() as tmp:
        theirs = run_astra_cg(model, names, docs, queries, steps=args.steps, output_dir=tmp, solver=args.solver)
    ours_name = {"cg": "ekfac_cg", "sgd": "ekfac_astra"}[args.solver]
    print(
        f"bergson ASTRA-{args.solver.upper()}, {theirs['queries']} queries x {theirs['steps']} steps over {theirs['documents']} documents: "
        f"{theirs['refine_s']:.1f} s ({theirs['per_query_s']:.2f} s per query, "
        f"{theirs['refine_s'] / (theirs['queries'] * (theirs['steps'] + 1)):.2f} s per Gauss-Newton product "
        f"[steps + 1 per query], CPU {theirs['refine_cpu_s']:.1f} s); "
        f"factors {theirs['factors_s']:.1f} s, query gradients + EK-FAC start {theirs['start_s']:.2f} s"
    )
    ours = run_ours(model, names, docs, queries, steps=args.steps, solver=args.solver)
    timings = {k: v for k, v in theirs.items() if k != "solutions"}
    print(
        f"ours {ours_name}, all {theirs['queries']} queries at once: {ours['refine_s']:.2f} s, CPU {ours['refine_cpu_s']:.1f} s "
        f"({ours['per_query_s']:.3f} s per query); bergson / ours per query = "
        f"{theirs['per_query_s'] / ours['per_query_s']:.1f}x"
    )
    timings["ours"] = {k: v for k, v in ours.items() if k != "preconditioned"}
    cosines = solution_cosines(theirs["solutions"], ours["preconditioned"])
    print("cosine of the refined solutions (both exact Gauss-Newton on their own minibatch draws), per query:")
    print("  " + ", ".join(f"{c:.3f}" for c in cosines))
    timings["solution_cosines"] = cosines
    if args.out:
        Path(args.out).write_text(json.dumps(timings, indent=1))


if __name__ == "__main__":
    main()
