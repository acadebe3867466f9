"""udf.Supervisor and udf.supervision."""
