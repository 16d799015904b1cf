package capture

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/godwit-dev/godwit/mongodb"
)

// MissingPrivileges asks the server which privileges capture needs that
// the source's user lacks (see mongodb.Conn.MissingPrivileges); known is
// false when the server cannot tell.
func (s *Source) MissingPrivileges(ctx context.Context) (missing []string, known bool) {
	var want []mongodb.Privilege
	for _, action := range []string{"changeStream", "find"} {
		want = append(want, mongodb.Privilege{DB: s.cfg.Database, Coll: s.cfg.Collection, Action: action})
	}
	lack, known := s.conn.MissingPrivileges(ctx, want)
	for _, p := range lack {
		missing = append(missing, fmt.Sprintf("%s on %s", p.Action, s.scope()))
	}
	return missing, known
}

// checkPrivileges logs, at start, what the source's user lacks; the stream
// is opened anyway (the server has the last word) and an Unauthorized
// answer then names the same privileges.
func (s *Source) checkPrivileges(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	missing, known := s.MissingPrivileges(ctx)
	if !known || len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("the source's user lacks %s (%s)", strings.Join(missing, " and "), s.scopeRole())
	s.set(func(x *Status) { x.LastError = msg })
	s.log.Warn().Str("uri", s.conn.Redacted).Strs("missing", missing).Msg(msg)
}
