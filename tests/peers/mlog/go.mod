// A stand-in for monis.app/mlog, which the Go module proxy refuses to serve.
// scripts/peers/upstream-driver.sh builds upstream's driver with a `replace`
// pointing here. Only what the driver v1.6.x calls is provided.
module monis.app/mlog

go 1.22

require (
	github.com/go-logr/logr v1.4.1
	k8s.io/klog/v2 v2.120.1
)
