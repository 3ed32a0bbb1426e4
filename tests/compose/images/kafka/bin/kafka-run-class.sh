#!/bin/bash
# kafka-run-class.sh of the distribution, reduced to what this image needs: the jars, log4j2, heap.
exec java ${KAFKA_HEAP_OPTS:--Xmx1g -Xms1g} -Djava.awt.headless=true \
  -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties \
  ${KAFKA_OPTS:-} -cp '/opt/kafka/libs/*' "$@"
