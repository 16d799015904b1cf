package api_test

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/godwit-dev/godwit/proto/godwit/trigger/v1"
	"github.com/godwit-dev/godwit/trigger"
	"github.com/godwit-dev/godwit/trigger/wasm"
)

// distinct returns module with a custom section appended: the same guest,
// other bytes (another upload to godwit and wazero), pad bytes larger.
func distinct(module []byte, i, pad int) []byte {
	payload := append([]byte{byte(len(fmt.Sprint(i)))}, fmt.Sprint(i)...)
	payload = append(payload, make([]byte, 1+pad)...)
	out := append([]byte(nil), module...)
	out = append(out, 0)
	for n := len(payload); ; n >>= 7 { // LEB128 section size
		if n < 0x80 {
			out = append(out, byte(n))
			break
		}
		out = append(out, byte(n&0x7f|0x80))
	}
	return append(out, payload...)
}

func wantExhausted(t *testing.T, err error, setting string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), setting) {
		t.Fatalf("got %v, want ResourceExhausted naming %s", err, setting)
	}
}

// TestFunctionService_Quotas: a user cannot pass the number of functions
// or triggers or the module bytes allowed, not even by racing creates, and
// one user's use does not count against another's.
func TestFunctionService_Quotas(t *testing.T) {
	const maxFns = 3
	e := startEnv(t, t.TempDir(), envOptions{tokens: securityTokens(), quotas: trigger.Config{
		MaxFunctionsPerUser: maxFns, MaxTriggersPerUser: 2, MaxModuleBytesPerUser: int64(maxFns*len(abiWasm) + 1000)}})
	alice, bob := e.as(tokAlice), e.as(tokBob)
	t.Run("RacingCreatesStopAtTheQuota", func(t *testing.T) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		created := 0
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := alice.fc.CreateFunction(ctxT(t), &pb.CreateFunctionRequest{Function: &pb.Function{
					Name: fmt.Sprint("f", i), Wasm: distinct(abiWasm, i, 0)}})
				if err == nil {
					mu.Lock()
					created++
					mu.Unlock()
				} else {
					wantExhausted(t, err, "triggers.max_functions_per_user")
				}
			}()
		}
		wg.Wait()
		if created != maxFns {
			t.Fatalf("%d functions created, want the quota of %d", created, maxFns)
		}
	})
	t.Run("OtherUsersUnaffected", func(t *testing.T) {
		bob.createFunction(t, "mine", abiWasm)
	})
	stream, err := alice.fc.QueryFunctions(ctxT(t), &pb.QueryFunctionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("ModuleBytes", func(t *testing.T) {
		// Replacing a module with a larger one passes the bytes quota.
		_, err := alice.fc.UpdateFunction(ctxT(t), &pb.UpdateFunctionRequest{Function: &pb.Function{
			Id: first.Id, Wasm: distinct(abiWasm, 99, 2000)}})
		wantExhausted(t, err, "triggers.max_module_bytes_per_user")
		// As does a new function of bob's, once his modules are large.
		_, err = bob.fc.CreateFunction(ctxT(t), &pb.CreateFunctionRequest{Function: &pb.Function{
			Name: "huge", Wasm: distinct(abiWasm, 1, maxFns*len(abiWasm))}})
		wantExhausted(t, err, "triggers.max_module_bytes_per_user")
	})
	t.Run("Triggers", func(t *testing.T) {
		for i := range 2 {
			tr := dbTrigger(fmt.Sprint("t", i), first.Id, &pb.DatabaseConfig{Database: "shop"})
			tr.UserId = ""
			alice.createTrigger(t, tr)
		}
		tr := dbTrigger("t2", first.Id, &pb.DatabaseConfig{Database: "shop"})
		tr.UserId = ""
		_, err := alice.tc.CreateTrigger(ctxT(t), &pb.CreateTriggerRequest{Trigger: tr})
		wantExhausted(t, err, "triggers.max_triggers_per_user")
	})
}

