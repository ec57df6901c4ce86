"""The pod-less sync controller: SecretSync objects (secret-sync.x-k8s.io) -> Kubernetes Secrets."""
