package change_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/godwit-dev/godwit/change"
)

// grepPCRE returns which names the PCRE2 pattern matches, using GNU grep -P
// in a UTF-8 locale: PCRE2 in UTF mode, as MongoDB compiles $regex. Records
// are NUL-separated so names may hold newlines.
func grepPCRE(t *testing.T, pattern string, names []string) map[string]bool {
	t.Helper()
	cmd := exec.Command("grep", "-zaP", "-e", pattern)
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
	cmd.Stdin = strings.NewReader(strings.Join(names, "\x00") + "\x00")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 1) {
		t.Fatalf("grep -P %q: %v: %s", pattern, err, stderr.String())
	}
	got := map[string]bool{}
	for _, n := range bytes.Split(out, []byte{0}) {
		if len(n) > 0 {
			got[string(n)] = true
		}
	}
	return got
}

// TestGlob_RegexAgreesWithPCRE runs the regular expressions globs push down
// to the server through PCRE2 itself (GNU grep -P, where the machine has it)
// and checks they keep exactly the names the glob matches, for random
// Unicode names and globs made from them. (grep compiles with
// PCRE2_DOLLAR_ENDONLY, which MongoDB does not: that is one reason the
// patterns anchor with \z, never '$'.)
func TestGlob_RegexAgreesWithPCRE(t *testing.T) {
	if err := exec.Command("grep", "-qzP", "-e", "x").Run(); err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Skipf("no grep with PCRE support (-P) here: %v", err)
		}
	}
	alphabet := []rune("ab.z_-$/\\^|()+{}[]*?!\n éßü日本🦆Ω")
	r := rand.New(rand.NewPCG(3, 5))
	name := func() string {
		var sb strings.Builder
		for range 1 + r.IntN(5) {
			sb.WriteRune(alphabet[r.IntN(len(alphabet))])
		}
		return sb.String()
	}
	names := []string{"données", "donnÃ©es", "tmp\n", "tmp"}
	for range 200 {
		names = append(names, name())
	}
	globs := []string{"données", "donn?es", "tmp", "[]a]*", `[\]]*`, "[!x]*", "[^é]?"}
	for range 150 {
		var sb strings.Builder
		for _, c := range names[r.IntN(len(names))] {
			switch r.IntN(6) {
			case 0:
				sb.WriteString("?")
			case 1:
				sb.WriteString("*")
			case 2:
				sb.WriteString("[" + []string{"", "!", "^", "]"}[r.IntN(4)] + `\` + string(c) + "]")
			default:
				if strings.ContainsRune(`*?[]\`, c) {
					sb.WriteString(`\`)
				}
				sb.WriteRune(c)
			}
		}
		globs = append(globs, sb.String())
	}
	checked := 0
	for _, p := range globs {
		// As a collection part, so names may contain dots.
		g, err := change.ParseGlob("db." + p)
		if err != nil {
			t.Fatalf("glob %q: %v", p, err)
		}
		pcre := grepPCRE(t, g.CollRegex(), names)
		for _, n := range names {
			if got, want := pcre[n], g.Match(change.Namespace{DB: "db", Coll: n}); got != want {
				t.Errorf("glob %q, name %q: PCRE with %q matches=%v, glob matches=%v", p, n, g.CollRegex(), got, want)
			}
			checked++
		}
	}
	t.Logf("%d glob/name pairs agree with PCRE2", checked)
}
