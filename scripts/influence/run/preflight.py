"""The preflight: correctness checks on the run's own model and data before anything is fitted.

Each check has a status (pass, warn, fail, skipped), the worst value over layers or inputs, its limit and the
setting that fixes a failure. A failure stops the run (preflight.stop) naming that setting:
- dtype: each sequence's gradient in model.dtype against a wider reference (bfloat16 against float32;
  float32 against float64 up to REFERENCE_MAX_PARAMETERS), smallest cosine per layer;
- batch: a sequence's gradient alone against inside a padded batch (float32 weights): the attention kernel;
- factors: the covariance sums of a padded batch against its sequences one at a time: padding adds nothing;
- bos: no checked sentence (the rule) or query (precondition_queries, `check_query_tokens`) begins with two
  BOS tokens;
- boundary: a query's prompt and completion tokenised apart give the tokens they give together (a prompt
  ending in a space tokenises otherwise than the model ever read it): a warning in precondition_queries' log.
"""

from __future__ import annotations

import html
import time
from dataclasses import asdict, dataclass

import pandas as pd
import torch

from ..engine import checks
from ..engine.data import pad_batch
from ..engine.model import attention_implementation, load_model, select_layers

COSINE_FAIL, COSINE_WARN = 0.9, 0.99  # bergson #235: a bf16 run "completed" at cosine −0.42 to float32
BATCH_ERROR = 1e-3  # float32 regrouping noise is ~1e-6; a batch-dependent kernel is orders above
FACTOR_ERROR = 1e-4
REFERENCE_MAX_PARAMETERS = 1_500_000_000  # a float64 copy of a larger float32 model costs more than the run
TABLE_COLUMNS = ["check", "layer", "cosine", "relative_error", "status"]
# What the rule's checks run on: fixed sentences of different lengths (so a batch of them is padded), not the
# corpus or the queries, which users edit (the rule's only input is the prepared model)
SENTENCES = (
    "The capital of France is Paris, a city on the Seine.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "A cat sat on the mat.",
    "In 1969 the Apollo 11 mission landed the first people on the Moon, and they returned safely.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "She reads.",
    "The library opens at nine in the morning and closes at six in the evening on weekdays.",
    "Mercury is the planet closest to the Sun.",
)


@dataclass
class Finding:
    check: str
    status: str  # pass, warn, fail, skipped
    value: float | None
    limit: float | None
    detail: str
    setting: str | None = None  # what to change when it fails


def _layer_rows(check: str, results: dict, status_of) -> list[dict]:
    return [
        {"check": check, "layer": name, "cosine": r.get("cosine"), "relative_error": r["relative_error"]}
        | {"status": status_of(r)}
        for name, r in results.items()
    ]


def _dtype_check(model_dir, params, sequences, pad_id, run_model, layers) -> tuple[Finding, list[dict], object]:
    """The dtype finding and rows, and the float32 model the other checks use."""
    dtype = params["dtype"]
    parameters = sum(p.numel() for p in run_model.parameters())
    reference_dtype = "float32" if dtype != "float32" else "float64"
    if reference_dtype == "float64" and parameters > REFERENCE_MAX_PARAMETERS:
        detail = f"float32 weights; no float64 reference above {REFERENCE_MAX_PARAMETERS:,} parameters"
        return Finding("dtype", "skipped", None, None, detail), [], run_model
    reference = load_model(model_dir, reference_dtype, params["device"], params["trust_remote_code"])
    ref_layers = select_layers(reference, params["layers"])
    batches = [pad_batch([s], pad_id=pad_id) for s in sequences]
    results = checks.agreement(
        checks.gradient_sketches(reference, ref_layers, batches), checks.gradient_sketches(run_model, layers, batches)
    )

    def status(r):
        return "fail" if r["cosine"] < COSINE_FAIL else "warn" if r["cosine"] < COSINE_WARN else "pass"

    worst = min(results.items(), key=lambda item: item[1]["cosine"])
    finding = Finding(
        "dtype",
        status(worst[1]),
        worst[1]["cosine"],
        COSINE_FAIL,
        f"{dtype} gradients against {reference_dtype}: smallest cosine {worst[1]['cosine']:.4f} ({worst[0]})",
        "model.dtype: float32",
    )
    float32_model = reference if reference_dtype == "float32" else run_model
    return finding, _layer_rows("dtype", results, status), float32_model


def _padding_checks(model, pattern, sequences, pad_id) -> tuple[list[Finding], list[dict]]:
    layers = select_layers(model, pattern)
    kernel = attention_implementation(model)
    findings, rows = [], []
    for check, results, limit in (
        ("batch", checks.batch_dependence(model, layers, sequences, pad_id), BATCH_ERROR),
        ("factors", checks.factor_padding(model, layers, sequences, pad_id), FACTOR_ERROR),
    ):

        def status(r, limit=limit):
            return "fail" if not r["relative_error"] <= limit else "pass"

        name, worst = max(results.items(), key=lambda item: item[1]["relative_error"])
        what = "a sequence's gradient alone vs in a padded batch" if check == "batch" else "padded factor sums"
        findings.append(
            Finding(
                check,
                status(worst),
                worst["relative_error"],
                limit,
                f"{what} ({kernel} attention): largest relative error {worst['relative_error']:.2e} ({name})",
                "model.attn_implementation: eager",
            )
        )
        rows += _layer_rows(check, results, status)
    return findings, rows


