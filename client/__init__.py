"""Client: sends recommendation requests to Kafka, reads replies, generates load."""
