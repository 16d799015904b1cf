package audit

import (
	"encoding/json"
	"slices"

	"github.com/godwit-dev/godwit/change"
)

// detector finds mass deletes. It is a pure function of the events it is
// fed (their times come from the events, never from the clock), so replaying
// the same events from the same saved state gives the same bursts: that is
// what makes the sink exactly-once across crashes.
//
// Per source and namespace it keeps the last threshold+1 deletes younger than
// window (the ring). When the ring is full, threshold+1 deletes happened
// within less than window: a burst opens. Every further delete that keeps the
// ring full extends it. The burst closes when the source's watermark (the
// latest event time seen from that source, any namespace) has moved so far
// that the ring is no longer full: the rate fell to the threshold or below.
// Then the ring is emptied, so no delete counts in two bursts.
type detector struct {
	threshold int   // N
	window    int64 // T in ms
	sample    int

	watermarks map[string]int64    // source → latest event time (ms)
	ns         map[string]*nsState // nsKey → state
	open       map[string]bool     // nsKeys with an open burst
}

// delEntry is one delete in a ring.
type delEntry struct {
	T   int64           `json:"t"` // event time, ms since the epoch
	Seq uint64          `json:"s"`
	CT  ClusterTime     `json:"c"`
	Key json.RawMessage `json:"k,omitempty"`
}

type openBurst struct {
	Count  uint64            `json:"count"`
	First  delEntry          `json:"first"`
	Last   delEntry          `json:"last"`
	Sample []json.RawMessage `json:"sample"`
}

type nsState struct {
	Source string           `json:"source"`
	NS     change.Namespace `json:"ns"`
	Ring   []delEntry       `json:"ring,omitempty"`
	Open   *openBurst       `json:"open,omitempty"`
}

// closedBurst is a burst ready to be recorded.
type closedBurst struct {
	Source string
	NS     change.Namespace
	Burst  openBurst
	Ended  string
}

// detectorState is the detector's saved form.
type detectorState struct {
	Watermarks map[string]int64 `json:"watermarks,omitempty"`
	Namespaces []*nsState       `json:"namespaces,omitempty"`
}

func newDetector(threshold int, window int64, sample int) *detector {
	return &detector{threshold: threshold, window: window, sample: sample,
		watermarks: map[string]int64{}, ns: map[string]*nsState{}, open: map[string]bool{}}
}

func nsKey(source string, ns change.Namespace) string {
	return source + "\x00" + ns.DB + "\x00" + ns.Coll
}

// observe moves source's watermark to t (if later) and returns the bursts of
// that source that this closes, in key order.
func (d *detector) observe(source string, t int64) []closedBurst {
	w, ok := d.watermarks[source]
	if ok && t <= w {
		return nil
	}
	d.watermarks[source] = t
	if len(d.open) == 0 {
		return nil
	}
	var closed []closedBurst
	for _, k := range sortedKeys(d.open) {
		st := d.ns[k]
		if st.Source != source {
			continue
		}
		d.prune(st, t)
		if len(st.Ring) <= d.threshold {
			closed = append(closed, d.close(k, st, EndedWindow))
		}
	}
	return closed
}

// delete counts a delete. observe must have been called with its time.
func (d *detector) delete(source string, ns change.Namespace, e delEntry) {
	w := d.watermarks[source]
	if w-e.T >= d.window {
		// Older than the window by the source's own clock: it cannot be
		// within the window of any later delete.
		return
	}
	k := nsKey(source, ns)
	st := d.ns[k]
	if st == nil {
		st = &nsState{Source: source, NS: ns}
		d.ns[k] = st
	}
	d.prune(st, w)
	key := e.Key
	if st.Open != nil {
		e.Key = nil // the sample is taken: ring keys are no longer needed
	}
	st.Ring = append(st.Ring, e)
	if n := len(st.Ring) - (d.threshold + 1); n > 0 {
		st.Ring = slices.Delete(st.Ring, 0, n)
	}
	if len(st.Ring) <= d.threshold {
		return
	}
	if st.Open == nil {
		b := &openBurst{Count: uint64(len(st.Ring)), First: st.Ring[0], Last: e, Sample: []json.RawMessage{}}
		b.First.Key, b.Last.Key = nil, nil
		for i := range st.Ring {
			if len(b.Sample) < d.sample && st.Ring[i].Key != nil {
				b.Sample = append(b.Sample, st.Ring[i].Key)
			}
			st.Ring[i].Key = nil
		}
		st.Open = b
		d.open[k] = true
		return
	}
	st.Open.Count++
	st.Open.Last = delEntry{T: e.T, Seq: e.Seq, CT: e.CT}
	if len(st.Open.Sample) < d.sample && key != nil {
		st.Open.Sample = append(st.Open.Sample, key)
	}
}

// wantsKey reports whether the key of the next delete in this namespace
// would be kept, so that callers can skip encoding it.
func (d *detector) wantsKey(source string, ns change.Namespace) bool {
	st := d.ns[nsKey(source, ns)]
	return st == nil || st.Open == nil || len(st.Open.Sample) < d.sample
}

func (d *detector) prune(st *nsState, w int64) {
	i := 0
	for i < len(st.Ring) && w-st.Ring[i].T >= d.window {
		i++
	}
	if i > 0 {
		st.Ring = slices.Delete(st.Ring, 0, i)
	}
}

func (d *detector) close(k string, st *nsState, ended string) closedBurst {
	c := closedBurst{Source: st.Source, NS: st.NS, Burst: *st.Open, Ended: ended}
	delete(d.open, k)
	delete(d.ns, k)
	return c
}

// sweep forgets namespaces whose deletes are all older than the window.
func (d *detector) sweep() {
	for k, st := range d.ns {
		if st.Open != nil {
			continue
		}
		d.prune(st, d.watermarks[st.Source])
		if len(st.Ring) == 0 {
			delete(d.ns, k)
		}
	}
}

// flush closes every open burst, in key order.
func (d *detector) flush(ended string) []closedBurst {
	var out []closedBurst
	for _, k := range sortedKeys(d.open) {
		out = append(out, d.close(k, d.ns[k], ended))
	}
	return out
}

// forget drops the open burst of source and ns if it starts at firstSeq:
// it was already recorded.
func (d *detector) forget(source string, ns change.Namespace, firstSeq uint64) bool {
	k := nsKey(source, ns)
	if st := d.ns[k]; st != nil && st.Open != nil && st.Open.First.Seq == firstSeq {
		d.close(k, st, EndedClose)
		return true
	}
	return false
}

func (d *detector) clone() *detector {
	c := newDetector(d.threshold, d.window, d.sample)
	for k, v := range d.watermarks {
		c.watermarks[k] = v
	}
	for k, st := range d.ns {
		cp := &nsState{Source: st.Source, NS: st.NS, Ring: slices.Clone(st.Ring)}
		if st.Open != nil {
			o := *st.Open
			o.Sample = slices.Clone(o.Sample)
			cp.Open = &o
		}
		c.ns[k] = cp
	}
	for k := range d.open {
		c.open[k] = true
	}
	return c
}

func (d *detector) state() detectorState {
	s := detectorState{Watermarks: d.watermarks}
	for _, k := range sortedKeys(d.ns) {
		s.Namespaces = append(s.Namespaces, d.ns[k])
	}
	return s
}

func (d *detector) load(s detectorState) {
	for k, v := range s.Watermarks {
		d.watermarks[k] = v
	}
	for _, st := range s.Namespaces {
		k := nsKey(st.Source, st.NS)
		d.ns[k] = st
		if st.Open != nil {
			d.open[k] = true
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
