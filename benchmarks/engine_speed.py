"""Speed and memory of the engine against kronfluence 1.0.1 and bergson 2.5.1, phase by phase, in one run.

    python -m benchmarks.engine_speed                 # W1 and W2, all three engines
    python -m benchmarks.engine_speed --workloads W1  # just the small one
    python -m benchmarks.engine_speed --workloads W2 --engines ours --fitting 384  # W2 at the default run's fitting size

Each engine and the baseline passes run in their own subprocess, one after
the other, so peak RSS is per engine and none inherits another's heap.
All engines see identical data, batches of 32 and the same label sampler: the
true Fisher's labels are drawn by inverse CDF from the model's softmax at every
labelled position (influence.engine.data.summed_loss), ours seeded per batch,
kronfluence's and bergson's from one generator used batch after batch (their
own loss functions are replaced by this one; bergson's would call
torch.multinomial, ~10x slower over a 49k vocabulary). bergson runs as its
`hessian_pipeline` does (weights frozen, input embeddings trainable, float32
factors); its phases are its own collectors, and it has no rank-r or per-token
query scores, so its table cells for those phases are empty.
Ratios ("× pass") divide a phase's time by one plain forward+backward pass
(all weights trainable) over the tokens that phase reads; the ideal pipeline
is 2 × fitting + 1 × candidates passes (covariance, correction, scores).
`--fitting N` changes only the number of fitting sequences (the
eigendecomposition is a fixed cost per layer, so its share of the pipeline
depends on it); the phases then divide by the pass over the tokens they read.

Workloads (fixed seeds):
  W1 random LlamaForCausalLM, hidden 128, 4 layers, intermediate 512, 4 heads,
     vocab 49152, tied embeddings; MLPs tracked; 512 fitting and 512 candidate
     sequences of 64 random tokens; 8 queries of 48 prompt + 16 completion tokens.
  W2 SmolLM2-135M-Instruct, the MLPs of all 30 blocks (90 modules); 64 fitting
     and 64 candidate sequences of 64 random tokens; 4 queries.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from influence.engine import artefacts  # noqa: E402
from influence.engine.data import IGNORE, pad_batch, summed_loss  # noqa: E402

PHASES = ["covariance", "eigendecomposition", "eigenvalue_correction", "scores_full", "scores_rank", "token_scores"]
PIPELINE = PHASES[:4]
RANK = 32
BATCH = 32
ROLES = ["baseline", "ours", "kronfluence", "bergson"]
CACHE = ROOT / "benchmarks" / ".cache"


FITTING: int | None = None  # --fitting: fitting sequences instead of the workload's own number


def workload(name: str):
    """(model, tracked module names, fitting batches, candidate batches, query batches)."""
    gen = torch.Generator().manual_seed(1234)
    if name == "W1":
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        config = LlamaConfig(
            hidden_size=128,
            num_hidden_layers=4,
            intermediate_size=512,
            num_attention_heads=4,
            num_key_value_heads=4,
            vocab_size=49152,
            tie_word_embeddings=True,
        )
        model, n_fit, n_cand, n_query = LlamaForCausalLM(config).eval(), 512, 512, 8
    else:
        from influence.engine.model import default_gguf_path, load_model, load_tokenizer, save_dequantised

        checkpoint = CACHE / "smollm2-135m"
        if not (checkpoint / "config.json").exists():
            save_dequantised(load_model(default_gguf_path()), load_tokenizer(default_gguf_path()), checkpoint)
        model, n_fit, n_cand, n_query = load_model(checkpoint, device="cpu"), 64, 64, 4
    vocab = model.config.vocab_size
    n_fit = FITTING or n_fit

    def sequences(n):
        return torch.randint(0, vocab, (n, 64), generator=gen).tolist()

    fit = [pad_batch(s) for s in _chunks(sequences(n_fit))]
    cand = [pad_batch(s) for s in _chunks(sequences(n_cand))]
    queries = sequences(n_query)
    query = [pad_batch(queries, [[IGNORE] * 48 + q[48:] for q in queries])]
    names = [n for n, _ in model.named_modules() if n.endswith(("gate_proj", "up_proj", "down_proj"))]
    return model, names, fit, cand, query


def _chunks(items):
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


def run_baseline(name: str) -> dict:
    """Seconds of one plain and one frozen-weights forward+backward over the fitting tokens."""
    model, _, fit, cand, _ = workload(name)
    out = {}
    passes = [("pass", True, fit), ("frozen_pass", False, fit)]
    if len(cand) != len(fit):
        passes.append(("candidate_pass", True, cand))
    for label, trainable, batches in passes:
        model.requires_grad_(trainable)
        start = time.perf_counter()
        for batch in batches:
            embeds = model.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_(not trainable)
            logits = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
            summed_loss(logits, batch["labels"]).backward()
            model.zero_grad(set_to_none=True)
        out[label] = time.perf_counter() - start
    return out


def run_ours(name: str) -> dict:
    """Each phase reads its inputs from and writes its outputs to disk, as the workflow's rules do,
    so a phase's peak RSS is what its rule needs (load and save times count)."""
    from influence.engine import names
    from influence.engine.eigen import eigendecompose
    from influence.engine.factors import fit_covariance, fit_eigenvalue_correction
    from influence.engine.model import select_layers
    from influence.engine.precondition import precondition_queries
    from influence.engine.scores import score_candidates, token_scores

    from benchmarks.memory import PeakRSS

    model, module_names, fit, cand, query = workload(name)
    layers = select_layers(model, "(" + "|".join(n.replace(".", r"\.") for n in module_names) + ")$")
    ids = [str(i) for i in range(query[0]["input_ids"].shape[0])]
    seconds, peaks, results = {}, {}, {}
    tmp = tempfile.TemporaryDirectory()
    path = {k: Path(tmp.name) / f"{k}.safetensors" for k in ("covariance", "eigen", "lambda", "pre")}

    def phase(label, fn):
        with PeakRSS() as rss:
            start = time.perf_counter()
            results[label] = fn()
            seconds[label] = time.perf_counter() - start
        peaks[label] = rss.peak_mb

    def covariance():
        artefacts.save_factor_sums(
            path["covariance"],
            fit_covariance(model, layers, fit, "true", seed=0, progress=False),
            names.KIND_COVARIANCE,
            "bench",
            {},
        )

    def eigen():
        sums = artefacts.load_factor_sums(path["covariance"], names.KIND_COVARIANCE)
        eigen, counts = eigendecompose(sums, progress=False), (sums.n_tokens, sums.n_sequences)
        del sums  # as the rule script does: the sums are not needed while saving
        artefacts.save_eigen(path["eigen"], eigen, "bench", {}, *counts)

    def correction():
        sums = fit_eigenvalue_correction(
            model, layers, artefacts.load_eigen(path["eigen"]), fit, "true", seed=1, progress=False
        )
        artefacts.save_factor_sums(path["lambda"], sums, names.KIND_CORRECTION, "bench", {})

    def precondition_then(score, rank=None):
        start = time.perf_counter()
        pre = precondition_queries(
            model,
            layers,
            ids,
            query,
            estimator="ekfac",
            eigen=artefacts.load_eigen(path["eigen"]),
            correction=artefacts.load_factor_sums(path["lambda"], names.KIND_CORRECTION),
            rank=rank,
            progress=False,
        )
        artefacts.save_preconditioned(path["pre"], pre, "bench", {})
        del pre
        seconds.setdefault("precondition_" + str(rank), time.perf_counter() - start)
        return score(artefacts.load_preconditioned(path["pre"]))

    phase("covariance", covariance)
    phase("eigendecomposition", eigen)
    phase("eigenvalue_correction", correction)
    phase(
        "scores_full",
        lambda: precondition_then(lambda p: score_candidates(model, layers, p, cand, progress=False).total),
    )
    phase(
        "scores_rank",
        lambda: precondition_then(lambda p: score_candidates(model, layers, p, cand, progress=False).total, RANK),
    )
    phase("token_scores", lambda: precondition_then(lambda p: token_scores(model, layers, p, cand, progress=False)))
    tmp.cleanup()
    return dict(
        seconds=seconds, peaks=peaks, full=results["scores_full"].T.tolist(), rank=results["scores_rank"].T.tolist()
    )


