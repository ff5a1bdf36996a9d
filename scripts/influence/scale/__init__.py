"""Trends across a model sweep: the analyses per model joined by model size (`tables.py`) and their figures
(`figures.py`)."""