// TestFunctionService_CreateInitLoop uploads modules that loop while they
// start: each is refused with InvalidArgument at the call deadline, not
// DeadlineExceeded after the 30 s instantiation bound, and the service
// keeps answering.
func TestFunctionService_CreateInitLoop(t *testing.T) {
	e := startEnv(t, t.TempDir(), envOptions{wasm: wasm.Config{Timeout: 300 * time.Millisecond, InitTimeout: time.Hour}})
	for _, name := range []string{"start", "initialize", "version"} {
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile("../wasm/testdata/initloop_" + name + ".wasm")
			if err != nil {
				t.Fatal(err)
			}
			_, err = e.fc.CreateFunction(ctxT(t), &pb.CreateFunctionRequest{Function: &pb.Function{
				UserId: "u1", Name: name, Wasm: b}})
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), "wasm: ") || !strings.Contains(st.Message(), "did not finish within 300ms") {
				t.Fatalf("got %v, want InvalidArgument on field wasm saying initialisation did not finish within 300ms", err)
			}
		})
	}
	e.createFunction("healthy", abiWasm)
}

// TestDispatch_MemoryBudget runs ten triggers whose functions fill their
// memory, then grow it until refused: the accounted memory of all
// instances stays under triggers.max_memory_bytes, and every trigger still
// handles the next event.
func TestDispatch_MemoryBudget(t *testing.T) {
	const budget = 40 << 20
	e := startEnv(t, t.TempDir(), envOptions{wasm: wasm.Config{MemoryLimit: 16 << 20, MemoryBudget: budget, Timeout: time.Minute, PoolSize: 1}})
	var trs []*pb.Trigger
	for i := range 10 {
		fn := e.createFunction(fmt.Sprint("hog", i), distinct(abiWasm, i, 0))
		trs = append(trs, e.createTrigger(dbTrigger(fmt.Sprint("hog", i), fn.Id, &pb.DatabaseConfig{Database: "shop"})))
	}
	last := e.add("src",
		event("insert", "shop", "a", 1, bson.D{{Key: "mode", Value: "fill"}}),
		event("insert", "shop", "a", 2, bson.D{{Key: "mode", Value: "hogm"}}),
		event("insert", "shop", "a", 3, bson.D{{Key: "mode", Value: "normal"}}))
	for _, tr := range trs {
		e.waitAcked(tr, last)
		// fill and normal succeed; hogm fails (memory limit or budget) and
		// is parked.
		if err := e.mgr.WaitInvocations(ctxT(t), tr.Id, 2); err != nil {
			t.Fatal(err)
		}
		got, err := e.tc.GetTrigger(ctxT(t), &pb.GetTriggerRequest{Id: tr.Id})
		if err != nil {
			t.Fatal(err)
		}
		if st := got.GetStatus(); st.State != "running" || st.DeadLetters != 1 || strings.ContainsAny(st.LastError, "\n\r\t") {
			t.Fatalf("trigger %s: status %v, want running with the hogm event parked and a one-line error", tr.Name, st)
		}
	}
	if st := e.mgr.MemoryStats(); st.Peak > budget || st.Budget != budget {
		t.Fatalf("%+v: the functions took more than the budget of %d", st, budget)
	} else {
		t.Logf("ten memory-filling triggers: peak %d MiB accounted of a %d MiB budget", st.Peak>>20, budget>>20)
	}
}

// TestDispatch_LogBudget floods the log from one function: past its lines
// per second the lines are dropped and counted in the trigger's status.
func TestDispatch_LogBudget(t *testing.T) {
	const perSec, events = 2, 50
	e := startEnv(t, t.TempDir(), envOptions{wasm: wasm.Config{LogLinesPerSecond: perSec}})
	fn := e.createFunction("chatty", abiWasm)
	tr := e.createTrigger(dbTrigger("chatty", fn.Id, &pb.DatabaseConfig{Database: "shop"}))
	var evs [][]byte
	for i := range events {
		evs = append(evs, event("insert", "shop", "a", i, bson.D{{Key: "mode", Value: "normal"}}))
	}
	start := time.Now()
	last := e.add("src", evs...)
	e.waitAcked(tr, last)
	elapsed := time.Since(start)
	got, err := e.mgr.GetTrigger(ctxT(t), tr.Id)
	if err != nil {
		t.Fatal(err)
	}
	st := e.mgr.Status(got)
	kept := events - int(st.LogDroppedLines)
	t.Logf("%d events in %s: %d lines kept, %d dropped", events, elapsed, kept, st.LogDroppedLines)
	if bound := perSec + int(elapsed.Seconds()*perSec) + 1; kept > bound || st.LogDroppedBytes != 2*st.LogDroppedLines {
		t.Fatalf("status %+v: %d lines kept in %s, the budget allows %d", st, kept, elapsed, bound)
	}
}
