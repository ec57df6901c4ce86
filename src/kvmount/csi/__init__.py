"""The CSI side both the driver and its helpers share: the volume attributes
kubelet adds to a publish, kubelet's volume naming, and the v1alpha1 provider client."""
