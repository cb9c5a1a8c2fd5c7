"""Data preparation: documents into chunks, chunks into question-answer pairs a served model writes, the pairs its
chunk does not support filtered out, the rest stored as a dataset version (engine.training.stored_datasets)."""
