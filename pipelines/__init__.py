"""The recurring Kubeflow (KFP v2) pipeline: data, train, evaluate, export, publish."""

import os

PIPELINE_NAME = "streaming-recommender-training"
# The project's image (see Dockerfile); `recommender pipeline compile --image` overrides it.
DEFAULT_IMAGE = os.environ.get("PIPELINE_IMAGE", "streaming-recommender:0.1.0")
