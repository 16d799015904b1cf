package brokers_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/godwit-dev/godwit/sink/internal/brokers"
)

func TestSecret_NeverPrints(t *testing.T) {
	var cfg struct {
		Password brokers.Secret `yaml:"password" json:"password"`
	}
	if err := yaml.Unmarshal([]byte("password: hunter2-pw"), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Password.Reveal() != "hunter2-pw" {
		t.Fatalf("decoded %q", cfg.Password.Reveal())
	}
	j, _ := json.Marshal(cfg)
	y, _ := yaml.Marshal(cfg)
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v %#v %s %q", cfg, cfg, cfg.Password, cfg.Password), string(j), string(y)} {
		if strings.Contains(s, "hunter2") || !strings.Contains(s, "xxxxx") {
			t.Errorf("printed as %s", s)
		}
	}
	if brokers.Secret("").String() != "" {
		t.Error("an empty secret prints as set")
	}
}

func TestParseTemplate(t *testing.T) {
	upper := strings.ToUpper
	for _, tc := range []struct{ tmpl, want string }{
		{"{prefix}.{db}.{coll}", "p.x.shop.ORDERS"},
		{"cdc-{source}", "cdc-SRC"},
		{"fixed", "fixed"},
	} {
		tp, err := brokers.ParseTemplate(tc.tmpl, "prefix", "source", "db", "coll")
		if err != nil {
			t.Fatal(err)
		}
		// The prefix is the user's own and is not cleaned.
		if got := tp.Expand(brokers.Vars{Prefix: "p.x", Source: "src", DB: "shop", Coll: "orders"}, func(s string) string {
			if s == "shop" {
				return s
			}
			return upper(s)
		}); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.tmpl, got, tc.want)
		}
	}
	for _, bad := range []string{"", "{db", "{op}.x", "{}"} {
		if _, err := brokers.ParseTemplate(bad, "prefix", "db", "coll"); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestTLS_Validate(t *testing.T) {
	if err := (&brokers.TLS{Cert: "c.pem"}).Validate(); err == nil || !strings.HasPrefix(err.Error(), "tls:") {
		t.Errorf("cert without key: %v", err)
	}
	if _, err := (&brokers.TLS{CA: "/nonexistent/ca.pem"}).Config(); err == nil || !strings.HasPrefix(err.Error(), "tls.ca:") {
		t.Errorf("missing CA file: %v", err)
	}
}
