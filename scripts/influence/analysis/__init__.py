"""The paper's analyses of one run: tables (`tables.py`), their figures (`figures.py`), phrase-order probes
(`probes.py`) and sweep summaries (`sweep.py`). Pure pandas/numpy/scipy/matplotlib: no model, no torch."""
