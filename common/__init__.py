"""Shared by every component: settings, message schemas, storage layout, Kafka/MinIO helpers."""
