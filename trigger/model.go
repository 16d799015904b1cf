package trigger

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/256dpi/lungo/mongokit"
	"github.com/robfig/cron/v3"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/auth"
	"github.com/godwit-dev/godwit/change"
	"github.com/godwit-dev/godwit/trigger/wasm"
)

// Type is what fires a trigger.
type Type string

// Trigger types.
const (
	TypeDatabase       Type = "database"
	TypeAuthentication Type = "authentication"
	TypeScheduled      Type = "scheduled"
)

// Operation types of authentication events.
const (
	AuthLogin  = "login"
	AuthCreate = "create"
	AuthDelete = "delete"
)

// DatabaseConfig selects the change events of a database trigger.
type DatabaseConfig struct {
	DataSource               string   `bson:"data_source" json:"data_source"`
	Database                 string   `bson:"database,omitempty" json:"database,omitempty"`
	Collection               string   `bson:"collection,omitempty" json:"collection,omitempty"`
	OperationTypes           []string `bson:"operation_types,omitempty" json:"operation_types,omitempty"`
	FullDocument             bool     `bson:"full_document" json:"full_document"`
	FullDocumentBeforeChange bool     `bson:"full_document_before_change" json:"full_document_before_change"`
	TolerateResumeErrors     bool     `bson:"tolerate_resume_errors" json:"tolerate_resume_errors"`
	Unordered                bool     `bson:"unordered" json:"unordered"`
	// Match and Project are Extended JSON documents (empty: none).
	Match   string `bson:"match,omitempty" json:"match,omitempty"`
	Project string `bson:"project,omitempty" json:"project,omitempty"`
}

// ScheduledConfig is a cron schedule, evaluated in UTC.
type ScheduledConfig struct {
	Schedule       string `bson:"schedule" json:"schedule"`
	SkipMissedRuns bool   `bson:"skip_missed_runs" json:"skip_missed_runs"`
}

// AuthConfig selects reported authentication events.
type AuthConfig struct {
	OperationTypes []string `bson:"operation_types" json:"operation_types"`
	Providers      []string `bson:"providers,omitempty" json:"providers,omitempty"`
}

// Writes says where a trigger's function may write.
type Writes struct {
	// DataSource defaults to the database trigger's data source.
	DataSource string `bson:"data_source,omitempty" json:"data_source,omitempty"`
	// Namespaces are globs (change.ParseGlob); none means no writes.
	Namespaces []string `bson:"namespaces,omitempty" json:"namespaces,omitempty"`
}

// Trigger is a stored trigger.
type Trigger struct {
	ID             string           `bson:"_id"`
	UserID         string           `bson:"user_id"`
	Name           string           `bson:"name"`
	Type           Type             `bson:"type"`
	Database       *DatabaseConfig  `bson:"database,omitempty"`
	Scheduled      *ScheduledConfig `bson:"scheduled,omitempty"`
	Authentication *AuthConfig      `bson:"authentication,omitempty"`
	FunctionID     string           `bson:"function_id"`
	Enabled        bool             `bson:"enabled"`
	Writes         Writes           `bson:"writes"`
	// Halted says why a database trigger stopped (its cursor fell behind
	// retention and tolerate_resume_errors is off). Enabling clears it.
	Halted string `bson:"halted,omitempty"`
	// LastFired is the last scheduled time a scheduled trigger ran.
	LastFired time.Time `bson:"last_fired,omitempty"`
	CreatedAt time.Time `bson:"created_at"`
	UpdatedAt time.Time `bson:"updated_at"`
}

// Function is a stored function; Wasm is filled only when asked for.
type Function struct {
	ID        string    `bson:"_id"`
	UserID    string    `bson:"user_id"`
	Name      string    `bson:"name"`
	Type      string    `bson:"type"`
	Enabled   bool      `bson:"enabled"`
	Size      int64     `bson:"wasm_size"`
	SHA256    string    `bson:"wasm_sha256"`
	ModuleID  string    `bson:"module_id"`
	CreatedAt time.Time `bson:"created_at"`
	UpdatedAt time.Time `bson:"updated_at"`
	Wasm      []byte    `bson:"-"`
}

// FunctionTypeWasm is the only function type.
const FunctionTypeWasm = "wasm"

var nameRule = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func checkName(field, name string) error {
	if !nameRule.MatchString(name) {
		return invalid(field, "%q: use 1 to 64 ASCII letters, digits, '_' or '-'", name)
	}
	return nil
}

var dbOps = []string{change.OpInsert, change.OpUpdate, change.OpReplace, change.OpDelete}
var authOps = []string{AuthLogin, AuthCreate, AuthDelete}

