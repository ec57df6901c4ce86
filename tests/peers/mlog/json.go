package mlog

// The JSON lines monis.app/mlog writes through zap, rebuilt on logr so the
// stand-in needs no zap: the keys (level, timestamp, caller, message, logger,
// error), the level names (klog's -v levels mapped as mlog maps them), the
// time layout (RFC 3339 with microseconds) and "$function" after the caller.

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

var writeLock sync.Mutex

type jsonSink struct {
	name   string
	values []any
	depth  int
}

func (s *jsonSink) Init(info logr.RuntimeInfo) { s.depth = info.CallDepth }

func (s *jsonSink) Enabled(int) bool { return true } // klog has checked -v already

// levelName maps a klog verbosity as mlog does: 0 info, 1 debug, 2-3 info,
// 4-5 debug, 6-7 trace, 8 and above all.
func levelName(v int) string {
	switch {
	case v >= 8:
		return "all"
	case v >= 6:
		return "trace"
	case v >= 4:
		return "debug"
	case v >= 2, v == 0:
		return "info"
	default:
		return "debug"
	}
}

func (s *jsonSink) Info(v int, msg string, kv ...any) { s.write(levelName(v), nil, msg, kv) }

func (s *jsonSink) Error(err error, msg string, kv ...any) { s.write("error", err, msg, kv) }

func (s *jsonSink) WithValues(kv ...any) logr.LogSink {
	c := *s
	c.values = append(append([]any{}, s.values...), kv...)
	return &c
}

func (s *jsonSink) WithName(name string) logr.LogSink {
	c := *s
	if c.name != "" {
		name = c.name + "." + name
	}
	c.name = name
	return &c
}

func (s *jsonSink) WithCallDepth(depth int) logr.LogSink {
	c := *s
	c.depth += depth
	return &c
}

func encodable(v any) any {
	switch t := v.(type) {
	case error:
		return t.Error()
	case fmt.Stringer:
		return t.String()
	}
	if _, err := json.Marshal(v); err != nil {
		return fmt.Sprintf("%+v", v)
	}
	return v
}

func (s *jsonSink) write(level string, err error, msg string, kv []any) {
	line := map[string]any{
		"level":     level,
		"timestamp": time.Now().UTC().Format("2006-01-02T15:04:05.000000Z07:00"),
		"message":   strings.TrimSuffix(msg, "\n"),
	}
	if pc, file, no, ok := runtime.Caller(s.depth + 2); ok {
		function := runtime.FuncForPC(pc).Name()
		line["caller"] = fmt.Sprintf("%s:%d$%s", file, no, function[strings.LastIndexByte(function, '/')+1:])
	}
	if s.name != "" {
		line["logger"] = s.name
	}
	pairs := append(append([]any{}, s.values...), kv...)
	for i := 0; i+1 < len(pairs); i += 2 {
		line[fmt.Sprint(pairs[i])] = encodable(pairs[i+1])
	}
	if err != nil {
		line["error"] = err.Error()
	}
	out, _ := json.Marshal(line)
	writeLock.Lock()
	defer writeLock.Unlock()
	_, _ = os.Stderr.Write(append(out, '\n'))
}
