"""Training for the evaluation: a tiny Llama trained from scratch, or a brief fine-tune of a real model.

The tiny model uses a word-level tokenizer built from its corpus and queries (a few hundred words),
so training it many times (the LDS retrains) takes seconds on a CPU. Training minimises the summed
token cross-entropy (`data.summed_loss`, empirical labels) with AdamW (or SGD), in a seeded order;
`further_trainer` trains a checkpoint further, the one path of the fine-tuned retrains and of `snakemake validate`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..engine.data import iter_batches, pad_batch, summed_loss
from ..engine.model import load_model, select_layers

SPECIAL = ["[PAD]", "[UNK]", "[BOS]"]
OPTIMIZERS = {  # every training here starts its optimizer afresh: no state carries over between retrains
    "adamw": lambda params, lr: torch.optim.AdamW(params, lr=lr, weight_decay=0.0),
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr),
}
RECIPE_FILE = "retrain_recipe.json"  # in the fine-tuned model's directory: what its retrains replay


def word_tokenizer(texts: Sequence[str]):
    """A Hugging Face fast tokenizer with one id per word or punctuation mark of `texts`, BOS prepended."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Whitespace()
    words = sorted({w for text in texts for w, _ in pre.pre_tokenize_str(text)})
    vocab = {w: i for i, w in enumerate(SPECIAL + words)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre
    core.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", vocab["[BOS]"])])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]")


def tiny_llama(vocab_size: int, hidden_size: int, intermediate_size: int, n_layers: int, n_heads: int, seed: int):
    """A randomly initialised Llama (seeded) in float32."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if hidden_size % n_heads:
        raise ValueError(
            f"evaluation.tiny.n_heads ({n_heads}) must divide evaluation.tiny.hidden_size ({hidden_size})."
        )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_heads,
        max_position_embeddings=128,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


def train(
    model,
    sequences: Sequence[Sequence[int]],
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    pad_id: int = 0,
    progress: bool = True,
    stop=None,
    optimizer: str = "adamw",
    parameters: Sequence[torch.nn.Parameter] | None = None,
) -> list[float]:
    """`optimizer` (adamw, or sgd: plain gradient steps) on the mean token loss of each batch of `sequences`, in a
    seeded order, for up to `epochs` epochs; returns the mean loss per token of each epoch.

    `stop(model)` is asked after every epoch; training ends early when it returns True. A non-finite
    epoch loss raises FloatingPointError (a diverging run must not pass as a measurement). `parameters`: the only
    ones trained (the others frozen); None, all of the model's.
    """
    if not sequences:
        raise ValueError("training needs at least one sequence.")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}.")
    model.train().requires_grad_(parameters is None)
    parameters = list(model.parameters()) if parameters is None else list(parameters)
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = OPTIMIZERS[optimizer](parameters, lr)
    rng = np.random.default_rng(seed)
    device = next(model.parameters()).device
    history = []
    for _ in tqdm(range(epochs), desc="train", disable=not progress, unit="epoch"):
        order = rng.permutation(len(sequences))
        total, tokens = 0.0, 0
        for batch in iter_batches([sequences[i] for i in order], batch_size, pad_id):
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            labels = batch["labels"].masked_fill(batch["attention_mask"] == 0, -100)
            loss = summed_loss(logits, labels)
            n = int((labels[:, 1:] != -100).sum())
            optimizer.zero_grad()
            (loss / max(n, 1)).backward()
            optimizer.step()
            total, tokens = total + float(loss.detach()), tokens + n
        history.append(total / max(tokens, 1))
        if not np.isfinite(history[-1]):
            raise FloatingPointError(f"training loss is {history[-1]} at epoch {len(history)}")
        if stop is not None and stop(model.eval()):
            break
        model.train()
    model.eval().requires_grad_(False)
    return history


@torch.no_grad()
def completion_stats(model, tokenizer, queries) -> tuple[np.ndarray, np.ndarray]:
    """(log p(completion | prompt) (Q,), whether greedy decoding reproduces every completion token (Q,))."""
    model.eval()
    device = next(model.parameters()).device
    log_probs, correct = [], []
    for q in queries:
        ids, labels = q.token_ids(tokenizer)
        batch = pad_batch([ids], [labels])
        logits = model(input_ids=batch["input_ids"].to(device)).logits[0, :-1].float()  # (T-1, V)
        targets = batch["labels"][0, 1:].to(device)  # (T-1,)
        scored = targets != -100
        lp = torch.log_softmax(logits[scored], dim=-1)  # (C, V)
        log_probs.append(float(lp.gather(1, targets[scored, None]).sum()))
        correct.append(bool((lp.argmax(-1) == targets[scored]).all()))
    return np.asarray(log_probs), np.asarray(correct)


def encode_texts(tokenizer, texts: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Token ids of each text, as the corpus is tokenised (special tokens, truncated)."""
    return tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=max_tokens)["input_ids"]


