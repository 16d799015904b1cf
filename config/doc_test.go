package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// Every configuration field is documented in docs/config.md: a field added
// without a line there fails here.
func TestEveryFieldIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	var walk func(typ reflect.Type, path string)
	walk = func(typ reflect.Type, path string) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || typ.PkgPath() != reflect.TypeFor[Config]().PkgPath() {
			return
		}
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" || !f.IsExported() {
				continue
			}
			documented := false
			for _, pre := range []string{"`", "."} {
				for _, post := range []string{"`", ".", "["} {
					documented = documented || strings.Contains(string(doc), pre+name+post)
				}
			}
			if !documented {
				missing = append(missing, path+name)
			}
			walk(f.Type, path+name+".")
		}
	}
	walk(reflect.TypeFor[Config](), "")
	if len(missing) > 0 {
		t.Fatalf("fields missing from docs/config.md: %v", missing)
	}
}
