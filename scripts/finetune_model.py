"""Rule finetune_model: the run's model fine-tuned on the planted corpus until it answers the facts."""

from influence.engine import files
from influence.engine.model import load_tokenizer
from influence.evaluation.training import completion_stats, encode_texts, train, write_recipe
from influence.inputs.queries import load_queries
from influence.run.runlog import describe_model, rule_log
from influence.run.steps import load_tracked_model

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "finetune_model", seed=smk.wildcards.seed, **smk.params) as (log, stats):
    f = smk.params.finetune
    model, layers, _ = load_tracked_model(smk.input.model, smk.params)
    tokenizer = load_tokenizer(smk.input.model)
    texts = files.read_table(smk.input.documents)["text"].tolist()
    originals = [q for q in load_queries(smk.input.queries) if q.tags.get("variant") == "original"]

    def learned(m) -> bool:
        accuracy = completion_stats(m, tokenizer, originals)[1].mean()
        log.info("original-query accuracy %.3f", accuracy)
        return accuracy >= f["target_accuracy"]

    sequences = encode_texts(tokenizer, texts, smk.params.max_tokens)
    history = train(
        model,
        sequences,
        f["max_epochs"],
        f["lr"],
        f["batch_size"],
        int(smk.wildcards.seed),
        tokenizer.pad_token_id or 0,
        stop=learned,
    )
    model.save_pretrained(smk.output.model)
    tokenizer.save_pretrained(smk.output.model)
    write_recipe(smk.output.model, len(history), f["lr"], f["batch_size"], int(smk.wildcards.seed))
    stats.update(describe_model(model, layers), sequences=len(sequences), epochs=len(history), final_loss=history[-1])
