"""udf.metrics: the Prometheus collector."""
