package logging_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/godwit-dev/godwit/logging"
)

// specOptions are the options of the MongoDB URI options specification
// (source/uri-options/uri-options.md, "List of specified options") with a
// value each. None is a credential except those in secretOptions.
var specOptions = map[string]string{
	"appname": "shop-api", "authMechanism": "SCRAM-SHA-256", "authSource": "admin",
	"compressors": "zstd,zlib", "connectTimeoutMS": "1000", "directConnection": "false",
	"heartbeatFrequencyMS": "10000", "journal": "true", "loadBalanced": "false",
	"localThresholdMS": "15", "maxIdleTimeMS": "1000", "maxPoolSize": "50", "maxConnecting": "2",
	"maxStalenessSeconds": "120", "minPoolSize": "1", "proxyHost": "socks.internal",
	"proxyPort": "1080", "proxyUsername": "proxyuser", "readConcernLevel": "majority",
	"readPreference": "secondaryPreferred", "readPreferenceTags": "dc:ny,rack:1",
	"replicaSet": "rs0", "retryReads": "true", "retryWrites": "true",
	"serverMonitoringMode": "auto", "serverSelectionTimeoutMS": "3000",
	"serverSelectionTryOnce": "true", "socketTimeoutMS": "0", "srvMaxHosts": "3",
	"srvServiceName": "customname", "ssl": "true", "tls": "true",
	"tlsAllowInvalidCertificates": "false", "tlsAllowInvalidHostnames": "false",
	"tlsCAFile": "/etc/ca.pem", "tlsCertificateKeyFile": "/etc/client.pem",
	"tlsDisableCertificateRevocationCheck": "false", "tlsDisableOCSPEndpointCheck": "false",
	"tlsInsecure": "false", "w": "majority", "waitQueueTimeoutMS": "100", "wTimeoutMS": "500",
	"zlibCompressionLevel": "6", "timeoutMS": "1000",
}

// secretOptions are the spec's credential options (and the Go driver's
// alias), each given the sentinel as its value.
var secretOptions = []string{"tlsCertificateKeyFilePassword", "proxyPassword", "sslClientCertificateKeyPassword",
	"TLSCERTIFICATEKEYFILEPASSWORD"}

// mechanismProperties are the authMechanismProperties of the auth
// specification; every value is masked, secret or not.
var mechanismProperties = []string{"AWS_SESSION_TOKEN", "SERVICE_NAME", "CANONICALIZE_HOST_NAME", "SERVICE_REALM",
	"SERVICE_HOST", "ENVIRONMENT", "TOKEN_RESOURCE", "ALLOWED_HOSTS"}

const sentinel = "S3ntinel-Secret"

func TestRedactURI_SpecOptions(t *testing.T) {
	for name, value := range specOptions {
		t.Run("Public/"+name, func(t *testing.T) {
			uri := "mongodb://app:" + sentinel + "@db1:27017,db2:27017/shop?" + name + "=" + value
			got := logging.RedactURI(uri)
			if strings.Contains(got, sentinel) {
				t.Fatalf("RedactURI(%q) = %q: the password is in it", uri, got)
			}
			if want := "mongodb://app:xxxxx@db1:27017,db2:27017/shop?" + name + "=" + value; got != want {
				t.Fatalf("RedactURI(%q) = %q, want %q (public options stay readable)", uri, got, want)
			}
		})
	}
	for _, name := range secretOptions {
		t.Run("Secret/"+name, func(t *testing.T) {
			uri := "mongodb://db1/?tls=true&" + name + "=" + sentinel + "&appname=x"
			got := logging.RedactURI(uri)
			if want := "mongodb://db1/?tls=true&" + name + "=xxxxx&appname=x"; got != want {
				t.Fatalf("RedactURI(%q) = %q, want %q", uri, got, want)
			}
		})
	}
	for _, prop := range mechanismProperties {
		t.Run("AuthMechanismProperties/"+prop, func(t *testing.T) {
			for _, sep := range []string{":", "%3A"} {
				props := "SERVICE_NAME:mongodb," + prop + sep + sentinel + ",x:y"
				uri := "mongodb://AKIAEXAMPLE:" + sentinel + "@db1/?authMechanism=MONGODB-AWS&authMechanismProperties=" + props
				got := logging.RedactURI(uri)
				if strings.Contains(got, sentinel) || strings.Contains(got, "mongodb,") {
					t.Fatalf("RedactURI(%q) = %q: a property value is in it", uri, got)
				}
				if !strings.Contains(got, "authMechanism=MONGODB-AWS") || !strings.Contains(got, "AKIAEXAMPLE:xxxxx@db1") {
					t.Fatalf("RedactURI(%q) = %q: lost what is not secret", uri, got)
				}
			}
		})
	}
}

