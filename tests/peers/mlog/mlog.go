// Package mlog is kvmount's minimal stand-in for monis.app/mlog, written for
// building upstream's secrets-store-csi-driver as a test peer. It provides
// only the functions the driver v1.6.x calls (Setup, the two formats,
// ValidateAndSetKlogLevelAndFormatGlobally, Error, Fatal) and sends
// everything through klog, which the driver configures with its own flags.
package mlog

import (
	"context"
	"fmt"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
)

// LogFormat is the output format the driver asks for (--log-format-json).
type LogFormat string

const (
	FormatText LogFormat = "text"
	FormatJSON LogFormat = "json"
)

// Setup returns the function to defer at exit: it flushes buffered logs.
func Setup() func() {
	return klog.Flush
}

// ValidateAndSetKlogLevelAndFormatGlobally checks the level and format. klog
// already carries the level parsed from -v; the text format stays klog's text
// lines, and JSON routes klog through mlog's JSON shape (json.go).
func ValidateAndSetKlogLevelAndFormatGlobally(_ context.Context, level klog.Level, format LogFormat) error {
	if level < 0 {
		return fmt.Errorf("log level %d is negative", level)
	}
	if format != FormatText && format != FormatJSON {
		return fmt.Errorf("log format %q is neither %q nor %q", format, FormatText, FormatJSON)
	}
	if format == FormatJSON {
		klog.SetLogger(logr.New(&jsonSink{}))
	}
	return nil
}

// Error logs err with a message and key/value pairs.
func Error(msg string, err error, keysAndValues ...any) {
	klog.ErrorS(err, msg, keysAndValues...)
}

// Fatal logs err and exits with status 1 after flushing.
func Fatal(err error, keysAndValues ...any) {
	klog.ErrorS(err, "fatal error", keysAndValues...)
	klog.FlushAndExit(klog.ExitFlushTimeout, 1)
}
