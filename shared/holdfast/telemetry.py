"""Traces, metrics and logs: what an operator needs to follow one transfer end to end.

- Traces: a server span per HTTP request or inbound CloudEvent (joining the caller's W3C
  `traceparent`), a span per unit of work with its retries, a span per SQL statement
  (opentelemetry-instrumentation-sqlalchemy), and the outbox row keeps the context so the
  outbound event carries it on. Exported by OTLP when the standard `OTEL_*` variables ask for
  it (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_TRACES_EXPORTER=otlp|console`); off otherwise,
  and off in tests unless a test attaches an in-memory exporter.
- Metrics: the instruments below, served at `GET /metrics` (Prometheus text) by every
  function, and pushed by OTLP when `OTEL_METRICS_EXPORTER=otlp`.
- Logs: one JSON object per line on stderr, with trace and span ids. Never a token, an amount
  tied to a person, or account metadata: only ids, codes and counts.

Span attributes carry ids and states (`holdfast.transfer.id`, `holdfast.transfer.state`,
`holdfast.db.attempts`), never amounts, owners or tokens.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import threading
from datetime import UTC, datetime
from typing import Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

SCOPE = "holdfast"

_lock = threading.Lock()
_configured = False
_tracer_provider: TracerProvider | None = None


def tracer() -> trace.Tracer:
    return trace.get_tracer(SCOPE)


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span (or of the caller's, when only propagated)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


class Instruments:
    """The metrics Holdfast exports (names as Prometheus shows them in the comments)."""

    def __init__(self, meter: metrics.Meter) -> None:
        # holdfast_transfers_total{operation, outcome}
        self.transfers = meter.create_counter(
            "holdfast.transfers", unit="1", description="Transfer operations by outcome"
        )
        # holdfast_holds_expired_total
        self.holds_expired = meter.create_counter(
            "holdfast.holds.expired", unit="1", description="Reservations expired"
        )
        # holdfast_db_serialization_retries_total
        self.retries = meter.create_counter(
            "holdfast.db.serialization.retries",
            unit="1",
            description="Transactions retried (SQLSTATE 40001, deadlock, lost connection)",
        )
        # holdfast_http_server_request_duration_seconds_bucket{route, method, status}
        self.request_duration = meter.create_histogram(
            "holdfast.http.server.request.duration",
            unit="s",
            description="Time to answer a request or an event",
            explicit_bucket_boundaries_advisory=[
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1.0,
                2.5,
            ],
        )
        # holdfast_outbox_backlog / holdfast_outbox_oldest_age_seconds: events not yet published
        self.outbox_backlog = meter.create_gauge(
            "holdfast.outbox.backlog", unit="1", description="Outbox events not yet published"
        )
        self.outbox_oldest_age = meter.create_gauge(
            "holdfast.outbox.oldest_age",
            unit="s",
            description="Age of the oldest outbox event not yet published",
        )
        # holdfast_outbox_published_total / holdfast_outbox_failures_total
        self.outbox_published = meter.create_counter(
            "holdfast.outbox.published", unit="1", description="Events the sink accepted"
        )
        self.outbox_failures = meter.create_counter(
            "holdfast.outbox.failures", unit="1", description="Sends the sink did not accept"
        )
        # holdfast_ledger_unsealed_entries / holdfast_ledger_sealing_lag_seconds
        self.ledger_unsealed = meter.create_gauge(
            "holdfast.ledger.unsealed_entries", unit="1", description="Entries not yet sealed"
        )
        self.ledger_sealing_lag = meter.create_gauge(
            "holdfast.ledger.sealing_lag",
            unit="s",
            description="Age of the oldest entry not yet sealed into a checkpoint",
        )
        # holdfast_ledger_entries_sealed_total
        self.ledger_sealed = meter.create_counter(
            "holdfast.ledger.entries_sealed", unit="1", description="Entries sealed"
        )
        # holdfast_ledger_checkpoint_verification_failures_total
        self.ledger_verification_failures = meter.create_counter(
            "holdfast.ledger.checkpoint_verification_failures",
            unit="1",
            description="Checkpoints whose recomputation from the database did not match",
        )
        # holdfast_holds_lapsed_unswept: reservations past expiry the sweep has not moved yet
        self.lapsed_unswept = meter.create_gauge(
            "holdfast.holds.lapsed_unswept", unit="1", description="Lapsed holds not yet swept"
        )


_instruments: Instruments | None = None


def instruments() -> Instruments:
    global _instruments
    with _lock:
        if _instruments is None:
            _instruments = Instruments(metrics.get_meter(SCOPE))
        return _instruments


def configure(
    service_name: str,
    *,
    extra_readers: list[MetricReader] | None = None,
    logs: bool = True,
) -> None:
    """Set up providers and logging once per process (a function, `holdfast dev`)."""
    global _configured, _tracer_provider
    with _lock:
        if _configured:
            return
        _configured = True
        resource = Resource.create(
            {"service.name": os.environ.get("OTEL_SERVICE_NAME", f"holdfast-{service_name}")}
        )
        readers: list[MetricReader] = list(extra_readers or [])
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        readers.append(PrometheusMetricReader())
        if os.environ.get("OTEL_METRICS_EXPORTER") == "otlp":
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        metrics.set_meter_provider(meter_provider)
        exporter = os.environ.get("OTEL_TRACES_EXPORTER", "")
        if exporter in {"otlp", "console"} or (
            exporter != "none" and os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        ):
            _tracer_provider = TracerProvider(resource=resource)
            if exporter == "console":
                _tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                _tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            trace.set_tracer_provider(_tracer_provider)
        # Scale to zero ends the process with SIGTERM: flush what is buffered on the way out.
        atexit.register(shutdown, meter_provider)
        if logs:
            configure_logging()


def add_span_processor(processor: SpanProcessor) -> None:
    """Attach a processor (tests: an in-memory exporter), installing an SDK provider if needed."""
    global _tracer_provider
    with _lock:
        if _tracer_provider is None:
            _tracer_provider = TracerProvider(
                resource=Resource.create({"service.name": "holdfast"})
            )
            trace.set_tracer_provider(_tracer_provider)
        _tracer_provider.add_span_processor(processor)


def shutdown(meter_provider: MeterProvider | None = None) -> None:
    if _tracer_provider is not None:
        _tracer_provider.shutdown()
    if meter_provider is not None:
        meter_provider.shutdown()


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the current trace and span ids."""

    def format(self, record: logging.LogRecord) -> str:
        context = trace.get_current_span().get_span_context()
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if context.is_valid:
            entry["trace_id"] = format(context.trace_id, "032x")
            entry["span_id"] = format(context.span_id, "016x")
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level or os.environ.get("HOLDFAST_LOG_LEVEL", "INFO"))
