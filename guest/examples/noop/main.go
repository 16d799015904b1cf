//go:build wasip1

// Command noop is the smallest Go function: it accepts every event and does
// nothing. The trigger benchmark uses it to measure godwit's own cost per
// invocation.
package main

import "github.com/godwit-dev/godwit/guest/godwit"

func init() { godwit.Handle(func(godwit.Event) error { return nil }) }

func main() {}
