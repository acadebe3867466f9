"""Small purpose-built UDF agents the transport tests run as child processes.

Each script speaks the wire protocol with ``udf.wire`` and ``agent_pb2`` directly;
``_common`` holds what they share (also imported by the socket tests for their
in-test listeners).
"""
