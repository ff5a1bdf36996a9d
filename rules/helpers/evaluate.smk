# Helpers of the ground-truth evaluation's rules (rules/evaluate*.smk): paths, settings, retrain inputs.
# Outputs per difficulty and seed under evaluation/difficulty~<d>/seed~<s>/.


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


# What the fine-tune reads: changing which seeds or how many retrains does not redo a fine-tune.
FINETUNE_RECIPE = {k: v for k, v in EVAL_SETTINGS["finetune"].items() if k not in ("seeds", "retrains")}


def chosen_among(chosen, key: str, allowed: list, allowed_key: str) -> list:
    """`chosen` (null: all of `allowed`), refused naming `key` when it names something `allowed_key` lacks."""
    if chosen is None:
        return allowed
    unknown = sorted(set(chosen) - set(allowed))
    if unknown:
        raise WorkflowError(f"{key} {unknown} are not in {allowed_key} {allowed}.")
    return chosen


def finetuned_seeds() -> list:
    """Seeds the fine-tuned model runs on (evaluation.finetune.seeds, default every seed)."""
    return chosen_among(EVAL_SETTINGS["finetune"]["seeds"], "evaluation.finetune.seeds", EVAL_SEEDS, "evaluation.seeds")


def finetuned_retrain_difficulties(chosen) -> list:
    """Difficulties on which the fine-tuned model is retrained (evaluation.finetune.retrains.difficulties, null: all)."""
    return chosen_among(
        chosen, "evaluation.finetune.retrains.difficulties", EVAL_DIFFICULTIES, "evaluation.planted.difficulty"
    )


def eval_scoring(wildcards) -> dict:
    """The evaluation's scoring settings for one model; `refine` (scoring.refine) only where ekfac_cg is scored
    (evaluation.scoring.cg_models), `astra` (scoring.astra) only where ekfac_astra is (astra_models)."""
    settings = dict(EVAL_SETTINGS["scoring"])
    cg, astra = wildcards.model in settings.pop("cg_models"), wildcards.model in settings.pop("astra_models")
    return {
        **settings,
        "refine": config["scoring"]["refine"] if cg else None,
        "astra": config["scoring"]["astra"] if astra else None,
    }


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


wildcard_constraints:
    seed=r"\d+",
    model="tiny|finetuned",
    difficulty="easy|hard",


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


def retrain_inputs(wildcards) -> dict:
    """The model whose tokenizer the retrains use; a fine-tuned model's retrains start from the base checkpoint."""
    inputs = {"model": eval_model_dir(wildcards)}
    if wildcards.model == "finetuned":
        inputs["base"] = f"{RUN}/model"
    return inputs


def retrain_settings(wildcards) -> dict:
    """How lds_retrain / qld_retrain retrain model `wildcards.model` (`training.retrainer`) and how many times:
    `lds_subsets`, and `qld_facts` (None: every fact's queries)."""
    if wildcards.model == "tiny":
        return {"tiny": EVAL_SETTINGS["tiny"], "lds_subsets": EVAL_SETTINGS["lds"]["n_subsets"], "qld_facts": None}
    counts = dict(EVAL_SETTINGS["finetune"]["retrains"])
    if wildcards.difficulty not in finetuned_retrain_difficulties(counts.pop("difficulties")):
        counts.update(lds_subsets=0, qld_facts=0)  # both measures skipped: the rules write empty tables
    recipe = f"{eval_model_dir(wildcards)}/retrain_recipe.json"
    loading = {k: v for k, v in model_params().items() if k != "layers"}  # a fine-tune trains every weight
    return {"base": f"{RUN}/model", "model": loading, "recipe": recipe, **counts}


def retrain_threads(wildcards) -> int:
    """A 32-wide model trains fastest on one thread; a real model's fine-tunes use the run's threads."""
    return 1 if wildcards.model == "tiny" else THREADS


# The tiny model's retrains are CPU jobs; the fine-tuned model's are GPU jobs (any GPU: no gpu_model here).
RETRAIN_JOB = {**CPU_JOB, "gpu": lambda wildcards: GPU_JOB["gpu"] if wildcards.model == "finetuned" else 0}