// validate checks t; sources says which data source ids exist.
//
// allow is the owner's allow-list: an unknown data source is named with
// the configured ones only to an owner who may use them all; to an owner
// limited to some sources it answers like a configured source outside the
// list (checkAllow), so source ids cannot be probed.
func (t *Trigger) validate(sources []string, allow auth.Allow) error {
	if t.UserID == "" {
		return invalid("user_id", "required")
	}
	if err := checkName("name", t.Name); err != nil {
		return err
	}
	if t.FunctionID == "" {
		return invalid("function_id", "required")
	}
	configs := 0
	for _, set := range []bool{t.Database != nil, t.Scheduled != nil, t.Authentication != nil} {
		if set {
			configs++
		}
	}
	if configs > 1 {
		return invalid("config", "set exactly one of database, scheduled, authentication")
	}
	knownSource := func(field, id string) error {
		if slices.Contains(sources, id) || allow.None() || len(allow.Sources()) > 0 {
			return nil // limited owners: checkAllow refuses it like any source outside the list
		}
		return invalid(field, "unknown data source %q (configured: %s)", id, strings.Join(sources, ", "))
	}
	switch t.Type {
	case TypeDatabase:
		c := t.Database
		if c == nil {
			return invalid("database", "required for a database trigger")
		}
		if c.DataSource == "" {
			return invalid("database.data_source", "required (a source id from godwit's configuration)")
		}
		if err := knownSource("database.data_source", c.DataSource); err != nil {
			return err
		}
		if c.Collection != "" && c.Database == "" {
			return invalid("database.collection", "needs database")
		}
		for i, op := range c.OperationTypes {
			if !slices.Contains(dbOps, op) {
				return invalid(fmt.Sprintf("database.operation_types[%d]", i), "%q: use insert, update, replace or delete", op)
			}
		}
		if _, err := parseMatch(c.Match); err != nil {
			return invalid("database.match", "%v", err)
		}
		if _, err := parseProject(c.Project); err != nil {
			return invalid("database.project", "%v", err)
		}
	case TypeScheduled:
		if t.Scheduled == nil {
			return invalid("scheduled", "required for a scheduled trigger")
		}
		if _, err := ParseSchedule(t.Scheduled.Schedule); err != nil {
			return invalid("scheduled.schedule", "%v", err)
		}
	case TypeAuthentication:
		c := t.Authentication
		if c == nil {
			return invalid("authentication", "required for an authentication trigger")
		}
		if len(c.OperationTypes) == 0 {
			return invalid("authentication.operation_types", "required: any of login, create, delete")
		}
		for i, op := range c.OperationTypes {
			if !slices.Contains(authOps, op) {
				return invalid(fmt.Sprintf("authentication.operation_types[%d]", i), "%q: use login, create or delete", op)
			}
		}
		for i, p := range c.Providers {
			if p == "" {
				return invalid(fmt.Sprintf("authentication.providers[%d]", i), "empty")
			}
		}
	case "":
		return invalid("trigger_type", "required: database, authentication or scheduled")
	default:
		return invalid("trigger_type", "%q: use database, authentication or scheduled", t.Type)
	}
	for i, ns := range t.Writes.Namespaces {
		if _, err := change.ParseGlob(ns); err != nil {
			return invalid(fmt.Sprintf("writes.namespaces[%d]", i), "%v", err)
		}
	}
	if len(t.Writes.Namespaces) > 0 {
		ds := t.writeSource()
		if ds == "" {
			return invalid("writes.data_source", "required for writes of a %s trigger", t.Type)
		}
		if err := knownSource("writes.data_source", ds); err != nil {
			return err
		}
	} else if t.Writes.DataSource != "" {
		if err := knownSource("writes.data_source", t.Writes.DataSource); err != nil {
			return err
		}
	}
	return nil
}

// checkAllow refuses a trigger that would watch or write outside its
// owner's allow-list. Which field is refused and what the list holds is in
// the message, so the user knows whom to ask.
func (t *Trigger) checkAllow(allow auth.Allow) error {
	if allow.Unrestricted() {
		return nil
	}
	if allow.None() {
		return &FieldError{Field: "user_id", Err: ErrNotAllowed,
			Reason: fmt.Sprintf("user %s has no token and so no rights; give it a token (api.tokens) first", t.UserID)}
	}
	deny := func(field, format string, args ...any) error {
		return &FieldError{Field: field, Err: ErrNotAllowed,
			Reason: fmt.Sprintf(format, args...) + fmt.Sprintf(" is not in the allow-list of user %s (%s)", t.UserID, allow)}
	}
	if c := t.Database; t.Type == TypeDatabase && c != nil {
		if !allow.Source(c.DataSource) {
			return deny("database.data_source", "data source %q", c.DataSource)
		}
		if !allow.Watch(c.Database, c.Collection) {
			field, what := "database.collection", c.Database+"."+c.Collection
			switch {
			case c.Database == "":
				field, what = "database.database", "every database"
			case c.Collection == "":
				what = "every collection of " + c.Database
			}
			return deny(field, "watching %s", what)
		}
	}
	if ds := t.writeSource(); ds != "" && (len(t.Writes.Namespaces) > 0 || t.Writes.DataSource != "") && !allow.Source(ds) {
		return deny("writes.data_source", "writing to data source %q", ds)
	}
	for i, g := range t.Writes.Namespaces {
		if !allow.Glob(g) {
			return deny(fmt.Sprintf("writes.namespaces[%d]", i), "writing %q", g)
		}
	}
	return nil
}

