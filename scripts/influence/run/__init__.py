"""What the rule scripts share: setting names and sweep points (`settings.py`), the steps every compute rule takes
(`steps.py`: load the prepared model, draw fitting batches and refinement sets), the run log (`runlog.py`) and the
HTML report (`report.py`)."""
