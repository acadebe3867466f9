"""udf.agent: the agent library, its AgentServer, its ending and its limits."""
