"""The v1alpha1 provider gRPC server: MountRequest -> Key Vault -> files."""
