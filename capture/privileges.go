package capture

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/bson"
)

// privilege is one resource and the actions a user holds on it, as
// connectionStatus reports it.
type privilege struct {
	Resource struct {
		DB          *string `bson:"db"`
		Collection  *string `bson:"collection"`
		Cluster     bool    `bson:"cluster"`
		AnyResource bool    `bson:"anyResource"`
	} `bson:"resource"`
	Actions []string `bson:"actions"`
}

// covers reports whether p grants action on the namespace db.coll, where an
// empty db means every database and an empty coll every collection (the
// resource a database- or deployment-wide change stream needs).
func (p privilege) covers(db, coll, action string) bool {
	if !slices.Contains(p.Actions, action) && !slices.Contains(p.Actions, "anyAction") {
		return false
	}
	r := p.Resource
	if r.AnyResource {
		return true
	}
	if r.Cluster || r.DB == nil || r.Collection == nil {
		return false
	}
	return (*r.DB == "" || *r.DB == db && db != "") && (*r.Collection == "" || *r.Collection == coll && coll != "")
}

// MissingPrivileges asks the server which privileges capture needs that
// the source's user lacks (connectionStatus with showPrivileges: every user
// may ask about itself). known is false when the server cannot tell: no
// user is authenticated (access control off, where nothing is missing), or
// the server does not answer the command.
func (s *Source) MissingPrivileges(ctx context.Context) (missing []string, known bool) {
	if s.conn.Embedded {
		return nil, false
	}
	var res struct {
		AuthInfo struct {
			Users      []bson.Raw  `bson:"authenticatedUsers"`
			Privileges []privilege `bson:"authenticatedUserPrivileges"`
		} `bson:"authInfo"`
	}
	cmd := bson.D{{Key: "connectionStatus", Value: 1}, {Key: "showPrivileges", Value: true}}
	if err := s.conn.Client.Database("admin").RunCommand(ctx, cmd).Decode(&res); err != nil {
		return nil, false
	}
	if len(res.AuthInfo.Users) == 0 {
		return nil, false
	}
	for _, action := range []string{"changeStream", "find"} {
		if !slices.ContainsFunc(res.AuthInfo.Privileges, func(p privilege) bool {
			return p.covers(s.cfg.Database, s.cfg.Collection, action)
		}) {
			missing = append(missing, fmt.Sprintf("%s on %s", action, s.scope()))
		}
	}
	return missing, true
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
