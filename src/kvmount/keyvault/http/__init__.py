"""Key Vault over HTTP: one vault client per vault and identity, the reads' own transport and
connections, shared TLS contexts and retry codes. Imports nothing else of kvmount."""
