"""Every udf.Interface's ending contract (close, one cause, no wedge) with real processes and sockets."""
