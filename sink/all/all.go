// Package all registers every sink type this build knows. Import it for
// its side effect wherever a configuration is parsed or opened:
//
//	import _ "github.com/godwit-dev/godwit/sink/all"
//
// A new sink type is one package that calls sink.Register from its init
// function, plus one import line here.
package all

import (
	_ "github.com/godwit-dev/godwit/audit"      // type audit
	_ "github.com/godwit-dev/godwit/replicate"  // type replicate
	_ "github.com/godwit-dev/godwit/sink/jsonl" // type jsonl
	_ "github.com/godwit-dev/godwit/sink/kafka" // type kafka
	_ "github.com/godwit-dev/godwit/sink/nats"  // type nats
)
