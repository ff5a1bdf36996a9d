"""Rule train_tiny: a tiny Llama with a word-level tokenizer trained from scratch on the planted corpus."""

import torch
from influence.engine import files
from influence.evaluation.training import encode_texts, tiny_llama, train, word_tokenizer
from influence.inputs.queries import load_queries
from influence.run.runlog import rule_log

torch.set_num_threads(1)  # a 32-wide model trains ~30x faster on one thread than on two contended ones

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "train_tiny", seed=smk.wildcards.seed, **smk.params) as (log, stats):
    t, seed = smk.params.tiny, int(smk.wildcards.seed)
    texts = files.read_table(smk.input.documents)["text"].tolist()
    queries = load_queries(smk.input.queries)
    tokenizer = word_tokenizer(texts + [q.text for q in queries])
    model = tiny_llama(len(tokenizer), t["hidden_size"], t["intermediate_size"], t["n_layers"], t["n_heads"], seed)
    sequences = encode_texts(tokenizer, texts, smk.params.max_tokens)
    history = train(model, sequences, t["epochs"], t["lr"], t["batch_size"], seed, tokenizer.pad_token_id)
    model.save_pretrained(smk.output.model)
    tokenizer.save_pretrained(smk.output.model)
    stats.update(vocabulary=len(tokenizer), sequences=len(sequences), epochs=len(history), final_loss=history[-1])
