"""File storage: one interface (``base``), local disk (``local``) and S3-compatible (``s3``)."""
