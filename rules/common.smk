# Config validation, output paths and input functions shared by every rule file.

import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")


def config_problem(error) -> str:
    """One line for a schema violation: the key, what is wrong, and for an unknown key the allowed ones."""
    key = ".".join(map(str, error.absolute_path)) or "config"
    if error.validator == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        where = f"in {key}" if error.absolute_path else "at the top level"
        return f"unknown config key {', '.join(map(repr, unknown))} {where}; allowed keys: {', '.join(allowed)}."
    described = error.schema.get("description")
    return f"config key {key}: {error.message}" + (f" ({described})" if described else "") + "."


try:
    validate(config, "schemas/config.schema.yaml")  # fills every default, stops on unknown keys
except Exception as error:  # noqa: BLE001 (snakemake.utils raises its own WorkflowError class)
    # Snakemake's message dumps the whole schema (~1,400 lines); name the key in one line instead.
    problem = error.__context__ if hasattr(error.__context__, "validator") else None
    if problem is None:
        raise
    raise WorkflowError(config_problem(problem)) from None
if not Path("results", config["run"]).resolve().is_relative_to(Path("results").resolve()):
    raise WorkflowError(f"run {config['run']!r} must be a single folder name: every output goes under results/<run>/.")

# Rule scripts find the library next to them (Snakemake puts a script's folder on sys.path);
# the workflow itself reads a few constants from it.
sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))
from influence.inputs.corpus import WORDNET_ROOT
from influence.inputs.hf_datasets import dataset_shards
from influence.engine import estimators, names
from influence.engine.projection import ProjectionSpec
from influence.engine.defaults import default_gguf_path, packaged_distribution, packaged_files, PYPI_PREFIX
from influence.run import settings as run_settings

RUN = f"results/{config['run']}"
LOGS = f"{RUN}/logs"
BENCH = f"{RUN}/benchmarks"
ENV = "../envs/influence.yaml"
SHIPPED_QUERIES = str(Path(workflow.basedir) / "scripts/influence/inputs/resources/queries.yaml")


if config["model"]["layers_name"] in config["sweep"]["layers"]:
    raise WorkflowError(f"sweep.layers repeats model.layers_name {config['model']['layers_name']!r}; rename one.")


def existing(path, what, hint):
    if not Path(path).exists():
        raise WorkflowError(f"{what} {path} does not exist; {hint}")
    return path


include: "helpers/model_sweep.smk"


def index_name() -> str:
    return run_settings.index_name(config["index"])


def setting_names(point: dict) -> dict:
    mode = config["scoring"]["damping"]["mode"]
    return run_settings.setting_names(point, mode, run_settings.index_candidates(config))


POINTS = run_settings.sweep_points(config)
# Every directory name maps back to the parameters it stands for.
PARAMS_OF = {name: point for point in POINTS for name in setting_names(point).values()}
SETTING = setting_names(POINTS[0])["scores"]  # the run's own setting: everything is drawn for it
SWEEP_SETTINGS = [setting_names(p)["scores"] for p in POINTS]


wildcard_constraints:
    setting="|".join(map(re.escape, PARAMS_OF)),
    lm="|".join(map(re.escape, MODELS)) or "(?!)",  # (?!) matches nothing: no model sweep
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
    sets = model_layer_sets(model_of(wildcards))
    if "layers" in wildcards.keys():
        return sets[wildcards.layers]
    if "setting" in wildcards.keys():
        return sets[PARAMS_OF[wildcards.setting]["layers"]]
    return model_of(wildcards)["layers"]


def factors_dir(wildcards) -> str:
    """The factors of the job's layer set: its `layers` wildcard, or its query setting's."""
    layers = wildcards.layers if "layers" in wildcards.keys() else PARAMS_OF[wildcards.setting]["layers"]
    return f"{model_run(wildcards)}/factors/layers~{layers}"


def candidates_path(wildcards) -> str:
    point = PARAMS_OF[wildcards.setting]
    if config["scoring"]["candidates"] == "index":
        return f"{model_run(wildcards)}/index/{index_name()}/{setting_names(point)['queries']}/candidates.parquet"
    return f"{RUN}/tfidf/top_k~{point['top_k']}/candidates.parquet"


def validation_section(wildcards) -> dict:
    """The validation's verdict for the run's report, once `snakemake validate` has written it (the report is then
    rebuilt by the next run); nothing before."""
    path = Path(VALIDATION.format(lm=getattr(wildcards, "lm", None), setting=wildcards.setting), "verdict.html")
    return {"validation": str(path)} if path.exists() else {}


def preconditioned_path(wildcards) -> str:
    queries = setting_names(PARAMS_OF[wildcards.setting])["queries"]
    return f"{model_run(wildcards)}/queries/{queries}/preconditioned.safetensors"


def damping_of(wildcards) -> dict:
    return {"mode": config["scoring"]["damping"]["mode"], "value": PARAMS_OF[wildcards.setting]["damping"]}


FACTOR_FILES = {names.EIGEN_INPUT: "eigen.safetensors", names.CORRECTION_INPUT: "lambda.safetensors"}