def retrain_tiny(tokenizer, sequences, queries, keep, tiny: dict, seed: int) -> np.ndarray:
    """log p(completion | prompt) (Q,) of the tiny model retrained from its seeded initialisation on
    `sequences[keep]` with the full model's recipe: only the training data differ."""
    model = tiny_llama(
        len(tokenizer), tiny["hidden_size"], tiny["intermediate_size"], tiny["n_layers"], tiny["n_heads"], seed
    )
    train(
        model,
        [sequences[i] for i in keep],
        tiny["epochs"],
        tiny["lr"],
        tiny["batch_size"],
        seed,
        tokenizer.pad_token_id,
        progress=False,
    )
    return completion_stats(model, tokenizer, queries)[0]


def write_recipe(model_dir: str | Path, epochs: int, lr: float, batch_size: int, seed: int) -> None:
    """Record the fine-tune's recipe next to its weights: its retrains replay exactly these epochs, without the
    accuracy-based stop (which would let the data decide the recipe)."""
    recipe = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed}
    Path(model_dir, RECIPE_FILE).write_text(json.dumps(recipe, indent=1))


def retrainer(
    kind: str, tokenizer, sequences, queries, settings: dict, seed: int
) -> Callable[[np.ndarray], np.ndarray]:
    """measure(keep) → log p(completion | prompt) (Q,) of the evaluation's model `kind` retrained on
    `sequences[keep]` with the full model's recipe: only the training data differ.

    tiny: from its seeded initialisation (settings: `tiny`). finetuned: a fine-tune of the base checkpoint
    (settings: `base` directory, `model` params dtype/device/device_map/trust_remote_code, `recipe` file
    written by `write_recipe`); the base weights are loaded once and restored before every retrain.
    """
    if kind == "tiny":
        return lambda keep: retrain_tiny(tokenizer, sequences, queries, keep, settings["tiny"], seed)
    recipe = json.loads(Path(settings["recipe"]).read_text())
    return further_trainer(settings["base"], settings["model"], tokenizer, sequences, queries, recipe)


def further_trainer(
    base: str | Path, model_params: dict, tokenizer, sequences, queries, recipe: dict
) -> Callable[[np.ndarray], np.ndarray]:
    """measure(keep) → log p(completion | prompt) (Q,) of checkpoint `base` trained further on `sequences[keep]`
    with `recipe` (epochs, lr, batch_size, seed; optimizer: adamw by default; layers: a regex of modules whose
    weights and biases alone are trained, as `model.layers` selects tracked layers; None, every parameter), from
    the same weights every time.

    The one further-training path: the evaluation's fine-tuned retrains (the base checkpoint trained on parts of
    the planted corpus) and `snakemake validate` (the run's own checkpoint trained on a method's top sequences).
    The base weights are loaded on the first call (a run whose retrains are all cached loads nothing) and
    restored before every training; `model_params`: dtype, device, trust_remote_code, device_map.
    """
    m, loaded = model_params, {}

    def measure(keep: np.ndarray) -> np.ndarray:
        if not loaded:
            model = load_model(base, m["dtype"], m["device"], m["trust_remote_code"], m.get("device_map"))
            loaded.update(model=model, base={k: v.detach().clone() for k, v in model.state_dict().items()})
        model = loaded["model"]
        model.load_state_dict(loaded["base"])
        chosen = [sequences[i] for i in keep]
        pad = tokenizer.pad_token_id or 0
        epochs, lr, batch_size, seed = (recipe[k] for k in ("epochs", "lr", "batch_size", "seed"))
        optimizer, layers = recipe.get("optimizer", "adamw"), recipe.get("layers")
        trained = None
        if layers is not None:  # only these modules' weights and biases move
            trained = [p for layer in select_layers(model, layers).values() for p in layer.module.parameters()]
        train(model, chosen, epochs, lr, batch_size, seed, pad, progress=False, optimizer=optimizer, parameters=trained)
        return completion_stats(model, tokenizer, queries)[0]

    return measure


def retrain_shape(settings: dict) -> dict:
    """What shapes a retrain of `retrainer(settings)`, for the retrain cache's digest: the recipe (a fine-tune's
    as recorded, so a fine-tune rerun with other epochs invalidates its retrains), not the retrain counts."""
    shape = {k: v for k, v in settings.items() if k not in ("lds_subsets", "qld_facts")}
    if "recipe" in shape:
        shape["recipe"] = json.loads(Path(shape["recipe"]).read_text())
    return shape