// writeSource is the data source the function's writes go to.
func (t *Trigger) writeSource() string {
	if t.Writes.DataSource != "" {
		return t.Writes.DataSource
	}
	if t.Database != nil {
		return t.Database.DataSource
	}
	return ""
}

func (f *Function) validate() error {
	if f.UserID == "" {
		return invalid("user_id", "required")
	}
	if err := checkName("name", f.Name); err != nil {
		return err
	}
	if f.Type != FunctionTypeWasm {
		return invalid("function_type", "%q: use wasm", f.Type)
	}
	return nil
}

// parseDoc parses an Extended JSON document (relaxed or canonical).
func parseDoc(s string) (*bson.D, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	d, err := ParseExtJSON(s)
	if err != nil {
		return nil, err
	}
	return &d, nil
}

// MaxDepth is the most levels of documents and arrays nested inside a
// top-level document that godwit accepts from outside: in Extended JSON of
// API requests and in BSON from functions. It is MongoDB's own limit for
// stored documents.
const MaxDepth = wasm.MaxDepth

// ParseExtJSON parses one Extended JSON document (relaxed or canonical)
// from an API request. It refuses nesting deeper than MaxDepth before
// parsing: the BSON library limits nested documents but not nested
// arrays, and decoding, matching or encoding a deeply nested value
// recurses until the goroutine's stack overflows, which no recover
// catches.
func ParseExtJSON(s string) (bson.D, error) {
	if depth := jsonDepth(s, MaxDepth+1); depth > MaxDepth+1 {
		return nil, fmt.Errorf("not an Extended JSON document: nested deeper than %d levels", MaxDepth)
	}
	var d bson.D
	if err := bson.UnmarshalExtJSON([]byte(s), false, &d); err != nil {
		return nil, fmt.Errorf("not an Extended JSON document: %v", err)
	}
	return d, nil
}

// jsonDepth returns the nesting depth of the brackets in JSON text outside
// strings, stopping as soon as it passes limit.
func jsonDepth(s string, limit int) int {
	depth, deepest := 0, 0
	inString, escaped := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			if depth > deepest {
				deepest = depth
				if deepest > limit {
					return deepest
				}
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return deepest
}

func parseMatch(s string) (*bson.D, error) {
	q, err := parseDoc(s)
	if err != nil || q == nil {
		return q, err
	}
	// Matching an empty event walks the whole query, which reports unknown
	// operators and malformed operands.
	if _, err := mongokit.Match(&bson.D{}, q); err != nil {
		return nil, err
	}
	return q, nil
}

func parseProject(s string) (*bson.D, error) {
	p, err := parseDoc(s)
	if err != nil || p == nil {
		return p, err
	}
	if _, err := mongokit.Project(&bson.D{}, p); err != nil {
		return nil, err
	}
	return p, nil
}

// Schedule is a parsed cron schedule, evaluated in UTC.
type Schedule interface {
	// Next returns the first activation time after t.
	Next(t time.Time) time.Time
}

// ParseSchedule parses a five-field cron expression (minute, hour, day of
// month, month, day of week) or a descriptor (@hourly, @daily, @weekly,
// @monthly, @yearly, @every DURATION), always evaluated in UTC.
func ParseSchedule(spec string) (Schedule, error) {
	if strings.Contains(spec, "TZ=") {
		return nil, fmt.Errorf("%q: schedules are always UTC; remove the time zone", spec)
	}
	if strings.TrimSpace(spec) == "" {
		return nil, fmt.Errorf("required: five fields (minute hour day-of-month month day-of-week), for example \"*/5 * * * *\"")
	}
	s, err := cron.ParseStandard(spec)
	if err != nil {
		return nil, fmt.Errorf("%q: %v (five fields: minute hour day-of-month month day-of-week)", spec, err)
	}
	if ss, ok := s.(*cron.SpecSchedule); ok {
		ss.Location = time.UTC
	}
	return utcSchedule{s}, nil
}

type utcSchedule struct{ s cron.Schedule }

func (u utcSchedule) Next(t time.Time) time.Time { return u.s.Next(t.UTC()).UTC() }
