package audit

import (
	"encoding/json"
	"time"

	"github.com/256dpi/lungo/mongokit"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/outbox"
)

// classifier decides which events are recorded, with which class, rules and
// severity. Config.Validate has checked everything it compiles.
type classifier struct {
	builtin    map[string]bool // enabled built-in classes
	severity   map[string]string
	rules      []rule
	ignore     []change.Glob // mass_delete.ignore
	massDelete bool
	log        zerolog.Logger
}

type rule struct {
	name     string
	globs    []change.Glob
	ops      []string
	match    *bson.D
	severity string
}

func newClassifier(cfg Config, log zerolog.Logger) *classifier {
	c := &classifier{builtin: map[string]bool{}, severity: map[string]string{}, log: log}
	for _, cl := range BuiltinClasses {
		c.builtin[cl] = !contains(cfg.Disable, cl)
	}
	c.massDelete = c.builtin[ClassMassDelete]
	for cl, sev := range defaultSeverity {
		c.severity[cl] = sev
	}
	for cl, sev := range cfg.Severity {
		c.severity[cl] = sev
	}
	for _, g := range cfg.MassDelete.Ignore {
		c.ignore = append(c.ignore, change.MustGlob(g))
	}
	for _, r := range cfg.Rules {
		cr := rule{name: r.Name, ops: r.OperationTypes, severity: r.Severity}
		if cr.severity == "" {
			cr.severity = SeverityMedium
		}
		for _, g := range r.Namespaces {
			cr.globs = append(cr.globs, change.MustGlob(g))
		}
		if r.Match != nil {
			q := bson.D(r.Match)
			cr.match = &q
		}
		c.rules = append(c.rules, cr)
	}
	return c
}

// severityOf returns the configured severity of a class.
func (c *classifier) severityOf(class string) string {
	if s, ok := c.severity[class]; ok {
		return s
	}
	return SeverityMedium
}

// builtinClass returns the built-in class of an operation type, if enabled.
func (c *classifier) builtinClass(op string) string {
	switch op {
	case change.OpDropDatabase, change.OpDrop, change.OpRename, change.OpDropIndexes, change.OpModify:
		if c.builtin[op] {
			return op
		}
	}
	return ""
}

// classify returns the class, matched rules and severity of an event; class
// is empty when the event is not recorded.
func (c *classifier) classify(ev *change.Event) (class string, rules []string, severity string) {
	class = c.builtinClass(ev.OperationType)
	if class != "" {
		severity = c.severityOf(class)
	}
	var doc *bson.D
	for _, r := range c.rules {
		if !r.matches(ev, &doc, c.log) {
			continue
		}
		rules = append(rules, r.name)
		if SeverityRank(r.severity) > SeverityRank(severity) {
			severity = r.severity
		}
	}
	if class == "" && len(rules) > 0 {
		class = ClassRule
	}
	return class, rules, severity
}

// matches reports whether the rule selects ev. doc caches the event decoded
// for mongokit across rules.
func (r rule) matches(ev *change.Event, doc **bson.D, log zerolog.Logger) bool {
	if len(r.ops) > 0 && !contains(r.ops, ev.OperationType) {
		return false
	}
	if len(r.globs) > 0 {
		ok := false
		for _, g := range r.globs {
			// A rename matches by its target too: renaming a collection
			// over a protected one is as risky as dropping it.
			if g.Match(ev.NS) || (ev.To.DB != "" && g.Match(ev.To)) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if r.match == nil {
		return true
	}
	if *doc == nil {
		var d bson.D
		if err := bson.Unmarshal(ev.Raw, &d); err != nil {
			log.Warn().Err(err).Str("rule", r.name).Msg("audit rule: event cannot be decoded for matching; rule skipped")
			return false
		}
		*doc = &d
	}
	ok, err := mongokit.Match(*doc, r.match)
	if err != nil {
		// Validate ran the query once; what fails here depends on the
		// event's data. Not matching is the only deterministic choice.
		log.Warn().Err(err).Str("rule", r.name).Str("ns", ev.NS.String()).Msg("audit rule: match failed on this event; treated as no match")
		return false
	}
	return ok
}

// ignored reports whether deletes in ns are left out of mass-delete
// detection.
func (c *classifier) ignored(ns change.Namespace) bool {
	for _, g := range c.ignore {
		if g.Match(ns) {
			return true
		}
	}
	return false
}

// eventTime is the time of an event in ms since the epoch: its wallTime,
// else its clusterTime, else when godwit captured it. All three are stored
// with the event, so a replay sees the same time.
func eventTime(rec outbox.Record, ev *change.Event) int64 {
	switch {
	case !ev.WallTime.IsZero():
		return ev.WallTime.UnixMilli()
	case ev.ClusterTime.T != 0:
		return int64(ev.ClusterTime.T) * 1000
	default:
		return rec.CapturedAt.UnixMilli()
	}
}

func msTime(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

// extJSON renders a BSON document as relaxed Extended JSON; nil for none.
func extJSON(doc bson.Raw) json.RawMessage {
	if len(doc) == 0 {
		return nil
	}
	b, err := bson.MarshalExtJSON(doc, false, false)
	if err != nil {
		return nil
	}
	return b
}

// subdoc returns the document field key of the raw event, if any.
func subdoc(raw bson.Raw, key string) bson.Raw {
	v, err := raw.LookupErr(key)
	if err != nil {
		return nil
	}
	d, ok := v.DocumentOK()
	if !ok {
		return nil
	}
	return d
}

// eventRecord builds the record of an event (without index, prev, class).
func eventRecord(rec outbox.Record, ev *change.Event, t int64) *Record {
	r := &Record{Source: rec.Source, Seq: rec.Seq, Op: ev.OperationType, Time: msTime(t)}
	if ev.NS.DB != "" {
		ns := ev.NS
		r.NS = &ns
	}
	if ev.To.DB != "" {
		to := ev.To
		r.To = &to
	}
	if ev.ClusterTime.T != 0 || ev.ClusterTime.I != 0 {
		r.ClusterTime = &ClusterTime{T: ev.ClusterTime.T, I: ev.ClusterTime.I}
	}
	if !ev.WallTime.IsZero() {
		wt := ev.WallTime.UTC()
		r.WallTime = &wt
	}
	r.DocumentKey = extJSON(ev.DocumentKey)
	r.Description = extJSON(subdoc(ev.Raw, "operationDescription"))
	r.StateBefore = extJSON(subdoc(ev.Raw, "stateBeforeChange"))
	return r
}
