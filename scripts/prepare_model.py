"""Rule prepare_model: a plain safetensors checkpoint of the model (GGUF dequantised once)."""

import json
import shutil
import tempfile
from pathlib import Path

from influence.engine.defaults import PYPI_PREFIX, packaged_gguf
from influence.engine.model import (
    ADAPTER_DIR,
    LOADING,
    attach_adapter,
    attention_implementation,
    fingerprint,
    load_model,
    load_tokenizer,
    save_dequantised,
    select_layers,
)
from influence.run.runlog import describe_model, rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
params = dict(smk.params)
name = params.pop("name", None)  # the sweep model's name (sweep.models); None for a single-model run
where = f"sweep.models.{name}" if name else "model"
params["source"] = params.get("source") or smk.input.source[0]  # a `pypi:` package has no file input
with (
    rule_log(smk.log[0], "prepare_model", **params) as (log, stats),
    tempfile.TemporaryDirectory(prefix="gguf-") as scratch,
):
    try:
        source = params["source"]
        if source.startswith(PYPI_PREFIX):  # a GGUF installed from PyPI (chunked ones are assembled here)
            source = str(packaged_gguf(source, scratch))
        model = load_model(source, params["dtype"], "cpu", params["trust_remote_code"])
        tokenizer = load_tokenizer(source)
        if params.get("adapter"):  # fail here on a bad adapter, before anything is written; save the base alone
            model = attach_adapter(model, params["adapter"]).unload()
    except Exception as error:  # name the model of a sweep: its other models may be fine
        raise RuntimeError(f"{where} ({params['source']}) cannot be used: {error}") from error
    save_dequantised(model, tokenizer, smk.output.model)
    # which source files (size, mtime in ns) this checkpoint was made from: a changed one reruns the rule
    Path(smk.output.model, "source_files.json").write_text(
        json.dumps({"source": params["source"], "files": params["source_files"]}, indent=1), encoding="utf-8"
    )
    if params.get("adapter"):  # kept apart and unmerged: its LoRA modules can be the tracked layers
        shutil.copytree(params["adapter"], Path(smk.output.model, ADAPTER_DIR))
    if params.get("attn_implementation"):
        loading = {"attn_implementation": params["attn_implementation"]}
        Path(smk.output.model, LOADING).write_text(json.dumps(loading, indent=1), encoding="utf-8")
    try:  # the checkpoint as every later rule loads it; fail here on a pattern that selects nothing
        model = load_model(smk.output.model, params["dtype"], "cpu", params["trust_remote_code"])
        sets = {set_name: select_layers(model, pattern) for set_name, pattern in params["layers"].items()}
    except Exception as error:
        raise RuntimeError(f"{where} ({params['source']}) cannot be used: {error}") from error
    layers = next(iter(sets.values()))
    text = model.config.get_text_config()
    about = {
        "name": name,
        "source": params["source"],
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "n_layers": text.num_hidden_layers,
        "hidden_size": text.hidden_size,
        "vocab_size": text.vocab_size,
        "tracked_layers": {set_name: len(s) for set_name, s in sets.items()},
        "attn_implementation": attention_implementation(model),
        "adapter": params.get("adapter"),
    }
    # what the cross-model figures put on their axes (parameters, depth), without loading the weights again
    Path(smk.output.model, "about.json").write_text(json.dumps(about, indent=1), encoding="utf-8")
    stats.update(
        describe_model(model, layers), fingerprint=fingerprint(layers, attention_implementation(model)), **about
    )
