package events

import "github.com/godwit-dev/godwit/outbox"

// Matches is what a subscription with req decides for rec, for the shared
// filter table (change/filtertest): driving a stream per case would test
// the stream, not the filter.
func Matches(req Request, metadataDB string, rec outbox.Record) (bool, error) {
	f, err := req.compile(metadataDB)
	if err != nil {
		return false, err
	}
	_, ok := f.match(rec)
	return ok, nil
}
