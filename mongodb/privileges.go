package mongodb

import (
	"context"
	"fmt"
	"slices"

	"go.mongodb.org/mongo-driver/bson"
)

// Privilege is an action godwit needs on a namespace: DB "" means every
// database and Coll "" every collection of DB (the resource a database- or
// deployment-wide change stream names).
type Privilege struct {
	DB, Coll, Action string
}

func (p Privilege) String() string {
	switch {
	case p.DB == "":
		return p.Action + " on every database"
	case p.Coll == "":
		return p.Action + " on database " + p.DB
	default:
		return p.Action + " on " + p.DB + "." + p.Coll
	}
}

// granted is one resource and the actions a user holds on it, as
// connectionStatus reports it.
type granted struct {
	Resource struct {
		DB          *string `bson:"db"`
		Collection  *string `bson:"collection"`
		Cluster     bool    `bson:"cluster"`
		AnyResource bool    `bson:"anyResource"`
	} `bson:"resource"`
	Actions []string `bson:"actions"`
}

func (g granted) covers(p Privilege) bool {
	if !slices.Contains(g.Actions, p.Action) && !slices.Contains(g.Actions, "anyAction") {
		return false
	}
	r := g.Resource
	if r.AnyResource {
		return true
	}
	if r.Cluster || r.DB == nil || r.Collection == nil {
		return false
	}
	return (*r.DB == "" || *r.DB == p.DB && p.DB != "") && (*r.Collection == "" || *r.Collection == p.Coll && p.Coll != "")
}

// MissingPrivileges asks the server which of want the connection's user
// lacks (connectionStatus with showPrivileges: every user may ask about
// itself). known is false when the server cannot tell: an embedded
// deployment, no authenticated user (access control off, where nothing is
// missing), or a server that does not answer the command.
func (c *Conn) MissingPrivileges(ctx context.Context, want []Privilege) (missing []Privilege, known bool) {
	if c.Embedded || c.Engine != nil {
		return nil, false
	}
	var res struct {
		AuthInfo struct {
			Users      []bson.Raw `bson:"authenticatedUsers"`
			Privileges []granted  `bson:"authenticatedUserPrivileges"`
		} `bson:"authInfo"`
	}
	cmd := bson.D{{Key: "connectionStatus", Value: 1}, {Key: "showPrivileges", Value: true}}
	if err := c.Client.Database("admin").RunCommand(ctx, cmd).Decode(&res); err != nil {
		return nil, false
	}
	if len(res.AuthInfo.Users) == 0 {
		return nil, false
	}
	for _, p := range want {
		if !slices.ContainsFunc(res.AuthInfo.Privileges, func(g granted) bool { return g.covers(p) }) {
			missing = append(missing, p)
		}
	}
	return missing, true
}

// Describe joins privileges for a message: "a and b".
func Describe(ps []Privilege) string {
	s := ""
	for i, p := range ps {
		switch {
		case i == 0:
		case i == len(ps)-1:
			s += " and "
		default:
			s += ", "
		}
		s += p.String()
	}
	return fmt.Sprint(s)
}
