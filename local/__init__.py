"""Local mode: everything that runs the system on one machine without a cluster, and no production
path. `recommender-local` (local.cli) runs it: the real Kafka + MinIO stack as processes
(local.stack), the TF-Serving stand-in (the tfserving package) and the all-in-one demo
(local.demo); local.modelserver runs `recommender modelserver` as a process. Production code never
imports it, and the image does not ship it (tests/unit/test_import_boundaries.py)."""
