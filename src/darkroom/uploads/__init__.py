"""Direct uploads: presigned PUTs handed out, then taken (checked, copied) by task creation."""
