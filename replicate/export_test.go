package replicate

import "github.com/godwit-dev/godwit/change"

// Keeps is Sink.keeps of a pipeline with cfg and metadataDB, for the shared
// filter table (change/filtertest): building a whole Sink needs a target.
func Keeps(cfg Config, metadataDB string, ev *change.Event) bool {
	s := &Sink{cfg: cfg, filter: cfg.Filter(metadataDB)}
	return s.keeps(ev)
}
