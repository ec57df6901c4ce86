"""The Secrets Store CSI node driver."""
