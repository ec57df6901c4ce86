"""Who reads: the credential of a mount's identity, reused across mounts; identity binding's proxy."""
