"""Rule prepare_model: a plain safetensors checkpoint of the model (GGUF dequantised once)."""

import json
from pathlib import Path

from influence.engine.model import fingerprint, load_model, load_tokenizer, save_dequantised, select_layers
from influence.runlog import describe_model, rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "prepare_model", source=smk.input.source, **smk.params) as (log, stats):
    model = load_model(smk.input.source, smk.params.dtype, "cpu", smk.params.trust_remote_code)
    tokenizer = load_tokenizer(smk.input.source)
    # fail here, before any work, on a pattern that selects nothing
    sets = {name: select_layers(model, pattern) for name, pattern in smk.params.layers.items()}
    layers = next(iter(sets.values()))
    save_dequantised(model, tokenizer, smk.output.model)
    # which source files (size, mtime in ns) this checkpoint was made from: a changed one reruns the rule
    Path(smk.output.model, "source_files.json").write_text(
        json.dumps({"source": str(smk.input.source), "files": smk.params.source_files}, indent=1), encoding="utf-8"
    )
    stats.update(
        describe_model(model, layers),
        fingerprint=fingerprint(layers),
        layer_sets={n: len(s) for n, s in sets.items()},
        parameters=sum(p.numel() for p in model.parameters()),
    )
