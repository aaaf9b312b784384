"""flowlens agent: in-kernel network flow aggregates served as Prometheus metrics."""

__version__ = "0.1.0"
