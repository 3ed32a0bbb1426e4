"""The recurring Kubeflow (KFP v2) pipeline: data, train, evaluate, export, publish."""
