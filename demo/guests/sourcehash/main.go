// Command sourcehash prints the hash of the Go sources the demo's embedded
// functions are built from (see scripts/build-demo-guests.sh).
package main

import (
	"fmt"
	"os"

	"github.com/godwit-dev/godwit/demo/guests"
)

func main() {
	sum, err := guests.SourceHash(".")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(sum)
}
