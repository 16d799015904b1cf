package outbox

// EncodeRecord exposes the record encoder to the black-box tests, which
// check that every record DecodeRecord accepts encodes back to its bytes.
var EncodeRecord = encodeRecord

// SetFailpoint makes the crash tests' child process stop at the named steps
// of rotation, retention and migration (see failpoint).
func SetFailpoint(f func(name string)) { failpoint = f }
