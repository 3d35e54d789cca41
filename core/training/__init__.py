"""Training the embedding model from search sessions: dataset, fine-tuning, evaluation, gate."""
