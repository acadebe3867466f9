"""The engine adapters: udf.shards, udf.beam, udf.flink."""
