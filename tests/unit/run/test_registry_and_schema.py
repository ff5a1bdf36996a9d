"""The estimator registry is the one list of estimators: the schema, the workflow and the engine follow it."""

import pytest
import yaml
from helpers import ROOT
from influence.engine import estimators, names
from influence.engine.precondition import precondition_queries


def _estimator_enums(node, path=""):
    """Every `enum` in the schema under a key that names estimators, with its path."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else key
            if key == "enum" and "estimator" in path:
                yield path, value
            else:
                yield from _estimator_enums(value, here)
    elif isinstance(node, list):
        for item in node:
            yield from _estimator_enums(item, path)


def test_schema_enums_list_the_registry_scoring_estimators():
    schema = yaml.safe_load((ROOT / "rules/schemas/config.schema.yaml").read_text())
    enums = dict(_estimator_enums(schema))
    assert len(enums) >= 3, enums  # scoring.estimator, sweep.estimator, analysis.estimators
    for path, values in enums.items():
        assert list(values) == list(estimators.SCORING_ESTIMATORS), path


def test_registry_rows_are_consistent():
    for row in estimators.ESTIMATORS.values():
        assert row.scope in ("scoring", "baseline", "reference")
        assert set(row.factors) <= {names.EIGEN_INPUT, names.CORRECTION_INPUT}
        assert row.curvature in (None, "ekfac", "kfac")
        if row.curvature == "ekfac":  # EK-FAC's eigenvalues are the fitted correction
            assert names.CORRECTION_INPUT in row.factors
        if row.scope == "baseline":
            assert not row.factors and row.curvature is None
        if row.scope != "scoring" and row.factors:  # ekfac_matched only: EK-FAC scored at another damping
            assert row.curvature == "ekfac" and row.refines is None and not row.unit_norm
    assert len({row.colour for row in estimators.ESTIMATORS.values()}) == len(estimators.ESTIMATORS)
    assert estimators.sort_key("ekfac") < estimators.sort_key("bm25") < estimators.sort_key("unknown")


def test_unknown_or_evaluation_only_estimators_are_refused_by_the_engine():
    for name in ("tracin", "bm25"):
        with pytest.raises(ValueError, match="estimator must be one of"):
            precondition_queries(None, {}, ["q"], [], estimator=name)


def test_schema_default_layers_are_the_engine_default():
    from influence.engine.defaults import DEFAULT_LAYER_PATTERN

    schema = yaml.safe_load((ROOT / "rules/schemas/config.schema.yaml").read_text())
    assert schema["properties"]["model"]["properties"]["layers"]["default"] == DEFAULT_LAYER_PATTERN


# The phrase-order templates are data kept in config.yaml only; the schema's default {} means "no templates".
DEFAULTS_KEPT_IN_CONFIG_ONLY = {"probes"}


def _schema_drift(node: dict, defaults: dict, path: str = "") -> list[str]:
    """Every key of the schema lacking a description or a default, missing from config.yaml, or whose schema
    default differs from config.yaml's value (the schema's defaults are what a key left out of a config gets)."""
    drift = []
    for key, sub in node.get("properties", {}).items():
        name = f"{path}{key}"
        if "description" not in sub or "default" not in sub:
            drift.append(f"{name}: no description or no default in the schema")
        elif key not in defaults:
            drift.append(f"{name}: not in config.yaml")
        elif sub.get("type") == "object" and "properties" in sub and key != "damping":
            drift += _schema_drift(sub, defaults[key], f"{name}.")
        elif name not in DEFAULTS_KEPT_IN_CONFIG_ONLY and sub["default"] != defaults[key]:
            drift.append(f"{name}: schema default {sub['default']!r}, config.yaml {defaults[key]!r}")
    return drift


def test_every_config_key_has_a_description_and_the_same_default_in_schema_and_config():
    schema = yaml.safe_load((ROOT / "rules/schemas/config.schema.yaml").read_text())
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert _schema_drift(schema, config) == []


def test_schema_drift_is_seen():
    schema = {"properties": {"lds": {"type": "object", "description": ".", "default": {}, "properties": {
        "n": {"type": "integer", "description": ".", "default": 32}}}}}  # fmt: skip
    assert _schema_drift(schema, {"lds": {"n": 16}}) == ["lds.n: schema default 32, config.yaml 16"]
    assert _schema_drift(schema, {}) == ["lds: not in config.yaml"]
