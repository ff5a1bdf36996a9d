"""Loading causal LMs and choosing the layers whose influence we track."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .defaults import (  # noqa: F401 (the model's defaults live there)
    DEFAULT_LAYER_PATTERN,
    LORA_LAYER_PATTERN,
    default_gguf_path,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}
ADAPTER_DIR = "adapter"  # a prepared checkpoint's PEFT adapter (model.adapter), loaded on top of its weights
LOADING = "loading.json"  # how a prepared checkpoint is loaded: its attention implementation
DEFAULT_ATTENTION = "sdpa"  # transformers' default for the decoders we track


@dataclass(frozen=True)
class TrackedLayer:
    """A layer y = W x (+ b) whose weight influence is tracked.

    Gradients are always laid out (d_out, d_in [+1 bias column]) whatever the
    storage: GPT-2's Conv1D keeps W as (in, out) and computes y = x W + b.
    """

    name: str
    module: nn.Module
    kind: str  # "linear" or "conv1d"
    d_in: int  # input features, without the bias column
    d_out: int
    has_bias: bool

    @property
    def d_in_total(self) -> int:
        """Columns of the gradient: inputs plus one constant column for the bias."""
        return self.d_in + int(self.has_bias)


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def input_device(model) -> torch.device:
    """Where the token ids go in: the embedding's device (the first GPU under a device_map)."""
    return model.get_input_embeddings().weight.device


def output_device(model) -> torch.device:
    """Where the logits come out (the last GPU under a device_map)."""
    head = model.get_output_embeddings()
    return head.weight.device if head is not None else input_device(model)


def layer_devices(layers: dict[str, TrackedLayer]) -> dict[str, torch.device]:
    """Each tracked layer's device: its factors and query gradients live next to it."""
    return {name: layer_weight(layer).device for name, layer in layers.items()}


def load_model(
    source: str | Path,
    dtype: str = "float32",
    device: str = "auto",
    trust_remote_code: bool = False,
    device_map: str | dict | None = None,
    attn_implementation: str | None = None,
):
    """Load a causal LM from a directory (safetensors) or a `.gguf` file.

    A GGUF file is dequantised on load; `save_dequantised` turns it into a
    normal checkpoint so later loads take ~1 s instead of ~15 s.
    `device_map` (e.g. "auto") spreads the layers over the node's GPUs through
    accelerate instead of putting the whole model on `device`. A prepared
    checkpoint (rule prepare_model) also holds how it is loaded: its attention
    implementation (loading.json) and a PEFT adapter (adapter/), kept unmerged
    so the adapter's modules can be the tracked layers.
    """
    from transformers import AutoModelForCausalLM

    if dtype not in DTYPES:
        raise ValueError(f"model dtype {dtype!r} is not one of {sorted(DTYPES)}.")
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"model source {source} does not exist.")
    loading = json.loads((source / LOADING).read_text(encoding="utf-8")) if (source / LOADING).is_file() else {}
    attention = attn_implementation or loading.get("attn_implementation")
    kwargs = dict(dtype=DTYPES[dtype], trust_remote_code=trust_remote_code)
    if attention:
        kwargs["attn_implementation"] = attention
    if source.suffix == ".gguf":
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs, device_map=device_map)
    if (source / ADAPTER_DIR).is_dir():
        model = attach_adapter(model, source / ADAPTER_DIR)
    return (model if device_map else model.to(resolve_device(device))).eval()


def attach_adapter(model, adapter: str | Path):
    """`model` with the PEFT adapter in directory `adapter` on top, unmerged (its LoRA modules stay layers)."""
    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"model.adapter {adapter} holds no adapter_config.json; point it at a PEFT directory.")
    try:
        from peft import PeftModel
    except ImportError:
        raise ImportError("model.adapter needs the peft package: pip install peft") from None
    return PeftModel.from_pretrained(model, adapter, is_trainable=False)


