;; A guest written by hand against the ABI (docs/abi.md), for tests that
;; must not depend on a compiler. godwit_handle scans the event bytes for a
;; four-letter marker and behaves accordingly:
;;
;;   "trap"  executes unreachable
;;   "loop"  loops forever
;;   "hogm"  grows memory until the host refuses, then traps
;;   "fill"  grows memory a page at a time until the host refuses, writing
;;           to every 4 KiB of each new page (so it is resident), then
;;           returns 0
;;   "fail"  reports an error through set_error and returns 1
;;   "writ"  inserts the event itself into test.out, returns the host's code
;;   other   logs "ok" at info level and returns 0
;;
;; Rebuild with: wat2wasm abi.wat -o abi.wasm   (Debian package wabt)
(module
  (import "godwit" "log" (func $log (param i32 i32 i32)))
  (import "godwit" "set_error" (func $set_error (param i32 i32)))
  (import "godwit" "insert" (func $insert (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "ok")
  (data (i32.const 32) "asked to fail")
  (data (i32.const 64) "test.out")

  (func (export "godwit_abi_version") (result i32) (i32.const 1))

  ;; The event buffer always starts at 64 KiB; grow memory to fit.
  (func (export "godwit_alloc") (param $size i32) (result i32)
    (local $need i32)
    (local.set $need
      (i32.sub
        (i32.shr_u (i32.add (i32.add (local.get $size) (i32.const 65536)) (i32.const 65535)) (i32.const 16))
        (memory.size)))
    (if (i32.gt_s (local.get $need) (i32.const 0))
      (then
        (if (i32.lt_s (memory.grow (local.get $need)) (i32.const 0))
          (then (return (i32.const 0))))))
    (i32.const 65536))

  ;; find returns 1 when the 4-byte word occurs in [ptr, ptr+len).
  (func $find (param $ptr i32) (param $len i32) (param $word i32) (result i32)
    (local $i i32)
    (if (i32.lt_u (local.get $len) (i32.const 4)) (then (return (i32.const 0))))
    (block $done
      (loop $scan
        (br_if $done (i32.gt_u (local.get $i) (i32.sub (local.get $len) (i32.const 4))))
        (if (i32.eq (i32.load (i32.add (local.get $ptr) (local.get $i))) (local.get $word))
          (then (return (i32.const 1))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    (i32.const 0))

  (func (export "godwit_handle") (param $ptr i32) (param $len i32) (result i32)
    (local $old i32) (local $i i32) (local $end i32)
    ;; "trap"
    (if (call $find (local.get $ptr) (local.get $len) (i32.const 0x70617274))
      (then unreachable))
    ;; "loop"
    (if (call $find (local.get $ptr) (local.get $len) (i32.const 0x706f6f6c))
      (then (loop $forever (br $forever))))
    ;; "hogm"
    (if (call $find (local.get $ptr) (local.get $len) (i32.const 0x6d676f68))
      (then
        (loop $grow
          (br_if $grow (i32.ge_s (memory.grow (i32.const 16)) (i32.const 0))))
        unreachable))
    ;; "fill"
    (if (call $find (local.get $ptr) (local.get $len) (i32.const 0x6c6c6966))
      (then
        (block $full
          (loop $more
            (local.set $old (memory.grow (i32.const 1)))
            (br_if $full (i32.lt_s (local.get $old) (i32.const 0)))
            ;; one byte in each 4 KiB of the new page: all of it resident
            (local.set $i (i32.shl (local.get $old) (i32.const 16)))
            (local.set $end (i32.add (local.get $i) (i32.const 65536)))
            (block $touched
              (loop $touch
                (br_if $touched (i32.ge_u (local.get $i) (local.get $end)))
                (i32.store8 (local.get $i) (i32.const 1))
                (local.set $i (i32.add (local.get $i) (i32.const 4096)))
                (br $touch)))
            (br $more)))
        (return (i32.const 0))))
    ;; "fail"
    (if (call $find (local.get $ptr) (local.get $len) (i32.const 0x6c696166))
      (then
        (call $set_error (i32.const 32) (i32.const 13))
        (return (i32.const 1))))
    ;; "writ"
    (if (call $find (local.get $ptr) (local.get $len) (i32.const 0x74697277))
      (then
        (return (call $insert (i32.const 64) (i32.const 8) (local.get $ptr) (local.get $len)))))
    (call $log (i32.const 1) (i32.const 16) (i32.const 2))
    (i32.const 0))
)
