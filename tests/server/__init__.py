"""udf.Server (udf/server/): Go's server tests and the conversations SPEC adds, with the fake agent."""
