package outbox

// Hold keeps the events after seq from retention for reader id: a reader
// without a cursor, such as a live event subscription, which would
// otherwise find the events it is about to read deleted by fast sinks. A
// hold is never stored and never pauses capture: while an append waits for
// space, retention ignores every hold (the reader then finds its next
// events deleted: ErrBehindRetention). Calling Hold again moves it.
func (o *Outbox) Hold(id string, seq uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.closed {
		o.holds[id] = seq
	}
}

// HoldLast holds after the last appended sequence and returns it, in one
// step: a reader starting "now" misses nothing.
func (o *Outbox) HoldLast(id string) uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.closed {
		o.holds[id] = o.last
	}
	return o.last
}

// Release drops reader id's hold.
func (o *Outbox) Release(id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.holds, id)
}
