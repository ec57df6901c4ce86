"""The FlexVolume driver azure/kv: kubelet execs it once per volume operation."""
