"""The command-line tool (udf.cli, python -m udf) and udf.config."""