def run_kronfluence(name: str) -> dict:
    from benchmarks.kronfluence_adapter import run_kronfluence as run

    model, module_names, fit, cand, query = workload(name)
    gen = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(
            model,
            module_names,
            fit,
            cand,
            query,
            empirical_fisher=False,
            damping=None,
            dtype=torch.float32,
            output_dir=tmp,
            generator=gen,
            rank=RANK,
            token_scores=True,
        )
    return dict(
        seconds=result.phase_seconds,
        peaks=result.phase_peak_rss_mb,
        full=result.scores.tolist(),
        rank=result.rank_scores.tolist(),
    )


def run_bergson(name: str) -> dict:
    from benchmarks.bergson_adapter import run_bergson as run

    model, module_names, fit, cand, query = workload(name)
    gen = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(model, module_names, fit, cand, query, fisher="true", output_dir=tmp, generator=gen)
    return dict(seconds=result.phase_seconds, peaks=result.phase_peak_rss_mb, full=result.scores.tolist())


def rank_agreement(full, rank) -> tuple[float, float]:
    """Relative L2 error and mean Spearman of rank-r against full-rank scores, over queries."""
    from scipy.stats import spearmanr

    full, rank = torch.tensor(full), torch.tensor(rank)
    rel = float(((rank - full).norm(dim=1) / full.norm(dim=1)).mean())
    rho = sum(spearmanr(f.numpy(), r.numpy()).statistic for f, r in zip(full, rank)) / len(full)
    return rel, rho


