"""What a user brings: corpus readers (`corpus.py`: jsonl, txt, parquet, csv, WordNet glosses; `hf_datasets.py`:
Hugging Face `datasets` directories, save_to_disk or parquet/arrow shards) and queries (`queries.py`; the shipped
factual queries in `resources/queries.yaml`)."""
