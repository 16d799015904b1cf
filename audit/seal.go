package audit

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"
	"unicode/utf8"
)

// Forward-secure sealing (after Schneier and Kelsey, "Secure Audit Logs to
// Support Computer Forensics", and systemd-journald's Forward Secure
// Sealing). A sealing key k_0 is drawn when sealing starts and written once
// to a key file, which the operator moves offline: it is the verification
// key. The key file names the index of the first record sealed with it (a
// segment starts there: when sealing starts on a new or an old unsealed
// log, or when the key is rotated). The record at position j of a segment
// (its first record is j = 0) carries
//
//	seal_j = HMAC-SHA256(k_j, record bytes without seal and hash)
//	k_{j+1} = HMAC-SHA256(k_j, "godwit audit key evolve")
//
// and k_j is then forgotten: the sink keeps only the next key, in memory
// and in its state file. Whoever steals that key can seal records from
// there on, but cannot compute any earlier key, so cannot change, remove,
// reorder or re-seal a record sealed before the theft. The evolution is per
// record (not per time epoch as in journald): the window in which a stolen
// key can re-seal a record already written is then zero records, and the
// cost is one HMAC per record; the key is saved with the state file that is
// written after every batch anyway, so no extra fsync is needed.

// keyLen is the length of a sealing key.
const keyLen = 32

var evolveLabel = []byte("godwit audit key evolve")

// sealKey is one key k_j of a segment, with its position.
type sealKey struct {
	key []byte    // k_j
	j   uint64    // position in the segment (0: its first record)
	mac hash.Hash // HMAC keyed with k_j, made on first use
}

func (k *sealKey) hmac() hash.Hash {
	if k.mac == nil {
		k.mac = hmac.New(sha256.New, k.key)
	} else {
		k.mac.Reset()
	}
	return k.mac
}

// seal returns the seal of body under k.
func (k *sealKey) seal(body []byte) string {
	m := k.hmac()
	m.Write(body)
	var sum [sha256.Size]byte
	return hex.EncodeToString(m.Sum(sum[:0]))
}

// evolve replaces k_j by k_{j+1} and overwrites k_j's bytes. (The HMAC
// state keyed with k_j, which holds k_j's padded forms, is dropped with it.)
func (k *sealKey) evolve() {
	m := k.hmac()
	m.Write(evolveLabel)
	next := m.Sum(nil)
	m.Reset()
	k.mac = nil
	clear(k.key)
	k.key = next
	k.j++
}

// evolveTo evolves k up to position j (j >= k.j).
func (k *sealKey) evolveTo(j uint64) {
	for k.j < j {
		k.evolve()
	}
}

func (k *sealKey) clone() *sealKey {
	return &sealKey{key: append([]byte(nil), k.key...), j: k.j}
}

// forget overwrites the key.
func (k *sealKey) forget() {
	clear(k.key)
	k.mac = nil
}

// keyID is the public name of a verification key: the first 16 hex digits
// of SHA-256("godwit audit key id" || k_0). It is in the key file, the
// state file and godwit's log, so that people can tell keys apart; it
// reveals nothing about the key.
func keyID(k0 []byte) string {
	h := sha256.New()
	h.Write([]byte("godwit audit key id"))
	h.Write(k0)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// VerifyKey is a verification key: the initial sealing key k_0 of one
// sealing segment, as written to its key file when sealing started.
type VerifyKey struct {
	// ID names the key.
	ID string
	// FirstIndex is the index of the first record sealed with it.
	FirstIndex uint64
	// Path is the file it was read from, for messages.
	Path string
	key  []byte
}

// keyFile is the JSON of a key file.
type keyFile struct {
	Format     string `json:"format"`
	KeyID      string `json:"key_id"`
	FirstIndex uint64 `json:"first_index"`
	Log        string `json:"log"`
	Created    string `json:"created"`
	Key        string `json:"key"`
}

const keyFileFormat = "godwit-audit-verify-key-1"

// ReadKeyFile reads a verification key written when sealing started.
func ReadKeyFile(path string) (VerifyKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return VerifyKey{}, fmt.Errorf("read audit key: %w", err)
	}
	var kf keyFile
	if !utf8.Valid(b) {
		return VerifyKey{}, fmt.Errorf("%w: audit key file %s is not UTF-8", ErrBadKey, path)
	}
	if err := json.Unmarshal(b, &kf); err != nil {
		return VerifyKey{}, fmt.Errorf("%w: audit key file %s: %v", ErrBadKey, path, err)
	}
	if kf.Format != keyFileFormat {
		return VerifyKey{}, fmt.Errorf("%w: %s is not a godwit audit key file (format %q, want %q)", ErrBadKey, path, kf.Format, keyFileFormat)
	}
	k, err := hex.DecodeString(kf.Key)
	if err != nil || len(k) != keyLen {
		return VerifyKey{}, fmt.Errorf("%w: %s: key must be %d hex digits", ErrBadKey, path, 2*keyLen)
	}
	if keyID(k) != kf.KeyID {
		return VerifyKey{}, fmt.Errorf("%w: %s: key_id %s does not belong to the key in the file (the file was edited)", ErrBadKey, path, kf.KeyID)
	}
	if kf.FirstIndex == 0 {
		return VerifyKey{}, fmt.Errorf("%w: %s: first_index missing", ErrBadKey, path)
	}
	return VerifyKey{ID: kf.KeyID, FirstIndex: kf.FirstIndex, Path: path, key: k}, nil
}

