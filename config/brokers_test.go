package config_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/godwit-dev/godwit/config"
	"github.com/godwit-dev/godwit/sink/kafka"
	"github.com/godwit-dev/godwit/sink/nats"
)

const brokerSinks = `
sources: [{id: shop, uri: 'lungo:memory'}]
sinks:
  - id: kafka
    type: kafka
    kafka:
      brokers: [k1:9092, k2:9092]
      topic: "{prefix}.{db}.{coll}"
      sasl: {mechanism: SCRAM-SHA-512, username: godwit, password: kafka-pw-secret}
      tls: {ca: ca.pem}
      envelope: {format: debezium}
  - id: nats
    type: nats
    nats:
      servers: [nats://n1:4222]
      token: nats-token-secret
      credentials_file: user.creds
      stream: {name: CDC, create: true}
`

func TestParse_BrokerSinks(t *testing.T) {
	t.Run("Valid", func(t *testing.T) {
		c, err := config.Parse([]byte(strings.Replace(brokerSinks, "      credentials_file: user.creds\n", "", 1)), "/etc/godwit")
		if err != nil {
			t.Fatal(err)
		}
		k := c.Sinks[0].Settings.(*kafka.Config)
		n := c.Sinks[1].Settings.(*nats.Config)
		if k.TLS.CA != "/etc/godwit/ca.pem" || k.SASL.Password.Reveal() != "kafka-pw-secret" {
			t.Errorf("kafka: %+v", k)
		}
		if n.Stream.Name != "CDC" {
			t.Errorf("nats: %+v", n)
		}
		// A config dump (status, logs, debugging) never shows secrets.
		dump, _ := json.Marshal(c)
		if s := fmt.Sprintf("%+v %+v %s", *k, *n, dump); strings.Contains(s, "kafka-pw-secret") || strings.Contains(s, "nats-token-secret") {
			t.Fatalf("a secret prints: %s", s)
		}
	})
	t.Run("ErrorsNameTheField", func(t *testing.T) {
		_, err := config.Parse([]byte(brokerSinks+`
  - id: k2
    type: kafka
    kafka: {brokers: [k:9092], sasl: {mechanism: GSSAPI, username: u, password: p}}
  - id: k3
    type: kafka
  - id: n2
    type: nats
    nats: {servers: [nats://n:4222], subject: "{prefix}.{collection}"}
`), "/etc/godwit")
		if err == nil {
			t.Fatal("accepted")
		}
		for _, want := range []string{
			"sinks[1].nats.token, username, credentials_file, nkey_seed_file: choose one",
			"sinks[2].kafka.sasl.mechanism:",
			"sinks[3].kafka: required for type kafka",
			"sinks[4].nats.subject: unknown placeholder {collection}",
		} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks %q:\n%v", want, err)
			}
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("the error shows a secret:\n%v", err)
		}
	})
}