def in_subprocess(role: str, name: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(
            [sys.executable, "-m", "benchmarks.engine_speed", "--role", role, "--workloads", name, "--out", out.name]
            + (["--fitting", str(FITTING)] if FITTING else []),
            check=True,
            cwd=ROOT,
        )
        return json.loads(Path(out.name).read_text())


def report(name: str, base: dict, engines: dict[str, dict]) -> None:
    """One table per workload: seconds, speed-up of ours over each peer (peer s / ours s), multiples
    of one forward+backward pass, and peak RSS; a peer without a phase shows "—"."""
    one = base["pass"]  # over the fitting sequences
    scoring_pass = base.get("candidate_pass", one)  # over the candidates, when --fitting makes them differ
    per_pass = {phase: scoring_pass if phase.startswith(("scores", "token")) else one for phase in PHASES}
    peers = [e for e in engines if e != "ours"]
    ours = engines["ours"]
    print(f"\n## {name}: one forward+backward {one:.1f} s over the fitting sequences, {scoring_pass:.1f} s over the "
          f"candidates (frozen weights {base['frozen_pass']:.1f} s)\n")  # fmt: skip
    cols = (
        [f"{e} s" for e in engines]
        + [f"speed-up vs {e}" for e in peers]
        + [f"{e} × pass" for e in engines]
        + [f"{e} peak RSS MB" for e in engines]
    )
    print("| phase | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")

    def cell(value, fmt, unit=""):
        return "—" if value is None else format(value, fmt) + unit

    for phase in PHASES:
        secs = {e: r["seconds"].get(phase) for e, r in engines.items()}
        row = [cell(secs[e], ".1f") for e in engines]
        row += [cell(secs[e] / secs["ours"] if secs[e] else None, ".2f", "×") for e in peers]
        row += [cell(secs[e] / per_pass[phase] if secs[e] else None, ".2f") for e in engines]
        row += [cell(r["peaks"].get(phase), ".0f") for r in engines.values()]
        print(f"| {phase} | " + " | ".join(row) + " |")
    for label, phases in (("pipeline (first four)", PIPELINE), ("all six phases", PHASES)):
        ideal = 2 * one + (1 if phases is PIPELINE else 3) * scoring_pass
        totals = {
            e: sum(r["seconds"][p] for p in phases) if all(p in r["seconds"] for p in phases) else None
            for e, r in engines.items()
        }
        row = [cell(totals[e], ".1f") for e in engines]
        row += [cell(totals[e] / totals["ours"] if totals[e] else None, ".2f", "×") for e in peers]
        row += [cell(totals[e] / ideal if totals[e] else None, ".2f", " of ideal") for e in engines]
        row += [cell(max(r["peaks"][p] for p in phases) if totals[e] else None, ".0f") for e, r in engines.items()]
        print(f"| **{label}** | " + " | ".join(row) + " |")
    frozen = (
        "" if "candidate_pass" in base else f"; frozen-weight ideal of the pipeline {3 * base['frozen_pass']:.1f} s"
    )
    print(f"\nideal = 2 × fitting + 1 × candidates passes for the pipeline, + 2 × candidates for all six{frozen}.")
    print(
        f"ours: query preconditioning full rank {ours['seconds']['precondition_None']:.2f} s, "
        f"rank {RANK} {ours['seconds'][f'precondition_{RANK}']:.2f} s (inside the score phases)"
    )
    for label, result in engines.items():
        if "rank" in result:
            rel, rho = rank_agreement(result["full"], result["rank"])
            print(f"{label}: rank-{RANK} vs full rank: relative L2 {rel:.4f}, mean Spearman {rho:.4f}")
    for peer in peers:
        rel, rho = rank_agreement(engines[peer]["full"], ours["full"])
        print(
            f"ours vs {peer} full-rank scores (true Fisher, independent samples): relative L2 {rel:.3f}, "
            f"mean Spearman {rho:.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=["W1", "W2"], choices=["W1", "W2"])
    parser.add_argument("--role", choices=ROLES)
    parser.add_argument("--engines", nargs="+", default=ROLES[1:], choices=ROLES[1:])
    parser.add_argument("--out", help="child: where to write its JSON; parent: also save every raw result here")
    parser.add_argument("--fitting", type=int, help="fitting sequences (default: the workload's own, W1 512, W2 64)")
    args = parser.parse_args()
    global FITTING
    FITTING = args.fitting
    if args.role:  # a child: one engine on one workload
        runner = {"baseline": run_baseline, "ours": run_ours, "kronfluence": run_kronfluence, "bergson": run_bergson}[
            args.role
        ]
        Path(args.out).write_text(json.dumps(runner(args.workloads[0])))
        return
    from benchmarks.peers import require

    require(*(e for e in args.engines if e != "ours"))  # before minutes of our own engine's work
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, batch {BATCH}")
    raw = {}
    for name in args.workloads:
        base = in_subprocess("baseline", name)
        engines = {"ours": in_subprocess("ours", name)}
        engines.update({e: in_subprocess(e, name) for e in args.engines if e != "ours"})
        report(name, base, engines)
        raw[name] = dict(baseline=base, **engines)
        if args.out:
            Path(args.out).write_text(json.dumps(raw))


if __name__ == "__main__":
    main()
