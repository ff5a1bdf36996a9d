"""Training for the evaluation: a tiny Llama trained from scratch, or a brief fine-tune of a real model.

The tiny model uses a word-level tokenizer built from its corpus and queries (a few hundred words),
so training it many times (the LDS retrains) takes seconds on a CPU. Training minimises the summed
token cross-entropy (`data.summed_loss`, empirical labels) with AdamW, in a seeded order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..engine.data import encode_query, iter_batches, pad_batch, summed_loss
from ..engine.model import load_model

SPECIAL = ["[PAD]", "[UNK]", "[BOS]"]
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
) -> list[float]:
    """AdamW on the summed token loss over `sequences` for up to `epochs` epochs; mean loss per token per epoch.

    `stop(model)` is asked after every epoch; training ends early when it returns True. A non-finite
    epoch loss raises FloatingPointError (a diverging run must not pass as a measurement).
    """
    if not sequences:
        raise ValueError("training needs at least one sequence.")
    model.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
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
        ids, labels = encode_query(tokenizer, q.id, q.prompt, q.completion)
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
    recipe, m, loaded = json.loads(Path(settings["recipe"]).read_text()), settings["model"], {}

    def measure(keep: np.ndarray) -> np.ndarray:
        if not loaded:  # on the first retrain only: a run whose retrains are all cached loads nothing
            model = load_model(settings["base"], m["dtype"], m["device"], m["trust_remote_code"], m.get("device_map"))
            loaded.update(model=model, base={k: v.detach().clone() for k, v in model.state_dict().items()})
        model = loaded["model"]
        model.load_state_dict(loaded["base"])
        chosen = [sequences[i] for i in keep]
        pad = tokenizer.pad_token_id or 0
        train(model, chosen, recipe["epochs"], recipe["lr"], recipe["batch_size"], recipe["seed"], pad, progress=False)
        return completion_stats(model, tokenizer, queries)[0]

    return measure


def retrain_shape(settings: dict) -> dict:
    """What shapes a retrain of `retrainer(settings)`, for the retrain cache's digest: the recipe (a fine-tune's
    as recorded, so a fine-tune rerun with other epochs invalidates its retrains), not the retrain counts."""
    shape = {k: v for k, v in settings.items() if k not in ("lds_subsets", "qld_facts")}
    if "recipe" in shape:
        shape["recipe"] = json.loads(Path(shape["recipe"]).read_text())
    return shape
