package wasm_test

import (
	"context"
	"errors"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.uber.org/goleak"

	"github.com/godwit-dev/godwit/internal/testwait"
	"github.com/godwit-dev/godwit/trigger/wasm"
)

// heldHost holds the guest's write until the test releases it: a call in
// flight for as long as the test chooses.
type heldHost struct{ entered, release chan struct{} }

func newHeldHost() heldHost {
	return heldHost{entered: make(chan struct{}), release: make(chan struct{})}
}

func (h heldHost) Log(wasm.Level, string) {}

func (h heldHost) Write(context.Context, wasm.Write) error {
	close(h.entered)
	<-h.release
	return nil
}

// startHeldCall compiles the ABI module (closed by the test) and starts a
// call of it whose write is held; it returns once the guest is in the
// write.
func startHeldCall(t *testing.T, ctx context.Context) (*wasm.Module, heldHost, <-chan error) {
	t.Helper()
	m, err := newRuntime(t, wasm.Config{PoolSize: 2}).Compile(ctx, abiWasm)
	if err != nil {
		t.Fatal(err)
	}
	h := newHeldHost()
	called := make(chan error, 1)
	go func() {
		_, err := m.Call(context.Background(), doc(t, bson.D{{Key: "mode", Value: "writ"}}), h)
		called <- err
	}()
	select {
	case <-h.entered:
	case <-ctx.Done():
		t.Fatal("the guest did not write")
	}
	return m, h, called
}

func TestModule_Close(t *testing.T) {
	t.Run("WaitsForRunningCalls", func(t *testing.T) {
		ctx := testwait.Context(t)
		m, h, called := startHeldCall(t, ctx)
		closed := make(chan error, 1)
		go func() { closed <- m.Close(ctx) }()
		close(h.release)
		if err := <-called; err != nil {
			t.Fatalf("the call running while the module closed: %v, want it to finish", err)
		}
		if err := <-closed; err != nil {
			t.Fatal(err)
		}
		if _, err := m.Call(ctx, doc(t, bson.D{{Key: "mode", Value: "normal"}}), &recorder{}); !errors.Is(err, wasm.ErrClosed) {
			t.Fatalf("call after Close: %v, want ErrClosed", err)
		}
	})
	t.Run("StopsWaitingWhenContextEnds", func(t *testing.T) {
		ctx := testwait.Context(t)
		m, h, called := startHeldCall(t, ctx)
		defer func() { close(h.release); <-called }()
		// Everything running now is the test's: the held call.
		before := goleak.IgnoreCurrent()
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_ = m.Close(cctx) // returns although the call still runs
		// Nothing Close started may wait on for the call.
		goleak.VerifyNone(t, before)
	})
}
