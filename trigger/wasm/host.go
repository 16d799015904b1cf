package wasm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"github.com/tetratelabs/wazero/api"
)

// Codes host functions return to the guest (docs/abi.md).
const (
	CodeOK           = 0
	CodeDenied       = 1
	CodeInvalid      = 2
	CodeFailed       = 3
	CodeDuplicateKey = 4
)

// Flags of update and delete.
const (
	FlagUpsert = 1
	FlagMany   = 2
)

type hostFunc struct {
	fn      func(r *Runtime, ctx context.Context, mod api.Module, stack []uint64)
	params  []api.ValueType
	results []api.ValueType
}

var hostFuncs map[string]hostFunc

func hostFuncNames() []string {
	names := make([]string, 0, len(hostFuncs))
	for n := range hostFuncs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func init() {
	i32 := api.ValueTypeI32
	hostFuncs = map[string]hostFunc{
		"log":        {fn: hostLog, params: []api.ValueType{i32, i32, i32}},
		"set_error":  {fn: hostSetError, params: []api.ValueType{i32, i32}},
		"set_result": {fn: hostSetResult, params: []api.ValueType{i32, i32}},
		"insert":     {fn: hostInsert, params: []api.ValueType{i32, i32, i32, i32}, results: []api.ValueType{i32}},
		"update":     {fn: hostUpdate, params: []api.ValueType{i32, i32, i32, i32, i32, i32, i32}, results: []api.ValueType{i32}},
		"delete":     {fn: hostDelete, params: []api.ValueType{i32, i32, i32, i32, i32}, results: []api.ValueType{i32}},
	}
}

func (r *Runtime) instantiateHost(ctx context.Context) error {
	b := r.rt.NewHostModuleBuilder(HostModule)
	for _, name := range hostFuncNames() {
		f := hostFuncs[name]
		fn := f.fn
		b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
			fn(r, ctx, mod, stack)
		}), f.params, f.results).Export(name)
	}
	_, err := b.Instantiate(ctx)
	return err
}

// current returns the pool entry of the calling guest instance (nil while
// the guest initialises, before Call).
func (r *Runtime) current(mod api.Module) *instance {
	if in, ok := r.instances.Load(mod); ok {
		return in.(*instance)
	}
	return nil
}

// Host functions get i32 arguments as uint64 stack slots whose upper half
// is undefined: every use truncates to uint32 first.

// read copies guest memory [ptr, ptr+n).
func read(mod api.Module, ptr, n uint64) ([]byte, bool) {
	b, ok := mod.Memory().Read(uint32(ptr), uint32(n))
	if !ok {
		return nil, false
	}
	return append([]byte(nil), b...), true
}

// view returns guest memory [ptr, ptr+n) without copying; valid until the
// guest runs again.
func view(mod api.Module, ptr, n uint64) ([]byte, bool) {
	return mod.Memory().Read(uint32(ptr), uint32(n))
}

func hostLog(r *Runtime, _ context.Context, mod api.Module, stack []uint64) {
	in := r.current(mod)
	if in == nil || in.host == nil {
		return
	}
	b, ok := view(mod, stack[1], stack[2])
	if !ok {
		panic(fmt.Errorf("%w: log message at %d+%d is outside memory", ErrTrap, uint32(stack[1]), uint32(stack[2])))
	}
	if room := in.stderr.max - in.logged; room <= 0 {
		return
	} else if len(b) > room {
		b = b[:room]
	}
	in.logged += len(b)
	in.host.Log(Level(int32(stack[0])), string(b))
}

func hostSetError(r *Runtime, _ context.Context, mod api.Module, stack []uint64) {
	in := r.current(mod)
	if in == nil {
		return
	}
	b, ok := view(mod, stack[0], min(uint64(uint32(stack[1])), uint64(in.stderr.max)))
	if !ok {
		panic(fmt.Errorf("%w: set_error message is outside memory", ErrTrap))
	}
	in.errMsg = string(b)
}

func hostSetResult(r *Runtime, _ context.Context, mod api.Module, stack []uint64) {
	in := r.current(mod)
	if in == nil {
		return
	}
	b, ok := read(mod, stack[0], stack[1])
	if !ok {
		panic(fmt.Errorf("%w: set_result document is outside memory", ErrTrap))
	}
	in.result = b
}

func hostInsert(r *Runtime, ctx context.Context, mod api.Module, stack []uint64) {
	w := Write{Kind: "insert"}
	stack[0] = r.write(ctx, mod, &w, stack[0], stack[1], stack[2], stack[3], 0, 0, 0)
}

func hostUpdate(r *Runtime, ctx context.Context, mod api.Module, stack []uint64) {
	w := Write{Kind: "update"}
	stack[0] = r.write(ctx, mod, &w, stack[0], stack[1], stack[2], stack[3], stack[4], stack[5], stack[6])
}

func hostDelete(r *Runtime, ctx context.Context, mod api.Module, stack []uint64) {
	w := Write{Kind: "delete"}
	stack[0] = r.write(ctx, mod, &w, stack[0], stack[1], stack[2], stack[3], 0, 0, stack[4])
}

func (r *Runtime) write(ctx context.Context, mod api.Module, w *Write, nsPtr, nsLen, docPtr, docLen, updPtr, updLen, flags uint64) uint64 {
	in := r.current(mod)
	if in == nil || in.host == nil {
		return CodeFailed
	}
	ns, ok1 := read(mod, nsPtr, nsLen)
	doc, ok2 := read(mod, docPtr, docLen)
	ok3 := true
	if w.Kind == "update" {
		w.Update, ok3 = read(mod, updPtr, updLen)
	}
	if !ok1 || !ok2 || !ok3 {
		in.host.Log(LevelWarn, fmt.Sprintf("%s: arguments point outside guest memory", w.Kind))
		return CodeInvalid
	}
	w.Namespace, w.Document = string(ns), doc
	w.Upsert, w.Many = flags&FlagUpsert != 0, flags&FlagMany != 0
	if !isDocument(w.Document) || (w.Kind == "update" && !isDocument(w.Update)) {
		in.host.Log(LevelWarn, fmt.Sprintf("%s %s: argument is not a BSON document", w.Kind, w.Namespace))
		return CodeInvalid
	}
	err := in.host.Write(ctx, *w)
	switch {
	case err == nil:
		return CodeOK
	case errors.Is(err, ErrWriteDenied):
		in.host.Log(LevelWarn, err.Error())
		return CodeDenied
	case errors.Is(err, ErrWriteInvalid):
		in.host.Log(LevelWarn, err.Error())
		return CodeInvalid
	case errors.Is(err, ErrDuplicateKey):
		return CodeDuplicateKey
	default:
		in.host.Log(LevelWarn, err.Error())
		return CodeFailed
	}
}

// isDocument checks the BSON framing (length prefix and terminator); the
// host's database driver validates the rest.
func isDocument(b []byte) bool {
	return len(b) >= 5 && int(binary.LittleEndian.Uint32(b)) == len(b) && b[len(b)-1] == 0
}
