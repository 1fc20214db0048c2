"""The registrar container of pipeops-agent."""
