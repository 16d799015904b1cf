package replicate_test

import (
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/godwit-dev/godwit/replicate"
)

// TestOpen_NamesMissingTargetPrivileges opens a pipeline whose target user
// (as connectionStatus reports it, over the wire) may write shop but only
// read godwit's metadata database: the pipeline says which privileges are
// missing, and nothing when the user has readWrite on both.
func TestOpen_NamesMissingTargetPrivileges(t *testing.T) {
	grant := func(db string, actions ...string) bson.D {
		return bson.D{{Key: "resource", Value: bson.D{{Key: "db", Value: db}, {Key: "collection", Value: ""}}},
			{Key: "actions", Value: actions}}
	}
	readWrite := []string{"find", "insert", "update", "remove", "createCollection", "createIndex", "dropCollection", "dropIndex"}
	for _, tc := range []struct {
		name   string
		grants bson.A
		want   string
	}{
		{"MetadataReadOnly", bson.A{grant("shop", readWrite...), grant(meta, "find")}, "insert on database " + meta},
		{"ReadWriteOnBoth", bson.A{grant("shop", readWrite...), grant(meta, readWrite...)}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWireServer(t, func(name string, _ bson.Raw) bson.D {
				if name != "connectionStatus" {
					return nil
				}
				return bson.D{{Key: "authInfo", Value: bson.D{
					{Key: "authenticatedUsers", Value: bson.A{bson.D{{Key: "user", Value: "rep"}, {Key: "db", Value: "admin"}}}},
					{Key: "authenticatedUserPrivileges", Value: tc.grants}}}, {Key: "ok", Value: 1.0}}
			}, nil)
			s := wireTarget(t, w, replicate.Config{Include: []string{"shop.*"}})
			got := s.Status().LastError
			if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
				t.Fatalf("status error %q, want it to name %q", got, tc.want)
			}
		})
	}
}
