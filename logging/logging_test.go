package logging_test

import (
	"strings"
	"testing"

	"github.com/godwit-dev/godwit/logging"
)

func TestRedactURI(t *testing.T) {
	const pw = "p%40ss:w0rd"
	cases := []string{
		"mongodb://admin:" + pw + "@db1:27017,db2:27017/?replicaSet=rs0",
		"mongodb+srv://admin:" + pw + "@cluster0.example.net/shop",
		"mongodb://admin:" + pw + "@bad host/",   // does not parse as a URL
		"mongodb://admin:" + pw + "@h:notaport/", // does not parse either
	}
	for _, uri := range cases {
		got := logging.RedactURI(uri)
		if strings.Contains(got, "w0rd") || !strings.Contains(got, "admin") {
			t.Errorf("RedactURI(%q) = %q", uri, got)
		}
	}
	if got := logging.RedactURI("lungo:/var/lib/x"); got != "lungo:/var/lib/x" {
		t.Errorf("a URI without credentials is unchanged, got %q", got)
	}
}

func TestRedactText(t *testing.T) {
	msg := `connection() error occurred during connection handshake: auth error: sasl conversation error: unable to authenticate using mechanism "SCRAM-SHA-256" for mongodb://root:hunter2@10.0.0.1:27017/admin`
	if got := logging.RedactText(msg); strings.Contains(got, "hunter2") || !strings.Contains(got, "root:xxxxx@10.0.0.1") {
		t.Fatalf("RedactText = %q", got)
	}
}