func TestRedactURI_Malformed(t *testing.T) {
	for name, uri := range map[string]string{
		"UnknownOption":     "mongodb://db1/?bogus=" + sentinel,
		"UnknownKeyIsValue": "mongodb://db1/?" + sentinel,
		"AmpersandInSecret": "mongodb://db1/?tlsCertificateKeyFilePassword=ab&" + sentinel + "=1",
		"AtInPassword":      "mongodb://u:p@" + sentinel + "@db1/",
		"SlashInPassword":   "mongodb://u:a/" + sentinel + "@db1/",
		"QuestionInPass":    "mongodb://u:a?" + sentinel + "@db1/?appname=x",
		"SpaceInHost":       "mongodb://u:" + sentinel + "@bad host/",
		"BadEscape":         "mongodb://u:" + sentinel + "%zz@db1/",
		"SRV":               "mongodb+srv://u:" + sentinel + "@cluster0.example.net/?authMechanismProperties=AWS_SESSION_TOKEN:" + sentinel,
		"UpperScheme":       "MONGODB://u:" + sentinel + "@db1/",
		"Semicolons":        "mongodb://db1/?tls=true;proxyPassword=" + sentinel,
		"EscapedKey":        "mongodb://db1/?proxy%50assword=" + sentinel,
		"OtherScheme":       "postgres://u:" + sentinel + "@db1/",
		"AtInQuery":         "mongodb://u:" + sentinel + "@db1/?appname=a@b",
	} {
		t.Run(name, func(t *testing.T) {
			if got := logging.RedactURI(uri); strings.Contains(got, sentinel) {
				t.Fatalf("RedactURI(%q) = %q", uri, got)
			}
		})
	}
	if got := logging.RedactURI("lungo:/var/lib/x"); got != "lungo:/var/lib/x" {
		t.Errorf("a URI without credentials is unchanged, got %q", got)
	}
}

func TestRedactText_URIsInMessages(t *testing.T) {
	uri := "mongodb://u:" + sentinel + "@db1:27017/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:" + sentinel
	for _, msg := range []string{
		"connect " + uri + ": server selection error",
		`error parsing uri "` + uri + `"`,
		"dial (" + uri + "), retrying",
		`invalid option value "AWS_SESSION_TOKEN:` + sentinel + `%zz": invalid URL escape`,
		"tlsCertificateKeyFilePassword=" + sentinel + " rejected",
	} {
		got := logging.RedactText(msg)
		if strings.Contains(got, sentinel) {
			t.Errorf("RedactText(%q) = %q", msg, got)
		}
	}
	if got := logging.RedactText("connect " + uri + ": refused"); !strings.Contains(got, "u:xxxxx@db1:27017") ||
		!strings.HasSuffix(got, ": refused") {
		t.Errorf("RedactText keeps the host and the rest of the message, got %q", got)
	}
}

func TestRememberSecrets_MasksQuotedValues(t *testing.T) {
	const secret = "Rem3mbered-Val/ue"
	logging.RememberSecrets("mongodb://u:" + strings.ReplaceAll(secret, "/", "%2F") + "@db1/?proxyPassword=pr0xy-S3cret")
	for _, msg := range []string{
		"auth failed for password " + secret, // decoded
		"invalid password Rem3mbered-Val%2Fue",
		"proxy said pr0xy-S3cret",
	} {
		if got := logging.RedactText(msg); strings.Contains(got, "Rem3mbered") || strings.Contains(got, "pr0xy-S3cret") {
			t.Errorf("RedactText(%q) = %q", msg, got)
		}
	}
	var buf bytes.Buffer
	log, err := logging.New(&buf, "")
	if err != nil {
		t.Fatal(err)
	}
	log.Error().Str("error", "the driver said "+secret).Msg("connect failed")
	if strings.Contains(buf.String(), "Rem3mbered") || !strings.Contains(buf.String(), "connect failed") {
		t.Fatalf("the log line still carries the secret: %s", buf.String())
	}
}

// TestRememberSecrets_OnlyCredentials: values that are words, not
// secrets, are masked inside URIs but not in every message.
func TestRememberSecrets_OnlyCredentials(t *testing.T) {
	logging.RememberSecrets("mongodb://db1/?authMechanism=GSSAPI&authMechanismProperties=SERVICE_NAME:mongodb,SERVICE_REALM:EXAMPLE.COM&retryWrite=enabled")
	msg := "connect mongodb://db1/: EXAMPLE.COM realm enabled"
	if got := logging.RedactText(msg); !strings.HasPrefix(got, "connect mongodb://db1/") || !strings.Contains(got, "EXAMPLE.COM realm enabled") {
		t.Fatalf("RedactText(%q) = %q: words of the URI masked everywhere", msg, got)
	}
}
