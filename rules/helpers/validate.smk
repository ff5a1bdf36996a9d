# The validate stage's paths, inputs and params: factors for every estimator it compares, refinement settings if one
# refines.

VALIDATION_PARTS = list(range(config["validate"]["n_parts"]))


def validation_factor_inputs(wildcards) -> dict:
    """What the compared estimators need: EK-FAC's factors cover K-FAC, identity and cosine too."""
    inputs = factor_files(wildcards, "ekfac")
    for estimator in validation_estimators():
        inputs.update(factor_files(wildcards, estimator))
    return inputs


def validation_estimators() -> list:
    return [config["scoring"]["estimator"], *config["validate"]["estimators"]]


def validation_refine_params() -> dict:
    """refine_params of the compared estimators that refine (ekfac_cg, ekfac_astra); empty when none does."""
    return refine_params(used=validation_estimators())
