"""The bottom floor: process plumbing every component shares.

Go's flag syntax and upstream's shared daemon flags, logging, the health and
metrics endpoint server, gRPC on unix sockets, small JSON state files,
glibc's arena cap, and PEM / PKCS#12 reading. Nothing here knows Key Vault,
Kubernetes or CSI.
"""
