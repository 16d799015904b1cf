package devdb

import (
	"github.com/256dpi/lungo/bsonkit"
	"github.com/256dpi/lungo/mongokit"
	"go.mongodb.org/mongo-driver/bson"
)

func (s *Server) aggregate(r *request) (bson.D, error) {
	pipeline, ok := lookup(r.cmd, "pipeline").(bson.A)
	if !ok {
		return nil, errorf(codeFailedToParse, "aggregate needs pipeline: an array")
	}
	cur, err := docField(r.cmd, "cursor")
	if err != nil {
		return nil, err
	}
	bs, err := batchSizeOf(cur, 101)
	if err != nil {
		return nil, err
	}
	if len(pipeline) > 0 {
		if first, ok := pipeline[0].(bson.D); ok && len(first) == 1 && first[0].Key == "$changeStream" {
			opts, _ := first[0].Value.(bson.D)
			if r.txn != nil {
				return nil, errorf(codeOperationFailed, "$changeStream is not allowed in a transaction")
			}
			return s.openChangeStream(r, opts, pipeline[1:], bs)
		}
	}
	if _, ok := r.cmd[0].Value.(string); !ok {
		return nil, errorf(codeCommandNotSupported, "devdb serves aggregate: 1 only with $changeStream first")
	}
	h, err := r.handle()
	if err != nil {
		return nil, err
	}
	txn, err := s.read(r)
	if err != nil {
		return nil, err
	}
	res, err := txn.Find(h, doc(nil), nil, 0, 0)
	if err != nil {
		return nil, s.engineError(err, h, nil)
	}
	list := append(bsonkit.List(nil), res.Matched...)
	for _, v := range pipeline {
		st, _ := v.(bson.D)
		if len(st) != 1 {
			return nil, errorf(codeFailedToParse, "a pipeline stage must be a document with one field")
		}
		if list, err = applyStage(list, st[0].Key, st[0].Value); err != nil {
			return nil, err
		}
	}
	docs, err := marshalList(list)
	if err != nil {
		return nil, err
	}
	return s.cursorReply(h.String(), docs, bs, false), nil
}

// applyStage evaluates the collection aggregation stages devdb serves:
// enough for drivers' countDocuments and simple queries.
func applyStage(list bsonkit.List, name string, arg any) (bsonkit.List, error) {
	switch name {
	case "$match":
		q, ok := arg.(bson.D)
		if !ok {
			return nil, errorf(codeFailedToParse, "$match needs a document")
		}
		out, err := mongokit.Filter(list, query(q), 0)
		if err != nil {
			return nil, errorf(codeBadValue, "$match: %v", err)
		}
		return out, nil
	case "$sort":
		d, ok := arg.(bson.D)
		if !ok {
			return nil, errorf(codeFailedToParse, "$sort needs a document")
		}
		out, err := mongokit.Sort(list, &d)
		if err != nil {
			return nil, errorf(codeBadValue, "$sort: %v", err)
		}
		return out, nil
	case "$skip", "$limit":
		n, ok := asInt(arg)
		if !ok || n < 0 {
			return nil, errorf(codeBadValue, "%s needs a non-negative integer", name)
		}
		if name == "$skip" {
			if int(n) >= len(list) {
				return nil, nil
			}
			return list[n:], nil
		}
		if int(n) < len(list) {
			return list[:n], nil
		}
		return list, nil
	case "$project", "$unset":
		var proj bson.D
		switch a := arg.(type) {
		case bson.D:
			proj = a
		case string:
			proj = bson.D{{Key: a, Value: int32(0)}}
		case bson.A:
			for _, f := range a {
				if fs, ok := f.(string); ok {
					proj = append(proj, bson.E{Key: fs, Value: int32(0)})
				}
			}
		}
		out, err := mongokit.ProjectList(list, &proj)
		if err != nil {
			return nil, errorf(codeBadValue, "%s: %v", name, err)
		}
		return out, nil
	case "$count":
		field, ok := arg.(string)
		if !ok || field == "" {
			return nil, errorf(codeFailedToParse, "$count needs a field name")
		}
		if len(list) == 0 {
			return nil, nil
		}
		return bsonkit.List{&bson.D{{Key: field, Value: int32(len(list))}}}, nil
	case "$group":
		return group(list, arg)
	default:
		return nil, errorf(codeUnrecognizedStage, "devdb does not evaluate aggregation stage %s (it serves $match, $sort, $skip, $limit, $project, $unset, $count, $group with $sum/$min/$max/$first/$last/$push)", name)
	}
}

func eval(expr any, d bsonkit.Doc) any {
	if p, ok := expr.(string); ok && len(p) > 1 && p[0] == '$' {
		v := bsonkit.Get(d, p[1:])
		if v == bsonkit.Missing {
			return nil
		}
		return v
	}
	return expr
}

func group(list bsonkit.List, arg any) (bsonkit.List, error) {
	spec, ok := arg.(bson.D)
	if !ok || len(spec) == 0 || spec[0].Key != "_id" {
		return nil, errorf(codeFailedToParse, "$group needs a document whose first field is _id")
	}
	type acc struct {
		key  any
		vals []bson.D
	}
	var groups []*acc
	for _, d := range list {
		key := eval(spec[0].Value, d)
		var g *acc
		for _, x := range groups {
			if bsonkit.Compare(x.key, key) == 0 {
				g = x
				break
			}
		}
		if g == nil {
			g = &acc{key: key}
			groups = append(groups, g)
		}
		g.vals = append(g.vals, *d)
	}
	var out bsonkit.List
	for _, g := range groups {
		res := bson.D{{Key: "_id", Value: g.key}}
		for _, f := range spec[1:] {
			op, ok := f.Value.(bson.D)
			if !ok || len(op) != 1 {
				return nil, errorf(codeFailedToParse, "$group field %s needs one accumulator", f.Key)
			}
			var v any
			switch op[0].Key {
			case "$sum":
				var isum int64
				var fsum float64
				float := false
				for i := range g.vals {
					switch n := eval(op[0].Value, &g.vals[i]).(type) {
					case int32:
						isum += int64(n)
					case int64:
						isum += n
					case float64:
						fsum += n
						float = true
					}
				}
				switch {
				case float:
					v = fsum + float64(isum)
				case isum == int64(int32(isum)):
					v = int32(isum)
				default:
					v = isum
				}
			case "$min", "$max", "$first", "$last":
				for i := range g.vals {
					x := eval(op[0].Value, &g.vals[i])
					switch {
					case i == 0, op[0].Key == "$last",
						op[0].Key == "$min" && bsonkit.Compare(x, v) < 0,
						op[0].Key == "$max" && bsonkit.Compare(x, v) > 0:
						v = x
					}
				}
			case "$push":
				a := bson.A{}
				for i := range g.vals {
					a = append(a, eval(op[0].Value, &g.vals[i]))
				}
				v = a
			default:
				return nil, errorf(codeUnrecognizedStage, "devdb does not evaluate accumulator %s in $group", op[0].Key)
			}
			res = append(res, bson.E{Key: f.Key, Value: v})
		}
		out = append(out, &res)
	}
	return out, nil
}
