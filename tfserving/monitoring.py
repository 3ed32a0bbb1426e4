"""TF-Serving's Prometheus monitoring: the --monitoring_config_file text proto and the request metrics.

tensorflow_model_server reads the file as a text-format MonitoringConfig
(tensorflow_serving/config/monitoring_config.proto) and, when `prometheus_config.enable` is set,
serves its metrics on the REST port at `prometheus_config.path` (/monitoring/prometheus/metrics
when empty). Of what it exports, the stand-in keeps the two request metrics, with TF-Serving's
names, labels, unit and buckets (servables/tensorflow/util.cc), written as its PrometheusExporter
writes them (util/prometheus_exporter.cc: a TYPE line per metric, no HELP, le="+Inf" last):

- `:tensorflow:serving:request_count{model_name,status}`: every request, with the canonical name
  of its status code (OK, NOT_FOUND, INVALID_ARGUMENT...);
- `:tensorflow:serving:request_latency{model_name,API,entrypoint}`: a histogram, in microseconds, of
  the successful ones only. gRPC Predict is API "Predict", entrypoint "GRPC"; REST requests are
  entrypoint "REST" with the verb as the URL spells it ("predict"), or "" for status and metadata
  GETs (model_servers/http_server.cc).
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath
REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
# monitoring::Buckets::Exponential(10, 1.8, 33): 10 us to ~20 minutes; TF adds DBL_MAX (+Inf).
LATENCY_BOUNDS_US = tuple(10 * 1.8**i for i in range(33))


def _monitoring_config_class() -> type:
    # tensorflow-serving-api ships no monitoring_config_pb2; the two messages, as the .proto has them.
    field_type = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
    )
    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=field_type.TYPE_BOOL, label=field_type.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=field_type.TYPE_STRING, label=field_type.LABEL_OPTIONAL)
    monitoring = proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config",
        number=1,
        type=field_type.TYPE_MESSAGE,
        type_name=".tensorflow.serving.PrometheusConfig",
        label=field_type.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()  # private: never clashes with a real monitoring_config_pb2
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig"))


MonitoringConfig = _monitoring_config_class()


class MonitoringConfigError(ValueError):
    """The file cannot be read or is not a text-format MonitoringConfig (TF-Serving exits on both)."""


def prometheus_path(config_file: str) -> str | None:
    """Where the file has the REST port serve metrics, or None when its Prometheus export is off."""
    try:
        text = Path(config_file).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise MonitoringConfigError(f"cannot read '{config_file}': {exc}") from None
    try:
        config = text_format.Parse(text, MonitoringConfig())
    except text_format.ParseError as exc:
        raise MonitoringConfigError(f"Invalid protobuf file: '{config_file}' ({exc})") from None
    if not config.prometheus_config.enable:
        return None
    return config.prometheus_config.path or DEFAULT_PROMETHEUS_PATH


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_US) + 1))
    total: float = 0.0


def _escape(value: str) -> str:
    # SanitizeLabelValue: only backslashes and double quotes are escaped.
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return ",".join(f'{name}="{_escape(value)}"' for name, value in labels.items())


class RequestMetrics:
    """TF-Serving's request count and latency of one server, shared by its REST and gRPC threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        self._latencies: dict[tuple[str, str, str], _Histogram] = {}

    def record(self, model_name: str, api: str, entrypoint: str, status: str, started: float) -> None:
        """One request that arrived at `started` (time.perf_counter()) and ended with `status`."""
        # TF-Serving times in whole microseconds and, like it, only successful requests.
        micros = int((time.perf_counter() - started) * 1e6)
        with self._lock:
            self._counts[model_name, status] = self._counts.get((model_name, status), 0) + 1
            if status == "OK":
                histogram = self._latencies.setdefault((model_name, api, entrypoint), _Histogram())
                # upper_bound, as tensorflow::histogram::Histogram::Add places a value.
                histogram.counts[bisect.bisect_right(LATENCY_BOUNDS_US, micros)] += 1
                histogram.total += micros

    def exposition(self) -> str:
        """Both metrics in the Prometheus text format, as TF-Serving's exporter prints them."""
        with self._lock:
            counts = sorted(self._counts.items())
            latencies = sorted(
                (key, _Histogram(list(h.counts), h.total)) for key, h in self._latencies.items()
            )
        lines = [f"# TYPE {REQUEST_COUNT} counter"]
        for (model_name, status), count in counts:
            lines.append(f"{REQUEST_COUNT}{{{_labels(model_name=model_name, status=status)}}} {count}")
        lines.append(f"# TYPE {REQUEST_LATENCY} histogram")
        for (model_name, api, entrypoint), histogram in latencies:
            labels = _labels(model_name=model_name, API=api, entrypoint=entrypoint)
            cumulative = 0
            for index, count in enumerate(histogram.counts):
                cumulative += count
                # absl::StrCat prints a double with six significant digits, like %g.
                bound = format(LATENCY_BOUNDS_US[index], "g") if index < len(LATENCY_BOUNDS_US) else "+Inf"
                lines.append(f'{REQUEST_LATENCY}_bucket{{{labels},le="{bound}"}} {cumulative}')
            lines.append(f"{REQUEST_LATENCY}_sum{{{labels}}} {format(histogram.total, 'g')}")
            lines.append(f"{REQUEST_LATENCY}_count{{{labels}}} {cumulative}")
        return "\n".join(lines) + "\n"
