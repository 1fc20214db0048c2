"""The gateway container of pipeops-agent."""
