package wasm_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/trigger/wasm"
)

type nopHost struct{}

func (nopHost) Log(wasm.Level, string)                  {}
func (nopHost) Write(context.Context, wasm.Write) error { return nil }

// BenchmarkModule_Call measures one call of the noop Go guest on a 1 KiB
// event, from as many goroutines as GOMAXPROCS (one pool instance each).
func BenchmarkModule_Call(b *testing.B) {
	r := newRuntime(b, wasm.Config{})
	m := compile(b, r, noopWasm)
	ev := doc(b, bson.D{{Key: "pad", Value: strings.Repeat("x", 1000)}})
	b.SetBytes(int64(len(ev)))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := m.Call(context.Background(), ev, nopHost{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkRuntime_Compile measures compiling the noop Go guest without a
// cache and instantiating it once.
func BenchmarkRuntime_Compile(b *testing.B) {
	for b.Loop() {
		r, err := wasm.New(context.Background(), wasm.Config{CacheDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		m, err := r.Compile(context.Background(), noopWasm)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms/compile+instantiate")
		_ = m.Close(context.Background())
		_ = r.Close(context.Background())
	}
}
