"""Building blocks every layer above may use, with no knowledge of stages or run folders: the row
schema and what a source returns (`rows`), JSON Lines files (`jsonl`), the one tokenization rule
(`tokenization`), loading a base model, its tokenizer and a LoRA adapter (`modeling`, with the
adapter's own metadata in `adapters`), the batched row forward pass (`row_forward`), batch sizes
and padded length batches (`batch_sizing`), greedy generation (`generation`), the tiny model built
in code (`tiny_model`), content hashes (`hashing`), atomic writes (`atomic`) and YAML config files
with one-line validation errors (`yaml_config`)."""
