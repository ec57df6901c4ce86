"""Everything that talks to Azure Key Vault: specs, identities, fetching, content."""
