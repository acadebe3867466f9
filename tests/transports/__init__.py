"""udf.Process, udf.Socket and TLS, against real child processes and sockets."""
