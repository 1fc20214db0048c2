"""The http-api container of pipeops-agent: the agent's HTTP face on :8080."""
