package bsonkit

import (
	"sync/atomic"
	"unsafe"

	"github.com/tidwall/btree"
)

// godwit: this file is changed from lungo v0.4.0 so that Clone costs O(1)
// instead of copying the list and a map of every document (see
// third_party/lungo/README.md). The list stays a plain slice that callers
// read; versions of a set share its backing array and only append to it past
// every other version's end, and the document index is a copy-on-write btree.

// Set is set of unique documents. The set is not safe from concurrent access.
type Set struct {
	// List holds the documents in insertion order (a replacement keeps its
	// predecessor's place). Callers may read it but must not modify it: clones
	// of a set share its backing array.
	List List

	// index maps a document (by identity) to its key; keys grow in list
	// order, so a document's position is found by binary search.
	index *btree.BTreeG[setEntry]
	next  uint64

	// off is where List starts in its backing array; tail is shared by every
	// set whose List lives in that array and records how far it is written.
	off  int
	tail *setTail

	// owned is true while no other set shares the backing array: only then
	// may a slot before the end be overwritten in place.
	owned atomic.Bool
}

type setEntry struct {
	doc Doc
	key uint64
}

type setTail struct {
	end atomic.Int64
}

func setLess(a, b setEntry) bool {
	return uintptr(unsafe.Pointer(a.doc)) < uintptr(unsafe.Pointer(b.doc))
}

// NewSet returns a new set from the specified list.
func NewSet(list List) *Set {
	// create set
	set := &Set{
		List:  make(List, 0, len(list)),
		index: btree.NewBTreeG[setEntry](setLess),
		tail:  &setTail{},
	}
	set.owned.Store(true)

	// add documents
	for _, doc := range list {
		set.Add(doc)
	}

	return set
}

// Len returns the number of documents.
func (s *Set) Len() int {
	return len(s.List)
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

	// keys grow along the list: search for the entry's key
	lo, hi := 0, len(s.List)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		other, _ := s.index.Get(setEntry{doc: s.List[mid]})
		if other.key < entry.key {
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

	// append document
	end := s.off + len(s.List)
	if len(s.List) < cap(s.List) && s.tail.end.CompareAndSwap(int64(end), int64(end+1)) {
		// no other set has written past our end: the slot is ours
		s.List = append(s.List, doc)
	} else {
		s.detach(1)
		s.List = append(s.List, doc)
		s.tail.end.Store(int64(s.off + len(s.List)))
	}
	s.index.Set(setEntry{doc: doc, key: s.next})
	s.next++

	return true
}

// Replace will replace the first document with the second. It may return false
// if the first document has not been added and the second already has been added.
func (s *Set) Replace(d1, d2 Doc) bool {
	// get index
	index, ok := s.Position(d1)
	if !ok {
		return false
	}

	// check existence
	if s.Has(d2) {
		return false
	}

	// replace document
	if !s.owned.Load() {
		s.detach(0)
	}
	s.List[index] = d2

	// update index
	entry, _ := s.index.Delete(setEntry{doc: d1})
	s.index.Set(setEntry{doc: d2, key: entry.key})

	return true
}

// Remove will remove the document from the set. It may return false if the
// document has not been added to the set.
func (s *Set) Remove(doc Doc) bool {
	// check if document has been added
	i, ok := s.Position(doc)
	if !ok {
		return false
	}

	// remove document: the first one by slicing, which every version may
	// share, others in place when the array is ours
	switch {
	case i == 0:
		s.List = s.List[1:]
		s.off++
	case !s.owned.Load():
		s.detach(0)
		fallthrough
	default:
		s.List = append(s.List[:i], s.List[i+1:]...)
		s.tail.end.Store(int64(s.off + len(s.List)))
	}
	s.index.Delete(setEntry{doc: doc})

	return true
}

// Clone will clone the set. Mutating the new set will not mutate the original
// set, and the other way around.
func (s *Set) Clone() *Set {
	// both now share the backing array
	s.owned.Store(false)

	return &Set{
		List:  s.List,
		index: s.index.Copy(),
		next:  s.next,
		off:   s.off,
		tail:  s.tail,
	}
}

// detach copies List into a new backing array with room for extra more
// documents that only this set uses.
func (s *Set) detach(extra int) {
	list := make(List, len(s.List), len(s.List)+extra+len(s.List)/4+8)
	copy(list, s.List)
	s.List = list
	s.off = 0
	s.tail = &setTail{}
	s.tail.end.Store(int64(len(list)))
	s.owned.Store(true)
}
