"""The engine: EK-FAC influence of training sequences on a query, from model to scores. Imports nothing outside itself.

Front door (`api.py`): `fit_ekfac` (covariance → eigendecomposition → eigenvalue correction, in memory) and
`precondition` (any registry estimator; plain or refined, chosen by the registry). The rooms behind it:
- model and batches: `model.py` (loading, tracked layers), `defaults.py`, `data.py` (batches, labels, the summed
  loss), `batching.py` (tokens per pass, buffers, per-batch label seeds), `sequences.py` (the tokenised corpus);
- curvature: `hooks.py` (a and g per tracked layer), `factors.py` (mergeable sums), `eigen.py`;
- preconditioning: `estimators.py` (the one registry), `precondition.py` (plain solvers), `refine.py`,
  `refinement_set.py` and `cg.py` (EK-FAC-preconditioned CG);
- scoring: `scores.py`; the gradient index: `projection.py`, `index.py`;
- artefacts: `files.py` (generic safetensors/parquet, atomic and checksummed), `artefacts.py` (typed factor and
  query files), `integrity.py`, `names.py`; `memory.py` (the sizing arithmetic).
Sign and scale conventions: `conventions.md`.
"""
