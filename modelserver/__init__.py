"""Model server: Kafka requests routed in batches to the live TF-Serving instance."""
