"""Trainer: a Keras collaborative filter trained on the current snapshot, exported for TF-Serving."""
