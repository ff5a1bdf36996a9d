"""What a user brings: corpus readers (`corpus.py`: jsonl, txt, parquet, csv, WordNet glosses) and queries
(`queries.py`; the shipped factual queries in `resources/queries.yaml`)."""
