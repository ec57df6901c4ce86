"""A mount's parameters read and checked before any network call: the objects, their file
names, the provider's caps. Pure (no Azure SDK): all `kvmount validate` needs."""
