package outbox

// EncodeRecord exposes the record encoder to the black-box tests, which
// check that every record DecodeRecord accepts encodes back to its bytes.
var EncodeRecord = encodeRecord
