"""Cost of one ekfac_astra step's exact Gauss-Newton product against one forward and backward pass of its minibatch.

    python -m benchmarks.astra_step_cost --model results/eval_finetuned_hard/evaluation/difficulty~hard/seed~0/finetuned/model \
        --documents results/eval_finetuned_hard/evaluation/difficulty~hard/seed~0/planted/documents.parquet

The model's default tracked layers, the first `--batch` documents (truncated to 48 tokens) as the minibatch,
`--queries` random vectors in the gradient layout. Prints wall and CPU seconds of the product (shared primal pass,
vmapped tangent forward and reverse pass over the Q vectors) and of one forward and backward pass (LayerCapture,
sampled labels), on `--threads` torch threads (1 by default: the machine this was measured on is shared).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from influence.engine import files  # noqa: E402
from influence.engine.data import text_batches  # noqa: E402
from influence.engine.ggn import GaussNewton  # noqa: E402
from influence.engine.hooks import LayerCapture  # noqa: E402
from influence.engine.model import load_model, load_tokenizer, select_layers  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint directory")
    parser.add_argument("--documents", required=True, help="a table with a `text` column")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model), load_tokenizer(args.model)
    layers = select_layers(model)
    texts = files.read_table(args.documents)["text"].tolist()[: args.batch]
    batch = text_batches(tokenizer, texts, 48, args.batch)[0]
    parameters = sum(layer.d_out * layer.d_in_total for layer in layers.values())
    print(f"{len(layers)} tracked layers, {parameters} parameters; minibatch {tuple(batch['input_ids'].shape)}")
    vectors = {n: torch.randn(args.queries, lay.d_out, lay.d_in_total) for n, lay in layers.items()}
    start, cpu = time.perf_counter(), time.process_time()
    GaussNewton(model, layers, "auto")(batch, vectors)
    product, product_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    with LayerCapture(model, layers, lambda *pair: None) as capture:
        capture.run(batch, "true", torch.Generator().manual_seed(0))
    single, single_cpu = time.perf_counter() - start, time.process_time() - cpu
    print(
        f"Gauss-Newton product for {args.queries} vectors: {product:.1f} s ({product_cpu:.1f} CPU-s); one forward and "
        f"backward pass: {single:.1f} s ({single_cpu:.1f} CPU-s); ratio per vector {product / single / args.queries:.1f}"
    )


if __name__ == "__main__":
    main()