def factor_files(wildcards, estimator: str) -> dict:
    """The factor files an estimator's registry row asks for (EK-FAC: eigenbasis and Λ; identity: none);
    a refining estimator (ekfac_cg, ekfac_astra) also reads its sequences from the tokenised corpus."""
    inputs = {key: f"{factors_dir(wildcards)}/{FACTOR_FILES[key]}" for key in estimators.factor_inputs(estimator)}
    if estimators.get(estimator).refines:
        corpus = f"{model_run(wildcards)}/corpus"
        inputs.update(sequences=f"{corpus}/sequences.parquet", tokens=f"{corpus}/tokens.npy")
    return inputs


def refine_params(wildcards=None, used=None) -> dict:
    """The refining estimators' settings, only for those used (the setting's estimator, or `used`), so changing
    one reruns only its jobs: ekfac_cg's (scoring.refine, with the fitting sample and labels its refinement
    sequences are drawn like) and ekfac_astra's (scoring.astra, under `astra`: exact Gauss-Newton, no labels)."""
    if wildcards is not None:
        used = [PARAMS_OF[wildcards.setting]["estimator"]]
    kinds = {estimators.get(e).refines for e in used or ()}
    out = {}
    if "cg" in kinds:
        refine = config["scoring"]["refine"]
        fitting = {**FITTING_SAMPLE, "n_sequences": refine["n_sequences"] or FITTING_SAMPLE["n_sequences"]}
        out.update(refine, fitting=fitting, fisher=FISHER)
    if "astra" in kinds:
        out["astra"] = dict(config["scoring"]["astra"])
    return out


def sample_refine_params() -> dict:
    """refine_params for the sample analyses' estimators."""
    return refine_params(used=config["analysis"]["estimators"])


def sample_factor_inputs(wildcards) -> dict:
    """The sample analyses score every estimator, so they need what EK-FAC needs."""
    return factor_files(wildcards, "ekfac")


QUERIES = f"{MRUN}/queries/{{setting}}"
SCORES = f"{MRUN}/scores/{{setting}}"
VALIDATION = f"{MRUN}/validation/{{setting}}"  # snakemake validate (rules/validate.smk)
SHARDS = list(range(config["scoring"]["n_shards"]))
if config["fitting"]["n_sequences"] is not None:
    # More shards than batches would leave shards without a batch: cap them (the factors are the same).
    _batches = -(-config["fitting"]["n_sequences"] // config["fitting"]["batch_size"])
    if config["fitting"]["n_shards"] > _batches:
        print(
            f"fitting.n_shards {config['fitting']['n_shards']} exceeds the {_batches} batch(es) of "
            f"fitting.n_sequences {config['fitting']['n_sequences']} / fitting.batch_size "
            f"{config['fitting']['batch_size']}: fitting in {_batches} shard(s).",
            file=sys.stderr,
        )
        config["fitting"]["n_shards"] = _batches
FIT_SHARDS = list(range(config["fitting"]["n_shards"]))
FISHER = "true" if config["fitting"]["fisher"] is True else "empirical"
# What the covariance and correction sums depend on: the fitting sample and its labels (eigen_dtype is read only
# by the eigendecomposition, so changing it does not refit the sums).
FITTING_SAMPLE = {k: v for k, v in config["fitting"].items() if k != "eigen_dtype"}


def corpus_source():
    """The corpus file; or a `datasets` directory, then every shard read from it (a directory's own mtime changes
    only when files are added or removed, so a shard rewritten in place would not rerun tokenisation); or WordNet's.
    """
    path = config["corpus"]["path"]
    if path is not None:
        existing(path, "corpus.path", "point it at a .jsonl, .txt, .parquet or .csv file or a `datasets` directory.")
        if not Path(path).is_dir():
            return [path]
        try:  # an unknown split or an empty directory stops the run before any work
            return [path, *map(str, dataset_shards(path, config["corpus"]["split"]))]
        except ValueError as error:
            raise WorkflowError(f"corpus.path: {error}") from None
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


def figure_outputs(directory, figures, category="Paper figures"):
    """PNG per figure, tagged for `snakemake --report` with its static caption, and its parquet table."""
    pngs = {
        name: report(f"{directory}/{name}.png", caption=f"captions/{name}.rst", category=category) for name in figures
    }
    return {**pngs, "tables": expand(f"{directory}/{{name}}.parquet", name=figures, allow_missing=True)}


def setting_label(wildcards) -> str:
    return wildcards.setting


def scale_outputs() -> dict:
    """The cross-model figures exist only in a model sweep."""
    return {"scale": f"{RUN}/scale/captions.json"} if MODELS else {}


def sweep_outputs() -> dict:
    """The summary exists only when the config sweeps something (one per model in a model sweep)."""
    if len(POINTS) == 1:
        return {}
    return {"summary": per_model(f"{MRUN}/sweep/summary.parquet"), "figure": per_model(f"{MRUN}/sweep/sweep.png")}
