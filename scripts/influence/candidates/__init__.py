"""Where the scored candidates come from (`scoring.candidates`): the TF-IDF prefilter (`tfidf.py`) or the compressed
gradient index (`gradient_index.py`: its rule steps and projection-accuracy study; `figures.py` draws them; the
index's storage and search are the engine's `engine/index.py`)."""
