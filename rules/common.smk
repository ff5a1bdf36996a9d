# Config validation, output paths and input functions shared by every rule file.

import re
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
from influence.engine import estimators, names
from influence.engine.defaults import default_gguf_path
from influence import settings as run_settings

RUN = f"results/{config['run']}"
LOGS = f"{RUN}/logs"
BENCH = f"{RUN}/benchmarks"
ENV = "../envs/influence.yaml"
SHIPPED_QUERIES = str(Path(workflow.basedir) / "scripts/influence/resources/queries.yaml")


if config["model"]["layers_name"] in config["sweep"]["layers"]:
    raise WorkflowError(f"sweep.layers repeats model.layers_name {config['model']['layers_name']!r}; rename one.")
LAYER_SETS = {config["model"]["layers_name"]: config["model"]["layers"], **config["sweep"]["layers"]}


def setting_names(point: dict) -> dict:
    return run_settings.setting_names(point, config["scoring"]["damping"]["mode"])


POINTS = run_settings.sweep_points(config)
# Every directory name maps back to the parameters it stands for.
PARAMS_OF = {name: point for point in POINTS for name in setting_names(point).values()}
SETTING = setting_names(POINTS[0])["scores"]  # the run's own setting: everything is drawn for it
SWEEP_SETTINGS = [setting_names(p)["scores"] for p in POINTS]


wildcard_constraints:
    setting="|".join(map(re.escape, PARAMS_OF)),
    layers="|".join(map(re.escape, LAYER_SETS)),
    top_k=r"\d+",
    shard=r"\d+",
    part=r"\d+",


def setting_value(key: str):
    """Input/params function: one parameter of the point that the job's `setting` wildcard names."""

    def value(wildcards):
        return PARAMS_OF[wildcards.setting][key]

    value.__name__ = f"setting_{key}"
    return value


def layer_pattern(wildcards) -> str:
    """The regex of the job's layer set: its `layers` wildcard, its setting's, or else the run's own."""
    if "layers" in wildcards.keys():
        return LAYER_SETS[wildcards.layers]
    if "setting" in wildcards.keys():
        return LAYER_SETS[PARAMS_OF[wildcards.setting]["layers"]]
    return config["model"]["layers"]


def factors_dir(wildcards) -> str:
    return f"{RUN}/factors/layers~{PARAMS_OF[wildcards.setting]['layers']}"


def candidates_path(wildcards) -> str:
    return f"{RUN}/tfidf/top_k~{PARAMS_OF[wildcards.setting]['top_k']}/candidates.parquet"


def preconditioned_path(wildcards) -> str:
    return f"{RUN}/queries/{setting_names(PARAMS_OF[wildcards.setting])['queries']}/preconditioned.safetensors"


def damping_of(wildcards) -> dict:
    return {"mode": config["scoring"]["damping"]["mode"], "value": PARAMS_OF[wildcards.setting]["damping"]}


FACTOR_FILES = {names.EIGEN_INPUT: "eigen.safetensors", names.CORRECTION_INPUT: "lambda.safetensors"}


def factor_files(wildcards, estimator: str) -> dict:
    """The factor files an estimator's registry row asks for (EK-FAC: eigenbasis and Λ; identity: none);
    ekfac_cg also reads its refinement sequences from the tokenised corpus."""
    inputs = {key: f"{factors_dir(wildcards)}/{FACTOR_FILES[key]}" for key in estimators.factor_inputs(estimator)}
    if estimators.get(estimator).refines:
        inputs.update(sequences=f"{RUN}/corpus/sequences.parquet", tokens=f"{RUN}/corpus/tokens.npy")
    return inputs


def refine_params(wildcards=None) -> dict:
    """ekfac_cg's settings, and the fitting sample and labels its refinement sequences are drawn like;
    empty for a setting whose estimator does not refine, so changing them reruns only ekfac_cg jobs."""
    if wildcards is not None and not estimators.get(PARAMS_OF[wildcards.setting]["estimator"]).refines:
        return {}
    refine = config["scoring"]["refine"]
    fitting = {**config["fitting"], "n_sequences": refine["n_sequences"] or config["fitting"]["n_sequences"]}
    return {**refine, "fitting": fitting, "fisher": FISHER}


def sample_refine_params() -> dict:
    """refine_params for the sample analyses: only when one of their estimators refines."""
    return refine_params() if any(estimators.get(e).refines for e in config["analysis"]["estimators"]) else {}


def sample_factor_inputs(wildcards) -> dict:
    """The sample analyses score every estimator, so they need what EK-FAC needs."""
    return factor_files(wildcards, "ekfac")


QUERIES = f"{RUN}/queries/{{setting}}"
SCORES = f"{RUN}/scores/{{setting}}"
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
    try:
        return str(default_gguf_path())
    except FileNotFoundError as error:
        raise WorkflowError(f"the default model: {error}") from None


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
    """The factor files the setting's estimator needs."""
    return factor_files(wildcards, PARAMS_OF[wildcards.setting]["estimator"])


THREADS = config["resources"]["threads"]


def job_resources(gpu: bool) -> dict:
    """What a job asks of a cluster. On SLURM `gpu` becomes --gpus (with `gpu_model`: --gpus=<model>:<n>)."""
    r = config["resources"]
    resources = {"gpu": r["gpu"] if gpu else 0, "mem_mb": r["mem_mb"], "runtime": r["runtime"]}
    if gpu and r["gpu"] and r["gpu_model"]:
        resources["gpu_model"] = r["gpu_model"]
    return resources


GPU_JOB = job_resources(gpu=True)  # model forward/backward passes: CUDA when the node has it
CPU_JOB = job_resources(gpu=False)  # tokenising, TF-IDF, merging, training the evaluation's tiny models
LIGHT_JOB = {"gpu": 0, "mem_mb": 4000, "runtime": 20}  # tables, figures, reports: small whatever the run's size


def model_params():
    m = config["model"]
    return {**{k: m[k] for k in ("dtype", "device", "device_map", "trust_remote_code")}, "layers": layer_pattern}


def figure_outputs(directory, figures, category="Paper figures"):
    """PNG per figure, tagged for `snakemake --report` with its static caption, and its parquet table."""
    pngs = {
        name: report(f"{directory}/{name}.png", caption=f"captions/{name}.rst", category=category) for name in figures
    }
    return {**pngs, "tables": expand(f"{directory}/{{name}}.parquet", name=figures, allow_missing=True)}


def setting_label(wildcards) -> str:
    return wildcards.setting


def sweep_outputs() -> dict:
    """The summary exists only when the config sweeps something."""
    if len(POINTS) == 1:
        return {}
    return {"summary": f"{RUN}/sweep/summary.parquet", "figure": f"{RUN}/sweep/sweep.png"}


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
        raise WorkflowError(
            f"evaluation.ihvp.headline_damping {settings['headline_damping']} is not one of "
            f"evaluation.ihvp.dampings {settings['dampings']}."
        )
    return settings


def eval_scoring(wildcards) -> dict:
    """The evaluation's scoring settings for one model; `refine` (scoring.refine) only where ekfac_cg is scored."""
    settings = dict(EVAL_SETTINGS["scoring"])
    refine = config["scoring"]["refine"] if wildcards.model in settings.pop("cg_models") else None
    return {**settings, "refine": refine}


def eval_outputs(pattern, models=False):
    """Every seed's (and model's) copy of a per-seed output."""
    if models:
        return expand(f"{EVAL_SEED}/{{model}}/{pattern}", seed=EVAL_SEEDS, model=EVAL_MODELS)
    return expand(f"{EVAL_SEED}/{pattern}", seed=EVAL_SEEDS)
