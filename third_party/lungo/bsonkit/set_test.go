package bsonkit

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"go.mongodb.org/mongo-driver/bson"
)

func TestSet(t *testing.T) {
	d1 := &bson.D{}
	d2 := &bson.D{}

	set := NewSet(nil)

	ok := set.Add(d1)
	assert.True(t, ok)
	assertSet(t, set, List{d1})

	ok = set.Add(d1)
	assert.False(t, ok)
	assertSet(t, set, List{d1})

	ok = set.Add(d2)
	assert.True(t, ok)
	assertSet(t, set, List{d1, d2})

	ok = set.Remove(d1)
	assert.True(t, ok)
	assertSet(t, set, List{d2})

	ok = set.Add(d1)
	assert.True(t, ok)
	assertSet(t, set, List{d2, d1})

	ok = set.Remove(d2)
	assert.True(t, ok)
	assertSet(t, set, List{d1})

	ok = set.Remove(d1)
	assert.True(t, ok)
	assertSet(t, set, List{})

	ok = set.Remove(d1)
	assert.False(t, ok)
	assertSet(t, set, List{})
}

func TestSetReplace(t *testing.T) {
	d1 := &bson.D{}
	d2 := &bson.D{}
	d3 := &bson.D{}
	d4 := &bson.D{}

	set := NewSet(List{d1, d2, d3})

	ok := set.Replace(d2, d4)
	assert.True(t, ok)
	assertSet(t, set, List{d1, d4, d3})

	ok = set.Replace(d2, d4)
	assert.False(t, ok)
	assertSet(t, set, List{d1, d4, d3})

	ok = set.Replace(d1, d3)
	assert.False(t, ok)
	assertSet(t, set, List{d1, d4, d3})
}

// godwit: the set's index is no longer a public map; assertSet checks what
// the map used to show, a position for every document of the list.
func assertSet(t *testing.T, set *Set, list List) {
	t.Helper()
	assert.Equal(t, list, set.List())
	assert.Equal(t, len(list), set.Len())
	for i, doc := range list {
		pos, ok := set.Position(doc)
		assert.True(t, ok)
		assert.Equal(t, i, pos)
		assert.True(t, set.Has(doc))
	}
}

func TestSetClone(t *testing.T) {
	docs := make(List, 8)
	for i := range docs {
		docs[i] = &bson.D{{Key: "i", Value: i}}
	}

	base := NewSet(List{docs[0], docs[1], docs[2]})

	// two clones of the same set append, replace and remove independently
	a := base.Clone()
	b := base.Clone()
	assert.True(t, a.Add(docs[3]))
	assert.True(t, b.Add(docs[4]))
	assert.True(t, a.Add(docs[5]))
	assertSet(t, base, List{docs[0], docs[1], docs[2]})
	assertSet(t, a, List{docs[0], docs[1], docs[2], docs[3], docs[5]})
	assertSet(t, b, List{docs[0], docs[1], docs[2], docs[4]})
	assert.False(t, base.Has(docs[3]))
	assert.False(t, b.Has(docs[3]))

	assert.True(t, a.Replace(docs[1], docs[6]))
	assert.True(t, b.Remove(docs[1]))
	assert.True(t, b.Remove(docs[0]))
	assertSet(t, base, List{docs[0], docs[1], docs[2]})
	assertSet(t, a, List{docs[0], docs[6], docs[2], docs[3], docs[5]})
	assertSet(t, b, List{docs[2], docs[4]})

	// the original stays usable and independent after being cloned
	assert.True(t, base.Add(docs[7]))
	assert.True(t, base.Remove(docs[2]))
	assertSet(t, base, List{docs[0], docs[1], docs[7]})
	assertSet(t, a, List{docs[0], docs[6], docs[2], docs[3], docs[5]})
	assertSet(t, b, List{docs[2], docs[4]})

	// a clone of a clone after removing the head appends after it
	c := b.Clone()
	assert.True(t, c.Add(docs[0]))
	assert.True(t, b.Add(docs[1]))
	assertSet(t, c, List{docs[2], docs[4], docs[0]})
	assertSet(t, b, List{docs[2], docs[4], docs[1]})
}

// godwit: versions of a set, changed at random, against plain slices. Half
// the checks read positions before List (the btree path), half after (the
// cached list's path).
func TestSetVersionsAgainstSlices(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	type version struct {
		set   *Set
		model List
	}
	versions := []*version{{set: NewSet(nil)}}
	made := 0
	newDoc := func() Doc {
		made++
		return &bson.D{{Key: "i", Value: made}}
	}
	for step := 0; step < 1500; step++ {
		v := versions[rnd.IntN(len(versions))]
		switch k := rnd.IntN(10); {
		case k < 4 || len(v.model) == 0:
			d := newDoc()
			assert.True(t, v.set.Add(d))
			v.model = append(v.model, d)
		case k < 6:
			i := rnd.IntN(len(v.model))
			d := newDoc()
			assert.True(t, v.set.Replace(v.model[i], d))
			v.model = append(slices.Clone(v.model[:i]), append(List{d}, v.model[i+1:]...)...)
		case k < 8:
			i := rnd.IntN(len(v.model))
			if rnd.IntN(2) == 0 {
				i = 0
			}
			assert.True(t, v.set.Remove(v.model[i]))
			v.model = append(slices.Clone(v.model[:i]), v.model[i+1:]...)
		case k < 9 && len(versions) < 8:
			versions = append(versions, &version{set: v.set.Clone(), model: slices.Clone(v.model)})
		default:
			_ = v.set.List()
		}
		for _, v := range versions {
			if rnd.IntN(2) == 0 {
				_ = v.set.List()
			}
			if !assert.Equal(t, len(v.model), v.set.Len()) {
				t.FailNow()
			}
			for i, doc := range v.model {
				pos, ok := v.set.Position(doc)
				if !assert.True(t, ok) || !assert.Equal(t, i, pos, "step %d", step) {
					t.FailNow()
				}
			}
			if !assert.Equal(t, v.model, v.set.List(), "step %d", step) {
				t.FailNow()
			}
		}
	}
}