def _tokenisation_checks(tokenizer, queries, corpus: dict[str, list[int]]) -> list[Finding]:
    bos = tokenizer.bos_token_id
    query_ids = {q.id: q.token_ids(tokenizer)[0] for q in queries}  # tokenised once for both checks
    encoded = {f"query {key}": ids for key, ids in query_ids.items()}
    encoded |= {f"sequence {seq_id}": ids for seq_id, ids in corpus.items()}
    doubled = [where for where, ids in encoded.items() if bos is not None and ids[:2] == [bos, bos]]
    findings = [
        Finding(
            "bos",
            "fail" if doubled else "pass",
            len(doubled),
            0,
            f"{len(doubled)} of {len(encoded)} inputs begin with two BOS tokens"
            + (f": {doubled[:5]}" if doubled else ""),
            "remove the BOS text from those prompts or documents (the tokenizer adds its own)",
        )
    ]
    split = [q.id for q in queries if q.messages is None and query_ids[q.id] != _joint_ids(tokenizer, q)]
    findings.append(
        Finding(
            "boundary",
            "warn" if split else "pass",
            len(split),
            0,
            f"{len(split)} of {len(queries)} queries tokenise otherwise apart than together"
            + (f": {split[:5]}" if split else ""),
            "end the prompt without a space and begin the completion with one (' Paris')",
        )
    )
    return findings


def check_query_tokens(tokenizer, queries, logger) -> None:
    """The bos and boundary checks on the run's queries (rule precondition_queries): a doubled BOS stops."""
    bos, boundary = _tokenisation_checks(tokenizer, queries, {})
    if boundary.status != "pass":
        logger.warning("%s; %s", boundary.detail, boundary.setting)
    if bos.status == "fail":
        raise ValueError(f"{bos.detail}; {bos.setting}.")


def _joint_ids(tokenizer, query) -> list[int]:
    return tokenizer(query.prompt + query.completion, add_special_tokens=True).input_ids


def run_preflight(
    model_dir, params: dict, sequences: dict[str, list[int]], queries, tokenizer, logger
) -> tuple[dict, pd.DataFrame]:
    """(summary, per-layer table) of every check; `params` are the rule's model params."""
    start = time.perf_counter()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = list(sequences.values())
    model = load_model(model_dir, params["dtype"], params["device"], params["trust_remote_code"])
    layers = select_layers(model, params["layers"])
    logger.info("preflight: %d sequences, %d queries, %d layers", len(ids), len(queries), len(layers))
    dtype_finding, rows, float32_model = _dtype_check(model_dir, params, ids, pad_id, model, layers)
    logger.info("dtype: %s", dtype_finding.detail)
    padding, padding_rows = _padding_checks(float32_model, params["layers"], ids, pad_id)
    findings = [dtype_finding, *padding, *_tokenisation_checks(tokenizer, queries, sequences)]
    for finding in findings[1:]:
        logger.info("%s: %s (%s)", finding.check, finding.detail, finding.status)
    summary = {
        "passed": all(f.status != "fail" for f in findings),
        "dtype": params["dtype"],
        "attn_implementation": attention_implementation(model),
        "n_sequences": len(ids),
        "sequence_lengths": [len(s) for s in ids],
        "n_queries": len(queries),
        "seconds": round(time.perf_counter() - start, 2),
        "findings": [asdict(f) for f in findings],
    }
    del model, float32_model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return summary, pd.DataFrame(rows + padding_rows, columns=TABLE_COLUMNS)


def failure_message(summary: dict) -> str:
    """What failed and which setting to change (preflight.stop: false records failures and goes on)."""
    failed = [f for f in summary["findings"] if f["status"] == "fail"]
    lines = [f"- {f['check']}: {f['detail']}; to fix: {f['setting']}" for f in failed]
    return "the preflight checks failed:\n" + "\n".join(lines) + "\n(set preflight.stop: false to go on anyway)"


def html_section(summary: dict) -> str:
    """The report's section: one row per check."""
    rows = "".join(
        f"<tr><td>{html.escape(f['check'])}</td><td>{html.escape(f['status'])}</td>"
        f"<td>{html.escape(f['detail'])}</td><td>{html.escape(f['setting'] or '')}</td></tr>"
        for f in summary["findings"]
    )
    verdict = "all passed" if summary["passed"] else "FAILED (the run went on: preflight.stop is false)"
    return (
        f"<h2>Preflight checks: {verdict}</h2><p>{summary['dtype']} weights, {summary['attn_implementation']} "
        f"attention, {summary['n_sequences']} sentences, "
        f"{summary['seconds']} s.</p><table><tr><th>check</th><th>status</th><th>measured</th>"
        f"<th>if it fails</th></tr>{rows}</table>"
    )
