"""The real local stack: Apache Kafka (KRaft) and MinIO as processes, no Docker needed."""

from local.stack.servers import KafkaServer, MinioServer, Stack, StackError, StackInfo

__all__ = ["KafkaServer", "MinioServer", "Stack", "StackError", "StackInfo"]
