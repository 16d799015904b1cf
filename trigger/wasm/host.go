package wasm

import (
	"bytes"
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
	keep, notice := in.m.logs.take(len(b))
	if notice != "" {
		in.host.Log(LevelWarn, notice)
	}
	if keep > 0 {
		in.host.Log(Level(int32(stack[0])), string(b[:keep]))
	}
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

// hostSetResult keeps the guest's result only when it is a BSON document
// of bounded size and depth: the result travels on to API clients and
// encoders that would trust it.
func hostSetResult(r *Runtime, _ context.Context, mod api.Module, stack []uint64) {
	in := r.current(mod)
	if in == nil {
		return
	}
	if n := uint64(uint32(stack[1])); n > uint64(r.cfg.MaxResultBytes) {
		panic(fmt.Errorf("%w: set_result of %d bytes is more than the limit of %d", ErrABI, n, r.cfg.MaxResultBytes))
	}
	b, ok := view(mod, stack[0], stack[1])
	if !ok {
		panic(fmt.Errorf("%w: set_result document is outside memory", ErrTrap))
	}
	if err := CheckDocument(b); err != nil {
		panic(fmt.Errorf("%w: set_result: %v", ErrABI, err))
	}
	in.result = append([]byte(nil), b...)
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
	err := CheckDocument(w.Document)
	if err == nil && w.Kind == "update" {
		err = CheckDocument(w.Update)
	}
	if err != nil {
		in.host.Log(LevelWarn, fmt.Sprintf("%s %s: argument is not a usable BSON document: %v", w.Kind, w.Namespace, err))
		return CodeInvalid
	}
	err = in.host.Write(ctx, *w)
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

// MaxDepth is the most levels of documents and arrays nested inside a
// top-level document that godwit accepts from guests (and, in Extended
// JSON, from API requests): MongoDB's own limit for stored documents.
const MaxDepth = 100

// CheckDocument reports why b is not one well-formed BSON document nested
// at most MaxDepth levels deep, or nil. It checks the structure (lengths,
// terminators, element types), not the contents of strings. It walks the
// document without recursion: hostile input must not exhaust the stack
// here, and the depth limit keeps it from exhausting it in the recursive
// encoders that see the document later.
func CheckDocument(b []byte) error {
	bad := func(pos int, format string, args ...any) error {
		return fmt.Errorf("not a BSON document: at byte %d: %s", pos, fmt.Sprintf(format, args...))
	}
	int32At := func(pos, end int) (int, bool) {
		if pos < 0 || pos+4 > end {
			return 0, false
		}
		return int(int32(binary.LittleEndian.Uint32(b[pos:]))), true
	}
	if len(b) < 5 {
		return fmt.Errorf("not a BSON document: %d bytes, at least 5 needed", len(b))
	}
	if n, _ := int32At(0, len(b)); n != len(b) {
		return bad(0, "length prefix says %d bytes, there are %d", n, len(b))
	}
	ends := []int{len(b)} // exclusive end of each open document, root first
	pos := 4
	for len(ends) > 0 {
		end := ends[len(ends)-1]
		if pos >= end {
			return bad(pos, "element runs past the end of its document")
		}
		typ := b[pos]
		if typ == 0 {
			if pos != end-1 {
				return bad(pos, "terminator before the end of its document")
			}
			pos++
			ends = ends[:len(ends)-1]
			continue
		}
		pos++
		k := bytes.IndexByte(b[pos:end], 0)
		if k < 0 {
			return bad(pos, "key without terminator")
		}
		pos += k + 1
		size := -1
		switch typ {
		case 0x06, 0x0A, 0x7F, 0xFF: // undefined, null, max key, min key
			size = 0
		case 0x08: // bool
			size = 1
		case 0x10: // int32
			size = 4
		case 0x01, 0x09, 0x11, 0x12: // double, datetime, timestamp, int64
			size = 8
		case 0x07: // ObjectId
			size = 12
		case 0x13: // decimal128
			size = 16
		case 0x02, 0x0D, 0x0E, 0x0C: // string, JavaScript, symbol, DBPointer
			if n, ok := int32At(pos, end); ok && n >= 1 && pos+4+n <= end && b[pos+4+n-1] == 0 {
				size = 4 + n
				if typ == 0x0C {
					size += 12
				}
			}
		case 0x05: // binary
			if n, ok := int32At(pos, end); ok && n >= 0 {
				size = 4 + 1 + n
			}
		case 0x0B: // regular expression: two C strings
			if i := bytes.IndexByte(b[pos:end], 0); i >= 0 {
				if j := bytes.IndexByte(b[pos+i+1:end], 0); j >= 0 {
					size = i + 1 + j + 1
				}
			}
		case 0x03, 0x04, 0x0F: // document, array, code with scope
			docStart := pos
			docEnd := -1
			if typ == 0x0F {
				total, ok := int32At(pos, end)
				strLen, ok2 := int32At(pos+4, end)
				if ok && ok2 && strLen >= 1 && total >= 14 && pos+8+strLen <= end && b[pos+8+strLen-1] == 0 {
					docStart = pos + 8 + strLen
					docEnd = pos + total
				}
			}
			n, ok := int32At(docStart, end)
			if typ != 0x0F {
				docEnd = docStart + n
			}
			if !ok || n < 5 || docEnd > end || docStart+n != docEnd {
				return bad(pos, "embedded document with a bad length")
			}
			if len(ends) > MaxDepth {
				return bad(pos, "nested deeper than %d levels", MaxDepth)
			}
			ends = append(ends, docEnd)
			pos = docStart + 4
			continue
		default:
			return bad(pos-k-2, "unknown element type 0x%02X", typ)
		}
		if size < 0 || pos+size > end {
			return bad(pos, "value of type 0x%02X runs past the end of its document", typ)
		}
		pos += size
	}
	return nil
}
