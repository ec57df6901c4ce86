"""`kvmount mount`: a SecretProviderClass file written into a directory, no cluster needed."""
