"""The ground-truth evaluation on planted corpora: corpora (`planted.py`, `planted_hard.py`), models trained and
fine-tuned on them (`training.py`), cached resumable retraining (`retrain.py`), every method's scores
(`attribution.py`, `baselines.py`), exact iHVPs and CG steps (`exact.py`, `ihvp_steps.py`), the measures (`measures.py`,
`qld.py`), their tables (`tables.py`), figures (`figures.py`) and the verdict (`verdict.py`)."""
