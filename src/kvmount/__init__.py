"""kvmount: Azure Key Vault objects delivered into Kubernetes pods as files."""

__version__ = "0.1.0"
