package mongodb_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/godwit-dev/godwit/logging"
	"github.com/godwit-dev/godwit/mongodb"
)

// TestOpen_SecretsNeverInErrors gives the real driver URIs carrying a
// sentinel in every credential slot of the connection-string spec and
// makes each fail: at parse time (malformed) and at the first operation
// (nothing listens). Neither godwit's error nor the driver's own message
// after logging.RedactText carries the sentinel.
func TestOpen_SecretsNeverInErrors(t *testing.T) {
	const s = "Sent1nel-0pen"
	slots := map[string]string{
		"Password":     "mongodb://u:" + s + "@127.0.0.1:1/?serverSelectionTimeoutMS=200",
		"SessionToken": "mongodb://AKIA:" + s + "x@127.0.0.1:1/?authMechanism=MONGODB-AWS&authSource=$external&authMechanismProperties=AWS_SESSION_TOKEN:" + s + "&serverSelectionTimeoutMS=200",
		"KeyPassword":  "mongodb://127.0.0.1:1/?tls=true&tlsCertificateKeyFile=/nonexistent.pem&tlsCertificateKeyFilePassword=" + s + "&serverSelectionTimeoutMS=200",
		"ProxyPassword": "mongodb://127.0.0.1:1/?proxyHost=127.0.0.1&proxyPort=1&proxyUsername=p&proxyPassword=" + s +
			"&serverSelectionTimeoutMS=200",
		"BadEscapePassword": "mongodb://u:" + s + "%zz@127.0.0.1:1/",
		"BadEscapeToken":    "mongodb://u:p@127.0.0.1:1/?authMechanismProperties=AWS_SESSION_TOKEN:" + s + "%zz",
		"BadEscapeKeyPass":  "mongodb://127.0.0.1:1/?tlsCertificateKeyFilePassword=" + s + "%zz",
		"UnescapedColon":    "mongodb://u:" + s + ":x@127.0.0.1:1/",
		"UnescapedAt":       "mongodb://u:" + s + "@x@127.0.0.1:1/",
		"SRVNoDNS":          "mongodb+srv://u:" + s + "@cluster.example.invalid/?authMechanismProperties=AWS_SESSION_TOKEN:" + s,
	}
	for name, uri := range slots {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			check := func(what, msg string) {
				t.Helper()
				t.Logf("%s: %s", what, msg)
				if strings.Contains(msg, s) {
					t.Fatalf("%s carries the sentinel: %s", what, msg)
				}
			}
			conn, err := mongodb.Open(ctx, uri, "")
			if err != nil {
				check("Open", err.Error())
				return
			}
			defer conn.Close(ctx)
			check("Redacted", conn.Redacted)
			_, err = conn.Client.ListDatabaseNames(ctx, map[string]any{})
			if err == nil {
				t.Fatal("listing databases on a closed port succeeded")
			}
			check("the driver's error, redacted", logging.RedactText(err.Error()))
		})
	}
}
