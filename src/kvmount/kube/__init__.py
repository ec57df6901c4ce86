"""Kubernetes objects the driver and its peers share: SecretProviderClasses, pod statuses,
and the stores that read and write them (the API server, or files in standalone mode)."""
