"""AI providers: one contract (``base``), a registry that routes task types, and implementations."""
