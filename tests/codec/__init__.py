"""The codec: udf.wire, udf.convert, the fast paths, agent_pb2 against udf.proto, fuzz and properties."""
