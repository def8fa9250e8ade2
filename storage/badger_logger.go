package storage

import (
	"strings"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

// zapBadgerLogger routes Badger's log lines into Caddy's zap logger. Only
// warnings and errors are kept: Badger logs every table flush, compaction and
// replayed file at INFO, which would drown a gateway's own log in noise.
type zapBadgerLogger struct {
	log *zap.SugaredLogger
}

var _ badger.Logger = zapBadgerLogger{}

func newZapBadgerLogger(l *zap.Logger) zapBadgerLogger {
	// AddCallerSkip(1) so zap reports Badger's call site, not this adapter.
	return zapBadgerLogger{log: l.WithOptions(zap.AddCallerSkip(1)).Sugar()}
}

// Badger's format strings mostly end in "\n", which zap would print verbatim
// inside the JSON message field.
func trimFormat(format string) string { return strings.TrimRight(format, "\n") }

func (z zapBadgerLogger) Errorf(format string, args ...any) {
	z.log.Errorf(trimFormat(format), args...)
}

func (z zapBadgerLogger) Warningf(format string, args ...any) {
	z.log.Warnf(trimFormat(format), args...)
}

func (zapBadgerLogger) Infof(string, ...any)  {}
func (zapBadgerLogger) Debugf(string, ...any) {}
