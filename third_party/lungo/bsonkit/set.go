package bsonkit

import (
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/tidwall/btree"
)

// godwit: this file is changed from lungo v0.4.0 so that no operation on a
// set costs time proportional to its size except reading the whole list
// (see third_party/lungo/README.godwit.md). lungo clones the sets a
// transaction writes, so before this change a single-document write copied
// the list and a map of every document.
//
// A set is two copy-on-write btrees, cloned in O(1): the documents by key
// (keys grow in insertion order; a replacement takes its predecessor's key)
// and the keys by document identity. List builds the ordered slice from the
// first and caches it. Appending and removing the first document keep the
// cache (the oplog does only that); replacing or removing another document
// drops it, so an update by _id, which never reads the whole list, costs
// O(log n).

// Set is set of unique documents. A set may be read from several goroutines
// at once, but only one may change it, and not while others read.
type Set struct {
	// order holds the documents by key; index the keys by document.
	order *btree.BTreeG[setEntry]
	index *btree.BTreeG[setEntry]
	next  uint64

	// mu serialises building the cache and cloning.
	mu sync.Mutex
	// list is the cached ordered slice, nil when it must be rebuilt.
	// Versions of a set share its backing array: off is where the list
	// starts in it, and tail, shared by every version using that array,
	// records how far it is written, so a version appends in place only
	// past every other version's end.
	list atomic.Pointer[List]
	off  int
	tail *setTail
}

type setEntry struct {
	doc Doc
	key uint64
}

type setTail struct {
	end atomic.Int64
}

func byDoc(a, b setEntry) bool {
	return uintptr(unsafe.Pointer(a.doc)) < uintptr(unsafe.Pointer(b.doc))
}

func byKey(a, b setEntry) bool {
	return a.key < b.key
}

// NewSet returns a new set from the specified list.
func NewSet(list List) *Set {
	// create set
	set := &Set{
		order: btree.NewBTreeG[setEntry](byKey),
		index: btree.NewBTreeG[setEntry](byDoc),
		tail:  &setTail{},
	}
	empty := make(List, 0, len(list))
	set.list.Store(&empty)

	// add documents
	for _, doc := range list {
		set.Add(doc)
	}

	return set
}

// List returns the documents in insertion order (a replacement keeps its
// predecessor's place). Callers must not modify it: versions of a set
// share its backing array. Building it costs O(n) after a replacement or
// a removal other than of the first document; it is cached until the
// next one.
func (s *Set) List() List {
	if p := s.list.Load(); p != nil {
		return *p
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.list.Load(); p != nil {
		return *p
	}
	list := make(List, 0, s.order.Len()+s.order.Len()/4+8)
	s.order.Scan(func(e setEntry) bool {
		list = append(list, e.doc)
		return true
	})
	s.off = 0
	s.tail = &setTail{}
	s.tail.end.Store(int64(len(list)))
	s.list.Store(&list)
	return list
}

// Len returns the number of documents.
func (s *Set) Len() int {
	return s.order.Len()
}

// Has reports whether the document has been added.
func (s *Set) Has(doc Doc) bool {
	_, ok := s.index.Get(setEntry{doc: doc})
	return ok
}

// Position returns the document's position in List, or false if it has not
// been added.
func (s *Set) Position(doc Doc) (int, bool) {
	entry, ok := s.index.Get(setEntry{doc: doc})
	if !ok {
		return 0, false
	}

	// keys grow along the list: search for the entry's key, in the cached
	// list if there is one, else by rank in the btree
	at := func(i int) uint64 {
		e, _ := s.order.GetAt(i)
		return e.key
	}
	if p := s.list.Load(); p != nil {
		list := *p
		at = func(i int) uint64 {
			e, _ := s.index.Get(setEntry{doc: list[i]})
			return e.key
		}
	}
	lo, hi := 0, s.order.Len()
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if at(mid) < entry.key {
			lo = mid + 1
		} else {
			hi = mid
		}
	}

	return lo, true
}

// Add will add the document to set, if has not already been added. It may return
// false if the document has already been added.
func (s *Set) Add(doc Doc) bool {
	// check if already added
	if s.Has(doc) {
		return false
	}

	// add document
	entry := setEntry{doc: doc, key: s.next}
	s.next++
	s.order.Set(entry)
	s.index.Set(entry)

	// append to the cached list if no other version has written past its
	// end, else drop the cache
	if p := s.list.Load(); p != nil {
		list := *p
		end := s.off + len(list)
		if len(list) < cap(list) && s.tail.end.CompareAndSwap(int64(end), int64(end+1)) {
			list = append(list, doc)
			s.list.Store(&list)
		} else {
			s.list.Store(nil)
		}
	}

	return true
}

// Replace will replace the first document with the second. It may return false
// if the first document has not been added and the second already has been added.
func (s *Set) Replace(d1, d2 Doc) bool {
	// get entry
	entry, ok := s.index.Get(setEntry{doc: d1})
	if !ok {
		return false
	}

	// check existence
	if s.Has(d2) {
		return false
	}

	// replace document under the same key
	s.index.Delete(entry)
	entry.doc = d2
	s.index.Set(entry)
	s.order.Set(entry)
	s.list.Store(nil)

	return true
}

// Remove will remove the document from the set. It may return false if the
// document has not been added to the set.
func (s *Set) Remove(doc Doc) bool {
	// check if document has been added
	entry, ok := s.index.Delete(setEntry{doc: doc})
	if !ok {
		return false
	}
	first, _ := s.order.Min()
	s.order.Delete(entry)

	// removing the first document slices the cached list, which every
	// version may share; any other removal drops the cache
	if p := s.list.Load(); p != nil {
		if first.key == entry.key {
			list := (*p)[1:]
			s.off++
			s.list.Store(&list)
		} else {
			s.list.Store(nil)
		}
	}

	return true
}

// Clone will clone the set. Mutating the new set will not mutate the original
// set, and the other way around.
func (s *Set) Clone() *Set {
	s.mu.Lock()
	defer s.mu.Unlock()

	clone := &Set{
		order: s.order.Copy(),
		index: s.index.Copy(),
		next:  s.next,
		off:   s.off,
		tail:  s.tail,
	}
	clone.list.Store(s.list.Load())

	return clone
}
