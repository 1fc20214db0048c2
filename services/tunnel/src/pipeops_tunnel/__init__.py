"""The tunnel container of pipeops-agent."""
