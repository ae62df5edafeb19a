"""File storage: one interface (``base``), local disk now, S3-compatible later."""
