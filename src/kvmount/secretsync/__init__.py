"""Kubernetes Secrets from mounted files: the pure part (files -> Secret data, checked) and
the writer (create or update with ownership, never an unmanaged Secret)."""
