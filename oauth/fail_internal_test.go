package oauth

import (
	"context"
	"net/http/httptest"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// A request its caller abandoned is no server failure: it is logged at
// debug level only; a real failure is an error line.
func TestFailLogsAbandonedRequestsAtDebug(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	p := &provider{log: zap.New(core)}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := httptest.NewRequest("POST", "/api/register-agent", nil).WithContext(ctx)
	p.Fail(httptest.NewRecorder(), r, context.Canceled)
	if n := logs.FilterLevelExact(zapcore.ErrorLevel).Len(); n != 0 || logs.FilterMessage("request abandoned by the client").Len() != 1 {
		t.Fatalf("abandoned request: %v", logs.All())
	}

	w := httptest.NewRecorder()
	p.Fail(w, httptest.NewRequest("POST", "/api/register-agent", nil), context.DeadlineExceeded)
	if w.Code < 500 || logs.FilterLevelExact(zapcore.ErrorLevel).Len() != 1 {
		t.Fatalf("a failure of ours: %d %v", w.Code, logs.All())
	}
}
