# Ground-truth evaluation (target `evaluate`): iHVP accuracy against the exact influence, the linear
# datamodeling score, QLD and planted-fact tracing, each per difficulty and seed, summarised in one table and a verdict.


include: "helpers/evaluate.smk"  # this stage's paths and settings


rule planted_corpus:
    """Documents stating facts about invented entities (k per fact), distractors of the difficulty, and the queries."""
    output:
        documents=f"{EVAL_SEED}/planted/documents.parquet",
        queries=f"{EVAL_SEED}/planted/queries.yaml",
    log:
        f"{EVAL_SEED}/logs/planted_corpus.log",
    conda:
        ENV
    resources:
        **LIGHT_JOB,
    params:
        planted=EVAL_SETTINGS["planted"],
    script:
        "../scripts/planted_corpus.py"


rule train_tiny:
    """A tiny Llama with a word-level tokenizer, trained from scratch on the planted corpus."""
    input:
        documents=rules.planted_corpus.output.documents,
        queries=rules.planted_corpus.output.queries,
    output:
        model=directory(f"{EVAL_SEED}/tiny/model"),
    log:
        f"{EVAL_SEED}/logs/train_tiny.log",
    benchmark:
        f"{EVAL_SEED}/benchmarks/train_tiny.tsv"
    conda:
        ENV
    threads: 1
    resources:
        **CPU_JOB,
    params:
        tiny=EVAL_SETTINGS["tiny"],
        max_tokens=EVAL_SETTINGS["max_tokens"],
    script:
        "../scripts/train_tiny.py"


rule finetune_model:
    """The run's model fine-tuned on the planted corpus until it answers the original-wording queries."""
    input:
        model=f"{RUN}/model",
        documents=rules.planted_corpus.output.documents,
        queries=rules.planted_corpus.output.queries,
    output:
        model=directory(f"{EVAL_SEED}/finetuned/model"),
    log:
        f"{EVAL_SEED}/logs/finetune_model.log",
    benchmark:
        f"{EVAL_SEED}/benchmarks/finetune_model.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        **GPU_JOB,
    params:
        **model_params(),
        finetune=FINETUNE_RECIPE,
        max_tokens=EVAL_SETTINGS["max_tokens"],
    script:
        "../scripts/finetune_model.py"
