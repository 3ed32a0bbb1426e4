"""A TF-Serving-compatible server on real TensorFlow: a stand-in for local mode only (see README)."""
