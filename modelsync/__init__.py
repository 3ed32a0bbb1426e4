"""Model sync sidecar: mirrors complete model versions from MinIO into a TF-Serving model base path."""
