package wasm

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tetratelabs/wazero/experimental"
)

// Bounds of DefaultMemoryBudget.
const (
	minDefaultBudget = 256 << 20
	maxDefaultBudget = 16 << 30
)

// DefaultMemoryBudget is the memory budget of all instances when
// Config.MemoryBudget is 0: a quarter of the machine's memory (the cgroup
// limit when one is set, else MemTotal of /proc/meminfo), at least 256 MiB
// and at most 16 GiB; 1 GiB where neither can be read.
func DefaultMemoryBudget() int64 {
	total := machineMemory()
	if total <= 0 {
		return 1 << 30
	}
	return min(max(total/4, minDefaultBudget), maxDefaultBudget)
}

// machineMemory returns the memory godwit may use, or 0 when unknown.
func machineMemory() int64 {
	var total int64
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				if f := strings.Fields(rest); len(f) > 0 {
					if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
						total = n << 10
					}
				}
			}
		}
	}
	for _, p := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// "max" (v2) or a huge number (v1) mean no limit.
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && n > 0 && (total == 0 || n < total) {
			total = n
		}
	}
	return total
}

// budget accounts the linear memory of every instance of a Runtime. Memory
// is reserved before an instance gets it: at instantiation (the module's
// initial memory, waiting for room until the call's deadline) and on every
// memory.grow (refused at once when there is no room, as the wasm spec
// lets a host refuse growth).
type budget struct {
	limit uint64

	mu    sync.Mutex
	used  uint64
	peak  uint64
	freed chan struct{} // closed and replaced whenever memory is released
}

func newBudget(limit uint64) *budget {
	return &budget{limit: limit, freed: make(chan struct{})}
}

func (b *budget) tryReserve(n uint64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.limit {
		return false
	}
	b.used += n
	b.peak = max(b.peak, b.used)
	return true
}

func (b *budget) release(n uint64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.wakeLocked()
	b.mu.Unlock()
}

// wake tells waiters to look again: memory was released or an instance
// became idle (and so may be evicted).
func (b *budget) wake() {
	b.mu.Lock()
	b.wakeLocked()
	b.mu.Unlock()
}

func (b *budget) wakeLocked() {
	close(b.freed)
	b.freed = make(chan struct{})
}

func (b *budget) snapshot() (used, peak uint64, freed <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.peak, b.freed
}

// MemoryStats is the accounted linear memory of a Runtime's instances.
type MemoryStats struct {
	// Budget is Config.MemoryBudget with its default applied.
	Budget int64
	// InUse is the memory reserved by live instances now.
	InUse int64
	// Peak is the most InUse has been.
	Peak int64
}

// MemoryStats returns the accounted memory of all instances.
func (r *Runtime) MemoryStats() MemoryStats {
	used, peak, _ := r.budget.snapshot()
	return MemoryStats{Budget: int64(r.budget.limit), InUse: int64(used), Peak: int64(peak)}
}

// reserve takes n bytes from the budget, evicting idle pooled instances
// and then waiting for other calls to release memory until ctx ends.
func (r *Runtime) reserve(ctx context.Context, n uint64) error {
	if n > r.budget.limit {
		return r.budgetError(n)
	}
	for {
		if r.budget.tryReserve(n) {
			return nil
		}
		if r.evictIdle() {
			continue
		}
		_, _, freed := r.budget.snapshot()
		if r.budget.tryReserve(n) {
			return nil
		}
		if r.onWait != nil {
			r.onWait()
		}
		select {
		case <-freed:
		case <-ctx.Done():
			return fmt.Errorf("%w (waited until the call's deadline)", r.budgetError(n))
		}
	}
}

// reserveNow is reserve without waiting: memory.grow cannot wait.
func (r *Runtime) reserveNow(n uint64) bool {
	for {
		if r.budget.tryReserve(n) {
			return true
		}
		if !r.evictIdle() {
			return false
		}
	}
}

func (r *Runtime) budgetError(n uint64) error {
	used, _, _ := r.budget.snapshot()
	more := ""
	if n > 0 {
		more = fmt.Sprintf(", %s more needed", size(n))
	}
	return budgetErr(fmt.Sprintf("the functions' memory budget (%s) is exhausted: %s in use by function instances%s; raise triggers.max_memory_bytes, lower triggers.memory_limit or run fewer functions at once",
		size(r.budget.limit), size(used), more))
}

// budgetErr is ErrMemoryBudget with a message that says it all.
type budgetErr string

func (e budgetErr) Error() string { return string(e) }

func (e budgetErr) Is(target error) bool { return target == ErrMemoryBudget }

// size formats bytes in MiB, or KiB below one MiB.
func size(n uint64) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}

// evictIdle closes one idle pooled instance of any module, so that its
// memory returns to the budget. It reports whether it closed one.
func (r *Runtime) evictIdle() bool {
	r.modMu.Lock()
	mods := make([]*Module, 0, len(r.modules))
	for m := range r.modules {
		mods = append(mods, m)
	}
	r.modMu.Unlock()
	for _, m := range mods {
		select {
		case in := <-m.idle:
			r.discard(context.Background(), in)
			<-m.slots
			return true
		default:
		}
	}
	return false
}

// budgetMemory is an instance's linear memory whose size is reserved from
// the runtime's budget before the guest gets it.
type budgetMemory struct {
	r     *Runtime
	inner experimental.LinearMemory

	mu      sync.Mutex
	held    uint64 // reserved from the budget
	refused atomic.Bool
}

func (m *budgetMemory) Reallocate(size uint64) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	if size > m.held {
		if !m.r.reserveNow(size - m.held) {
			m.refused.Store(true)
			return nil
		}
		m.held = size
	}
	return m.inner.Reallocate(size)
}

func (m *budgetMemory) Free() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.inner != nil {
		m.inner.Free()
		m.inner = nil
	}
	m.r.budget.release(m.held)
	m.held = 0
}

// allocator returns the memory allocator of one instantiation. pre bytes
// were reserved before (the module's initial memory: wazero must get it);
// the memory it creates is stored in *out.
func (r *Runtime) allocator(pre uint64, out **budgetMemory) experimental.MemoryAllocator {
	return experimental.MemoryAllocatorFunc(func(capacity, max uint64) experimental.LinearMemory {
		bm := &budgetMemory{r: r, inner: mmapAllocator.Allocate(capacity, max), held: pre}
		*out = bm
		return bm
	})
}