// newKeyFile draws k_0 for a segment starting at index first and writes it
// next to the log, as PATH.key (or PATH.key.FIRST when that exists). It
// never overwrites a file. It returns k_0, its id and the file's path.
func newKeyFile(logPath string, first uint64, now time.Time) ([]byte, string, string, error) {
	k := make([]byte, keyLen)
	if _, err := rand.Read(k); err != nil {
		return nil, "", "", err
	}
	id := keyID(k)
	abs, err := filepath.Abs(logPath)
	if err != nil {
		abs = logPath
	}
	b, err := json.MarshalIndent(keyFile{Format: keyFileFormat, KeyID: id, FirstIndex: first, Log: abs,
		Created: now.UTC().Format(time.RFC3339), Key: hex.EncodeToString(k)}, "", "  ")
	if err != nil {
		return nil, "", "", err
	}
	b = append(b, '\n')
	for _, path := range []string{logPath + ".key", logPath + ".key." + strconv.FormatUint(first, 10), logPath + ".key." + strconv.FormatUint(first, 10) + "." + id} {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, "", "", fmt.Errorf("write audit key: %w", err)
		}
		_, err = f.Write(b)
		if err == nil {
			err = f.Sync()
		}
		if e := f.Close(); err == nil {
			err = e
		}
		if err == nil {
			err = syncDir(filepath.Dir(path))
		}
		if err != nil {
			os.Remove(path)
			return nil, "", "", fmt.Errorf("write audit key %s: %w", path, err)
		}
		return k, id, path, nil
	}
	return nil, "", "", fmt.Errorf("write audit key: %s.key and its alternatives exist already; move them away", logPath)
}

// sealSuffixLen is the length of `,"seal":"<64 hex>"}`.
const sealSuffixLen = len(`,"seal":"`) + 64 + len(`"}`)

// splitSeal splits a line without its hash member (ending in `}`) into the
// sealed body (the line without seal and hash) and the stored seal; ok is
// false when it does not end with a well-formed seal member.
func splitSeal(unhashed []byte) (body []byte, stored string, ok bool) {
	if len(unhashed) < sealSuffixLen+1 {
		return nil, "", false
	}
	suffix := unhashed[len(unhashed)-sealSuffixLen:]
	if string(suffix[:len(`,"seal":"`)]) != `,"seal":"` || string(suffix[len(suffix)-2:]) != `"}` {
		return nil, "", false
	}
	stored = string(suffix[len(`,"seal":"`) : len(`,"seal":"`)+64])
	if !isHex64(stored) {
		return nil, "", false
	}
	body = make([]byte, 0, len(unhashed)-sealSuffixLen+1)
	body = append(body, unhashed[:len(unhashed)-sealSuffixLen]...)
	return append(body, '}'), stored, true
}

// sealedBody returns the bytes a decoded, sealed record's seal covers.
func sealedBody(r *Record) []byte {
	unhashed := append(append([]byte(nil), r.line[:len(r.line)-hashSuffixLen]...), '}')
	body, _, _ := splitSeal(unhashed)
	return body
}

// checkSeal reports whether r (decoded, sealed) carries the seal of k.
func checkSeal(k *sealKey, r *Record) bool {
	want := k.seal(sealedBody(r))
	return subtle.ConstantTimeCompare([]byte(want), []byte(r.Seal)) == 1
}
