"""The metric names Holdfast exports, from the code itself: every instrument of
`telemetry.Instruments`, created on a real MeterProvider read by the real Prometheus reader
(into a registry of its own, not the process's), recorded once and scraped."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from holdfast import telemetry


def exported_series() -> dict[str, set[str]]:
    """Sample name (as Prometheus stores it: `_total`, `_bucket`, ...) -> its label names."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider

    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    try:
        instruments = telemetry.Instruments(provider.get_meter(telemetry.SCOPE))
        for instrument in vars(instruments).values():
            record_once(instrument)
        text = generate_latest(registry).decode()
    finally:
        provider.shutdown()
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != "target_info":
                series.setdefault(sample.name, set()).update(sample.labels)
    return series


def record_once(instrument: object) -> None:
    kind = type(instrument).__name__
    if "Histogram" in kind:
        instrument.record(0.01)  # type: ignore[attr-defined]
    elif "Gauge" in kind:
        instrument.set(1)  # type: ignore[attr-defined]
    elif "Counter" in kind:
        instrument.add(1)  # type: ignore[attr-defined]
    else:
        raise TypeError(f"an instrument of an unknown kind: {kind}")
