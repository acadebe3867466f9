"""The example UDFs (examples/*.py) through udf.Server, udf.Process and udf.Socket."""