def attention_implementation(model) -> str:
    """The attention kernel the model runs (eager, sdpa, flash_attention_2, ...)."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) or "eager"


def load_tokenizer(source: str | Path):
    """The tokenizer of a checkpoint directory or a `.gguf` file."""
    from transformers import AutoTokenizer

    source = Path(source)
    if source.suffix == ".gguf":
        return AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    return AutoTokenizer.from_pretrained(source)


def save_dequantised(model, tokenizer, out_dir: str | Path) -> None:
    """Save a GGUF-loaded model as a plain safetensors checkpoint.

    Transformers refuses `save_pretrained` on GGUF-loaded models, so rebuild
    the architecture from its config without `quantization_config` and copy
    the already dequantised weights over (the logits are identical).
    """
    from transformers import AutoModelForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    plain.load_state_dict(model.state_dict())
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _layer_kind(module: nn.Module) -> str | None:
    if isinstance(module, nn.Linear):
        return "linear"
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):  # transformers' GPT-2 Conv1D
        return "conv1d"
    return None


def select_layers(model: nn.Module, pattern: str = DEFAULT_LAYER_PATTERN) -> dict[str, TrackedLayer]:
    """Tracked layers: modules whose name matches `pattern` (re.search).

    Raises ValueError when the pattern matches nothing or only unsupported
    module types, naming the pattern and some candidate names.
    """
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise ValueError(f"layer pattern {pattern!r} is not a valid regular expression ({error}).") from None
    matched = [(n, m) for n, m in model.named_modules() if n and regex.search(n)]
    if not matched:
        names = [n for n, m in model.named_modules() if _layer_kind(m)][:8]
        raise ValueError(f"layer pattern {pattern!r} matches no module; linear layers include {names}.")
    layers = {}
    for name, module in matched:
        kind = _layer_kind(module)
        if kind == "linear":
            d_in, d_out = module.in_features, module.out_features
        elif kind == "conv1d":
            d_in, d_out = module.weight.shape
        elif hasattr(module, "base_layer"):  # skipping it would drop the layer silently
            raise ValueError(
                f"layer pattern {pattern!r} matches {name}, a PEFT adapter's wrapper of a base layer: track the "
                f"adapter's modules with {LORA_LAYER_PATTERN!r}, or the base layers with a pattern ending in "
                "\\.base_layer$ (e.g. 'mlp\\.(up|down)_proj\\.base_layer$')."
            )
        else:
            continue  # e.g. the pattern also matched a container such as `mlp`
        layers[name] = TrackedLayer(name, module, kind, d_in, d_out, module.bias is not None)
    if not layers:
        kinds = sorted({type(m).__name__ for _, m in matched})
        raise ValueError(
            f"layer pattern {pattern!r} matched only unsupported module types {kinds}; "
            "supported are nn.Linear and transformers' Conv1D."
        )
    return layers


def layer_weight(layer: TrackedLayer) -> torch.Tensor:
    """The layer's weight and bias as one (d_out, d_in [+1]) matrix, our gradient layout."""
    weight = layer.module.weight
    weight = weight.T if layer.kind == "conv1d" else weight
    if layer.has_bias:
        weight = torch.cat([weight, layer.module.bias[:, None]], dim=1)
    return weight


def fingerprint(layers: dict[str, TrackedLayer], attention: str = DEFAULT_ATTENTION) -> str:
    """A short digest of the tracked layers' names, shapes and weights, and of a non-default attention kernel.

    Factors fitted on another model (or another layer set) carry another
    fingerprint, so loading them against this model fails loudly. The default
    kernel leaves the digest as it was before the kernel was part of it, so
    existing artefacts still load.
    """
    digest = hashlib.sha256()
    for name, layer in layers.items():
        weight = layer_weight(layer).detach()
        digest.update(f"{name}:{tuple(weight.shape)}".encode())
        sample = weight.flatten()[:: max(1, weight.numel() // 4096)][:4096]
        digest.update(sample.float().cpu().numpy().round(5).tobytes())
    if attention != DEFAULT_ATTENTION:
        digest.update(f"attention:{attention}".encode())
    return digest.hexdigest()[:16]
