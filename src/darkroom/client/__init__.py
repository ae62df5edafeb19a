"""The command-line client: ``darkroom submit`` and ``darkroom tasks`` talk to a server's API."""
